package obs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"
)

// extract reads EMF lines as CloudWatch does: for every directive of every
// line, each metric under each dimension set gets the line's value, keyed by
// Key. It fails on a line CloudWatch would reject: a metric or dimension
// missing from the top level, more than 100 metrics, a directive without a
// namespace.
func extract(t *testing.T, out []byte) (map[string]float64, int) {
	t.Helper()
	got := map[string]float64{}
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		lines++
		var doc map[string]any
		if err := json.Unmarshal(sc.Bytes(), &doc); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		var meta struct {
			Timestamp         int64
			CloudWatchMetrics []emfDirective
		}
		raw, _ := json.Marshal(doc["_aws"])
		if err := json.Unmarshal(raw, &meta); err != nil || meta.Timestamp == 0 {
			t.Fatalf("bad _aws in %s", sc.Text())
		}
		metrics := 0
		for _, d := range meta.CloudWatchMetrics {
			if d.Namespace == "" {
				t.Fatalf("directive without namespace: %s", sc.Text())
			}
			for _, m := range d.Metrics {
				metrics++
				v, ok := doc[m.Name].(float64)
				if !ok {
					t.Fatalf("metric %s has no value in %s", m.Name, sc.Text())
				}
				for _, set := range d.Dimensions {
					dims := make([]Dim, len(set))
					for i, name := range set {
						s, ok := doc[name].(string)
						if !ok {
							t.Fatalf("dimension %s has no value in %s", name, sc.Text())
						}
						dims[i] = D(name, s)
					}
					got[Key(m.Name, dims...)] += v
				}
			}
		}
		if metrics > maxMetricsPerLine {
			t.Fatalf("%d metrics in one line", metrics)
		}
	}
	return got, lines
}

func TestBatch(t *testing.T) {
	type count struct {
		name string
		n    float64
		dims []Dim
	}
	many := make([]count, 150)
	for i := range many {
		many[i] = count{name: fmt.Sprintf("M%03d", i), n: 1, dims: []Dim{D("Function", "ingest")}}
	}
	cases := []struct {
		name      string
		counts    []count
		wantLines int
	}{
		{name: "nothing", wantLines: 0},
		{name: "one count", counts: []count{{"Stored", 1, []Dim{D("Function", "ingest")}}}, wantLines: 1},
		{name: "the same metric adds up", counts: []count{{"Stored", 1, []Dim{D("Function", "ingest")}}, {"Stored", 2, []Dim{D("Function", "ingest")}}}, wantLines: 1},
		{name: "an ingest invocation: disjoint dimensions share a line", counts: []count{
			{"Stored", 1, []Dim{D("Function", "ingest")}},
			{"SagaOutcome", 1, []Dim{D("Saga", "ingest"), D("Outcome", "completed")}},
		}, wantLines: 1},
		{name: "clashing dimension values need lines of their own", counts: []count{
			{"SagaOutcome", 1, []Dim{D("Saga", "jitr"), D("Outcome", "completed")}},
			{"StepOutcome", 1, []Dim{D("Saga", "jitr"), D("Step", "create-thing"), D("Outcome", "done")}},
			{"StepOutcome", 1, []Dim{D("Saga", "jitr"), D("Step", "attach"), D("Outcome", "done")}},
		}, wantLines: 3},
		{name: "one metric under two dimension values", counts: []count{
			{"Rejected", 1, []Dim{D("Reason", "a")}}, {"Rejected", 1, []Dim{D("Reason", "b")}},
		}, wantLines: 2},
		{name: "a metric named like a dimension", counts: []count{
			{"Outcome", 1, nil}, {"SagaOutcome", 1, []Dim{D("Outcome", "completed")}},
		}, wantLines: 2},
		{name: "no dimensions", counts: []count{{"A", 1, nil}, {"B", 2, nil}}, wantLines: 1},
		{name: "more than 100 metrics", counts: many, wantLines: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := NewEMF(&buf, "")
			e.now = func() time.Time { return time.UnixMilli(1700000000000) }
			b := NewBatch(e)
			want := map[string]float64{}
			for _, c := range tc.counts {
				b.Count(c.name, c.n, c.dims...)
				want[Key(c.name, c.dims...)] += c.n
			}
			if buf.Len() != 0 {
				t.Fatal("a count was written before Flush")
			}
			b.Flush()
			got, lines := extract(t, buf.Bytes())
			if !maps.Equal(got, want) {
				t.Errorf("CloudWatch would extract %v, want %v\n%s", got, want, buf.String())
			}
			if lines != tc.wantLines {
				t.Errorf("%d lines, want %d\n%s", lines, tc.wantLines, buf.String())
			}
			buf.Reset()
			b.Flush()
			if buf.Len() != 0 {
				t.Errorf("a second Flush wrote again: %s", buf.String())
			}
		})
	}
}
