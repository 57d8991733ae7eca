package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/faultmatrix"
)

const region = "eu-west-1"

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type world struct {
	g       *memddb.GlobalTable
	tbl     *memddb.Table
	tel     *memddb.Telemetry
	h       *Handler
	metrics *obs.Recorder
	payload []byte
}

func newWorld(cfg Config) (*world, error) {
	w := &world{metrics: obs.NewRecorder()}
	w.g = memddb.NewGlobalTable("data", memddb.DataKey, []string{region})
	w.tbl = w.g.Replica(region)
	w.tel = memddb.NewTelemetry(w.tbl)
	cfg.Telemetry, cfg.Region, cfg.Metrics = w.tel, region, w.metrics
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return t0 }
	}
	var err error
	if w.h, err = New(cfg); err != nil {
		w.g.Close()
		return nil, err
	}
	w.payload = event("dev-1", `{"temp":21.5}`, 1767225600123, "6c1f1d4e-8e5b-4f4a-9a53-2f0c7f3b9a11")
	return w, nil
}

func event(device, message string, ts int64, id string) []byte {
	return fmt.Appendf(nil, `{"message":%s,"device":%q,"ts":%d,"id":%q}`, message, device, ts, id)
}

func (w *world) close() { w.g.Close() }

func (w *world) deliver(ctx context.Context) error {
	_, err := w.h.Invoke(ctx, w.payload)
	return err
}

type state []map[string]types.AttributeValue

func (w *world) state() any { return state(w.tbl.Snapshot()) }

func scenario(name string, prepare func(*world) error) faultmatrix.Scenario {
	return faultmatrix.Scenario{Name: name, New: func(in *faultmatrix.Injector) (*faultmatrix.World, error) {
		w, err := newWorld(Config{})
		if err != nil {
			return nil, err
		}
		if prepare != nil {
			if err := prepare(w); err != nil {
				w.close()
				return nil, err
			}
		}
		w.tbl.SetHook(in.Before("ddb"))
		w.tbl.SetAfter(in.After("ddb"))
		return &faultmatrix.World{Deliver: w.deliver, State: w.state, Close: w.close}, nil
	}}
}

func TestFaultMatrix(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(*world) error
	}{
		{"fresh", nil},
		{"other messages stored", func(w *world) error {
			for i, id := range []string{"a-1", "a-2"} {
				// Same millisecond as the event, other ids: must not collide.
				if _, err := w.h.Invoke(context.Background(), event("dev-1", `{"n":`+fmt.Sprint(i)+`}`, 1767225600123, id)); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, err := faultmatrix.Run(scenario(tt.name, tt.prepare))
			if err != nil {
				t.Fatal(err)
			}
			if len(calls) != 1 || calls[0].Op != "PutItem" {
				t.Errorf("clean run calls %v, want one PutItem", calls)
			}
		})
	}
}

