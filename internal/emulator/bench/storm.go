// Package bench measures the local stack against its physical floor: an
// onboarding storm of N devices through the global endpoint of an
// in-process `mriot local --quotas aws`, timed to every device ACTIVE in
// every region, as a ratio to the least time AWS IoT's control-plane
// quotas allow for the calls the run made.
package bench

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/fake/memiot"
)

// RegionNames are the regions a storm of R regions runs in: the first R.
var RegionNames = []string{"eu-west-1", "us-west-2", "ap-southeast-1", "us-east-1", "eu-central-1", "ap-northeast-1"}

// Policy is how failed invocations are retried: the invokers' attempts and
// first backoff (doubled at each retry).
type Policy struct {
	Name string
	// AsyncAttempts and RetryBackoff are local.Config's (0: its defaults).
	AsyncAttempts int
	RetryBackoff  time.Duration
}

// Policies of the comparison: this project's (Lambda asynchronous
// invocation's three attempts, local's default backoff) and the seed
// article's Step Functions retry (Retry: MaxAttempts 2, IntervalSeconds 1,
// BackoffRate 2 on every registry task, then the Catch rolls back). Step
// Functions' MaxAttempts counts retries, so the task runs at most three
// times, 1 s then 2 s apart.
var (
	PolicyMriot = Policy{Name: "mriot"}
	PolicySeed  = Policy{Name: "seed (3 tries, 1 s ×2, then roll back)", AsyncAttempts: 3, RetryBackoff: time.Second}
)

// StormConfig configures one storm.
type StormConfig struct {
	Devices int // default 200
	Regions int // default 2, at most len(RegionNames)
	Policy  Policy
	// Timeout bounds the storm (default 2 min + 1 s per 5 devices): a
	// device not ACTIVE everywhere by then is lost.
	Timeout time.Duration
	// Dir holds the stack's PKI and the devices' certificates (default: a
	// temporary directory, removed at the end).
	Dir string
}

// RegionResult is one region's part of a storm.
type RegionResult struct {
	Name string
	// Calls are the successful registry calls per API until every device
	// was ACTIVE in the region (until the end when they never were);
	// Throttled those answered ThrottlingException in the whole storm.
	Calls, Throttled map[string]int
	// Floor is the least time Calls take under the quotas: the slowest
	// API's calls over its rate (Slowest).
	Floor   time.Duration
	Slowest string
	// Active is when the last device's certificate became ACTIVE in this
	// region, from the storm's start.
	Active      time.Duration
	DeadLetters int
	// FirstDeadLetter is the first dead letter's function and error.
	FirstDeadLetter string
}

// StormResult is one storm's outcome.
type StormResult struct {
	Policy  string
	Devices int
	Regions []RegionResult
	// AllActive is when every device was ACTIVE in every region (the
	// timeout when some never were).
	AllActive time.Duration
	// Floor is the largest region floor; MinimalFloor the floor of the
	// minimal call pattern: one DescribeCertificate per device at the
	// origin, one RegisterCertificate in each other region, at 10 TPS.
	Floor, MinimalFloor time.Duration
	DeadLetters         int
	// Lost devices are not ACTIVE in every region at the end.
	Lost int
	Sim  sim.Summary
}

// Ratio is AllActive over Floor.
func (r StormResult) Ratio() float64 { return ratio(r.AllActive, r.Floor) }

// MinimalRatio is AllActive over MinimalFloor.
func (r StormResult) MinimalRatio() float64 { return ratio(r.AllActive, r.MinimalFloor) }

func ratio(d, floor time.Duration) float64 {
	if floor <= 0 {
		return 0
	}
	return d.Seconds() / floor.Seconds()
}

