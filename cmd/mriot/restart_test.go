package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// The state tests run the real mriot binary, as a user does, and stop it as
// a user does (Ctrl-C) or as a crash does (kill -9).

// buildMriot builds the mriot binary into a test's directory.
func buildMriot(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mriot")
	goBin := "go"
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			goBin = p
		}
	}
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// mriotProcess is a running `mriot local`.
type mriotProcess struct {
	t       *testing.T
	cmd     *exec.Cmd
	out     *syncWriter
	exited  chan error
	dir     string
	global  string
	regions map[string]string
	api     string
	state   string // the banner's state line
}

var (
	bannerAddr  = regexp.MustCompile(`(?m)^  (global endpoint \(iot\.example\.com\)|region \d+ (\S+)|HTTP API)\s+(?:mqtts|http)://(\S+)$`)
	bannerState = regexp.MustCompile(`(?m)^  state \(--reset empties it\)\s+(.+)$`)
)

// startMriot starts `mriot local` on dir with free ports, no demo and no
// scheduled reconciler, and waits until it serves.
func startMriot(t *testing.T, bin, dir string, extra ...string) *mriotProcess {
	t.Helper()
	args := append([]string{"local", "--state-dir", dir, "--mqtt-port", "0", "--api-addr", "127.0.0.1:0",
		"--demo=false", "--reconcile-interval", "0"}, extra...)
	p := &mriotProcess{t: t, cmd: exec.Command(bin, args...), out: &syncWriter{}, exited: make(chan error, 1), dir: dir,
		regions: map[string]string{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	tier.Eventually(t, 30*time.Second, "mriot local serving", func() error {
		select {
		case err := <-p.exited:
			p.exited <- err
			t.Fatalf("mriot local exited: %v\n%s", err, p.out)
		default:
		}
		if !strings.Contains(p.out.String(), "serving; Ctrl-C stops") {
			return fmt.Errorf("not serving yet:\n%s", p.out)
		}
		return nil
	})
	text := p.out.String()
	for _, m := range bannerAddr.FindAllStringSubmatch(text, -1) {
		switch {
		case strings.HasPrefix(m[1], "global"):
			p.global = m[3]
		case m[1] == "HTTP API":
			p.api = m[3]
		default:
			p.regions[m[2]] = m[3]
		}
	}
	if m := bannerState.FindStringSubmatch(text); m != nil {
		p.state = m[1]
	}
	if p.global == "" || p.api == "" || len(p.regions) != 2 || p.state == "" {
		t.Fatalf("banner not understood:\n%s", text)
	}
	return p
}

// stop sends sig and waits for the process to end; it returns how.
func (p *mriotProcess) stop(sig syscall.Signal) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		return err
	case <-time.After(30 * time.Second):
		p.t.Fatalf("mriot local did not stop within 30s of %v:\n%s", sig, p.out)
		return nil
	}
}

// interrupt is Ctrl-C: the process must exit 0 after "shutting down".
func (p *mriotProcess) interrupt() {
	p.t.Helper()
	if err := p.stop(syscall.SIGINT); err != nil {
		p.t.Fatalf("after Ctrl-C: %v\n%s", err, p.out)
	}
	if !strings.HasSuffix(p.out.String(), "shutting down\n") {
		p.t.Fatalf("output after Ctrl-C:\n%s", p.out)
	}
}

type testDevice struct{ name, cert, key, cafile string }

func newDevice(t *testing.T, dir, name string) testDevice {
	t.Helper()
	store := pki.Store{Dir: dir}
	cert, key, err := store.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	return testDevice{name: name, cert: cert, key: key, cafile: store.Path(pki.RootCertFile)}
}

// pub runs mosquitto_pub as the device against addr: one QoS 1 message on
// its telemetry topic.
func pub(t *testing.T, addr string, d testDevice, msg string) (string, error) {
	t.Helper()
	bin := tier.Tool(t, "mosquitto_pub")
	host, port, _ := strings.Cut(addr, ":")
	if host == "127.0.0.1" {
		host = "localhost" // the server certificate's name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "--cafile", d.cafile, "--cert", d.cert, "--key", d.key,
		"-q", "1", "-d", "-t", "i/"+d.name+"/m", "-i", d.name, "-m", `{"message": "`+msg+`"}`).CombinedOutput()
	return string(out), err
}