func TestStore(t *testing.T) {
	w, err := newWorld(Config{Retention: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	ctx := context.Background()
	msgs := []struct {
		message string
		ts      int64
		id      string
	}{
		{`{"temp": 21.5, "unit":"C"}`, 5, "id-1"},
		{`"text"`, 5, "id-2"}, // same millisecond
		{`[1,2,3]`, 1767225600124, "id-3"},
	}
	for _, m := range msgs {
		if _, err := w.h.Invoke(ctx, event("dev-1", m.message, m.ts, m.id)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := w.tel.Query(ctx, "dev-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d messages stored, want %d", len(got), len(msgs))
	}
	for i, m := range got { // newest first
		want := msgs[len(msgs)-1-i]
		if string(m.Payload) != want.message || m.ID != want.id || m.Timestamp != want.ts || m.Region != region ||
			m.SortKey != fleet.SortKey(want.ts, want.id) || !m.ExpiresAt.Equal(t0.Add(48*time.Hour)) {
			t.Errorf("message %d: %+v, want %+v", i, m, want)
		}
	}
	items := w.tbl.Snapshot()
	if sk := items[0][ddbitem.AttrSK].(*types.AttributeValueMemberS).Value; sk != "0000000000005#id-1" {
		t.Errorf("first sort key %q, want zero-padded", sk)
	}
	if got := w.metrics.Get("Stored", obs.D("Function", Function)); got != 3 {
		t.Errorf("Stored = %v", got)
	}
	// A redelivery is a success and stores nothing.
	if _, err := w.h.Invoke(ctx, event("dev-1", msgs[0].message, msgs[0].ts, msgs[0].id)); err != nil {
		t.Fatal(err)
	}
	if n := w.tbl.Len(); n != 3 {
		t.Errorf("%d items after a redelivery, want 3", n)
	}
	if got := w.metrics.Get("Duplicate", obs.D("Function", Function)); got != 1 {
		t.Errorf("Duplicate = %v", got)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name, payload, reason string
	}{
		{"not JSON", `{"device":`, "bad_event"},
		{"bad device", string(event("a b", `1`, 1, "x")), "bad_device"},
		{"no message", `{"device":"d","ts":1,"id":"x"}`, "bad_event"},
		{"null message", string(event("d", `null`, 1, "x")), "bad_event"},
		{"too large", string(event("d", `"`+strings.Repeat("x", 64)+`"`, 1, "x")), "too_large"},
		{"bad ts", `{"message":1,"device":"d","ts":"soon","id":"x"}`, "bad_event"},
		{"zero ts", string(event("d", `1`, 0, "x")), "bad_event"},
		{"bad id", string(event("d", `1`, 1, "x y")), "bad_event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld(Config{MaxMessageBytes: 32})
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			if _, err := w.h.Invoke(context.Background(), []byte(tt.payload)); err != nil {
				t.Fatalf("Invoke: %v, want nil (not retried)", err)
			}
			if got := w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", tt.reason)); got != 1 {
				t.Errorf("Rejected{%s} = %v; metrics %v", tt.reason, got, w.metrics.Snapshot())
			}
			if n := w.tbl.Len(); n != 0 {
				t.Errorf("%d items stored", n)
			}
		})
	}
}

func TestStoreFailures(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		retryable bool
	}{
		{"throttled", fmt.Errorf("PutItem: %w", fleet.ErrThrottled), true},
		{"unavailable", fmt.Errorf("PutItem: %w", fleet.ErrUnavailable), true},
		{"invalid", fmt.Errorf("PutItem: %w", fleet.ErrInvalid), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld(Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			w.tbl.SetHook(func(context.Context, string) error { return tt.err })
			err = w.deliver(context.Background())
			if err == nil || saga.IsRetryable(err) != tt.retryable || !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want retryable=%v wrapping %v", err, tt.retryable, tt.err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	g := memddb.NewGlobalTable("data", memddb.DataKey, []string{region})
	defer g.Close()
	tel := memddb.NewTelemetry(g.Replica(region))
	for name, cfg := range map[string]Config{
		"no table":           {Region: region},
		"no region":          {Telemetry: tel},
		"negative size":      {Telemetry: tel, Region: region, MaxMessageBytes: -1},
		"negative retention": {Telemetry: tel, Region: region, Retention: -time.Hour},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestEventFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	more, _ := filepath.Glob("../../../events/ingest-*.json")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fleet.ParseTelemetryEvent(b, DefaultMaxMessageBytes); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// FuzzParseTelemetryEvent: never a panic; a refused event wraps ErrInvalid and
// is dropped without an error; an accepted one is stored once.
func FuzzParseTelemetryEvent(f *testing.F) {
	if b, err := os.ReadFile("testdata/telemetry.json"); err == nil {
		f.Add(b)
	}
	f.Add(event("dev-1", `{"a":[1,2,{"b":null}]}`, 1, "id"))
	f.Add([]byte(`{"message":"x","device":"d","ts":1.5,"id":"i"}`))
	f.Add([]byte(`{"message":"x","device":"d","ts":99999999999999999999,"id":"i"}`))
	f.Add([]byte(`{"message":{},"device":"","ts":1,"id":"i"}`))
	f.Add([]byte(`null`))
	w, err := newWorld(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(w.close)
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := fleet.ParseTelemetryEvent(payload, DefaultMaxMessageBytes)
		if err != nil && !errors.Is(err, fleet.ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
		if _, herr := w.h.Invoke(context.Background(), payload); herr != nil {
			t.Fatalf("Invoke: %v", herr)
		}
		if err != nil {
			return
		}
		if fleet.ValidateThingName(ev.Device) != nil || ev.TS <= 0 || len(ev.Message) == 0 {
			t.Fatalf("accepted %+v", ev)
		}
		got, qerr := w.tel.Query(context.Background(), ev.Device, 1000)
		if qerr != nil {
			t.Fatal(qerr)
		}
		n := 0
		for _, m := range got {
			if m.ID == ev.ID && m.Timestamp == ev.TS {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d items for %s/%d/%s", n, ev.Device, ev.TS, ev.ID)
		}
	})
}

// BenchmarkIngest measures one data-rule event stored in the in-memory table.
func BenchmarkIngest(b *testing.B) {
	w, err := newWorld(Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	ctx := context.Background()
	// Every iteration stores a message never seen: a payload reused would
	// measure the duplicate path after the first round.
	payloads := make([][]byte, b.N)
	for i := range payloads {
		payloads[i] = event(fmt.Sprintf("dev-%d", i%32), `{"temp":21.5,"hum":40,"seq":`+fmt.Sprint(i)+`}`, 1767225600000+int64(i), fmt.Sprintf("6c1f1d4e-8e5b-4f4a-9a53-%012d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := w.h.Invoke(ctx, payloads[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := w.metrics.Get("Duplicate", obs.D("Function", Function)); got != 0 {
		b.Fatalf("%v duplicates: the benchmark measured redeliveries", got)
	}
}
