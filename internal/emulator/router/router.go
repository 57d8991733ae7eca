// Package router is the global endpoint (iot.example.com) run locally: a TCP
// proxy on one port that sends each new connection to the nearest region's
// data endpoint by a configured latency table, skipping regions marked down,
// as a Route 53 latency record with health checks does. TLS is end to end:
// the router never terminates it, so the regional endpoint's certificate
// (issued for iot.example.com) is what the client sees. An endpoint in the
// same process takes the connection over (Target.Accept) rather than being
// proxied to.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one region's data endpoint.
type Target struct {
	Region string
	Addr   string
	// Latency from the clients to the region; the lowest wins. Equal
	// latencies keep the order given.
	Latency time.Duration
	// Accept, when set, takes the connection over in process (the region's
	// endpoint serves it as one it accepted) instead of the router proxying
	// it to Addr over a second TCP connection: no extra hop and copy per
	// packet. An error means the endpoint is not serving, as a failed dial:
	// the connection is still the router's, and the next region is tried.
	Accept func(net.Conn) error
}

// Config configures the global endpoint.
type Config struct {
	Addr    string // e.g. "127.0.0.1:0"
	Regions []Target
	Logger  *slog.Logger
	// DialTimeout bounds the connection to a region (default 5s).
	DialTimeout time.Duration
}

// ErrNoRegion: every region is down (or none is configured).
var ErrNoRegion = errors.New("no region available")

// Router is the global endpoint.
type Router struct {
	cfg     Config
	log     *slog.Logger
	order   []Target // by latency
	down    sync.Map // region -> bool
	counts  map[string]*atomic.Int64
	refused atomic.Int64

	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// New makes a router; Start opens it.
func New(cfg Config) (*Router, error) {
	if len(cfg.Regions) == 0 {
		return nil, fmt.Errorf("router: no regions: %w", ErrNoRegion)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	r := &Router{cfg: cfg, log: cfg.Logger.With("component", "router"), counts: map[string]*atomic.Int64{}, conns: map[net.Conn]struct{}{}}
	for _, t := range cfg.Regions {
		if t.Region == "" || t.Addr == "" {
			return nil, fmt.Errorf("router: target %+v needs a region and an address", t)
		}
		if _, dup := r.counts[t.Region]; dup {
			return nil, fmt.Errorf("router: region %s given twice", t.Region)
		}
		r.counts[t.Region] = new(atomic.Int64)
		r.order = append(r.order, t)
	}
	slices.SortStableFunc(r.order, func(a, b Target) int { return cmp.Compare(a.Latency, b.Latency) })
	return r, nil
}

// ParseLatencies parses "eu-west-1=20ms,us-west-2=140ms" (the --latency
// flag) into a latency table.
func ParseLatencies(s string) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		region, d, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || region == "" {
			return nil, fmt.Errorf("latency %q: want REGION=DURATION", part)
		}
		lat, err := time.ParseDuration(d)
		if err != nil || lat < 0 {
			return nil, fmt.Errorf("latency %q: want a non-negative duration such as 20ms", part)
		}
		out[region] = lat
	}
	return out, nil
}

// Start listens; the router accepts connections when it returns.
func (r *Router) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return fmt.Errorf("router: listen on %s: %w", r.cfg.Addr, err)
	}
	r.ln = ln
	r.wg.Add(1)
	go r.serve()
	r.log.Info("global endpoint listening", "addr", ln.Addr().String(), "order", r.regionsInOrder())
	return nil
}

func (r *Router) regionsInOrder() []string {
	var out []string
	for _, t := range r.order {
		out = append(out, t.Region)
	}
	return out
}

// Addr is the address the router listens on ("" before Start).
func (r *Router) Addr() string {
	if r.ln == nil {
		return ""
	}
	return r.ln.Addr().String()
}

// SetDown marks a region down (skipped for new connections) or up. Existing
// connections are the region's to close.
func (r *Router) SetDown(region string, down bool) error {
	if _, ok := r.counts[region]; !ok {
		return fmt.Errorf("router: unknown region %q", region)
	}
	r.down.Store(region, down)
	r.log.Info("region marked", "region", region, "down", down)
	return nil
}

// Pick returns the region a new connection goes to now.
func (r *Router) Pick() (Target, error) {
	for _, t := range r.order {
		if d, ok := r.down.Load(t.Region); ok && d.(bool) {
			continue
		}
		return t, nil
	}
	return Target{}, ErrNoRegion
}

// Routed returns how many connections were routed to each region.
func (r *Router) Routed() map[string]int64 {
	out := make(map[string]int64, len(r.counts))
	for region, n := range r.counts {
		out[region] = n.Load()
	}
	return out
}

// Refused returns how many connections found no region.
func (r *Router) Refused() int64 { return r.refused.Load() }

func (r *Router) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.log.Error("accept", "error", err)
			}
			return
		}
		if !r.track(c) {
			_ = c.Close()
			return
		}
		r.wg.Go(func() {
			if r.proxy(c) {
				r.release(c)
				return
			}
			r.untrack(c)
		})
	}
}

func (r *Router) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *Router) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	_ = c.Close()
}

// release forgets c, now a region endpoint's to close.
func (r *Router) release(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// proxy connects c to the first available region, falling over to the next
// when the dial fails (a failing health check), and copies both ways; or
// hands c over to the region's endpoint (Target.Accept) and reports true.
func (r *Router) proxy(c net.Conn) (handedOver bool) {
	var up net.Conn
	var target Target
	for _, t := range r.order {
		if d, ok := r.down.Load(t.Region); ok && d.(bool) {
			continue
		}
		if t.Accept != nil {
			if err := t.Accept(c); err != nil {
				r.log.Warn("region unreachable; trying the next", "region", t.Region, "error", err)
				continue
			}
			r.counts[t.Region].Add(1)
			r.log.Debug("connection handed over", "remote", c.RemoteAddr().String(), "region", t.Region)
			return true
		}
		conn, err := net.DialTimeout("tcp", t.Addr, r.cfg.DialTimeout)
		if err != nil {
			r.log.Warn("region unreachable; trying the next", "region", t.Region, "error", err)
			continue
		}
		up, target = conn, t
		break
	}
	if up == nil {
		r.refused.Add(1)
		r.log.Warn("connection refused: no region available", "remote", c.RemoteAddr().String())
		return false
	}
	if !r.track(up) {
		_ = up.Close()
		return false
	}
	defer r.untrack(up)
	r.counts[target.Region].Add(1)
	r.log.Debug("connection routed", "remote", c.RemoteAddr().String(), "region", target.Region)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	// One side finished; close both so the other copy ends too.
	_ = c.Close()
	_ = up.Close()
	<-done
	return false
}

// Close stops listening, closes every proxied connection and waits.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	conns := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	var err error
	if r.ln != nil {
		err = r.ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	r.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("router: close: %w", err)
	}
	return nil
}
