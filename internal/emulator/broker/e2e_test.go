package broker

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/router"
	"github.com/mriot/mriot/internal/testkit/tier"
)

func TestSetDown(t *testing.T) {
	f := newFixture(t)
	leaf := f.device("dev1")
	f.onboard(leaf, devicePol)
	cl, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Disconnect(0)
	f.b.SetDown(true)
	select {
	case <-cl.lost:
	case <-time.After(5 * time.Second):
		t.Fatal("existing connection not closed when the region went down")
	}
	if c, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1"); err == nil {
		c.Disconnect(0)
		t.Fatal("connected to a region marked down")
	}
	f.b.SetDown(false)
	c2, err := connectPaho(f.b.Addr(), f.tls(leaf), "dev1")
	if err != nil {
		t.Fatalf("region back up, yet: %v", err)
	}
	c2.Disconnect(0)
}

// TestThroughGlobalEndpoint: two regions behind the router; TLS goes end to
// end, and when the nearest region is down an onboarded device connects to
// the other one; the same when the router hands connections over in process
// (Broker.Accept) instead of proxying them.
func TestThroughGlobalEndpoint(t *testing.T) {
	for _, handOver := range []bool{false, true} {
		t.Run(fmt.Sprintf("handOver=%v", handOver), func(t *testing.T) { throughGlobalEndpoint(t, handOver) })
	}
}

func throughGlobalEndpoint(t *testing.T, handOver bool) {
	eu := newFixture(t)
	us := newFixture(t)
	leaf := eu.device("dev1")
	eu.onboard(leaf, devicePol)
	// us trusts eu's intermediate as well, like a CA registered in both regions.
	if _, err := us.reg.RegisterCACertificate(context.Background(), eu.inter.CertPEM(), true); err != nil {
		t.Fatal(err)
	}
	usRoot := us.root
	us.inter, us.root = eu.inter, eu.root // devices of eu's PKI
	us.onboard(leaf, devicePol)
	// Each fixture made its own server certificate; trust both roots.
	clientCfg := eu.tls(leaf)
	clientCfg.RootCAs.AddCert(usRoot.Cert)

	targets := []router.Target{
		{Region: "us-west-2", Addr: us.b.Addr(), Latency: 140 * time.Millisecond},
		{Region: "eu-west-1", Addr: eu.b.Addr(), Latency: 20 * time.Millisecond},
	}
	if handOver {
		targets[0].Accept, targets[1].Accept = us.b.Accept, eu.b.Accept
	}
	r, err := router.New(router.Config{Regions: targets, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	publish := func(want *fixture) {
		t.Helper()
		cl, err := connectPaho(r.Addr(), clientCfg, "dev1")
		if err != nil {
			t.Fatalf("connect through the global endpoint: %v", err)
		}
		defer cl.Disconnect(0)
		if tok := cl.Publish("i/dev1/m", 1, false, "{}"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		want.waitMessage("i/dev1/m")
	}
	publish(eu)
	eu.b.SetDown(true)
	_ = r.SetDown("eu-west-1", true)
	publish(us)
	if got := r.Routed(); got["eu-west-1"] != 1 || got["us-west-2"] != 1 {
		t.Fatalf("Routed = %v", got)
	}
}

// TestMosquitto runs the article's test with the real mosquitto_pub, over
// MQTT 3.1.1 and 5.
func TestMosquitto(t *testing.T) {
	bin := tier.Tool(t, "mosquitto_pub")
	for _, version := range []string{"mqttv311", "mqttv5"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t)
			leaf := f.device("dev1")
			dir := t.TempDir()
			key, err := leaf.KeyPEM()
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]string{"root.pem": f.root.CertPEM(), "dev.pem": leaf.CertPEM(), "dev.key": key}
			for name, content := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, port, err := net.SplitHostPort(f.b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			pub := func() ([]byte, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-V", version,
					"--cafile", filepath.Join(dir, "root.pem"), "--cert", filepath.Join(dir, "dev.pem"), "--key", filepath.Join(dir, "dev.key"),
					"-i", "dev1", "-t", "i/dev1/m", "-q", "1", "-m", `{"temp":21}`, "-d")
				return cmd.CombinedOutput()
			}
			if out, err := pub(); err == nil {
				t.Fatalf("first mosquitto_pub succeeded:\n%s", out)
			}
			f.waitMessage(RegisteredTopicPrefix + f.caID)
			if c, ok := f.reg.CertificateByID(fleet.CertificateID(leaf.Cert)); !ok || c.Status != fleet.CertPendingActivation {
				t.Fatalf("certificate %+v after first connect", c)
			}
			f.onboard(leaf, devicePol)
			out, err := pub()
			if err != nil {
				t.Fatalf("second mosquitto_pub: %v\n%s", err, out)
			}
			if m := f.waitMessage("i/dev1/m"); string(m.payload) != `{"temp":21}` {
				t.Fatalf("rules engine got %s", m.payload)
			}
			if !containsPUBACK(out) {
				t.Fatalf("no PUBACK in mosquitto_pub output:\n%s", out)
			}
		})
	}
}

