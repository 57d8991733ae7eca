package local_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/tier"
	"github.com/mriot/mriot/internal/workflow/api"
)

// apiPostBody posts body to the API and decodes a 2xx answer into v.
func apiPostBody(t *testing.T, st *local.Stack, path, body string, v any) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+st.APIAddr()+path, "application/octet-stream", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("POST %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// mosquittoSubOne starts mosquitto_sub as device d (client id d.name) on
// filter through addr, printing topic and payload of the first message; it
// returns the output and a channel that yields the exit error.
func mosquittoSubOne(t *testing.T, addr string, d device, filter string) (*lockedBuffer, <-chan error) {
	t.Helper()
	bin := tier.Tool(t, "mosquitto_sub")
	host, port, _ := strings.Cut(addr, ":")
	if host == "127.0.0.1" {
		host = "localhost"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", port, "--cafile", d.cafile, "--cert", d.cert, "--key", d.key,
		"-i", d.name, "-q", "1", "-t", filter, "-C", "1", "-v", "-d")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		done <- cmd.Wait()
		cancel()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	return out, done
}

// TestDownlinkReachesTheDevice: POST /devices/{thing}/messages publishes in
// every region; a real mosquitto_sub, connected as the device through the
// global endpoint and subscribed to e/<thing>/#, receives it, as the device
// policy allows; another device may not subscribe to it.
func TestDownlinkReachesTheDevice(t *testing.T) {
	tier.Tool(t, "mosquitto_sub")
	st := startStack(t, local.Config{})
	d := onboard(t, st, "listener")
	other := onboard(t, st, "bystander")

	out, done := mosquittoSubOne(t, st.GlobalAddr(), d, "e/listener/#")
	var res api.DownlinkResult
	tier.Eventually(t, 20*time.Second, "the device's subscription", func() error {
		select {
		case err := <-done:
			t.Fatalf("mosquitto_sub ended before the message: %v\n%s", err, out)
		default:
		}
		res = api.DownlinkResult{}
		code, body := apiPostBody(t, st, "/devices/listener/messages?topic=e/listener/led&qos=1", `{"led":"on"}`, &res)
		if code != http.StatusAccepted || res.Sessions == 0 {
			return fmt.Errorf("HTTP %d: %s", code, body)
		}
		return nil
	})
	nearest := st.Regions()[0].Name
	if res.Sessions != 1 || res.Regions[nearest] != 1 || len(res.Regions) != len(st.Regions()) || res.Topic != "e/listener/led" || res.QoS != 1 {
		t.Errorf("answer %+v: want one session, in %s, every region asked", res, nearest)
	}
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), `e/listener/led {"led":"on"}`) {
			t.Fatalf("mosquitto_sub: %v\n%s", err, out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("mosquitto_sub got nothing:\n%s", out)
	}

	// Another device's subscription to the listener's topics is denied
	// (SUBACK failure), so no message of the listener reaches it.
	spy, spyDone := mosquittoSubOne(t, st.GlobalAddr(), other, "e/listener/#")
	select {
	case err := <-spyDone:
		if !strings.Contains(spy.String(), "All subscription requests were denied") {
			t.Fatalf("bystander subscribing to the listener's topics: %v\n%s", err, spy)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("bystander's denied subscription did not end mosquitto_sub:\n%s", spy)
	}

	for _, tc := range []struct {
		target string
		status int
	}{
		{"/devices/listener/messages?topic=e/bystander/led", http.StatusBadRequest},
		{"/devices/listener/messages?topic=i/listener/m", http.StatusBadRequest},
		{"/devices/nobody/messages?topic=e/nobody/led", http.StatusNotFound},
	} {
		if code, body := apiPostBody(t, st, tc.target, "x", nil); code != tc.status {
			t.Errorf("POST %s: %d, want %d: %s", tc.target, code, tc.status, body)
		}
	}
}

// TestRegisterCAInEveryRegion: POST /regions/{r}/ca registers a CA in one
// region, as AWS does, and a device of that CA is refused by the other
// regions' endpoints; POST /ca registers it in every region (a region that
// is down answers 503 and gets it when the call is repeated after it is
// back), after which the device onboards through the global endpoint.
func TestRegisterCAInEveryRegion(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	ctx := context.Background()
	home, away := st.Regions()[0], st.Regions()[1]
	ca, err := pki.NewRoot("Customer CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caID := fleet.CertificateID(ca.Cert)
	leaf, err := ca.IssueDevice("customer-001", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, err := leaf.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	d := device{name: "customer-001", cert: filepath.Join(dir, "d.crt"), key: filepath.Join(dir, "d.key"), cafile: st.PKI().Path(pki.RootCertFile)}
	if err := os.WriteFile(d.cert, []byte(leaf.CertPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.key, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}

	var one map[string]string
	if code, body := apiPostBody(t, st, "/regions/"+away.Name+"/ca", ca.CertPEM(), &one); code != http.StatusCreated || one["caCertificateId"] != caID {
		t.Fatalf("POST /regions/%s/ca: %d %s", away.Name, code, body)
	}
	if _, err := home.Registry.DescribeCACertificate(ctx, caID); err == nil {
		t.Fatalf("POST /regions/%s/ca registered the CA in %s too", away.Name, home.Name)
	}
	// The global endpoint sends the device to the nearest region, which
	// does not know its CA: refused at TLS, not even auto-registered.
	if out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/customer-001/m", `{"message":1}`); err == nil {
		t.Fatalf("a device of a CA registered in %s only connected through the global endpoint:\n%s", away.Name, out)
	}
	if _, ok := home.Registry.CertificateByID(fleet.CertificateID(leaf.Cert)); ok {
		t.Fatalf("%s auto-registered a certificate of a CA it does not have", home.Name)
	}

	if code := apiPost(t, st, "/regions/"+home.Name+"/down"); code != http.StatusOK {
		t.Fatalf("down: %d", code)
	}
	var regs api.CARegistrations
	code, body := apiPostBody(t, st, "/ca", ca.CertPEM(), nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "is down") {
		t.Fatalf("POST /ca with %s down: %d %s", home.Name, code, body)
	}
	if code := apiPost(t, st, "/regions/"+home.Name+"/up"); code != http.StatusOK {
		t.Fatalf("up: %d", code)
	}
	if code, body := apiPostBody(t, st, "/ca", ca.CertPEM(), &regs); code != http.StatusCreated {
		t.Fatalf("POST /ca: %d %s", code, body)
	}
	want := map[string]string{home.Name: api.CARegistered, away.Name: api.CAAlreadyRegistered}
	for region, status := range want {
		if got := regs.Regions[region]; got.Status != status || got.CACertificateID != caID {
			t.Errorf("POST /ca in %s: %+v, want %s %s", region, got, status, caID)
		}
	}
	onboardWith(t, st, d)
}

// onboardWith onboards d (its certificate made already) through the global
// endpoint: refused first while JITR runs, then live in every region.
func onboardWith(t *testing.T, st *local.Stack, d device) {
	t.Helper()
	if out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/"+d.name+"/m", `{"message":1}`); err == nil {
		t.Fatalf("first connection of %s accepted:\n%s", d.name, out)
	}
	waitLive(t, st, d.name)
	if out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/"+d.name+"/m", `{"message":2}`); err != nil || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("%s after onboarding: %v\n%s", d.name, err, out)
	}
}