// mustPub publishes and requires CONNACK (0) and PUBACK on the first
// connection: the device was onboarded already.
func mustPub(t *testing.T, addr string, d testDevice, msg string) {
	t.Helper()
	out, err := pub(t, addr, d, msg)
	if err != nil || !strings.Contains(out, "received CONNACK (0)") || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("%s via %s: the first connection did not get CONNACK (0) and PUBACK: %v\n%s", d.name, addr, err, out)
	}
}

func apiGet(t *testing.T, api, path string, v any) error {
	t.Helper()
	resp, err := http.Get("http://" + api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// deviceRegions is the device's certificate status in each region.
func deviceRegions(t *testing.T, api, name string) (map[string]string, bool, error) {
	var v struct {
		Live    bool `json:"live"`
		Regions map[string]struct {
			CertificateStatus string `json:"certificateStatus"`
		} `json:"regions"`
	}
	if err := apiGet(t, api, "/devices/"+name, &v); err != nil {
		return nil, false, err
	}
	out := map[string]string{}
	for r, s := range v.Regions {
		out[r] = s.CertificateStatus
	}
	return out, v.Live, nil
}

// onboard has the device's first connection refused while JITR runs, then
// waits until the device is ACTIVE in region (every region: "").
func onboard(t *testing.T, p *mriotProcess, d testDevice, region string) {
	t.Helper()
	out, err := pub(t, p.global, d, "first")
	if err == nil || strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("the first connection of %s was accepted; JITR drops it:\n%s", d.name, out)
	}
	tier.Eventually(t, 20*time.Second, d.name+" onboarded", func() error {
		regions, live, err := deviceRegions(t, p.api, d.name)
		if err != nil {
			return err
		}
		if region == "" && live || region != "" && regions[region] == "ACTIVE" {
			return nil
		}
		return fmt.Errorf("live %v, %v", live, regions)
	})
}

// waitTelemetry waits until the API's telemetry of the device holds every
// message of want.
func waitTelemetry(t *testing.T, api, device string, want []string) {
	t.Helper()
	tier.Eventually(t, 20*time.Second, device+"'s telemetry", func() error {
		var tel struct {
			Items []struct {
				Message string `json:"message"`
			} `json:"items"`
		}
		if err := apiGet(t, api, "/devices/"+device+"/telemetry?limit=100", &tel); err != nil {
			return err
		}
		var got []string
		for _, it := range tel.Items {
			got = append(got, it.Message)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				return fmt.Errorf("%q missing from %v", w, got)
			}
		}
		return nil
	})
}

func wantRestored(t *testing.T, p *mriotProcess, devices int) {
	t.Helper()
	if want := fmt.Sprintf("%s: %d devices restored", filepath.Join(p.dir, "state.db"), devices); !strings.HasPrefix(p.state, want) {
		t.Fatalf("state line %q, want it to start with %q", p.state, want)
	}
}