func containsPUBACK(out []byte) bool {
	return strings.Contains(string(out), "received PUBACK")
}

// proc is a client process whose combined output is kept.
type proc struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error // once done is closed
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// deviceFiles writes the root certificate and the device's certificate and
// key for a command-line client.
func deviceFiles(t *testing.T, f *fixture, leaf *pki.Leaf) (cafile, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	keyPEM, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	cafile, cert, key = filepath.Join(dir, "root.pem"), filepath.Join(dir, "dev.pem"), filepath.Join(dir, "dev.key")
	for name, content := range map[string]string{cafile: f.root.CertPEM(), cert: leaf.CertPEM(), key: keyPEM} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cafile, cert, key
}

// stop ends the process with SIGTERM, as Ctrl-C would (its buffered output
// is flushed), and returns its output.
func (p *proc) stop(t *testing.T) string {
	t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not end on SIGTERM", p.cmd.Path)
		}
	}
	return p.out.String()
}

// TestMosquittoTakeover: two mosquitto_sub with one client id. The second
// takes the session over; the first, over MQTT 3.1.1, sees its connection
// closed (no DISCONNECT packet, which 3.1.1 forbids and mosquitto answers
// with "A network protocol error occurred") and reconnects; over MQTT 5 it
// gets DISCONNECT 0x8E (Session taken over).
func TestMosquittoTakeover(t *testing.T) {
	bin := tier.Tool(t, "mosquitto_sub")
	for _, version := range []string{"mqttv311", "mqttv5"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t)
			leaf := f.device("dev1")
			c := f.onboard(leaf, devicePol)
			cafile, cert, key := deviceFiles(t, f, leaf)
			_, port, err := net.SplitHostPort(f.b.Addr())
			if err != nil {
				t.Fatal(err)
			}
			sub := func() *proc {
				return startProc(t, bin, "-h", "127.0.0.1", "-p", port, "-V", version,
					"--cafile", cafile, "--cert", cert, "--key", key,
					"-i", "dev1", "-t", "e/dev1/#", "-q", "1", "-d")
			}
			// mosquitto_sub's -d output is buffered: progress is seen
			// from the endpoint (its errors go to stderr, unbuffered).
			connected := func(p *proc, n int64) func() error {
				return func() error {
					if p.exited() {
						return fmt.Errorf("exited (%v):\n%s", p.err, p.out.String())
					}
					if got := f.b.Stats().Connected.Load(); got < n {
						return fmt.Errorf("%d connections", got)
					}
					return nil
				}
			}
			first := sub()
			tier.Eventually(t, 10*time.Second, "the first mosquitto_sub connected", connected(first, 1))
			second := sub()
			tier.Eventually(t, 10*time.Second, "the second mosquitto_sub connected", connected(second, 2))
			// The first lost its session: it reconnects (taking the session
			// back), or it exits.
			tier.Eventually(t, 10*time.Second, "the first mosquitto_sub reconnected or exited", func() error {
				if first.exited() || f.b.Stats().Connected.Load() >= 3 {
					return nil
				}
				return fmt.Errorf("%d connections", f.b.Stats().Connected.Load())
			})
			exited, exitErr := first.exited(), first.err
			out := first.stop(t)
			second.stop(t)
			t.Logf("first mosquitto_sub (exited by itself: %v %v):\n%s", exited, exitErr, out)
			if strings.Contains(strings.ToLower(out), "protocol error") {
				t.Fatalf("the first mosquitto_sub saw a protocol error:\n%s", out)
			}
			if version == "mqttv5" && !strings.Contains(out, "Received DISCONNECT (142)") {
				t.Errorf("the first mosquitto_sub did not get DISCONNECT 0x8E (142, Session taken over):\n%s", out)
			}
			if n := f.b.Sessions(c.ID); n > 1 {
				t.Errorf("Sessions = %d; one client id has one session", n)
			}
		})
	}
}
