package dst

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/obs"
)

// ScaleRow is one storm of the scale curve.
type ScaleRow struct {
	StormResult
	// Wall is the real time the simulation took.
	Wall time.Duration
}

// OriginRatio is when every device was ACTIVE in the onboarding region,
// over the minimal floor.
func (r ScaleRow) OriginRatio() float64 {
	return r.RegionActive[0].Seconds() / r.MinimalFloor.Seconds()
}

// StaleDuplicates are the events jitr handled after its deduplication
// window: each cost one DescribeCertificate to find the certificate ACTIVE.
func (r StormResult) StaleDuplicates() int {
	return int(r.Metrics[obs.Key("DuplicateEvent", obs.D("Function", "jitr"), obs.D("Reason", "already_active"))])
}

// WriteScaleTable writes the rows as a Markdown table.
func WriteScaleTable(w io.Writer, rows []ScaleRow) error {
	var b strings.Builder
	b.WriteString("| devices | regions | minimal floor | floor of the calls made | origin all ACTIVE | all ACTIVE everywhere | × minimal floor | × floor of the calls | DescribeCertificate at the origin (throttled) | stale duplicates (one DescribeCertificate each) | jitr runs (failed) | connection attempts | dead letters | lost |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %d | %.0f s | %.0f s | %.0f s | %.0f s | **%.2f** | %.2f | %d (%d) | %d | %d (%d) | %d | %d | %d |\n",
			r.Devices, r.Regions, r.MinimalFloor.Seconds(), r.Floor.Seconds(), r.RegionActive[0].Seconds(), r.AllActive.Seconds(),
			r.MinimalRatio(), r.Ratio(), r.Calls[0]["DescribeCertificate"], r.Throttled[0]["DescribeCertificate"], r.StaleDuplicates(),
			r.JITRRuns, r.JITRFailed, r.Connects, r.DeadLetters, r.Lost)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ScaleSVG draws the rows: time to all ACTIVE everywhere over the minimal
// floor against the devices (log scale), a line per region count, and the
// 1.25 target.
func ScaleSVG(rows []ScaleRow) string {
	const (
		width, height          = 640, 400
		left, right, top, bott = 70, 150, 40, 60
	)
	var sizes, regions []int
	ymax := 1.5
	for _, r := range rows {
		if !slices.Contains(sizes, r.Devices) {
			sizes = append(sizes, r.Devices)
		}
		if !slices.Contains(regions, r.Regions) {
			regions = append(regions, r.Regions)
		}
		ymax = max(ymax, r.MinimalRatio()*1.1)
	}
	slices.Sort(sizes)
	slices.Sort(regions)
	ymax = math.Ceil(ymax*2) / 2
	lo, hi := math.Log10(float64(sizes[0])), math.Log10(float64(sizes[len(sizes)-1]))
	if hi-lo < 1 {
		hi = lo + 1
	}
	x := func(n int) float64 {
		return left + (math.Log10(float64(n))-lo)/(hi-lo)*float64(width-left-right)
	}
	y := func(v float64) float64 { return float64(height-bott) - v/ymax*float64(height-top-bott) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">Onboarding storm on the virtual clock: time to all ACTIVE everywhere ÷ minimal quota floor</text>`+"\n", left-40)
	// Axes, grid and ticks.
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, height-bott, width-right, height-bott)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, height-bott)
	for v := 0.0; v <= ymax+1e-9; v += 0.5 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%.1f×</text>`+"\n",
			left, y(v), width-right, y(v), left-6, y(v)+4, v)
	}
	for _, n := range sizes {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black"/><text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n",
			x(n), height-bott, x(n), height-bott+5, x(n), height-bott+20, n)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">devices (log scale)</text>`+"\n", (left+width-right)/2, height-bott+42)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/><text x="%d" y="%.1f" fill="#c00">target 1.25×</text>`+"\n",
		left, y(1.25), width-right, y(1.25), width-right+8, y(1.25)+4)
	colors := []string{"#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"}
	for i, reg := range regions {
		color := colors[i%len(colors)]
		var pts []string
		for _, r := range rows {
			if r.Regions == reg {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(r.Devices), y(r.MinimalRatio())))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%d devices, %d regions: %.2f×</title></circle>`+"\n",
					x(r.Devices), y(r.MinimalRatio()), color, r.Devices, r.Regions, r.MinimalRatio())
			}
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/><text x="%d" y="%d">%d regions</text>`+"\n",
			width-right+8, top+20*i+20, width-right+28, top+20*i+20, color, width-right+34, top+20*i+24, reg)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
