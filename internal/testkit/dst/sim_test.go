package dst

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// seeds is how many seeds TestSimulation runs: DST_SEEDS, else 500 (100
// with -short, as under the race detector). DST_SEED runs that one seed
// (replay a failure); DST_FIRST moves the first seed.
func seeds(t *testing.T) (first, n uint64) {
	if s := os.Getenv("DST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DST_SEED=%q: %v", s, err)
		}
		return v, 1
	}
	n = 500
	if testing.Short() {
		n = 100
	}
	if s := os.Getenv("DST_SEEDS"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DST_SEEDS=%q: %v", s, err)
		}
		n = v
	}
	if s := os.Getenv("DST_FIRST"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DST_FIRST=%q: %v", s, err)
		}
		first = v
	}
	return first, n
}

// TestSimulation runs the deterministic simulation over many seeds and
// checks the invariants at quiescence of each. A failing seed writes its
// whole trace to a file and prints how to replay it.
func TestSimulation(t *testing.T) {
	first, n := seeds(t)
	var mu sync.Mutex
	var worst time.Duration
	var worstSeed uint64
	t.Cleanup(func() {
		t.Logf("%d seeds; the longest a revoked certificate stayed ACTIVE after its revocation reached a region: %s (seed %d)", n, worst, worstSeed)
	})
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			overhang := runSeed(t, seed)
			mu.Lock()
			if overhang > worst {
				worst, worstSeed = overhang, seed
			}
			mu.Unlock()
		})
	}
}

// regressions are seeds that once found a violation, run by every make
// test whatever DST_SEEDS says. The simulation is deterministic, so each
// replays its scenario for as long as the schedule of calls it depends on
// stays the same; after that it is one more seed.
//
// Each runs with the reconcile period it failed with (5 minutes before the
// schedule became 2 minutes), so that it replays its own scenario.
var regressions = []struct {
	seed  uint64
	every time.Duration // Config.ReconcileEvery
	why   string
}{
	{2769, 5 * time.Minute, "I2': a revoked device's certificate ACTIVE in a region for 20 min of up time. One throttled read skipped " +
		"the device in the reconciler's revocations phase, three passes in a row (now every read of a pass is retried, " +
		"and reconcile's TestOneFailedCallCostsNoDevice fails each call of a pass once)"},
	{11605, 5 * time.Minute, "I2': a revoked device's certificate ACTIVE in a region for 17 min 40 s of up time. A crashed replicate run " +
		"held its lease during one pass, the next pass crashed, and the region was down at the third (now a pass waits " +
		"out the held lease of a revoked device: reconcile's TestWaitsOutAHeldLeaseOfARevokedDevice)"},
	{9956, 5 * time.Minute, "I2': a revoked device's certificate ACTIVE in a region for 10 min 41 s of up time. A pass crashed, and the " +
		"next one's three tries of the device all failed (now a revoked device gets five: reconcile's " +
		"TestRevokedDeviceGetsMoreTries)"},
	{21717, 5 * time.Minute, "I2': a revoked device's certificate ACTIVE in a region for 12 min 36 s of up time. A pass crashed, the " +
		"region was down at the next, and the one after resumed past its revocations phase (now every invocation " +
		"first sweeps the revocations of the last two days: reconcile's TestSweepChecksRecentRevocationsWhereverThePassIs)"},
	{17103, 5 * time.Minute, "I2'': a certificate activated 3 min 26 s after its device's revocation reached the region; the activation " +
		"was the console's, behind the system's back, which the system undid in 15 s (the monitor now tells the " +
		"console's activations from the system's)"},
	{34469, 2 * time.Minute, "I2' with the 5-minute period: a revoked device's certificate ACTIVE in a region for 12 min 20 s " +
		"of up time. A pass crashed and the region was down at the next schedule: two lost periods are the bound. With " +
		"the 2-minute period (and 110 s invocations) the same seed keeps it ACTIVE for 4 s"},
}

func TestSimulationRegressions(t *testing.T) {
	for _, r := range regressions {
		t.Run(fmt.Sprintf("seed=%d", r.seed), func(t *testing.T) {
			cfg := Defaults(r.seed)
			cfg.ReconcileEvery = r.every
			if overhang := runConfig(t, cfg); overhang > 0 {
				t.Logf("longest ACTIVE after revocation: %s (%s)", overhang, r.why)
			}
		})
	}
}

// runSeed runs the simulation of one seed, reports its violations, and
// returns the longest a revoked certificate stayed ACTIVE in a region after
// its revocation reached it.
func runSeed(t *testing.T, seed uint64) time.Duration {
	t.Helper()
	return runConfig(t, Defaults(seed))
}

// runConfig is runSeed with the seed's configuration changed.
func runConfig(t *testing.T, cfg Config) time.Duration {
	t.Helper()
	seed := cfg.Seed
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	violations, err := s.Run()
	if err == nil && len(violations) == 0 {
		if os.Getenv("DST_TRACE") != "" {
			t.Log("\n" + strings.Join(s.trace, "\n"))
		}
		return s.Overhang
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("mriot-dst-seed-%d.trace", seed))
	_ = os.WriteFile(path, []byte(strings.Join(s.trace, "\n")+"\n"), 0o644)
	tail := s.trace[max(0, len(s.trace)-60):]
	t.Errorf("seed %d (%d regions, %d devices, faults %+v, %d outages): %v\nviolations:\n  %s\nlast trace lines:\n%s\nwhole trace: %s\nreplay: DST_SEED=%d go test ./internal/testkit/dst -run TestSimulation -v",
		seed, cfg.Regions, cfg.Devices, cfg.Faults, cfg.Outages, err, strings.Join(violations, "\n  "), strings.Join(tail, "\n"), path, seed)
	return s.Overhang
}

// TestSimulationIsDeterministic: one seed run twice gives the same trace,
// step for step.
func TestSimulationIsDeterministic(t *testing.T) {
	var traces [2][]string
	for i := range traces {
		s, err := New(Defaults(7))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Run(); err != nil {
			t.Fatal(err)
		}
		traces[i] = s.trace
	}
	if len(traces[0]) < 100 {
		t.Fatalf("a trace of %d lines: the simulation did little", len(traces[0]))
	}
	for i := range min(len(traces[0]), len(traces[1])) {
		if traces[0][i] != traces[1][i] {
			t.Fatalf("the traces differ at line %d:\n%s\n%s", i, traces[0][i], traces[1][i])
		}
	}
	if len(traces[0]) != len(traces[1]) {
		t.Fatalf("traces of %d and %d lines", len(traces[0]), len(traces[1]))
	}
}

// TestSimulationCatchesBrokenDesigns proves that the simulation notices when
// a mechanism the convergence relies on is taken away: for each mutation,
// some seed among the first few hundred breaks an invariant.
func TestSimulationCatchesBrokenDesigns(t *testing.T) {
	tests := []struct {
		name string
		m    Mutations
	}{
		{"no leases", Mutations{NoLeases: true}},
		{"no revocation records", Mutations{NoRevocationRecords: true}},
		{"no reconciler", Mutations{NoReconciler: true}},
	}
	const budget = 400
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(budget) {
				cfg := Defaults(seed)
				cfg.Mutations = tt.m
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				violations, err := s.Run()
				if err != nil || len(violations) > 0 {
					t.Logf("caught at seed %d: %v %s", seed, err, strings.Join(violations[:min(len(violations), 3)], "; "))
					return
				}
			}
			t.Fatalf("the simulation passed %d seeds of a system with %s", budget, tt.name)
		})
	}
}
