package obs

import (
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Namespace is the CloudWatch namespace of every mriot metric.
const Namespace = "mriot"

// Dim is one metric dimension.
type Dim struct{ Name, Value string }

// D builds a Dim.
func D(name, value string) Dim { return Dim{name, value} }

// Metrics counts things. Implementations must be safe for concurrent use.
type Metrics interface {
	// Count adds n to the metric name under the given dimensions.
	Count(name string, n float64, dims ...Dim)
}

// EMF writes each count as one CloudWatch embedded-metric-format JSON line;
// in Lambda, writing it to stdout is enough for CloudWatch to extract it.
type EMF struct {
	mu        sync.Mutex
	w         io.Writer
	namespace string
	now       func() time.Time
}

var _ Metrics = (*EMF)(nil)

// NewEMF returns an EMF writer on w in namespace ns (Namespace when empty).
func NewEMF(w io.Writer, ns string) *EMF {
	if ns == "" {
		ns = Namespace
	}
	return &EMF{w: w, namespace: ns, now: time.Now}
}

type emfDirective struct {
	Namespace  string       `json:"Namespace"`
	Dimensions [][]string   `json:"Dimensions"`
	Metrics    []emfMetricD `json:"Metrics"`
}

type emfMetricD struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

// Count implements Metrics.
func (e *EMF) Count(name string, n float64, dims ...Dim) {
	doc := make(map[string]any, len(dims)+2)
	names := make([]string, 0, len(dims))
	for _, d := range dims {
		doc[d.Name] = d.Value
		names = append(names, d.Name)
	}
	doc[name] = n
	doc["_aws"] = map[string]any{
		"Timestamp": e.now().UnixMilli(),
		"CloudWatchMetrics": []emfDirective{{
			Namespace:  e.namespace,
			Dimensions: [][]string{names},
			Metrics:    []emfMetricD{{Name: name, Unit: "Count"}},
		}},
	}
	e.writeDoc(doc)
}

// Recorder keeps counts in memory: for tests and for the local stack's view.
type Recorder struct {
	mu     sync.Mutex
	counts map[string]float64
}

var _ Metrics = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{counts: map[string]float64{}} }

// Count implements Metrics.
func (r *Recorder) Count(name string, n float64, dims ...Dim) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[Key(name, dims...)] += n
}

// Get returns the count of name under exactly dims.
func (r *Recorder) Get(name string, dims ...Dim) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[Key(name, dims...)]
}

// Snapshot returns a copy of every count, keyed as Key builds keys.
func (r *Recorder) Snapshot() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.counts)
}

// Key renders a metric and its dimensions as "name{a=1,b=2}" with dimensions
// sorted by name.
func Key(name string, dims ...Dim) string {
	if len(dims) == 0 {
		return name
	}
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = d.Name + "=" + d.Value
	}
	slices.Sort(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// Nop is a Metrics that drops every count.
type Nop struct{}

// Count implements Metrics.
func (Nop) Count(string, float64, ...Dim) {}
