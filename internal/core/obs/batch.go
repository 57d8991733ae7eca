package obs

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
)

// maxMetricsPerLine is CloudWatch's limit of metrics in one EMF document.
const maxMetricsPerLine = 100

// Batch gathers counts and writes them, when flushed, in as few EMF lines as
// CloudWatch allows: the counts of one metric under the same dimensions add
// up, and metrics whose dimension values do not clash share a line, each
// with its own directive. A Lambda function flushes at the end of every
// invocation (wiring.Flushed), so a line costs an invocation, not a count.
type Batch struct {
	mu      sync.Mutex
	emf     *EMF
	entries []*batchEntry
	byKey   map[string]*batchEntry
}

type batchEntry struct {
	name string
	dims []Dim
	n    float64
}

var _ Metrics = (*Batch)(nil)

// NewBatch returns a Batch that writes through emf.
func NewBatch(emf *EMF) *Batch { return &Batch{emf: emf, byKey: map[string]*batchEntry{}} }

// Count implements Metrics: it adds n until the next Flush.
func (b *Batch) Count(name string, n float64, dims ...Dim) {
	k := Key(name, dims...)
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.byKey[k]; ok {
		e.n += n
		return
	}
	e := &batchEntry{name: name, dims: slices.Clone(dims), n: n}
	b.byKey[k] = e
	b.entries = append(b.entries, e)
}

// Flush writes what was counted since the last Flush and forgets it.
func (b *Batch) Flush() {
	b.mu.Lock()
	entries := b.entries
	b.entries, b.byKey = nil, map[string]*batchEntry{}
	b.mu.Unlock()
	if len(entries) == 0 {
		return
	}
	var docs []*emfDoc
	for _, e := range entries {
		placed := false
		for _, d := range docs {
			if d.add(e) {
				placed = true
				break
			}
		}
		if !placed {
			d := &emfDoc{values: map[string]any{}}
			d.add(e)
			docs = append(docs, d)
		}
	}
	ts := b.emf.now().UnixMilli()
	for _, d := range docs {
		b.emf.writeDoc(d.document(b.emf.namespace, ts))
	}
}

// emfDoc is one EMF line in the making: the top-level values (dimension
// values and metric values) and one directive per metric.
type emfDoc struct {
	values     map[string]any
	directives []emfDirective
	metrics    int
}

// add puts e in the document unless one of its dimensions has another value
// there, its name is taken, or the document is full.
func (d *emfDoc) add(e *batchEntry) bool {
	if d.metrics >= maxMetricsPerLine {
		return false
	}
	if _, taken := d.values[e.name]; taken {
		return false
	}
	for _, dim := range e.dims {
		if v, ok := d.values[dim.Name]; ok && v != dim.Value {
			return false
		}
		if dim.Name == e.name {
			return false
		}
	}
	names := make([]string, len(e.dims))
	for i, dim := range e.dims {
		d.values[dim.Name] = dim.Value
		names[i] = dim.Name
	}
	d.values[e.name] = e.n
	d.directives = append(d.directives, emfDirective{Dimensions: [][]string{names}, Metrics: []emfMetricD{{Name: e.name, Unit: "Count"}}})
	d.metrics++
	return true
}

func (d *emfDoc) document(namespace string, ts int64) map[string]any {
	doc := make(map[string]any, len(d.values)+1)
	maps.Copy(doc, d.values)
	dirs := make([]emfDirective, len(d.directives))
	for i, dir := range d.directives {
		dir.Namespace = namespace
		dirs[i] = dir
	}
	doc["_aws"] = map[string]any{"Timestamp": ts, "CloudWatchMetrics": dirs}
	return doc
}

// writeDoc writes one EMF document as a line.
func (e *EMF) writeDoc(doc map[string]any) {
	line, err := json.Marshal(doc)
	if err != nil {
		return
	}
	line = append(line, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(line)
}
