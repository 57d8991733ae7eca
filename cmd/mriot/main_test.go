package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// run executes the CLI with args and returns its output.
func run(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestPKICommands(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, context.Background(), "pki", "init", "--state-dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range []string{"root-ca.crt", "intermediate-ca.crt", "intermediate-ca.key", "ca-chain.crt", "server.crt", "server.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("pki init did not make %s: %v", f, err)
		}
	}
	if !strings.Contains(out, "CA certificate id:") {
		t.Errorf("pki init output:\n%s", out)
	}
	out, err = run(t, context.Background(), "pki", "device", "test_001", "test_002", "--state-dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range []string{"test_001.crt", "test_001.key", "test_002.crt"} {
		if _, err := os.Stat(filepath.Join(dir, "devices", f)); err != nil {
			t.Errorf("pki device did not make %s", f)
		}
	}
	if _, err := run(t, context.Background(), "pki", "device", "bad/name", "--state-dir", dir); err == nil {
		t.Error("pki device accepted an invalid thing name")
	}
	// --renew: a new certificate for test_001, the previous one kept.
	before, _ := os.ReadFile(filepath.Join(dir, "devices", "test_001.crt"))
	if out, err := run(t, context.Background(), "pki", "device", "test_001", "--renew", "--state-dir", dir); err != nil {
		t.Fatalf("pki device --renew: %v\n%s", err, out)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "devices", "test_001.crt"))
	kept, _ := os.ReadFile(filepath.Join(dir, "devices", "test_001.previous.crt"))
	if string(after) == string(before) || string(kept) != string(before) {
		t.Error("pki device --renew did not replace the certificate and keep the previous one")
	}
	if _, err := run(t, context.Background(), "pki", "device", "test_009", "--renew", "--state-dir", dir); err == nil {
		t.Error("pki device --renew renewed a device that has no certificate")
	}
}

func TestParseFaults(t *testing.T) {
	got, err := parseFaults([]string{"CreateThing=0.5", "AttachPolicy=1"})
	if err != nil || got["CreateThing"] != 0.5 || got["AttachPolicy"] != 1 {
		t.Fatalf("parseFaults = %v, %v", got, err)
	}
	for _, bad := range []string{"CreateThing", "=0.1", "CreateThing=2", "CreateThing=-1", "CreateThing=x"} {
		if _, err := parseFaults([]string{bad}); err == nil {
			t.Errorf("parseFaults(%q) accepted", bad)
		}
	}
}

func TestLocalFlagsAreChecked(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"local", "--quotas", "gcp"},
		{"local", "--fault", "CreateThing"},
		{"local", "--latency", "nowhere"},
		{"local", "--server-cert", "x.crt"},
		{"local", "--regions", "eu-west-1,eu-west-1"},
		{"local", "--down", "mars-1"},
	} {
		args = append(args, "--state-dir", dir, "--mqtt-port", "0", "--api-addr", "127.0.0.1:0", "--demo=false")
		if out, err := run(t, context.Background(), args...); err == nil {
			t.Errorf("mriot %v started:\n%s", args, out)
		}
	}
}

// syncWriter lets the test read the command's output while it runs.
type syncWriter = proc.Buffer

// TestLocalRunsTheDemo is `make run` in small: mriot local starts, prints its
// endpoints and ready, runs the demo to the end, serves, and stops cleanly
// when its context ends (Ctrl-C).
func TestLocalRunsTheDemo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncWriter{}
	cmd := newRootCmd()
	dir := t.TempDir()
	cmd.SetArgs([]string{"local", "--state-dir", dir, "--mqtt-port", "0", "--api-addr", "127.0.0.1:0"})
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	tier.Eventually(t, time.Minute, "the demo", func() error {
		select {
		case err := <-done:
			t.Fatalf("mriot local ended early: %v\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "serving; Ctrl-C stops") {
			return fmt.Errorf("not serving yet:\n%s", out)
		}
		return nil
	})
	text := out.String()
	for _, want := range []string{"ready in", "global endpoint (iot.example.com)", "region 0 eu-west-1", "region 1 us-west-2",
		"demo-001 refused", "demo-003 onboarded in eu-west-1, replicated: eu-west-1=ACTIVE us-west-2=ACTIVE",
		"iot.example.com: PUBACK, eu-west-1: PUBACK, us-west-2: PUBACK", "demo: done",
		// the suggested command issues the certificate where mosquitto_pub then looks for it
		"pki device test_001 --state-dir " + dir + " && mosquitto_pub"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", text)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mriot local did not stop within 10s of Ctrl-C")
	}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	last := ""
	for sc.Scan() {
		last = sc.Text()
	}
	if last != "shutting down" {
		t.Errorf("last line %q, want shutting down", last)
	}
}

// TestLocalStartsWithARegionDown: --down starts with the region down; the
// demo onboards through the next region and says the other is down.
func TestLocalStartsWithARegionDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncWriter{}
	cmd := newRootCmd()
	cmd.SetArgs([]string{"local", "--state-dir", t.TempDir(), "--mqtt-port", "0", "--api-addr", "127.0.0.1:0", "--down", "eu-west-1"})
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	tier.Eventually(t, time.Minute, "the demo", func() error {
		select {
		case err := <-done:
			t.Fatalf("mriot local ended early: %v\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "serving; Ctrl-C stops") {
			return fmt.Errorf("not serving yet:\n%s", out)
		}
		return nil
	})
	for _, want := range []string{"demo-001 onboarded in us-west-2, replicated: eu-west-1=down us-west-2=ACTIVE",
		"iot.example.com: PUBACK, eu-west-1: down, us-west-2: PUBACK",
		"telemetry in eu-west-1's replica of the data table: demo-001=0 demo-002=0 demo-003=0 (down: catches up when it is back)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mriot local did not stop within 10s of Ctrl-C")
	}
}
