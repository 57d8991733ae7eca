package dst

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPresenceSimulation runs the presence scenario (presence.go) over as
// many seeds as TestSimulation and checks P1 and P2 at quiescence of each.
func TestPresenceSimulation(t *testing.T) {
	first, n := seeds(t)
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			violations, trace, err := RunPresence(PresenceDefaults(seed))
			if err == nil && len(violations) == 0 {
				return
			}
			path := filepath.Join(t.TempDir(), fmt.Sprintf("presence-seed-%d.trace", seed))
			_ = os.WriteFile(path, []byte(strings.Join(trace, "\n")+"\n"), 0o644)
			t.Fatalf("seed %d: %v\n%s\ntrace: %s (replay: DST_SEED=%d go test -run 'TestPresenceSimulation' ./internal/testkit/dst)",
				seed, err, strings.Join(violations, "\n"), path, seed)
		})
	}
}

// TestPresenceSimulationIsDeterministic: a seed replays exactly.
func TestPresenceSimulationIsDeterministic(t *testing.T) {
	for _, seed := range []uint64{3, 17} {
		v1, t1, err1 := RunPresence(PresenceDefaults(seed))
		v2, t2, err2 := RunPresence(PresenceDefaults(seed))
		if fmt.Sprint(err1) != fmt.Sprint(err2) || strings.Join(v1, "\n") != strings.Join(v2, "\n") || strings.Join(t1, "\n") != strings.Join(t2, "\n") {
			t.Fatalf("seed %d: two runs differ (%d and %d trace lines)", seed, len(t1), len(t2))
		}
		if len(t1) < 50 {
			t.Fatalf("seed %d: a trace of %d lines: the scenario does little", seed, len(t1))
		}
	}
}

// TestPresenceSimulationCatchesBrokenDesigns: without the stream's folds,
// last-writer-wins replication keeps a staler presence item (P1); with one
// item ordered by timestamps alone, an old session's late disconnect marks
// the device offline (P2).
func TestPresenceSimulationCatchesBrokenDesigns(t *testing.T) {
	const budget = 300
	for _, broken := range []string{"no-stream-fold", "timestamp-only"} {
		t.Run(broken, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(budget) {
				cfg := PresenceDefaults(seed)
				cfg.Broken = broken
				violations, _, err := RunPresence(cfg)
				if err != nil || len(violations) > 0 {
					t.Logf("caught at seed %d: %v %s", seed, err, strings.Join(violations[:min(len(violations), 2)], "; "))
					return
				}
			}
			t.Fatalf("the presence simulation passed %d seeds of the %s design", budget, broken)
		})
	}
}
