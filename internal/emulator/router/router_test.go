package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// regionServer answers each connection with its region's name and then
// echoes lines back, until the test ends.
func regionServer(t *testing.T, region string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", region)
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func startRouter(t *testing.T, targets []Target) *Router {
	t.Helper()
	r, err := New(Config{Addr: "127.0.0.1:0", Regions: targets, Logger: slog.New(slog.DiscardHandler), DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// dialRegion connects through the router and returns the region that
// answered, and the connection.
func dialRegion(t *testing.T, addr string) (string, net.Conn, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", nil, err
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		_ = c.Close()
		return "", nil, err
	}
	return strings.TrimSpace(line), c, nil
}

func mustRegion(t *testing.T, addr string) string {
	t.Helper()
	region, c, err := dialRegion(t, addr)
	if err != nil {
		t.Fatalf("connect through the router: %v", err)
	}
	_ = c.Close()
	return region
}

func TestRouting(t *testing.T) {
	eu, us, ap := regionServer(t, "eu-west-1"), regionServer(t, "us-west-2"), regionServer(t, "ap-south-1")
	tests := []struct {
		name    string
		targets []Target
		down    []string
		want    string
	}{
		{"nearest by latency", []Target{{Region: "us-west-2", Addr: us, Latency: 140 * time.Millisecond}, {Region: "eu-west-1", Addr: eu, Latency: 20 * time.Millisecond}, {Region: "ap-south-1", Addr: ap, Latency: 90 * time.Millisecond}}, nil, "eu-west-1"},
		{"order given when latencies are equal", []Target{{Region: "us-west-2", Addr: us, Latency: 0}, {Region: "eu-west-1", Addr: eu, Latency: 0}}, nil, "us-west-2"},
		{"fails over to the next nearest", []Target{{Region: "us-west-2", Addr: us, Latency: 140 * time.Millisecond}, {Region: "eu-west-1", Addr: eu, Latency: 20 * time.Millisecond}, {Region: "ap-south-1", Addr: ap, Latency: 90 * time.Millisecond}}, []string{"eu-west-1"}, "ap-south-1"},
		{"fails over twice", []Target{{Region: "us-west-2", Addr: us, Latency: 140 * time.Millisecond}, {Region: "eu-west-1", Addr: eu, Latency: 20 * time.Millisecond}, {Region: "ap-south-1", Addr: ap, Latency: 90 * time.Millisecond}}, []string{"eu-west-1", "ap-south-1"}, "us-west-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRouter(t, tt.targets)
			for _, d := range tt.down {
				if err := r.SetDown(d, true); err != nil {
					t.Fatal(err)
				}
			}
			if got := mustRegion(t, r.Addr()); got != tt.want {
				t.Fatalf("routed to %s, want %s", got, tt.want)
			}
			if p, err := r.Pick(); err != nil || p.Region != tt.want {
				t.Fatalf("Pick = %v, %v", p.Region, err)
			}
			if n := r.Routed()[tt.want]; n != 1 {
				t.Fatalf("Routed()[%s] = %d, want 1 (%v)", tt.want, n, r.Routed())
			}
		})
	}
}

func TestDownAndUp(t *testing.T) {
	eu, us := regionServer(t, "eu-west-1"), regionServer(t, "us-west-2")
	r := startRouter(t, []Target{{Region: "eu-west-1", Addr: eu, Latency: 20 * time.Millisecond}, {Region: "us-west-2", Addr: us, Latency: 140 * time.Millisecond}})
	if got := mustRegion(t, r.Addr()); got != "eu-west-1" {
		t.Fatalf("got %s", got)
	}
	_ = r.SetDown("eu-west-1", true)
	if got := mustRegion(t, r.Addr()); got != "us-west-2" {
		t.Fatalf("with eu down got %s", got)
	}
	_ = r.SetDown("us-west-2", true)
	if region, c, err := dialRegion(t, r.Addr()); err == nil {
		_ = c.Close()
		t.Fatalf("all regions down, yet routed to %s", region)
	}
	if r.Refused() != 1 {
		t.Fatalf("Refused = %d", r.Refused())
	}
	if _, err := r.Pick(); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("Pick with all down: %v", err)
	}
	_ = r.SetDown("eu-west-1", false)
	if got := mustRegion(t, r.Addr()); got != "eu-west-1" {
		t.Fatalf("after eu up got %s", got)
	}
	if err := r.SetDown("nowhere-1", true); err == nil {
		t.Fatal("SetDown of an unknown region succeeded")
	}
	want := map[string]int64{"eu-west-1": 2, "us-west-2": 1}
	for region, n := range want {
		if r.Routed()[region] != n {
			t.Fatalf("Routed = %v, want %v", r.Routed(), want)
		}
	}
}

// TestUnreachableRegion: a region whose endpoint does not answer is skipped
// like a failed health check.
func TestUnreachableRegion(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()
	us := regionServer(t, "us-west-2")
	r := startRouter(t, []Target{{Region: "eu-west-1", Addr: dead}, {Region: "us-west-2", Addr: us, Latency: time.Millisecond}})
	if got := mustRegion(t, r.Addr()); got != "us-west-2" {
		t.Fatalf("got %s", got)
	}
}

func TestConcurrentConnectionsAndData(t *testing.T) {
	eu := regionServer(t, "eu-west-1")
	r := startRouter(t, []Target{{Region: "eu-west-1", Addr: eu, Latency: 0}})
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			region, c, err := dialRegion(t, r.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if region != "eu-west-1" {
				errs <- fmt.Errorf("routed to %s", region)
				return
			}
			msg := fmt.Sprintf("hello %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
				errs <- fmt.Errorf("echo %q: %q, %v", msg, buf, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := r.Routed()["eu-west-1"]; got != n {
		t.Fatalf("Routed = %d, want %d", got, n)
	}
}

func TestCloseEndsOpenConnections(t *testing.T) {
	eu := regionServer(t, "eu-west-1")
	r, err := New(Config{Regions: []Target{{Region: "eu-west-1", Addr: eu, Latency: 0}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, c, err := dialRegion(t, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a connection open")
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("client connection still open after Close")
	}
	if _, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
		t.Fatal("router still accepts after Close")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestParseLatencies(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]time.Duration
		wantErr bool
	}{
		{"", map[string]time.Duration{}, false},
		{"eu-west-1=20ms,us-west-2=140ms", map[string]time.Duration{"eu-west-1": 20 * time.Millisecond, "us-west-2": 140 * time.Millisecond}, false},
		{" eu-west-1=1s ", map[string]time.Duration{"eu-west-1": time.Second}, false},
		{"eu-west-1", nil, true},
		{"=20ms", nil, true},
		{"eu-west-1=fast", nil, true},
		{"eu-west-1=-5ms", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseLatencies(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseLatencies(%q) error = %v", tt.in, err)
			continue
		}
		if !tt.wantErr && fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ParseLatencies(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Regions: []Target{{Region: "eu-west-1"}}},
		{Regions: []Target{{Region: "eu-west-1", Addr: "127.0.0.1:1"}, {Region: "eu-west-1", Addr: "127.0.0.1:2"}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func FuzzParseLatencies(f *testing.F) {
	f.Add("eu-west-1=20ms,us-west-2=140ms")
	f.Add(" a=1s , b=0 ")
	f.Add("x=-1ms")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseLatencies(s)
		if err != nil {
			return
		}
		for region, d := range m {
			if region == "" || d < 0 {
				t.Fatalf("ParseLatencies(%q) accepted %q=%v", s, region, d)
			}
		}
	})
}

// handover is a region endpoint that takes connections over in process
// (Target.Accept): it answers with its region's name and echoes, or, when
// serving is false, refuses them as an endpoint not serving.
func handover(t *testing.T, region string, serving bool) func(net.Conn) error {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	return func(c net.Conn) error {
		if !serving {
			return errors.New("not serving")
		}
		wg.Go(func() {
			defer c.Close()
			fmt.Fprintf(c, "%s\n", region)
			_, _ = io.Copy(c, c)
		})
		return nil
	}
}

// TestHandover: a region with Accept takes the connection over without a
// second TCP connection; one whose Accept fails is skipped like a failed
// dial, and the connection goes to the next region, handed over or proxied.
func TestHandover(t *testing.T) {
	us := regionServer(t, "us-west-2")
	tests := []struct {
		name    string
		targets func(t *testing.T) []Target
		want    string
	}{
		{"handed over", func(t *testing.T) []Target {
			return []Target{{Region: "eu-west-1", Addr: "unused:1", Accept: handover(t, "eu-west-1", true)}, {Region: "us-west-2", Addr: us, Latency: time.Millisecond}}
		}, "eu-west-1"},
		{"not serving: the next, proxied", func(t *testing.T) []Target {
			return []Target{{Region: "eu-west-1", Addr: "unused:1", Accept: handover(t, "eu-west-1", false)}, {Region: "us-west-2", Addr: us, Latency: time.Millisecond}}
		}, "us-west-2"},
		{"not serving: the next, handed over", func(t *testing.T) []Target {
			return []Target{{Region: "eu-west-1", Addr: "unused:1", Accept: handover(t, "eu-west-1", false)}, {Region: "ap-south-1", Addr: "unused:2", Latency: time.Millisecond, Accept: handover(t, "ap-south-1", true)}}
		}, "ap-south-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRouter(t, tt.targets(t))
			region, c, err := dialRegion(t, r.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if region != tt.want {
				t.Fatalf("routed to %s, want %s", region, tt.want)
			}
			// The connection carries data both ways.
			fmt.Fprintf(c, "ping\n")
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ping\n" {
				t.Fatalf("echo: %q, %v", line, err)
			}
			if n := r.Routed()[tt.want]; n != 1 {
				t.Fatalf("Routed() = %v", r.Routed())
			}
		})
	}
}
