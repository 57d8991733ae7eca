package dst

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rotationGrace is the scenario's grace: short, so that certificates retire
// while the system is active.
const rotationGrace = 3 * time.Minute

// rotationConfig is the seed's configuration with the rotation scenario.
func rotationConfig(seed uint64) Config {
	cfg := Defaults(seed)
	cfg.Rotation = Rotation{Grace: rotationGrace}
	return cfg
}

// rotationSeeds is how many seeds TestRotationSimulation runs:
// DST_ROTATION_SEEDS, else 200 (50 with -short).
func rotationSeeds(t *testing.T) uint64 {
	if s := os.Getenv("DST_ROTATION_SEEDS"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DST_ROTATION_SEEDS=%q: %v", s, err)
		}
		return v
	}
	if testing.Short() {
		return 50
	}
	return 200
}

// TestRotationSimulation runs the rotation scenario: devices renew their
// certificate (and present the previous one, and once an older one) while
// the operator revokes and decommissions, regions go down, faults and
// crashes happen; the invariants I1-I8 and R1-R3 (checkRotation) hold.
func TestRotationSimulation(t *testing.T) {
	// DST_SEED and DST_FIRST as for every scenario (seeds); the count is
	// DST_ROTATION_SEEDS, else DST_SEEDS (make soak), else 200.
	first, n := seeds(t)
	if os.Getenv("DST_SEED") == "" && (os.Getenv("DST_ROTATION_SEEDS") != "" || os.Getenv("DST_SEEDS") == "") {
		n = rotationSeeds(t)
	}
	rotated := 0
	for seed := first; seed < first+n; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runConfig(t, rotationConfig(seed))
		})
		rotated++
	}
	t.Logf("%d seeds of the rotation scenario", rotated)
}

// TestRotationSimulationRotates: the scenario does what it says: devices
// rotate, older certificates are refused, certificates retire.
func TestRotationSimulationRotates(t *testing.T) {
	s, err := New(rotationConfig(3))
	if err != nil {
		t.Fatal(err)
	}
	violations, err := s.Run()
	if err != nil || len(violations) > 0 {
		t.Fatalf("%v %v", err, violations)
	}
	for _, m := range []string{"CertificatesRotated", "RotationsRefused", "CertificatesRetired"} {
		n := 0.0
		for k, v := range s.metrics.Snapshot() {
			if k == m || strings.HasPrefix(k, m+"{") {
				n += v
			}
		}
		if n == 0 {
			t.Errorf("no %s in the scenario; metrics %v", m, s.metrics.Snapshot())
		}
	}
}

// TestRotationSimulationIsDeterministic: the rotation scenario replays
// step for step.
func TestRotationSimulationIsDeterministic(t *testing.T) {
	var traces [2][]string
	for i := range traces {
		s, err := New(rotationConfig(11))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Run(); err != nil {
			t.Fatal(err)
		}
		traces[i] = s.trace
	}
	if strings.Join(traces[0], "\n") != strings.Join(traces[1], "\n") {
		t.Fatal("two runs of seed 11 differ")
	}
}

// TestRotationSimulationCatchesNoRetirement: a system whose rotated-out
// certificates never retire breaks R1 within the first seeds.
func TestRotationSimulationCatchesNoRetirement(t *testing.T) {
	const budget = 100
	for seed := range uint64(budget) {
		cfg := rotationConfig(seed)
		cfg.Mutations = Mutations{NoRetirement: true}
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
	t.Fatalf("the simulation passed %d seeds of a system whose certificates never retire", budget)
}
