package sim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/tier"
)

func fastBackoff() sim.Backoff {
	return sim.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}
}

// TestRunOnboardsAfterRefusals: each device is refused its first attempts
// (dropped, or refused by CONNACK), backs off, retries, then publishes its
// messages with QoS 1 and gets every PUBACK.
func TestRunOnboardsAfterRefusals(t *testing.T) {
	cases := []struct {
		name        string
		how         refusal
		refuseFirst int
		devices     int
		messages    int
	}{
		{"admitted at once", drop, 0, 3, 2},
		{"dropped twice, JITR style", drop, 2, 5, 3},
		{"refused by CONNACK three times", connack, 3, 4, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			hook := newJITRHook(tc.refuseFirst, tc.how)
			addr, _ := startBroker(t, p, hook)
			var devs []sim.Device
			for i := range tc.devices {
				devs = append(devs, p.device(t, p.inter, fmt.Sprintf("dev-%03d", i)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := sim.Run(ctx, sim.Config{
				Endpoint: addr, RootPool: p.rootPool(), Devices: devs,
				Rate: 100, Messages: tc.messages, Backoff: fastBackoff(), AckTimeout: 5 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			if ctx.Err() != nil {
				t.Fatalf("run did not finish by itself: %v", s)
			}
			t.Logf("summary:\n%s", s)
			n := int64(tc.devices)
			want := sim.Summary{Devices: tc.devices, Onboarded: tc.devices, Refused: n * int64(tc.refuseFirst),
				Sent: n * int64(tc.messages), Acked: n * int64(tc.messages)}
			if s.Devices != want.Devices || s.Onboarded != want.Onboarded || s.Refused != want.Refused ||
				s.Sent != want.Sent || s.Acked != want.Acked || s.Errors != 0 {
				t.Fatalf("summary:\n%s\nwant devices %d onboarded %d refused %d sent %d acked %d errors 0",
					s, want.Devices, want.Onboarded, want.Refused, want.Sent, want.Acked)
			}
			if !(0 < s.FirstConnect.P50 && s.FirstConnect.P50 <= s.FirstConnect.P99 && s.FirstConnect.P99 <= s.FirstConnect.Max) {
				t.Fatalf("first-connect latencies %+v", s.FirstConnect)
			}
			if tc.refuseFirst > 0 {
				var refusals int64
				for _, c := range s.RefusalReasons {
					refusals += c
				}
				if refusals != s.Refused {
					t.Fatalf("refusal reasons %v do not add up to %d", s.RefusalReasons, s.Refused)
				}
			}
			for _, d := range devs {
				if got := hook.attemptsOf(d.Name); got != tc.refuseFirst+1 {
					t.Errorf("%s: broker saw %d connection attempts, want %d", d.Name, got, tc.refuseFirst+1)
				}
				msgs := hook.publishedTo(sim.Topic(d.Name))
				if len(msgs) != tc.messages {
					t.Fatalf("%s: broker got %d messages, want %d", d.Name, len(msgs), tc.messages)
				}
				for i, m := range msgs {
					var body struct {
						Message struct {
							Device string `json:"device"`
							Seq    int    `json:"seq"`
						} `json:"message"`
					}
					if err := json.Unmarshal(m, &body); err != nil {
						t.Fatalf("payload %s: %v", m, err)
					}
					if body.Message.Device != d.Name || body.Message.Seq != i+1 {
						t.Fatalf("%s message %d: %s", d.Name, i, m)
					}
				}
			}
			if hook.badIDs != 0 {
				t.Fatalf("%d connections with a client id other than the thing name", hook.badIDs)
			}
		})
	}
}

// TestRunBacksOffWithJitter: a device refused four times waits the jittered
// delay before each retry: with the jitter at its top, the ceilings 40, 80,
// 80 and 80 ms; at its bottom, no wait.
func TestRunBacksOffWithJitter(t *testing.T) {
	b := sim.Backoff{Initial: 40 * time.Millisecond, Max: 80 * time.Millisecond}
	cases := []struct {
		name     string
		jitter   func(int64) int64
		min, max time.Duration
	}{
		{"top", func(n int64) int64 { return n - 1 }, 280 * time.Millisecond, 5 * time.Second},
		{"bottom", func(int64) int64 { return 0 }, 0, 2 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPKI(t)
			hook := newJITRHook(4, drop)
			addr, _ := startBroker(t, p, hook)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var mu sync.Mutex
			var asked []int64
			jitter := func(n int64) int64 {
				mu.Lock()
				asked = append(asked, n)
				mu.Unlock()
				return tc.jitter(n)
			}
			s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(),
				Devices: []sim.Device{p.device(t, p.inter, "slow-1")}, Messages: 1, Rate: 100, Backoff: b, Jitter: jitter})
			if err != nil {
				t.Fatal(err)
			}
			if s.Onboarded != 1 || s.Refused != 4 || s.Acked != 1 {
				t.Fatalf("summary %s", s)
			}
			wantAsked := []int64{int64(40*time.Millisecond) + 1, int64(80*time.Millisecond) + 1, int64(80*time.Millisecond) + 1, int64(80*time.Millisecond) + 1}
			if fmt.Sprint(asked) != fmt.Sprint(wantAsked) {
				t.Fatalf("jitter ranges %v, want %v", asked, wantAsked)
			}
			if got := s.FirstConnect.Max; got < tc.min || got > tc.max {
				t.Fatalf("first connect after %s, want between %s and %s", got, tc.min, tc.max)
			}
		})
	}
}

func TestRunGivesUpAfterMaxAttempts(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(-1, drop)
	addr, _ := startBroker(t, p, hook)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(),
		Devices:  []sim.Device{p.device(t, p.inter, "never-1"), p.device(t, p.inter, "never-2")},
		Messages: 1, Backoff: fastBackoff(), MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if s.Onboarded != 0 || s.Refused != 6 || s.Sent != 0 || s.Errors != 2 {
		t.Fatalf("summary %s", s)
	}
	if !strings.Contains(s.String(), "gave up after 3 connection attempts") {
		t.Fatalf("summary does not say why:\n%s", s)
	}
}

// TestRunHintsAtAStuckDevice: a device refused StuckAfter times in a row
// gets one hint on the progress output (not one per refusal), with what a
// person can do about it.
func TestRunHintsAtAStuckDevice(t *testing.T) {
	p := newPKI(t)
	addr, _ := startBroker(t, p, newJITRHook(-1, drop))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	_, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(),
		Devices:  []sim.Device{p.device(t, p.inter, "revoked-1"), p.device(t, p.inter, "revoked-2")},
		Messages: 1, Backoff: fastBackoff(), MaxAttempts: sim.StuckAfter + 2, Progress: &out, ProgressInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if n := strings.Count(text, "hint: "); n != 1 {
		t.Fatalf("%d hints, want 1:\n%s", n, text)
	}
	for _, want := range []string{"refused 5 times in a row", sim.ClosedWithoutConnack, "revoked", "GET /devices/revoked-"} {
		if !strings.Contains(text, want) {
			t.Errorf("hint lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "network Error") {
		t.Errorf("the hint quotes paho's error:\n%s", text)
	}
}

// TestRunBacksOffAfterLostConnections: a device the server drops after it
// connected (here on every publish, as IoT Core does on a denied publish)
// backs off before reconnecting, more each time, instead of reconnecting in a
// tight loop.
func TestRunBacksOffAfterLostConnections(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(0, drop)
	hook.dropOnPublish = true
	addr, _ := startBroker(t, p, hook)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(),
		Devices: []sim.Device{p.device(t, p.inter, "dropped-1")}, Messages: 0, Rate: 50, AckTimeout: 200 * time.Millisecond,
		Backoff: sim.Backoff{Initial: 100 * time.Millisecond, Max: 400 * time.Millisecond},
		Jitter:  func(n int64) int64 { return n - 1 }, // the longest delay of each step
	})
	if err != nil {
		t.Fatal(err)
	}
	// Delays of 100, 200, 400, 400... ms: about six connections in 1.5 s.
	if got := hook.attemptsOf("dropped-1"); got < 2 || got > 8 {
		t.Fatalf("%d connections in 1.5s, want 2 to 8 (backoff between lost connections); summary:\n%s", got, s)
	}
	if s.Acked != 0 || s.Errors == 0 {
		t.Errorf("summary:\n%s", s)
	}
}

// TestRunRefusedByTLS: a certificate from a CA the endpoint does not trust
// fails the handshake; the device retries and is counted as refused.
func TestRunRefusedByTLS(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(0, drop)
	addr, _ := startBroker(t, p, hook)
	stranger, err := pki.NewRoot("unregistered CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(),
		Devices:  []sim.Device{p.device(t, stranger, "stranger-1")},
		Messages: 1, Backoff: fastBackoff(), MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.Onboarded != 0 || s.Refused != 2 || hook.attemptsOf("stranger-1") != 0 {
		t.Fatalf("summary %s (broker saw %d attempts)", s, hook.attemptsOf("stranger-1"))
	}
}

// TestRunStopsOnCancel: an open-ended run publishes until the context is
// cancelled, then closes every connection and returns promptly.
func TestRunStopsOnCancel(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(1, drop)
	addr, srv := startBroker(t, p, hook)
	var progress syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var devs []sim.Device
	for i := range 4 {
		devs = append(devs, p.device(t, p.inter, fmt.Sprintf("run-%d", i)))
	}
	type result struct {
		s   sim.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(), Devices: devs,
			Rate: 50, Backoff: fastBackoff(), Progress: &progress, ProgressInterval: 20 * time.Millisecond})
		done <- result{s, err}
	}()
	tier.Eventually(t, 20*time.Second, "every device publishes 5 messages", func() error {
		for _, d := range devs {
			if n := len(hook.publishedTo(sim.Topic(d.Name))); n < 5 {
				return fmt.Errorf("%s published %d", d.Name, n)
			}
		}
		return nil
	})
	if connected := atomic.LoadInt64(&srv.Info.ClientsConnected); connected != 4 {
		t.Fatalf("%d clients connected, want 4", connected)
	}
	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	s := r.s
	// Every device had 5 messages received; at most one each may be in
	// flight, unacknowledged, when the run is cancelled.
	if s.Onboarded != 4 || s.Refused != 4 || s.Sent < 20 || s.Acked < 16 || s.Sent > s.Acked+4 {
		t.Fatalf("summary %s", s)
	}
	if s.Errors != 0 {
		t.Fatalf("a cancel is no error: %s", s)
	}
	tier.Eventually(t, 5*time.Second, "every client disconnects after Run returned", func() error {
		if n := atomic.LoadInt64(&srv.Info.ClientsConnected); n != 0 {
			return fmt.Errorf("%d clients still connected", n)
		}
		return nil
	})
	out := progress.String()
	if !strings.Contains(out, "connected 4/4") || !strings.Contains(out, "onboarded 4/4") {
		t.Fatalf("progress lines:\n%s", out)
	}
}

