package presence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/memddb"
)

const (
	eu = "eu-west-1"
	us = "us-west-2"
)

var regions = []string{eu, us}

var t0 = time.UnixMilli(1767225600000).UTC()

// world is the presence table in two regions, replicated by hand, and each
// region's handler.
type world struct {
	g       *memddb.GlobalTable
	h       map[string]*Handler
	stores  map[string]*memddb.Presence
	read    map[string]int64 // stream position per region
	metrics *obs.Recorder
}

type devices map[string]bool

func (d devices) Get(_ context.Context, name string) (fleet.Device, error) {
	if d[name] {
		return fleet.Device{ThingName: name}, nil
	}
	return fleet.Device{}, fmt.Errorf("get %s: %w", name, fleet.ErrNotFound)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{g: memddb.NewGlobalTable("presence", memddb.PresenceKey, regions, memddb.PresenceIndexes, memddb.WithManualReplication()),
		h: map[string]*Handler{}, stores: map[string]*memddb.Presence{}, read: map[string]int64{}, metrics: obs.NewRecorder()}
	t.Cleanup(w.g.Close)
	for _, r := range regions {
		w.stores[r] = memddb.NewPresence(w.g.Replica(r))
		h, err := New(Config{Store: w.stores[r], Devices: devices{"dev-1": true, "test_001": true}, Region: r, Regions: regions,
			Now: func() time.Time { return t0 }, Metrics: w.metrics})
		if err != nil {
			t.Fatal(err)
		}
		w.h[r] = h
	}
	return w
}

func event(thing, typ, session string, version, atMS int64) []byte {
	return fmt.Appendf(nil, `{"clientId":%q,"timestamp":%d,"eventType":%q,"sessionIdentifier":%q,"principalIdentifier":"p","versionNumber":%d}`,
		thing, t0.UnixMilli()+atMS, typ, session, version)
}

func (w *world) deliver(t *testing.T, region string, payload []byte) {
	t.Helper()
	if _, err := w.h[region].Invoke(context.Background(), payload); err != nil {
		t.Fatalf("%s: invoke: %v", region, err)
	}
}

// settle replicates and hands every region's new stream records to its
// handler (withStream) until nothing moves.
func (w *world) settle(t *testing.T, withStream bool) {
	t.Helper()
	for range 100 {
		moved := false
		for _, r := range regions {
			for w.g.Replica(r).ApplyNext() {
				moved = true
			}
		}
		for _, r := range regions {
			recs, seq := w.g.Replica(r).StreamSince(w.read[r])
			w.read[r] = seq
			if len(recs) == 0 || !withStream {
				continue
			}
			moved = true
			if err := w.h[r].HandleStream(context.Background(), events.DynamoDBEvent{Records: recs}); err != nil {
				t.Fatal(err)
			}
		}
		if !moved {
			return
		}
	}
	t.Fatal("presence does not settle")
}

func (w *world) presence(t *testing.T, region, thing string) fleet.Presence {
	t.Helper()
	p, err := w.stores[region].Get(context.Background(), thing)
	if err != nil {
		t.Fatalf("%s: %v", region, err)
	}
	return p
}

// TestMoveWithLateDisconnect is the case: the device moves from eu
// to us, and eu's disconnect (its keepalive timeout, timestamped after the
// connect in us) is applied in eu before the us writes reach it, so eu
// writes the staler presence item last: replication keeps it everywhere
// until the stream's folds restore the newer session.
func TestMoveWithLateDisconnect(t *testing.T) {
	for _, withStream := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream folds %v", withStream), func(t *testing.T) {
			w := newWorld(t)
			w.deliver(t, eu, event("dev-1", "connected", "a", 0, 100))
			w.settle(t, withStream)
			if p := w.presence(t, us, "dev-1"); !p.Connected || p.Region != eu {
				t.Fatalf("after the first connect: %+v", p)
			}
			w.deliver(t, us, event("dev-1", "connected", "b", 0, 500))
			w.deliver(t, eu, event("dev-1", "disconnected", "a", 0, 900)) // applied in eu before us's writes arrive
			w.settle(t, withStream)
			for _, r := range regions {
				p := w.presence(t, r, "dev-1")
				ok := p.Connected && p.Region == us && p.SessionID == "b" && p.Since.Equal(t0.Add(500*time.Millisecond)) &&
					p.LastSeen.Equal(t0.Add(900*time.Millisecond))
				if ok != withStream {
					t.Errorf("%s: %+v (connected in us: %v, want %v)", r, p, ok, withStream)
				}
			}
		})
	}
}

