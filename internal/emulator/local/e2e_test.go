package local_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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
)

func startStack(t *testing.T, cfg local.Config) *local.Stack {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:0"
	}
	// STACK_LOG=FILE keeps the stack's JSON logs of the test (the last
	// stack started, with -count>1), for a failure seen only under load.
	if f := os.Getenv("STACK_LOG"); f != "" && cfg.Log == nil {
		fh, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fh.Close() })
		cfg.Log = slog.New(slog.NewJSONHandler(fh, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := local.Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		cancel()
		for _, d := range st.DeadLetters() {
			t.Logf("dead letter: %s %s: %s", d.Region, d.Function, d.Err)
		}
	})
	return st
}

type device struct{ name, cert, key, cafile string }

// mosquittoPub runs the article's mosquitto_pub command against addr.
func mosquittoPub(t *testing.T, addr string, d device, clientID, topic, msg string, extra ...string) (string, error) {
	t.Helper()
	bin := tier.Tool(t, "mosquitto_pub")
	host, port, _ := strings.Cut(addr, ":")
	if host == "127.0.0.1" {
		host = "localhost" // the server certificate's SAN, as iot.example.com would be
	}
	args := append([]string{"-h", host, "-p", port, "--cafile", d.cafile, "--cert", d.cert, "--key", d.key,
		"-q", "1", "-d", "-t", topic, "-i", clientID, "-m", msg}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

func apiGet(t *testing.T, st *local.Stack, path string, v any) int {
	t.Helper()
	resp, err := http.Get("http://" + st.APIAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, body)
		}
	}
	return resp.StatusCode
}

