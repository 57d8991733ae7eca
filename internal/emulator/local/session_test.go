package local_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// lockedBuffer is a process's output, written and read concurrently.
type lockedBuffer = proc.Buffer

// mosquittoSub starts mosquitto_sub on the device's own topics, e/<thing>/#
// (what the device policy lets it subscribe to), through addr. stop ends it
// with SIGTERM (its buffered -d output is flushed) and returns its output
// and whether it had exited by itself.
func mosquittoSub(t *testing.T, addr string, d device, version string) (stop func() (string, bool)) {
	t.Helper()
	bin := tier.Tool(t, "mosquitto_sub")
	host, port, _ := strings.Cut(addr, ":")
	if host == "127.0.0.1" {
		host = "localhost"
	}
	cmd := exec.Command(bin, "-h", host, "-p", port, "--cafile", d.cafile, "--cert", d.cert, "--key", d.key,
		"-V", version, "-i", d.name, "-t", "e/"+d.name+"/#", "-q", "1", "-d")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	var once sync.Once
	var exited bool
	stop = func() (string, bool) {
		once.Do(func() {
			select {
			case <-done:
				exited = true
				return
			default:
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
		return out.String(), exited
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestRevokeEndsLiveSession revokes, through the API, a device connected
// with a real mosquitto_sub: the region's endpoint closes the session within
// 1 s of the certificate becoming REVOKED there (MQTT 3.1.1: the connection
// closed, no DISCONNECT packet, which mosquitto would call a protocol error;
// MQTT 5: DISCONNECT 0x87, Not authorized), and the device is refused by
// every region's endpoint and the global one.
func TestRevokeEndsLiveSession(t *testing.T) {
	tier.Tool(t, "mosquitto_sub")
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{Regions: []string{"eu-west-1", "us-west-2"}})
	ctx := context.Background()
	home := st.Regions()[0] // the global endpoint's nearest region
	for _, version := range []string{"mqttv311", "mqttv5"} {
		t.Run(version, func(t *testing.T) {
			d := onboard(t, st, "live-"+strings.TrimPrefix(version, "mqttv"))
			inv, err := home.Inventory.Get(ctx, d.name)
			if err != nil {
				t.Fatal(err)
			}
			certID := inv.CertificateID
			revokedAt := make(chan time.Time, 1)
			defer home.Registry.OnCertificateChange(func(id string, s fleet.CertStatus) {
				if id == certID && s == fleet.CertRevoked {
					revokedAt <- time.Now()
				}
			})()

			stop := mosquittoSub(t, st.GlobalAddr(), d, version)
			tier.Eventually(t, 10*time.Second, "mosquitto_sub connected to "+home.Name, func() error {
				if n := home.Broker.Sessions(certID); n != 1 {
					return fmt.Errorf("%d sessions", n)
				}
				return nil
			})
			refused := home.Broker.Stats().Refused.Load()

			if code := apiPost(t, st, "/devices/"+d.name+"/revoke"); code != http.StatusAccepted {
				t.Fatalf("revoke: %d", code)
			}
			var at time.Time
			select {
			case at = <-revokedAt:
			case <-time.After(20 * time.Second):
				t.Fatalf("the certificate did not become REVOKED in %s", home.Name)
			}
			for home.Broker.Sessions(certID) != 0 {
				if time.Since(at) > 5*time.Second {
					t.Fatalf("the session is still open 5 s after the certificate became REVOKED in %s", home.Name)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if took := time.Since(at); took > time.Second {
				t.Errorf("the session was closed %v after the certificate became REVOKED, want within 1 s", took)
			}
			if version == "mqttv311" {
				// mosquitto_sub reconnects after a lost connection: refused.
				tier.Eventually(t, 10*time.Second, "mosquitto_sub's reconnect refused", func() error {
					if n := home.Broker.Stats().Refused.Load(); n == refused {
						return fmt.Errorf("no connection refused since the revoke")
					}
					return nil
				})
			}

			tier.Eventually(t, 20*time.Second, "certificate REVOKED in every region", func() error {
				for _, r := range st.Regions() {
					if c, ok := r.Registry.CertificateByID(certID); !ok || c.Status != fleet.CertRevoked {
						return fmt.Errorf("%s: certificate %q (registered %v)", r.Name, c.Status, ok)
					}
				}
				return nil
			})
			targets := map[string]string{"global": st.GlobalAddr()}
			for _, r := range st.Regions() {
				targets[r.Name] = r.Broker.Addr()
			}
			for label, addr := range targets {
				out, err := mosquittoPub(t, addr, d, d.name, "i/"+d.name+"/m", `{"message":"after revoke"}`, "-V", version)
				if err == nil || strings.Contains(out, "received CONNACK (0)") {
					t.Errorf("%s accepted the revoked device:\n%s", label, out)
				}
			}
			if n := home.Broker.Sessions(certID); n != 0 {
				t.Errorf("%d sessions of the revoked certificate in %s", n, home.Name)
			}

			out, exited := stop()
			if strings.Contains(strings.ToLower(out), "protocol error") {
				t.Errorf("mosquitto_sub saw a protocol error:\n%s", out)
			}
			switch version {
			case "mqttv5":
				if !strings.Contains(out, "Received DISCONNECT (135)") {
					t.Errorf("mosquitto_sub did not get DISCONNECT 0x87 (135, Not authorized):\n%s", out)
				}
			default:
				// 3.1.1: the connection was closed; mosquitto_sub tried to
				// reconnect and was refused (no second CONNACK).
				if exited || strings.Count(out, "received CONNACK (0)") != 1 || strings.Count(out, "sending CONNECT") < 2 {
					t.Errorf("mosquitto_sub (exited by itself: %v) did not reconnect and get refused:\n%s", exited, out)
				}
			}
		})
	}
}
