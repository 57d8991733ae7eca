package dst

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func runCommandSeed(t *testing.T, cfg CommandConfig) CommandResult {
	t.Helper()
	res, err := RunCommands(cfg)
	if err != nil || len(res.Violations) > 0 {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("commands-seed-%d.trace", cfg.Seed))
		_ = os.WriteFile(f, []byte(strings.Join(res.Trace, "\n")+"\n"), 0o600)
		t.Fatalf("seed %d: %v\n%s\ntrace: %s (replay: DST_SEED=%d go test -run 'TestCommandSimulation$' ./internal/testkit/dst)",
			cfg.Seed, err, strings.Join(res.Violations, "\n"), f, cfg.Seed)
	}
	return res
}

// TestCommandSimulation runs the command scenario over the seeds of
// TestSimulation and checks C1-C3 (see commands.go).
func TestCommandSimulation(t *testing.T) {
	first, n := seeds(t)
	var mu sync.Mutex
	var worst time.Duration
	var worstSeed uint64
	delivered := 0
	t.Cleanup(func() {
		t.Logf("%d seeds, %d deliveries; the longest from a last connection to a waiting command's delivery: %s (seed %d, bound %s)",
			n, delivered, worst, worstSeed, CommandBound)
	})
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			res := runCommandSeed(t, CommandDefaults(seed))
			mu.Lock()
			delivered += res.Delivered
			if res.Worst > worst {
				worst, worstSeed = res.Worst, seed
			}
			mu.Unlock()
		})
	}
}

// TestCommandSimulationIsDeterministic: a seed replays exactly.
func TestCommandSimulationIsDeterministic(t *testing.T) {
	a, err := RunCommands(CommandDefaults(7))
	if err != nil {
		t.Fatal(err)
	}
	b, err := RunCommands(CommandDefaults(7))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.Trace, "\n") != strings.Join(b.Trace, "\n") {
		t.Fatal("the same seed gave two traces")
	}
	if a.Delivered == 0 {
		t.Fatal("nothing was delivered: the scenario does not exercise delivery")
	}
}

// TestCommandSimulationCatchesBrokenDesigns: each broken variant is caught
// by an invariant within a few seeds.
func TestCommandSimulationCatchesBrokenDesigns(t *testing.T) {
	for _, tc := range []struct {
		mutation CommandMutation
		want     string
	}{
		{MutationNoClaim, "C1"},
		{MutationNoConnectDelivery, "C2"},
	} {
		t.Run(string(tc.mutation), func(t *testing.T) {
			for seed := range uint64(40) {
				cfg := CommandDefaults(seed)
				cfg.Mutation = tc.mutation
				res, err := RunCommands(cfg)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range res.Violations {
					if strings.HasPrefix(v, tc.want) {
						t.Logf("seed %d: %s", seed, v)
						return
					}
				}
			}
			t.Fatalf("%s: no %s violation in 40 seeds", tc.mutation, tc.want)
		})
	}
}