// Floor is the least time calls take under quotas: the largest calls/rate
// over the rate-limited APIs, and that API.
func Floor(calls map[string]int, quotas map[string]float64) (time.Duration, string) {
	var floor time.Duration
	var slowest string
	for _, op := range slices.Sorted(maps.Keys(calls)) {
		rate := quotas[op]
		if rate <= 0 {
			continue
		}
		if d := time.Duration(float64(calls[op]) / rate * float64(time.Second)); d > floor {
			floor, slowest = d, op
		}
	}
	return floor, slowest
}

// MinimalFloor is the floor of the minimal correct pattern for n devices:
// per device one DescribeCertificate at the origin and one
// RegisterCertificate in every other region; the regions' quotas are
// independent, so it is the slower of the two.
func MinimalFloor(n int, quotas map[string]float64) time.Duration {
	var floor time.Duration
	for _, op := range []string{"DescribeCertificate", "RegisterCertificate"} {
		if rate := quotas[op]; rate > 0 {
			floor = max(floor, time.Duration(float64(n)/rate*float64(time.Second)))
		}
	}
	return floor
}

// Storm runs one storm: a fresh stack with AWS's default quotas in every
// region, cfg.Devices devices connecting at once through the global
// endpoint (full-jitter back-off between 0.5 and 5 s while refused, one
// QoS 1 message each once connected), until every device is ACTIVE in every
// region and the stack is idle, or the timeout.
func Storm(ctx context.Context, cfg StormConfig) (StormResult, error) {
	if cfg.Devices == 0 {
		cfg.Devices = 200
	}
	if cfg.Regions == 0 {
		cfg.Regions = 2
	}
	if cfg.Devices < 0 || cfg.Regions < 1 || cfg.Regions > len(RegionNames) {
		return StormResult{}, fmt.Errorf("storm of %d devices in %d regions: want devices ≥ 1 and 1 to %d regions", cfg.Devices, cfg.Regions, len(RegionNames))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2*time.Minute + time.Duration(cfg.Devices)*time.Second/5
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "mriot-storm-")
		if err != nil {
			return StormResult{}, fmt.Errorf("storm: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
	}
	quotas := maps.Clone(memiot.AWSDefaultQuotas)
	st, err := local.Start(ctx, local.Config{
		Regions: RegionNames[:cfg.Regions], StateDir: cfg.Dir, Quotas: quotas,
		AsyncAttempts: cfg.Policy.AsyncAttempts, RetryBackoff: cfg.Policy.RetryBackoff,
	})
	if err != nil {
		return StormResult{}, fmt.Errorf("storm: start the stack: %w", err)
	}
	defer st.Close()

	devices, ids, err := mint(st, cfg.Devices)
	if err != nil {
		return StormResult{}, err
	}
	regions := st.Regions()
	w := newWatch(ids, len(regions))
	for i, r := range regions {
		r.Registry.SetAfter(func(_ context.Context, op string) { w.call(i, op) })
		cancel := r.Registry.OnCertificateChange(func(id string, status fleet.CertStatus) { w.changed(i, id, status) })
		defer cancel()
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	w.start()
	sum, simErr := sim.Run(runCtx, sim.Config{
		Endpoint: st.GlobalAddr(), RootPool: roots, Devices: devices, Messages: 1,
		Backoff: sim.Backoff{Initial: 500 * time.Millisecond, Max: 5 * time.Second},
	})
	if simErr != nil && runCtx.Err() == nil {
		return StormResult{}, fmt.Errorf("storm: devices: %w", simErr)
	}
	// The devices are done; replication may not be.
	w.wait(runCtx)
	if err := st.WaitIdle(runCtx); err != nil && ctx.Err() != nil {
		return StormResult{}, fmt.Errorf("storm: %w", ctx.Err())
	}

	res := StormResult{Policy: cfg.Policy.Name, Devices: cfg.Devices, Sim: sum, MinimalFloor: MinimalFloor(cfg.Devices, quotas)}
	dead := map[string]int{}
	firstDead := map[string]string{}
	for _, d := range st.DeadLetters() {
		dead[d.Region]++
		res.DeadLetters++
		if firstDead[d.Region] == "" {
			firstDead[d.Region] = fmt.Sprintf("%s after %d attempts: %s", d.Function, d.Attempts, oneLine(d.Err))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	res.AllActive = w.allActive
	if w.done < len(ids) {
		res.AllActive = cfg.Timeout
	}
	for i, r := range regions {
		// The floor of a region counts its calls until every device was
		// ACTIVE there (the backlog of duplicate events goes on after).
		calls := w.regionCalls[i]
		if calls == nil {
			calls = w.calls[i]
		}
		rr := RegionResult{Name: r.Name, Calls: maps.Clone(calls), Throttled: r.Registry.Throttled(), DeadLetters: dead[r.Name],
			FirstDeadLetter: firstDead[r.Name]}
		rr.Floor, rr.Slowest = Floor(rr.Calls, quotas)
		rr.Active = w.regionActive[i]
		all := w.calls[i]
		if w.allCalls != nil {
			all = w.allCalls[i]
		}
		f, _ := Floor(all, quotas)
		res.Floor = max(res.Floor, f)
		res.Regions = append(res.Regions, rr)
	}
	// Lost: not ACTIVE in some region now, whatever the watch saw.
	for id := range ids {
		for _, r := range regions {
			if c, ok := r.Registry.CertificateByID(id); !ok || c.Status != fleet.CertActive {
				res.Lost++
				break
			}
		}
	}
	return res, nil
}

// mint issues the devices' certificates before the clock starts, and
// returns them with their certificate ids.
func mint(st *local.Stack, n int) ([]sim.Device, map[string]bool, error) {
	devices := make([]sim.Device, n)
	ids := make(map[string]bool, n)
	for i := range n {
		name := fmt.Sprintf("storm-%05d", i)
		certFile, keyFile, err := st.PKI().Device(name)
		if err != nil {
			return nil, nil, fmt.Errorf("storm: device %s: %w", name, err)
		}
		raw, err := os.ReadFile(certFile)
		if err != nil {
			return nil, nil, fmt.Errorf("storm: device %s: %w", name, err)
		}
		block, _ := pem.Decode(raw)
		if block == nil {
			return nil, nil, fmt.Errorf("storm: device %s: %s holds no PEM block", name, certFile)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("storm: device %s: %w", name, err)
		}
		ids[fleet.CertificateID(cert)] = true
		devices[i] = sim.Device{Name: name, CertFile: certFile, KeyFile: keyFile}
	}
	return devices, ids, nil
}

// watch follows the storm: the calls per region and API, and when each
// device's certificate became ACTIVE in each region.
type watch struct {
	mu    sync.Mutex
	ids   map[string]bool
	calls []map[string]int
	// active[id] is a bit per region where the certificate is ACTIVE.
	active       map[string]uint64
	all          uint64
	done         int
	t0           time.Time
	allActive    time.Duration
	regionActive []time.Duration
	perRegion    []int
	// regionCalls[i] are region i's calls when every device was ACTIVE
	// there; allCalls every region's when they were ACTIVE everywhere.
	regionCalls []map[string]int
	allCalls    []map[string]int
	finished    chan struct{}
}

func newWatch(ids map[string]bool, regions int) *watch {
	w := &watch{ids: ids, calls: make([]map[string]int, regions), active: map[string]uint64{}, all: 1<<regions - 1,
		regionActive: make([]time.Duration, regions), perRegion: make([]int, regions), regionCalls: make([]map[string]int, regions), finished: make(chan struct{})}
	for i := range w.calls {
		w.calls[i] = map[string]int{}
	}
	return w
}

func (w *watch) start() {
	w.mu.Lock()
	w.t0 = time.Now()
	w.mu.Unlock()
}

func (w *watch) call(region int, op string) {
	w.mu.Lock()
	w.calls[region][op]++
	w.mu.Unlock()
}

func (w *watch) changed(region int, id string, status fleet.CertStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ids[id] {
		return
	}
	bit := uint64(1) << region
	before := w.active[id]
	if status == fleet.CertActive {
		w.active[id] = before | bit
	} else {
		w.active[id] = before &^ bit
	}
	now := time.Since(w.t0)
	if before&bit == 0 && status == fleet.CertActive {
		w.perRegion[region]++
		if w.perRegion[region] == len(w.ids) {
			w.regionActive[region] = now
			w.regionCalls[region] = maps.Clone(w.calls[region])
		}
	} else if before&bit != 0 && status != fleet.CertActive {
		w.perRegion[region]--
	}
	switch {
	case before != w.all && w.active[id] == w.all:
		w.done++
		if w.done == len(w.ids) {
			w.allActive = now
			for i := range w.calls {
				w.allCalls = append(w.allCalls, maps.Clone(w.calls[i]))
			}
			close(w.finished)
		}
	case before == w.all && w.active[id] != w.all:
		w.done--
	}
}

// wait returns when every device is ACTIVE everywhere, or at ctx's end.
func (w *watch) wait(ctx context.Context) {
	select {
	case <-w.finished:
	case <-ctx.Done():
	}
}

// Write prints the storm's result: a line per region, then the totals and
// the ratio line.
func (r StormResult) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %s: %d devices, %d regions\n", r.Policy, r.Devices, len(r.Regions))
	for _, rr := range r.Regions {
		active := "not every device ACTIVE here"
		if rr.Active > 0 {
			active = fmt.Sprintf("all ACTIVE here after %.1fs = %.2f × floor", rr.Active.Seconds(), ratio(rr.Active, rr.Floor))
		}
		fmt.Fprintf(&b, "  %-15s calls %s; throttled %s; floor %.1fs (%s); %s; dead letters %d\n",
			rr.Name, formatCalls(rr.Calls), formatCalls(rr.Throttled), rr.Floor.Seconds(), rr.Slowest, active, rr.DeadLetters)
	}
	for _, rr := range r.Regions {
		if rr.FirstDeadLetter != "" {
			fmt.Fprintf(&b, "  %-15s first dead letter: %s\n", rr.Name, rr.FirstDeadLetter)
		}
	}
	fmt.Fprintf(&b, "  devices: onboarded %d, refused attempts %d, first connect p50 %.1fs p99 %.1fs max %.1fs\n",
		r.Sim.Onboarded, r.Sim.Refused, r.Sim.FirstConnect.P50.Seconds(), r.Sim.FirstConnect.P99.Seconds(), r.Sim.FirstConnect.Max.Seconds())
	verb, cmp := "all ACTIVE everywhere after", ""
	if r.Lost > 0 {
		verb, cmp = "not all ACTIVE everywhere within", "> "
	}
	fmt.Fprintf(&b, "  ratio [%s]: %s %.1fs = %s%.2f × floor (%.1fs), %s%.2f × minimal floor (%.1fs); dead letters %d; lost %d\n",
		r.Policy, verb, r.AllActive.Seconds(), cmp, r.Ratio(), r.Floor.Seconds(), cmp, r.MinimalRatio(), r.MinimalFloor.Seconds(), r.DeadLetters, r.Lost)
	_, err := io.WriteString(w, b.String())
	return err
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func formatCalls(calls map[string]int) string {
	if len(calls) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, calls[k])
	}
	return strings.Join(parts, ", ")
}

// Compare runs the storm of cfg under each policy, one after the other, and
// writes each result to w as it ends.
func Compare(ctx context.Context, cfg StormConfig, policies []Policy, w io.Writer) ([]StormResult, error) {
	var out []StormResult
	for _, p := range policies {
		cfg.Policy = p
		res, err := Storm(ctx, cfg)
		if err != nil {
			return out, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		out = append(out, res)
		if err := res.Write(w); err != nil {
			return out, fmt.Errorf("policy %s: write: %w", p.Name, err)
		}
	}
	return out, nil
}
