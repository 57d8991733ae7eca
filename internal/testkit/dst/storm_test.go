package dst

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScaleCurve is the onboarding storm on the virtual clock at several
// fleet sizes and region counts (docs/performance.md, "Scale curve").
// Under make test it runs a tiny storm and checks its ratio line; with
// SCALE_CURVE=1 it runs SCALE_DEVICES (default 1000,10000) × SCALE_REGIONS
// (default 2,3,6), prints the table and writes docs/scale.svg:
//
//	SCALE_CURVE=1 go test -count=1 -timeout 1h -run TestScaleCurve -v ./internal/testkit/dst
func TestScaleCurve(t *testing.T) {
	sizes, regions := []int{30}, []int{2, 3}
	full := os.Getenv("SCALE_CURVE") == "1"
	if full {
		sizes = envInts(t, "SCALE_DEVICES", []int{1000, 10000})
		regions = envInts(t, "SCALE_REGIONS", []int{2, 3, 6})
	}
	devs, err := NewStormPKI()
	if err != nil {
		t.Fatal(err)
	}
	var rows []ScaleRow
	for _, n := range sizes {
		for _, r := range regions {
			start := time.Now()
			res, err := RunStorm(StormConfig{Seed: 1, Devices: n, Regions: r, Devs: devs})
			if err != nil {
				t.Fatal(err)
			}
			row := ScaleRow{StormResult: res, Wall: time.Since(start)}
			rows = append(rows, row)
			t.Logf("ratio: %d devices, %d regions: all ACTIVE everywhere after %.1fs = %.2f × minimal floor (%.0fs), %.2f × floor of the calls (%.0fs); origin %.2f ×; dead letters %d; lost %d; jitr runs %d (%d failed, %d stale duplicates); %d connection attempts, %d steps in %s",
				n, r, res.AllActive.Seconds(), res.MinimalRatio(), res.MinimalFloor.Seconds(), res.Ratio(), res.Floor.Seconds(), row.OriginRatio(),
				res.DeadLetters, res.Lost, res.JITRRuns, res.JITRFailed, res.StaleDuplicates(), res.Connects, res.Steps, row.Wall.Round(time.Millisecond))
			if res.Lost != 0 || res.DeadLetters != 0 {
				t.Errorf("%d devices, %d regions: %d lost, %d dead letters", n, r, res.Lost, res.DeadLetters)
			}
			if res.MinimalRatio() < 1 && n > 20 {
				t.Errorf("%d devices, %d regions: %.2f × the minimal floor: faster than the quotas allow", n, r, res.MinimalRatio())
			}
		}
	}
	var table bytes.Buffer
	if err := WriteScaleTable(&table, rows); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	svg := ScaleSVG(rows)
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<polyline") != len(regions) {
		t.Errorf("chart has %d lines, want %d", strings.Count(svg, "<polyline"), len(regions))
	}
	if full {
		if err := os.WriteFile("../../../docs/scale.svg", []byte(svg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func envInts(t *testing.T, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		out = append(out, n)
	}
	return out
}

// TestStormIsQuotaBound: the virtual storm cannot beat the quotas, and a
// device whose certificate the registry never activates is lost.
func TestStormIsQuotaBound(t *testing.T) {
	res, err := RunStorm(StormConfig{Seed: 2, Devices: 100, Regions: 2})
	if err != nil {
		t.Fatal(err)
	}
	// 100 DescribeCertificate at 10 TPS with a burst of 10: at least 9 s.
	if res.AllActive < 9*time.Second || res.Calls[0]["DescribeCertificate"] < 100 || res.Calls[1]["RegisterCertificate"] < 100 {
		t.Errorf("all ACTIVE after %v with calls %v", res.AllActive, res.Calls)
	}
	if res.Lost != 0 || res.RegionActive[0] > res.AllActive || res.RegionActive[1] > res.AllActive {
		t.Errorf("lost %d; regions ACTIVE at %v, all at %v", res.Lost, res.RegionActive, res.AllActive)
	}
	// A limit shorter than the floor loses devices.
	short, err := RunStorm(StormConfig{Seed: 2, Devices: 100, Regions: 2, Limit: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if short.Lost == 0 || short.AllActive != 3*time.Second {
		t.Errorf("a 3 s limit: %d lost, all ACTIVE after %v", short.Lost, short.AllActive)
	}
}

func TestScaleSVG(t *testing.T) {
	row := func(n, r int, active time.Duration) ScaleRow {
		return ScaleRow{StormResult: StormResult{Devices: n, Regions: r, MinimalFloor: time.Duration(n) * time.Second / 10,
			AllActive: active, RegionActive: []time.Duration{active}}}
	}
	svg := ScaleSVG([]ScaleRow{row(1000, 2, 110*time.Second), row(10000, 2, 1300*time.Second), row(1000, 3, 120*time.Second)})
	for _, want := range []string{"2 regions", "3 regions", "target 1.25×", ">1000<", ">10000<", "1.30×"} {
		if !strings.Contains(svg, want) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if got := regexp.MustCompile(`<polyline`).FindAllString(svg, -1); len(got) != 2 {
		t.Errorf("%d lines, want 2", len(got))
	}
}