func TestHandleOrdersWithinARegion(t *testing.T) {
	w := newWorld(t)
	// A takeover in one region: the new connection's connect, then the old
	// one's disconnect (DUPLICATE_CLIENTID), later in time.
	w.deliver(t, eu, event("dev-1", "connected", "a", 3, 100))
	w.deliver(t, eu, event("dev-1", "connected", "b", 4, 200))
	w.deliver(t, eu, event("dev-1", "disconnected", "a", 3, 201))
	w.deliver(t, eu, event("dev-1", "connected", "b", 4, 200)) // duplicate
	p := w.presence(t, eu, "dev-1")
	if !p.Connected || p.SessionID != "b" || p.Version != 4 {
		t.Fatalf("after the takeover: %+v, want connected in session b", p)
	}
	if got := w.metrics.Get(MetricStale, obs.D("Function", Function), obs.D("Type", fleet.EventDisconnected)); got != 1 {
		t.Errorf("PresenceStale disconnected = %v, want 1", got)
	}
	if got := w.metrics.Get(MetricStale, obs.D("Function", Function), obs.D("Type", fleet.EventConnected)); got != 1 {
		t.Errorf("PresenceStale connected = %v, want 1", got)
	}
	if got := w.metrics.Get(MetricEvents, obs.D("Function", Function), obs.D("Type", fleet.EventConnected)); got != 2 {
		t.Errorf("PresenceEvents connected = %v, want 2", got)
	}
}

func TestInvokeRejectsAndIgnores(t *testing.T) {
	w := newWorld(t)
	for _, bad := range []string{`not json`, `{"clientId":"dev-1"}`, `{"Records":"x"}`} {
		if _, err := w.h[eu].Invoke(context.Background(), []byte(bad)); err != nil {
			t.Errorf("%s: %v, want nil (dropped)", bad, err)
		}
	}
	if got := w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", "bad_event")) + w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", "bad_stream_batch")); got != 3 {
		t.Errorf("Rejected = %v, want 3", got)
	}
	w.deliver(t, eu, event("mosquitto-sub-1", "connected", "m", 0, 1))
	if _, err := w.stores[eu].Get(context.Background(), "mosquitto-sub-1"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("a client that is no device has presence: %v", err)
	}
	if got := w.metrics.Get(MetricIgnored, obs.D("Function", Function)); got != 1 {
		t.Errorf("PresenceIgnored = %v, want 1", got)
	}
}

func TestFixtures(t *testing.T) {
	w := newWorld(t)
	for _, f := range []string{"presence-connected.json", "presence-disconnected.json"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "events", f))
		if err != nil {
			t.Fatal(err)
		}
		w.deliver(t, eu, raw)
	}
	p := w.presence(t, eu, "test_001")
	if p.Connected || p.Region != eu || p.LastSeen.UnixMilli() != 1767225900456 {
		t.Fatalf("after the fixtures: %+v", p)
	}
}

type failingStore struct {
	Store
	err error
}

func (f failingStore) Sessions(context.Context, string, []string) ([]fleet.SessionRecord, error) {
	return nil, f.err
}

func TestFailuresAreReturned(t *testing.T) {
	w := newWorld(t)
	h, err := New(Config{Store: failingStore{Store: w.stores[eu], err: fmt.Errorf("read: %w", fleet.ErrUnavailable)},
		Region: eu, Regions: regions})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(context.Background(), event("dev-1", "connected", "a", 0, 1)); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("a failed fold: %v, want it returned for retry", err)
	}
	batch := events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{{Change: events.DynamoDBStreamRecord{
		Keys: map[string]events.DynamoDBAttributeValue{"ThingName": events.NewStringAttribute("dev-1#us-west-2")}}}}}
	if err := h.HandleStream(context.Background(), batch); !errors.Is(err, fleet.ErrUnavailable) {
		t.Errorf("a failed stream fold: %v, want it returned for retry", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	s := memddb.NewPresence(nil)
	for _, cfg := range []Config{
		{Region: eu, Regions: regions},
		{Store: s, Regions: regions},
		{Store: s, Region: "ap-south-1", Regions: regions},
		{Store: s, Region: eu, Regions: []string{eu, ""}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