func apiPost(t *testing.T, st *local.Stack, path string) int {
	t.Helper()
	resp, err := http.Post("http://"+st.APIAddr()+path, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

type deviceView struct {
	Status  string `json:"status"`
	Live    bool   `json:"live"`
	Regions map[string]struct {
		Thing             bool   `json:"thing"`
		CertificateStatus string `json:"certificateStatus"`
		PrincipalAttached bool   `json:"principalAttached"`
		PolicyAttached    bool   `json:"policyAttached"`
		Error             string `json:"error"`
	} `json:"regions"`
}

// waitLive polls the API until the device is live in every region.
func waitLive(t *testing.T, st *local.Stack, name string) deviceView {
	t.Helper()
	var v deviceView
	tier.Eventually(t, 20*time.Second, name+" live in every region", func() error {
		v = deviceView{}
		if code := apiGet(t, st, "/devices/"+name, &v); code != http.StatusOK || !v.Live {
			return fmt.Errorf("HTTP %d: %+v", code, v)
		}
		return nil
	})
	return v
}

// articleTest is the article's test: refused first, onboarded everywhere,
// then QoS 1 publishes with PUBACK through the global endpoint and every
// regional endpoint, and the messages are readable from the telemetry API.
func articleTest(t *testing.T, st *local.Stack, d device) {
	out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/"+d.name+"/m", `{"message": "Hello From Test-001"}`)
	if err == nil || strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("first connection was accepted; IoT Core drops it while JITR runs:\n%s", out)
	}
	v := waitLive(t, st, d.name)
	if len(v.Regions) != len(st.Regions()) {
		t.Fatalf("regions in the device view: %+v", v.Regions)
	}
	targets := map[string]string{"global": st.GlobalAddr()}
	for _, r := range st.Regions() {
		targets[r.Name] = r.Broker.Addr()
	}
	for label, addr := range targets {
		for _, proto := range []string{"mqttv311", "mqttv5"} {
			msg := fmt.Sprintf(`{"message": "via %s %s"}`, label, proto)
			out, err := mosquittoPub(t, addr, d, d.name, "i/"+d.name+"/m", msg, "-V", proto)
			if err != nil || !strings.Contains(out, "received PUBACK") {
				t.Fatalf("publish via %s (%s): %v\n%s", label, proto, err, out)
			}
		}
	}
	if err := st.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	var tel struct {
		Items []struct {
			Device  string          `json:"device"`
			Region  string          `json:"region"`
			Message json.RawMessage `json:"message"`
		} `json:"items"`
	}
	if code := apiGet(t, st, "/devices/"+d.name+"/telemetry?limit=100", &tel); code != http.StatusOK {
		t.Fatalf("telemetry: %d", code)
	}
	if want := 2 * len(targets); len(tel.Items) != want {
		t.Fatalf("telemetry has %d messages, want %d: %+v", len(tel.Items), want, tel.Items)
	}
	regions := map[string]bool{}
	for _, it := range tel.Items {
		regions[it.Region] = true
		if it.Device != d.name || !strings.HasPrefix(string(it.Message), `"via `) {
			t.Errorf("telemetry item %+v", it)
		}
	}
	if len(regions) != len(st.Regions()) {
		t.Errorf("messages were stored by regions %v, want every region", regions)
	}
}

func TestArticleWithMriotPKI(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	certFile, keyFile, err := st.PKI().Device("test_001")
	if err != nil {
		t.Fatal(err)
	}
	articleTest(t, st, device{name: "test_001", cert: certFile, key: keyFile, cafile: st.PKI().Path(pki.RootCertFile)})
}

// TestArticleWithOpenSSLChain builds the CA chain with openssl the article's
// way (RSA root, intermediate, server and client certificates) and runs the
// same test: --ca registers the intermediate, --server-cert replaces the
// server certificate with the openssl-made one (file holding the chain).
func TestArticleWithOpenSSLChain(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	openssl := tier.Tool(t, "openssl")
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(openssl, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ext.cnf", `[v3_intermediate_ca]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, digitalSignature, cRLSign, keyCertSign
[server_cert]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:iot.example.com, DNS:localhost, IP:127.0.0.1
[usr_cert]
basicConstraints = CA:FALSE
keyUsage = critical, nonRepudiation, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth, emailProtection
`)
	run("genrsa", "-out", "ca.key", "2048")
	run("req", "-key", "ca.key", "-new", "-x509", "-days", "7300", "-sha256", "-out", "ca.crt",
		"-subj", "/C=SE/ST=Scania/L=Malmo/O=MyOrg/CN=Root CA", "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	sign := func(name, subj, ext, issuerCert, issuerKey string) {
		run("genrsa", "-out", name+".key", "2048")
		run("req", "-key", name+".key", "-new", "-sha256", "-out", name+".csr", "-subj", subj)
		run("x509", "-req", "-in", name+".csr", "-CA", issuerCert, "-CAkey", issuerKey, "-CAcreateserial",
			"-days", "365", "-sha256", "-extfile", "ext.cnf", "-extensions", ext, "-out", name+".crt")
	}
	sign("ca_intermediate", "/C=SE/ST=Scania/L=Malmo/O=MyOrg/CN=Intermediate CA", "v3_intermediate_ca", "ca.crt", "ca.key")
	sign("iot.example.com", "/C=SE/ST=Scania/L=Malmo/O=MyOrg/CN=iot.example.com", "server_cert", "ca_intermediate.crt", "ca_intermediate.key")
	sign("test_001", "/C=SE/ST=Scania/L=Malmo/O=MyOrg/CN=test_001", "usr_cert", "ca_intermediate.crt", "ca_intermediate.key")
	srv, _ := os.ReadFile(filepath.Join(dir, "iot.example.com.crt"))
	inter, _ := os.ReadFile(filepath.Join(dir, "ca_intermediate.crt"))
	write("server-chain.crt", string(srv)+string(inter))

	st := startStack(t, local.Config{
		CAFiles:        []string{filepath.Join(dir, "ca_intermediate.crt")},
		ServerCertFile: filepath.Join(dir, "server-chain.crt"),
		ServerKeyFile:  filepath.Join(dir, "iot.example.com.key"),
	})
	articleTest(t, st, device{name: "test_001", cert: filepath.Join(dir, "test_001.crt"), key: filepath.Join(dir, "test_001.key"), cafile: filepath.Join(dir, "ca.crt")})
}

func onboard(t *testing.T, st *local.Stack, name string) device {
	t.Helper()
	certFile, keyFile, err := st.PKI().Device(name)
	if err != nil {
		t.Fatal(err)
	}
	d := device{name: name, cert: certFile, key: keyFile, cafile: st.PKI().Path(pki.RootCertFile)}
	if out, err := mosquittoPub(t, st.GlobalAddr(), d, name, "i/"+name+"/m", `{"message":1}`); err == nil {
		t.Fatalf("first connection of %s accepted:\n%s", name, out)
	}
	waitLive(t, st, name)
	return d
}

func TestPolicy(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{})
	a := onboard(t, st, "dev-a")
	onboard(t, st, "dev-b")

	t.Run("another device's topic", func(t *testing.T) {
		out, err := mosquittoPub(t, st.GlobalAddr(), a, "dev-a", "i/dev-b/m", `{"message":"spoof"}`)
		if err == nil || strings.Contains(out, "received PUBACK") {
			t.Fatalf("dev-a published to dev-b's topic:\n%s", out)
		}
	})
	t.Run("client id other than the thing name", func(t *testing.T) {
		out, err := mosquittoPub(t, st.GlobalAddr(), a, "dev-b", "i/dev-b/m", `{"message":"spoof"}`)
		if err == nil || strings.Contains(out, "received CONNACK (0)") {
			t.Fatalf("dev-a connected as dev-b:\n%s", out)
		}
	})
	t.Run("certificate of an unregistered CA", func(t *testing.T) {
		root, err := pki.NewRoot("Rogue Root", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := root.IssueDevice("dev-a", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		key, _ := leaf.KeyPEM()
		rogue := device{name: "dev-a", cert: filepath.Join(dir, "r.crt"), key: filepath.Join(dir, "r.key"), cafile: a.cafile}
		_ = os.WriteFile(rogue.cert, []byte(leaf.CertPEM()), 0o600)
		_ = os.WriteFile(rogue.key, []byte(key), 0o600)
		out, err := mosquittoPub(t, st.GlobalAddr(), rogue, "dev-a", "i/dev-a/m", `{"message":"rogue"}`)
		if err == nil || strings.Contains(out, "received CONNACK (0)") {
			t.Fatalf("a certificate of an unregistered CA connected:\n%s", out)
		}
		for _, r := range st.Regions() {
			if _, ok := r.Registry.CertificateByID(fleet.CertificateID(leaf.Cert)); ok {
				t.Errorf("%s registered the rogue certificate", r.Name)
			}
		}
	})
	t.Run("own topic still works", func(t *testing.T) {
		out, err := mosquittoPub(t, st.GlobalAddr(), a, "dev-a", "i/dev-a/m", `{"message":"ok"}`)
		if err != nil || !strings.Contains(out, "received PUBACK") {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}

func TestRegionDownFailsOver(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}})
	d := onboard(t, st, "roamer")
	primary, other := st.Regions()[0], st.Regions()[1]
	if code := apiPost(t, st, "/regions/"+primary.Name+"/down"); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("mark down: %d", code)
	}
	before := other.Broker.Stats().Connected.Load()
	out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/"+d.name+"/m", `{"message":"failover"}`)
	if err != nil || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("publish through the global endpoint with %s down: %v\n%s", primary.Name, err, out)
	}
	if got := other.Broker.Stats().Connected.Load(); got != before+1 {
		t.Errorf("%s accepted %d new connections, want 1 (the failover)", other.Name, got-before)
	}
	if out, err := mosquittoPub(t, primary.Broker.Addr(), d, d.name, "i/"+d.name+"/m", `{"message":"x"}`); err == nil {
		t.Errorf("the endpoint of a region marked down accepted a connection:\n%s", out)
	}
	if code := apiPost(t, st, "/regions/"+primary.Name+"/up"); code != http.StatusOK && code != http.StatusNoContent {
		t.Fatalf("mark up: %d", code)
	}
	before = primary.Broker.Stats().Connected.Load()
	if out, err := mosquittoPub(t, st.GlobalAddr(), d, d.name, "i/"+d.name+"/m", `{"message":"back"}`); err != nil {
		t.Fatalf("after the region came back: %v\n%s", err, out)
	}
	if got := primary.Broker.Stats().Connected.Load(); got != before+1 {
		t.Errorf("the nearest region did not take the connection back after it came up")
	}
}