// TestRunBoundsDialConcurrency: with DialConcurrency 2 the broker never
// sees more than two connection attempts in progress, and does see two.
func TestRunBoundsDialConcurrency(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(0, drop)
	hook.connectHold = 100 * time.Millisecond
	addr, _ := startBroker(t, p, hook)
	var devs []sim.Device
	for i := range 8 {
		devs = append(devs, p.device(t, p.inter, fmt.Sprintf("burst-%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sim.Run(ctx, sim.Config{Endpoint: addr, RootPool: p.rootPool(), Devices: devs,
		Messages: 1, Rate: 100, Backoff: fastBackoff(), DialConcurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.Onboarded != 8 || s.Acked != 8 {
		t.Fatalf("summary %s", s)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.maxInConn != 2 {
		t.Fatalf("at most %d connection attempts in progress, want 2", hook.maxInConn)
	}
}

// TestRunMintsDevicesAndReadsFiles: Count+Mint with certificates on disk,
// written by the pki store as `mriot pki device` does, and a CA file.
func TestRunMintsDevicesAndReadsFiles(t *testing.T) {
	p := newPKI(t)
	hook := newJITRHook(1, drop)
	addr, _ := startBroker(t, p, hook)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, []byte(p.root.CertPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	mint := func(i int) (sim.Device, error) {
		name := fmt.Sprintf("minted-%d", i)
		leaf, err := p.inter.IssueDevice(name, time.Hour)
		if err != nil {
			return sim.Device{}, err
		}
		key, err := leaf.KeyPEM()
		if err != nil {
			return sim.Device{}, err
		}
		d := sim.Device{Name: name, CertFile: filepath.Join(dir, name+".crt"), KeyFile: filepath.Join(dir, name+".key")}
		if err := os.WriteFile(d.CertFile, []byte(leaf.CertPEM()), 0o600); err != nil {
			return sim.Device{}, err
		}
		return d, os.WriteFile(d.KeyFile, []byte(key), 0o600)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := sim.Run(ctx, sim.Config{Endpoint: addr, CAFile: caFile, Count: 6, Mint: mint,
		Messages: 2, Rate: 100, Backoff: fastBackoff()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Devices != 6 || s.Onboarded != 6 || s.Refused != 6 || s.Acked != 12 || s.Errors != 0 {
		t.Fatalf("summary %s", s)
	}
	// A device whose certificate cannot be made is an error of the summary.
	failing := func(i int) (sim.Device, error) {
		if i == 1 {
			return sim.Device{}, fmt.Errorf("disk full")
		}
		return mint(i + 10)
	}
	s, err = sim.Run(ctx, sim.Config{Endpoint: addr, CAFile: caFile, Count: 3, Mint: failing,
		Messages: 1, Rate: 100, Backoff: fastBackoff()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Onboarded != 2 || s.Errors != 1 || s.ErrorReasons["make device 1: disk full"] != 1 {
		t.Fatalf("summary %s", s)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	p := newPKI(t)
	good := p.device(t, p.inter, "good-1")
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  sim.Config
		want string
	}{
		{"no endpoint", sim.Config{Devices: []sim.Device{good}}, "no endpoint"},
		{"no devices", sim.Config{Endpoint: "127.0.0.1:1"}, "no devices"},
		{"count without mint", sim.Config{Endpoint: "127.0.0.1:1", Count: 3}, "no devices"},
		{"missing CA file", sim.Config{Endpoint: "127.0.0.1:1", CAFile: filepath.Join(dir, "nope"), Devices: []sim.Device{good}}, "read CA file"},
		{"CA file without PEM", sim.Config{Endpoint: "127.0.0.1:1", CAFile: notPEM, Devices: []sim.Device{good}}, "no PEM certificate"},
		{"missing cert file", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{{Name: "d1", CertFile: filepath.Join(dir, "d1.crt"), KeyFile: filepath.Join(dir, "d1.key")}}}, "load certificate"},
		{"no certificate", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{{Name: "d1"}}}, "no certificate"},
		{"bad thing name", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{{Name: "bad name", Certificate: good.Certificate}}}, "thing name"},
		{"device twice", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{good, good}}, "twice"},
		{"negative messages", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{good}, Messages: -1}, "negative"},
		{"backoff max below initial", sim.Config{Endpoint: "127.0.0.1:1", Devices: []sim.Device{good}, Backoff: sim.Backoff{Initial: time.Second, Max: time.Millisecond}}, "backoff"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sim.Run(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	b := sim.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	top := func(n int64) int64 { return n - 1 }
	bottom := func(int64) int64 { return 0 }
	cases := []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{60, time.Second},
		{1 << 30, time.Second},
	}
	for _, tc := range cases {
		if got := b.Delay(tc.attempt, top); got != tc.ceiling {
			t.Errorf("attempt %d: top delay %s, want %s", tc.attempt, got, tc.ceiling)
		}
		if got := b.Delay(tc.attempt, bottom); got != 0 {
			t.Errorf("attempt %d: bottom delay %s, want 0 (full jitter)", tc.attempt, got)
		}
	}
	huge := sim.Backoff{Initial: time.Hour, Max: 1<<63 - 1}
	if got := huge.Delay(200, top); got <= 0 {
		t.Fatalf("overflowed: %s", got)
	}
}

func TestSummaryString(t *testing.T) {
	s := sim.Summary{Devices: 200, Onboarded: 199, Refused: 210,
		RefusalReasons: map[string]int64{"connect: EOF": 200, "connect: no answer within 10s": 10},
		FirstConnect:   sim.Latency{P50: 1234 * time.Millisecond, P99: 3456 * time.Millisecond, Max: 4 * time.Second},
		Sent:           1990, Acked: 1989, Errors: 1, ErrorReasons: map[string]int64{"publish: no answer within 10s": 1},
		Elapsed: 12 * time.Second}
	got := s.String()
	for _, want := range []string{"devices: 200, onboarded: 199, refused attempts: 210", "p50 1.23s, p99 3.46s, max 4s",
		"1990 sent, 1989 acknowledged; errors: 1", "200  connect: EOF", "1  publish: no answer"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q missing from\n%s", want, got)
		}
	}
	if strings.Index(got, "connect: EOF") > strings.Index(got, "no answer within 10s") {
		t.Errorf("reasons not sorted by count:\n%s", got)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer = proc.Buffer