// TestStateSurvivesRestarts runs the real binary through the restarts a
// user's stack goes through: devices onboarded and telemetry acknowledged
// before a Ctrl-C or a kill -9 are there after the restart (the devices
// connect at once, with no JITR), and --reset starts over.
func TestStateSurvivesRestarts(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	if testing.Short() {
		t.Skip("builds and runs the mriot binary: not in -short (the race tier), where it adds nothing")
	}
	bin := buildMriot(t)

	t.Run("Ctrl-C", func(t *testing.T) {
		dir := t.TempDir()
		p := startMriot(t, bin, dir)
		wantRestored(t, p, 0)
		devs := []testDevice{newDevice(t, dir, "dev-1"), newDevice(t, dir, "dev-2")}
		sent := map[string][]string{}
		for _, d := range devs {
			onboard(t, p, d, "")
			for i := range 3 {
				msg := fmt.Sprintf("%s before the restart %d", d.name, i)
				mustPub(t, p.global, d, msg)
				sent[d.name] = append(sent[d.name], msg)
			}
		}
		p.interrupt()

		p = startMriot(t, bin, dir)
		wantRestored(t, p, 2)
		for _, d := range devs {
			// No JITR: the first connection is accepted, through the
			// global endpoint and every region's.
			for _, addr := range append([]string{p.global}, p.regions["eu-west-1"], p.regions["us-west-2"]) {
				msg := fmt.Sprintf("%s after the restart via %s", d.name, addr)
				mustPub(t, addr, d, msg)
				sent[d.name] = append(sent[d.name], msg)
			}
		}
		for _, d := range devs {
			waitTelemetry(t, p.api, d.name, sent[d.name])
		}
		p.interrupt()
	})

	t.Run("kill -9", func(t *testing.T) {
		dir := t.TempDir()
		p := startMriot(t, bin, dir)
		old := newDevice(t, dir, "old")
		onboard(t, p, old, "")
		p.interrupt()

		// Replication takes an hour: what us-west-2 stores reaches
		// eu-west-1, whose replica the API reads, only through the
		// outbox the kill leaves behind; and a device onboarded in
		// eu-west-1 reaches us-west-2 only through it too.
		p = startMriot(t, bin, dir, "--replication-lag", "1h")
		wantRestored(t, p, 1)
		fresh := newDevice(t, dir, "fresh")
		onboard(t, p, fresh, "eu-west-1")
		var acked []string
		for i := range 3 {
			for region, addr := range p.regions {
				msg := fmt.Sprintf("acknowledged via %s %d", region, i)
				mustPub(t, addr, old, msg)
				acked = append(acked, msg)
			}
		}
		if err := p.stop(syscall.SIGKILL); err == nil {
			t.Fatal("mriot local exited 0 on SIGKILL")
		}

		p = startMriot(t, bin, dir)
		wantRestored(t, p, 2)
		waitTelemetry(t, p.api, "old", acked)
		mustPub(t, p.global, old, "after the kill")
		mustPub(t, p.regions["eu-west-1"], fresh, "after the kill")
		// The onboarding replicated after the restart: the device connects
		// at once to the region that never saw it before the kill.
		tier.Eventually(t, 20*time.Second, "fresh live everywhere", func() error {
			if _, live, err := deviceRegions(t, p.api, "fresh"); err != nil || !live {
				return fmt.Errorf("live %v, %v", live, err)
			}
			return nil
		})
		mustPub(t, p.regions["us-west-2"], fresh, "after the kill")
		p.interrupt()
	})

	t.Run("--reset", func(t *testing.T) {
		dir := t.TempDir()
		p := startMriot(t, bin, dir)
		d := newDevice(t, dir, "dev")
		onboard(t, p, d, "")
		root, err := os.ReadFile(filepath.Join(dir, pki.RootCertFile))
		if err != nil {
			t.Fatal(err)
		}
		// A second stack on the same state is refused, and --reset does
		// not delete the state under the first.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "local", "--state-dir", dir, "--mqtt-port", "0", "--api-addr", "127.0.0.1:0",
			"--demo=false", "--reset").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "in use by another process") {
			t.Fatalf("a second mriot local on the same --state-dir: %v\n%s", err, out)
		}
		p.interrupt()

		p = startMriot(t, bin, dir, "--reset")
		wantRestored(t, p, 0)
		// The PKI is kept: the device's certificate is still good, and it
		// is onboarded again from the start.
		if now, _ := os.ReadFile(filepath.Join(dir, pki.RootCertFile)); string(now) != string(root) {
			t.Error("--reset changed the root CA")
		}
		onboard(t, p, d, "")
		var tel struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := apiGet(t, p.api, "/devices/dev/telemetry?limit=100", &tel); err != nil || len(tel.Items) != 0 {
			t.Errorf("telemetry after --reset: %d items, %v", len(tel.Items), err)
		}
		p.interrupt()
	})
}
