package bench

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/fake/memiot"
)

// TestStormTiny runs `mriot bench storm`'s comparison at 10 devices in two
// regions: both policies print their ratio line, and no device is lost.
func TestStormTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("two storms of 10 devices take several seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := Compare(ctx, StormConfig{Devices: 10, Regions: 2, Dir: t.TempDir()}, []Policy{PolicyMriot, PolicySeed}, &out)
	t.Logf("\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^  ratio \[(.+)\]: all ACTIVE everywhere after [0-9.]+s = [0-9.]+ × floor \([0-9.]+s\), [0-9.]+ × minimal floor \(1\.0s\); dead letters 0; lost 0$`)
	got := line.FindAllStringSubmatch(out.String(), -1)
	if len(got) != 2 || got[0][1] != PolicyMriot.Name || got[1][1] != PolicySeed.Name {
		t.Errorf("ratio lines %q, want one per policy with 0 dead letters and 0 lost", got)
	}
	for _, r := range res {
		if len(r.Regions) != 2 || r.Floor <= 0 || r.AllActive <= 0 || r.Lost != 0 {
			t.Errorf("%s: %d regions, floor %v, all ACTIVE after %v, %d lost", r.Policy, len(r.Regions), r.Floor, r.AllActive, r.Lost)
		}
		for _, rr := range r.Regions {
			if rr.Active <= 0 || rr.Active > r.AllActive {
				t.Errorf("%s in %s: all ACTIVE after %v, everywhere after %v", r.Policy, rr.Name, rr.Active, r.AllActive)
			}
		}
	}
}

func TestFloor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		calls   map[string]int
		want    time.Duration
		slowest string
	}{
		{"none", nil, 0, ""},
		{"unlimited API", map[string]int{"NoSuchAPI": 1000}, 0, ""},
		{"slowest of two", map[string]int{"DescribeCertificate": 212, "AttachPolicy": 212}, 21200 * time.Millisecond, "DescribeCertificate"},
		{"by rate not count", map[string]int{"UpdateCertificate": 100, "ListThingPrincipals": 300}, 15 * time.Second, "ListThingPrincipals"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, slowest := Floor(tc.calls, memiot.AWSDefaultQuotas)
			if got != tc.want || slowest != tc.slowest {
				t.Errorf("Floor = %v (%s), want %v (%s)", got, slowest, tc.want, tc.slowest)
			}
		})
	}
	if got := MinimalFloor(2000, memiot.AWSDefaultQuotas); got != 200*time.Second {
		t.Errorf("MinimalFloor(2000) = %v, want 200s", got)
	}
}

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  StormResult
		want []string
	}{
		{"clean", StormResult{Policy: "mriot", Devices: 200, AllActive: 25 * time.Second, Floor: 20 * time.Second, MinimalFloor: 20 * time.Second,
			Regions: []RegionResult{{Name: "eu-west-1", Calls: map[string]int{"DescribeCertificate": 200}, Floor: 20 * time.Second, Slowest: "DescribeCertificate", Active: 25 * time.Second}}},
			[]string{"calls DescribeCertificate 200; throttled none; floor 20.0s (DescribeCertificate); all ACTIVE here after 25.0s = 1.25 × floor",
				"ratio [mriot]: all ACTIVE everywhere after 25.0s = 1.25 × floor (20.0s), 1.25 × minimal floor (20.0s); dead letters 0; lost 0"}},
		{"dead letters", StormResult{Policy: "seed", Devices: 2, DeadLetters: 1, Lost: 1, Floor: time.Second, MinimalFloor: time.Second, AllActive: 3 * time.Second,
			Regions: []RegionResult{{Name: "us-west-2", DeadLetters: 1, FirstDeadLetter: "replicate after 10 attempts: boom"}}},
			[]string{"us-west-2       first dead letter: replicate after 10 attempts: boom", "not every device ACTIVE here; dead letters 1",
				"ratio [seed]: not all ACTIVE everywhere within 3.0s = > 3.00 × floor (1.0s), > 3.00 × minimal floor (1.0s); dead letters 1; lost 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.res.Write(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !bytes.Contains(b.Bytes(), []byte(w)) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
