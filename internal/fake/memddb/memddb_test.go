package memddb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

const (
	usw2 = "us-west-2"
	euw1 = "eu-west-1"
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }

func item(key, val string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"ThingName": s(key), "Val": s(val)}
}

func key(k string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"ThingName": s(k)}
}

func waitIdle(t *testing.T, g *GlobalTable) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// collector records the stream records a replica delivers.
type collector struct {
	mu   sync.Mutex
	recs []events.DynamoDBEventRecord
}

func (c *collector) add(r events.DynamoDBEventRecord) {
	c.mu.Lock()
	c.recs = append(c.recs, r)
	c.mu.Unlock()
}

func (c *collector) get() []events.DynamoDBEventRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

func subscribe(t *testing.T, tb *Table) *collector {
	c := &collector{}
	t.Cleanup(tb.Subscribe(c.add))
	return c
}

func names(recs []events.DynamoDBEventRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.EventName
	}
	return out
}

func val(img map[string]events.DynamoDBAttributeValue) string {
	if img == nil {
		return "<nil>"
	}
	return img["Val"].String()
}

func TestReplicationLag(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1}, WithReplicationLag(300*time.Millisecond))
	defer g.Close()
	ctx := context.Background()
	start := time.Now()
	if err := g.Replica(usw2).PutItem(ctx, item("a", "1"), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.Replica(usw2).GetItem(ctx, key("a")); got == nil {
		t.Fatal("the local replica does not hold the write at once")
	}
	if got, _ := g.Replica(euw1).GetItem(ctx, key("a")); got != nil {
		t.Fatal("the other replica holds the write before the lag")
	}
	waitIdle(t, g)
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond {
		t.Errorf("replicated after %v, want at least the 300ms lag", elapsed)
	}
	if got, _ := g.Replica(euw1).GetItem(ctx, key("a")); !reflect.DeepEqual(got, item("a", "1")) {
		t.Errorf("replica holds %v, want the write", got)
	}

	g.SetReplicationLag(time.Hour)
	if err := g.Replica(euw1).PutItem(ctx, item("b", "2"), nil); err != nil {
		t.Fatal(err)
	}
	flushCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := g.Flush(flushCtx); err != nil {
		t.Fatalf("Flush did not skip the lag: %v", err)
	}
	if !reflect.DeepEqual(g.Replica(usw2).Snapshot(), g.Replica(euw1).Snapshot()) {
		t.Errorf("replicas differ after Flush")
	}
}

func TestStreamRecordsOnEveryReplica(t *testing.T) {
	g := NewGlobalTable("DeviceInventory", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1},
		WithReplicationLag(5*time.Millisecond), WithAccount("111122223333"))
	defer g.Close()
	ctx := context.Background()
	cols := map[string]*collector{usw2: subscribe(t, g.Replica(usw2)), euw1: subscribe(t, g.Replica(euw1))}
	src := g.Replica(usw2)
	steps := []func() error{
		func() error { return src.PutItem(ctx, item("dev", "v1"), nil) },
		func() error { return src.PutItem(ctx, item("dev", "v1"), nil) }, // no change: no record
		func() error { return src.PutItem(ctx, item("dev", "v2"), nil) },
		func() error { return src.DeleteItem(ctx, key("dev"), nil) },
		func() error { return src.DeleteItem(ctx, key("dev"), nil) }, // absent: no record
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		waitIdle(t, g) // keep the replicas' order comparable
	}
	for region, c := range cols {
		t.Run(region, func(t *testing.T) {
			recs := c.get()
			if got := names(recs); !slices.Equal(got, []string{"INSERT", "MODIFY", "REMOVE"}) {
				t.Fatalf("records %v, want INSERT MODIFY REMOVE", got)
			}
			wantImages := [][2]string{{"<nil>", "v1"}, {"v1", "v2"}, {"v2", "<nil>"}}
			ids := map[string]bool{}
			for i, r := range recs {
				if r.AWSRegion != region || r.EventSource != "aws:dynamodb" || r.EventVersion != "1.1" {
					t.Errorf("record %d: region %q source %q version %q", i, r.AWSRegion, r.EventSource, r.EventVersion)
				}
				wantARN := "arn:aws:dynamodb:" + region + ":111122223333:table/DeviceInventory/stream/"
				if !strings.HasPrefix(r.EventSourceArn, wantARN) || len(r.EventSourceArn) == len(wantARN) {
					t.Errorf("record %d: eventSourceARN %q, want %s<label>", i, r.EventSourceArn, wantARN)
				}
				if r.Change.Keys["ThingName"].String() != "dev" || len(r.Change.Keys) != 1 {
					t.Errorf("record %d: keys %v", i, r.Change.Keys)
				}
				if got := [2]string{val(r.Change.OldImage), val(r.Change.NewImage)}; got != wantImages[i] {
					t.Errorf("record %d: old/new %v, want %v", i, got, wantImages[i])
				}
				if r.Change.StreamViewType != ViewNewAndOldImages || r.Change.SizeBytes <= 0 || r.Change.ApproximateCreationDateTime.IsZero() {
					t.Errorf("record %d: view %q size %d time %v", i, r.Change.StreamViewType, r.Change.SizeBytes, r.Change.ApproximateCreationDateTime)
				}
				if i > 0 && r.Change.SequenceNumber <= recs[i-1].Change.SequenceNumber {
					t.Errorf("sequence numbers not increasing: %s after %s", r.Change.SequenceNumber, recs[i-1].Change.SequenceNumber)
				}
				if ids[r.EventID] || r.EventID == "" {
					t.Errorf("record %d: event id %q empty or repeated", i, r.EventID)
				}
				ids[r.EventID] = true
			}
			// The records reach a Lambda as JSON; they must survive it.
			raw, err := json.Marshal(events.DynamoDBEvent{Records: recs})
			if err != nil {
				t.Fatal(err)
			}
			var back events.DynamoDBEvent
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if len(back.Records) != 3 || val(back.Records[1].Change.NewImage) != "v2" || back.Records[2].EventName != "REMOVE" {
				t.Errorf("records after JSON: %+v", back.Records)
			}
			if got := g.Replica(region).Records(); len(got) != 3 || got[0].EventID != recs[0].EventID {
				t.Errorf("Records() = %d records, want the 3 delivered", len(got))
			}
		})
	}
}

func TestStreamViewTypes(t *testing.T) {
	tests := []struct {
		view             string
		wantNew, wantOld bool
	}{
		{ViewKeysOnly, false, false},
		{ViewNewImage, true, false},
		{ViewOldImage, false, true},
		{ViewNewAndOldImages, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.view, func(t *testing.T) {
			g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2}, WithStreamView(tt.view))
			defer g.Close()
			ctx := context.Background()
			for _, v := range []string{"1", "2"} {
				if err := g.Replica(usw2).PutItem(ctx, item("k", v), nil); err != nil {
					t.Fatal(err)
				}
			}
			r := g.Replica(usw2).Records()[1]
			if (r.Change.NewImage != nil) != tt.wantNew || (r.Change.OldImage != nil) != tt.wantOld {
				t.Errorf("new image %v, old image %v; want new %v old %v", r.Change.NewImage, r.Change.OldImage, tt.wantNew, tt.wantOld)
			}
			if r.Change.StreamViewType != tt.view || r.Change.Keys["ThingName"].String() != "k" {
				t.Errorf("view %q keys %v", r.Change.StreamViewType, r.Change.Keys)
			}
		})
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func TestLastWriterWins(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name          string
		usAt, euAt    time.Time
		usOp, euOp    string // "put" or "delete"
		want          string // winning value, "" for deleted
		wantEURecords []string
		wantUSRecords []string
	}{
		{"later write wins", t0.Add(time.Second), t0, "put", "put", "us", []string{"INSERT", "MODIFY"}, []string{"INSERT"}},
		{"later write wins the other way", t0, t0.Add(time.Second), "put", "put", "eu", []string{"INSERT"}, []string{"INSERT", "MODIFY"}},
		{"tie broken by region name", t0, t0, "put", "put", "us", []string{"INSERT", "MODIFY"}, []string{"INSERT"}},
		{"a later delete beats an earlier put", t0, t0.Add(time.Second), "put", "delete", "", []string{"INSERT", "REMOVE"}, []string{"INSERT", "REMOVE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1},
				WithReplicationLag(time.Hour), WithClock(clock.Now))
			defer g.Close()
			ctx := context.Background()
			us, eu := g.Replica(usw2), g.Replica(euw1)
			if tt.euOp == "delete" {
				// The item exists in eu before the concurrent writes.
				clock.Set(t0.Add(-time.Hour))
				if err := eu.PutItem(ctx, item("k", "old"), nil); err != nil {
					t.Fatal(err)
				}
				if err := g.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			usCol, euCol := subscribe(t, us), subscribe(t, eu)
			clock.Set(tt.usAt)
			if err := us.PutItem(ctx, item("k", "us"), nil); err != nil {
				t.Fatal(err)
			}
			clock.Set(tt.euAt)
			var err error
			if tt.euOp == "delete" {
				err = eu.DeleteItem(ctx, key("k"), nil)
			} else {
				err = eu.PutItem(ctx, item("k", "eu"), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := g.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			for _, r := range []*Table{us, eu} {
				got, _ := r.GetItem(ctx, key("k"))
				switch {
				case tt.want == "" && got != nil:
					t.Errorf("%s holds %v, want deleted", r.Region(), got)
				case tt.want != "" && (got == nil || got["Val"].(*types.AttributeValueMemberS).Value != tt.want):
					t.Errorf("%s holds %v, want %q", r.Region(), got, tt.want)
				}
			}
			if !reflect.DeepEqual(us.Snapshot(), eu.Snapshot()) {
				t.Errorf("replicas did not converge")
			}
			if tt.euOp == "delete" {
				// us saw "old" replicated before, so its own put is a MODIFY.
				tt.wantUSRecords = []string{"MODIFY", "REMOVE"}
				tt.wantEURecords = []string{"REMOVE"}
			}
			if got := names(usCol.get()); !slices.Equal(got, tt.wantUSRecords) {
				t.Errorf("us-west-2 records %v, want %v", got, tt.wantUSRecords)
			}
			if got := names(euCol.get()); !slices.Equal(got, tt.wantEURecords) {
				t.Errorf("eu-west-1 records %v, want %v", got, tt.wantEURecords)
			}
		})
	}
}

func TestDeletedItemIsNotResurrected(t *testing.T) {
	clock := &fakeClock{now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1}, WithReplicationLag(time.Hour), WithClock(clock.Now))
	defer g.Close()
	ctx := context.Background()
	us, eu := g.Replica(usw2), g.Replica(euw1)
	if err := us.PutItem(ctx, item("k", "old"), nil); err != nil { // older put, still in flight
		t.Fatal(err)
	}
	clock.Set(clock.Now().Add(time.Second))
	if err := eu.PutItem(ctx, item("k", "x"), nil); err != nil {
		t.Fatal(err)
	}
	if err := eu.DeleteItem(ctx, key("k"), nil); err != nil { // newer delete
		t.Fatal(err)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if us.Len() != 0 || eu.Len() != 0 {
		t.Errorf("the older put came back: us %v, eu %v", us.Snapshot(), eu.Snapshot())
	}
}

func TestQueryAndScan(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "PK", RangeKey: "N"}, []string{usw2})
	defer g.Close()
	ctx := context.Background()
	tb := g.Replica(usw2)
	for _, num := range []string{"10", "9", "100", "-1", "2.5"} {
		if err := tb.PutItem(ctx, map[string]types.AttributeValue{"PK": s("a"), "N": n(num)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.PutItem(ctx, map[string]types.AttributeValue{"PK": s("b"), "N": n("1")}, nil); err != nil {
		t.Fatal(err)
	}
	nums := func(items []map[string]types.AttributeValue) []string {
		var out []string
		for _, it := range items {
			out = append(out, it["PK"].(*types.AttributeValueMemberS).Value+it["N"].(*types.AttributeValueMemberN).Value)
		}
		return out
	}
	tests := []struct {
		forward bool
		limit   int
		want    []string
	}{
		{true, 0, []string{"a-1", "a2.5", "a9", "a10", "a100"}},
		{false, 2, []string{"a100", "a10"}},
	}
	for _, tt := range tests {
		got, err := tb.Query(ctx, s("a"), tt.forward, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(nums(got), tt.want) {
			t.Errorf("Query(forward=%v, limit=%d) = %v, want %v (numeric order)", tt.forward, tt.limit, nums(got), tt.want)
		}
	}
	var all []string
	var start map[string]types.AttributeValue
	for {
		page, last, err := tb.Scan(ctx, start, 4)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, nums(page)...)
		if last == nil {
			break
		}
		start = last
	}
	if want := []string{"a-1", "a2.5", "a9", "a10", "a100", "b1"}; !slices.Equal(all, want) {
		t.Errorf("Scan pages = %v, want %v", all, want)
	}
	for _, bad := range []map[string]types.AttributeValue{
		{"PK": s("a")},
		{"PK": s(""), "N": n("1")},
		{"PK": s("a"), "N": &types.AttributeValueMemberBOOL{Value: true}},
		{"PK": s("a"), "N": n("one")},
	} {
		if err := tb.PutItem(ctx, bad, nil); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("PutItem(%v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestHooksAndOperationNames(t *testing.T) {
	g := NewGlobalTable("Inv", InventoryKey, []string{usw2, euw1}, InventoryIndexes)
	defer g.Close()
	dg := NewGlobalTable("Data", DataKey, []string{usw2})
	defer dg.Close()
	ctx := context.Background()
	inv, tel := NewInventory(g.Replica(usw2)), NewTelemetry(dg.Replica(usw2))
	d := fleet.Device{ThingName: "dev", CertificateID: "c", Status: fleet.StatusActive, Version: 1}
	if err := inv.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	next := d
	next.Version = 2
	calls := []struct {
		op   string
		call func() error
	}{
		{"GetItem", func() error { _, err := inv.Get(ctx, "dev"); return err }},
		{"PutItem", func() error { return inv.Create(ctx, fleet.Device{ThingName: "new", CertificateID: "x"}) }},
		{"UpdateItem", func() error { return inv.Update(ctx, next, 1) }},
		{"DeleteItem", func() error { return inv.Delete(ctx, "dev") }},
		{"Scan", func() error { _, _, err := inv.List(ctx, 10, ""); return err }},
		{"PutItem", func() error {
			return tel.Put(ctx, fleet.Message{Device: "dev", Timestamp: 1, ID: "a", Payload: []byte("{}")})
		}},
		{"Query", func() error { _, err := tel.Query(ctx, "dev", 5); return err }},
		{"Query", func() error { _, err := inv.ByCertificate(ctx, "c"); return err }},
	}
	for _, c := range calls {
		t.Run(c.op, func(t *testing.T) {
			var seen []string
			hook := func(_ context.Context, op string) error {
				seen = append(seen, op)
				return fmt.Errorf("%s: injected: %w", op, fleet.ErrUnavailable)
			}
			g.Replica(usw2).SetHook(hook)
			dg.Replica(usw2).SetHook(hook)
			defer g.Replica(usw2).SetHook(nil)
			defer dg.Replica(usw2).SetHook(nil)
			before, dataBefore := g.Replica(usw2).Snapshot(), dg.Replica(usw2).Snapshot()
			if err := c.call(); !errors.Is(err, fleet.ErrUnavailable) {
				t.Fatalf("err = %v, want the injected ErrUnavailable", err)
			}
			if !slices.Equal(seen, []string{c.op}) {
				t.Errorf("hook saw %v, want [%s]", seen, c.op)
			}
			if !reflect.DeepEqual(before, g.Replica(usw2).Snapshot()) || !reflect.DeepEqual(dataBefore, dg.Replica(usw2).Snapshot()) {
				t.Errorf("a refused call changed the table")
			}
		})
	}
	// The option applies to every replica.
	hg := NewGlobalTable("H", InventoryKey, []string{usw2, euw1}, WithHook(func(context.Context, string) error {
		return fmt.Errorf("throttled: %w", fleet.ErrThrottled)
	}))
	defer hg.Close()
	for _, r := range []string{usw2, euw1} {
		if _, err := NewInventory(hg.Replica(r)).Get(ctx, "x"); !errors.Is(err, fleet.ErrThrottled) {
			t.Errorf("%s: %v, want ErrThrottled from WithHook", r, err)
		}
	}
}

func TestAfterHook(t *testing.T) {
	g := NewGlobalTable("Inv", InventoryKey, []string{usw2})
	defer g.Close()
	var ops []string
	g.Replica(usw2).SetAfter(func(_ context.Context, op string) { ops = append(ops, op) })
	inv := NewInventory(g.Replica(usw2))
	ctx := context.Background()
	_ = inv.Create(ctx, fleet.Device{ThingName: "a", CertificateID: "c", Status: fleet.StatusActive})
	_ = inv.Create(ctx, fleet.Device{ThingName: "a", CertificateID: "other"}) // refused: no after call
	_, _ = inv.Get(ctx, "a")
	if !slices.Equal(ops, []string{"PutItem", "GetItem"}) {
		t.Errorf("after hook saw %v, want [PutItem GetItem]", ops)
	}
}

func TestSubscribeDoesNotBlockWriters(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2})
	defer g.Close()
	release := make(chan struct{})
	var got []string
	var mu sync.Mutex
	unsub := g.Replica(usw2).Subscribe(func(r events.DynamoDBEventRecord) {
		<-release
		mu.Lock()
		got = append(got, r.Change.Keys["ThingName"].String())
		mu.Unlock()
	})
	defer unsub()
	ctx := context.Background()
	start := time.Now()
	var want []string
	for i := range 200 {
		k := fmt.Sprintf("k%03d", i)
		want = append(want, k)
		if err := g.Replica(usw2).PutItem(ctx, item(k, "v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("writes took %v behind a blocked subscriber", d)
	}
	close(release)
	waitIdle(t, g)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("delivered %d records out of order or incomplete", len(got))
	}
}

// TestUnsubscribeAndClose runs in a synctest bubble: synctest.Wait returns
// once the delivery goroutine has delivered and waits for more.
func TestUnsubscribeAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1}, WithReplicationLag(time.Hour))
		ctx := context.Background()
		c := &collector{}
		unsub := g.Replica(usw2).Subscribe(c.add)
		if err := g.Replica(usw2).PutItem(ctx, item("a", "1"), nil); err != nil {
			t.Fatal(err)
		}
		// The replication is pending for an hour; only the delivery can finish.
		synctest.Wait()
		if got := len(c.get()); got != 1 {
			t.Fatalf("%d records delivered, want 1", got)
		}
		unsub()
		unsub() // twice is harmless
		if err := g.Replica(usw2).PutItem(ctx, item("b", "1"), nil); err != nil {
			t.Fatal(err)
		}
		g.Close()
		waitIdle(t, g) // Close drops pending work
		if got := len(c.get()); got != 1 {
			t.Errorf("%d records after unsubscribe, want 1", got)
		}
		if err := g.Replica(usw2).PutItem(ctx, item("c", "1"), nil); !errors.Is(err, fleet.ErrUnavailable) {
			t.Errorf("write after Close: %v, want ErrUnavailable", err)
		}
		if _, err := NewInventory(g.Replica(euw1)).Get(ctx, "a"); !errors.Is(err, fleet.ErrUnavailable) {
			t.Errorf("read after Close: %v, want ErrUnavailable", err)
		}
	})
}

func TestInventoryStreamDecodes(t *testing.T) {
	g := NewGlobalTable("Inv", InventoryKey, regionsBoth(), WithReplicationLag(time.Millisecond))
	defer g.Close()
	c := subscribe(t, g.Replica(euw1))
	d := fleet.Device{ThingName: "dev-1", CertificateID: "c", Status: fleet.StatusActive, Version: 1,
		OriginRegion: usw2, UpdatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := NewInventory(g.Replica(usw2)).Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, g)
	recs := c.get()
	if len(recs) != 1 || recs[0].EventName != "INSERT" || recs[0].AWSRegion != euw1 {
		t.Fatalf("eu-west-1 records %+v, want one replicated INSERT", recs)
	}
	got, err := ddbitem.DeviceFromStreamImage(recs[0].Change.NewImage)
	if err != nil {
		t.Fatal(err)
	}
	if got.ThingName != d.ThingName || got.OriginRegion != usw2 || got.Version != 1 || !got.UpdatedAt.Equal(d.UpdatedAt) {
		t.Errorf("decoded %+v, want %+v", got, d)
	}
	if _, err := NewInventory(g.Replica(euw1)).Get(context.Background(), "dev-1"); err != nil {
		t.Errorf("replicated device not readable in eu-west-1: %v", err)
	}
}

func regionsBoth() []string { return []string{usw2, euw1} }

func TestPortArgumentChecks(t *testing.T) {
	g := NewGlobalTable("Inv", InventoryKey, []string{usw2})
	defer g.Close()
	dg := NewGlobalTable("Data", DataKey, []string{usw2})
	defer dg.Close()
	ctx := context.Background()
	inv, tel := NewInventory(g.Replica(usw2)), NewTelemetry(dg.Replica(usw2))
	checks := map[string]error{}
	_, _, checks["List limit 0"] = inv.List(ctx, 0, "")
	_, _, checks["List bad cursor"] = inv.List(ctx, 1, "bad cursor")
	_, checks["Get bad name"] = inv.Get(ctx, "")
	checks["Delete bad name"] = inv.Delete(ctx, "a/b")
	checks["Update bad name"] = inv.Update(ctx, fleet.Device{ThingName: "a b"}, 1)
	_, checks["Query limit 0"] = tel.Query(ctx, "dev", 0)
	_, checks["Query bad device"] = tel.Query(ctx, "", 1)
	checks["Put bad device"] = tel.Put(ctx, fleet.Message{Device: "a b", Timestamp: 1, ID: "x"})
	for name, err := range checks {
		if !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestConcurrentConvergence writes the same keys from both regions at once
// with subscribers attached (run with -race); afterwards every replica holds
// the same items.
func TestConcurrentConvergence(t *testing.T) {
	g := NewGlobalTable("Inv", InventoryKey, []string{usw2, euw1, "ap-southeast-2"}, WithReplicationLag(time.Millisecond), InventoryIndexes)
	defer g.Close()
	ctx := context.Background()
	var delivered sync.Map
	for _, r := range g.Regions() {
		t.Cleanup(g.Replica(r).Subscribe(func(rec events.DynamoDBEventRecord) { delivered.Store(rec.EventID, true) }))
	}
	var wg sync.WaitGroup
	for w, r := range g.Regions() {
		wg.Go(func() {
			inv := NewInventory(g.Replica(r))
			for i := range 200 {
				name := fmt.Sprintf("dev-%d", i%17)
				var err error
				switch (i + w) % 4 {
				case 0, 1:
					err = inv.Create(ctx, fleet.Device{ThingName: name, CertificateID: r, Status: fleet.StatusActive, Version: int64(i)})
				case 2:
					err = inv.Delete(ctx, name)
				case 3:
					_, _, err = inv.List(ctx, 5, "")
				}
				if err != nil && !errors.Is(err, fleet.ErrConditionFailed) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	waitIdle(t, g)
	want := g.Replica(usw2).Snapshot()
	for _, r := range g.Regions() {
		if got := g.Replica(r).Snapshot(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s did not converge: %d items, want %d", r, len(got), len(want))
		}
	}
	wantIndexConsistent(t, g)
}

// TestFlushHurriesChainedWrites: a subscriber that writes in response to a
// record (as the replicate workflow does) gets its writes replicated by the
// same Flush, whatever the lag.
func TestFlushHurriesChainedWrites(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1}, WithReplicationLag(time.Hour))
	defer g.Close()
	ctx := context.Background()
	eu := g.Replica(euw1)
	t.Cleanup(eu.Subscribe(func(r events.DynamoDBEventRecord) {
		if r.EventName == "INSERT" && r.Change.Keys["ThingName"].String() == "a" {
			if err := eu.PutItem(ctx, item("b", "from-eu"), nil); err != nil {
				t.Error(err)
			}
		}
	}))
	if err := g.Replica(usw2).PutItem(ctx, item("a", "1"), nil); err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := g.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.Replica(usw2).GetItem(ctx, key("b")); got == nil {
		t.Errorf("the chained write did not reach us-west-2")
	}
}

func TestExpireTTL(t *testing.T) {
	g := NewGlobalTable("Data", DataKey, []string{usw2, euw1}, WithReplicationLag(time.Millisecond))
	defer g.Close()
	ctx := context.Background()
	tel := NewTelemetry(g.Replica(usw2))
	now := time.Unix(1700000000, 0)
	msgs := []fleet.Message{
		{Device: "d", Timestamp: 1, ID: "old", Payload: []byte("{}"), ExpiresAt: now.Add(-time.Second)},
		{Device: "d", Timestamp: 2, ID: "new", Payload: []byte("{}"), ExpiresAt: now.Add(time.Hour)},
		{Device: "d", Timestamp: 3, ID: "forever", Payload: []byte("{}")},
	}
	for _, m := range msgs {
		if err := tel.Put(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, g)
	eu := subscribe(t, g.Replica(euw1))
	if n := g.Replica(usw2).ExpireTTL(ddbitem.AttrExpiresAt, now); n != 1 {
		t.Fatalf("expired %d items, want 1", n)
	}
	waitIdle(t, g)
	for _, r := range []string{usw2, euw1} {
		got, err := NewTelemetry(g.Replica(r)).Query(ctx, "d", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != "forever" || got[1].ID != "new" {
			t.Errorf("%s keeps %v, want forever and new", r, sortKeysOf(got))
		}
	}
	local := g.Replica(usw2).Records()
	last := local[len(local)-1]
	if last.EventName != "REMOVE" || last.UserIdentity == nil || last.UserIdentity.Type != "Service" ||
		last.UserIdentity.PrincipalID != "dynamodb.amazonaws.com" {
		t.Errorf("TTL record %s with identity %+v, want REMOVE by the DynamoDB service", last.EventName, last.UserIdentity)
	}
	if recs := eu.get(); len(recs) != 1 || recs[0].EventName != "REMOVE" {
		t.Errorf("eu-west-1 records %v, want one replicated REMOVE", names(recs))
	}
}

func sortKeysOf(ms []fleet.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.SortKey)
	}
	return out
}

// rebuiltIndex computes an index from scratch from the replica's items, to
// check the incrementally maintained one against.
func rebuiltIndex(tb *Table, attr string) map[string]map[[2]string]struct{} {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	out := map[string]map[[2]string]struct{}{}
	for _, k := range tb.liveKeys() {
		v, ok := indexValue(tb.items[k[0]][k[1]].item, attr)
		if !ok {
			continue
		}
		if out[v] == nil {
			out[v] = map[[2]string]struct{}{}
		}
		out[v][k] = struct{}{}
	}
	return out
}

func wantIndexConsistent(t *testing.T, g *GlobalTable) {
	t.Helper()
	for _, r := range g.Regions() {
		tb := g.Replica(r)
		for _, ix := range g.indexes {
			want := rebuiltIndex(tb, ix.hashAttr)
			tb.mu.Lock()
			got := tb.idx[ix.name]
			ok := reflect.DeepEqual(got, want)
			tb.mu.Unlock()
			if !ok {
				t.Errorf("%s: index %s is %v, rebuilt from the items %v", r, ix.name, got, want)
			}
		}
	}
}

func TestSecondaryIndex(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1},
		WithReplicationLag(time.Hour), WithIndex("ByVal", "Val"))
	defer g.Close()
	ctx := context.Background()
	us, eu := g.Replica(usw2), g.Replica(euw1)
	query := func(tb *Table, v types.AttributeValue) []string {
		t.Helper()
		items, err := tb.QueryIndex(ctx, "ByVal", v)
		if err != nil {
			t.Fatalf("QueryIndex: %v", err)
		}
		var out []string
		for _, it := range items {
			if len(it) != 2 || it["Val"] == nil {
				t.Errorf("projection %v, want the key and the index key only (KEYS_ONLY)", it)
			}
			out = append(out, it["ThingName"].(*types.AttributeValueMemberS).Value)
		}
		return out
	}
	steps := []struct {
		name  string
		write func() error
		want  map[string][]string // index value -> thing names, on us-west-2
	}{
		{"inserts, queried in key order", func() error {
			for _, it := range []map[string]types.AttributeValue{item("c", "v1"), item("a", "v1"), item("b", "v2")} {
				if err := us.PutItem(ctx, it, nil); err != nil {
					return err
				}
			}
			return nil
		}, map[string][]string{"v1": {"a", "c"}, "v2": {"b"}}},
		{"a replaced item moves to its new value", func() error { return us.PutItem(ctx, item("a", "v2"), nil) },
			map[string][]string{"v1": {"c"}, "v2": {"a", "b"}}},
		{"an update that keeps the value keeps the entry", func() error {
			return us.UpdateItem(ctx, key("a"), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
				old["Other"] = s("x")
				return old, nil
			})
		}, map[string][]string{"v1": {"c"}, "v2": {"a", "b"}}},
		{"an item without the attribute is not in the index (sparse)", func() error {
			return us.PutItem(ctx, map[string]types.AttributeValue{"ThingName": s("c"), "Other": s("v1")}, nil)
		}, map[string][]string{"v1": nil, "v2": {"a", "b"}}},
		{"a deleted item leaves the index", func() error { return us.DeleteItem(ctx, key("b"), nil) },
			map[string][]string{"v2": {"a"}}},
		{"a refused write changes nothing", func() error {
			err := us.PutItem(ctx, item("a", "v3"), func(map[string]types.AttributeValue) error {
				return fmt.Errorf("refused: %w", fleet.ErrConditionFailed)
			})
			if !errors.Is(err, fleet.ErrConditionFailed) {
				return fmt.Errorf("conditional put: %v, want ErrConditionFailed", err)
			}
			return nil
		}, map[string][]string{"v2": {"a"}, "v3": nil}},
	}
	for _, st := range steps {
		if err := st.write(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for v, want := range st.want {
			if got := query(us, s(v)); !slices.Equal(got, want) {
				t.Errorf("%s: %s = %v, want %v", st.name, v, got, want)
			}
		}
		wantIndexConsistent(t, g)
	}
	if got := query(eu, s("v2")); len(got) != 0 {
		t.Errorf("eu-west-1 finds %v before the replication, want nothing", got)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := query(eu, s("v2")); !slices.Equal(got, []string{"a"}) {
		t.Errorf("eu-west-1 finds %v after the replication, want [a]", got)
	}
	wantIndexConsistent(t, g)

	// A number is a key value like a string, and matches by value.
	if err := us.PutItem(ctx, map[string]types.AttributeValue{"ThingName": s("n"), "Val": n("10")}, nil); err != nil {
		t.Fatal(err)
	}
	if got := query(us, n("10")); !slices.Equal(got, []string{"n"}) {
		t.Errorf("number 10 finds %v, want [n]", got)
	}

	before := us.Snapshot()
	for _, bad := range []types.AttributeValue{s(""), &types.AttributeValueMemberB{}, &types.AttributeValueMemberBOOL{Value: true}} {
		err := us.PutItem(ctx, map[string]types.AttributeValue{"ThingName": s("bad"), "Val": bad}, nil)
		if !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("PutItem with index key %#v: %v, want ErrInvalid (ValidationException)", bad, err)
		}
	}
	if !reflect.DeepEqual(before, us.Snapshot()) {
		t.Error("a refused index key was stored")
	}

	for name, call := range map[string]func() error{
		"unknown index": func() error { _, err := us.QueryIndex(ctx, "NoSuchIndex", s("v1")); return err },
		"empty value":   func() error { _, err := us.QueryIndex(ctx, "ByVal", s("")); return err },
	} {
		if err := call(); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("QueryIndex with %s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestSecondaryIndexLastWriterWins(t *testing.T) {
	// Conflicting writes from two regions, applied in both orders: every
	// replica's index ends as the one of its winning items.
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	g := NewGlobalTable("Inv", InventoryKey, []string{usw2, euw1}, WithReplicationLag(time.Hour), WithClock(clock.Now), InventoryIndexes)
	defer g.Close()
	ctx := context.Background()
	us, eu := NewInventory(g.Replica(usw2)), NewInventory(g.Replica(euw1))
	dev := func(name, cert string) fleet.Device {
		return fleet.Device{ThingName: name, CertificateID: cert, Status: fleet.StatusActive, Version: 1}
	}
	for _, w := range []struct {
		inv  *Inventory
		d    fleet.Device
		step time.Duration
	}{
		{us, dev("a", "cert-us"), 0},
		{eu, dev("a", "cert-eu"), time.Second}, // later: wins a
		{eu, dev("b", "cert-eu"), 0},
		{us, dev("b", "cert-us"), time.Second}, // later: wins b
	} {
		clock.Set(clock.Now().Add(w.step))
		if err := w.inv.Table().PutItem(ctx, mustMarshal(t, w.d), nil); err != nil {
			t.Fatal(err)
		}
	}
	// c is written in us, replicated, then deleted in eu: the tombstone
	// reaches us and takes c out of its index.
	if err := us.Create(ctx, dev("c", "cert-c")); err != nil {
		t.Fatal(err)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Set(clock.Now().Add(time.Second))
	if err := eu.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wantIndexConsistent(t, g)
	for _, inv := range []*Inventory{us, eu} {
		if _, err := inv.ByCertificate(ctx, "cert-c"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("%s: ByCertificate(cert-c) after the delete: %v, want ErrNotFound", inv.Table().Region(), err)
		}
		for cert, want := range map[string]string{"cert-eu": "a", "cert-us": "b"} {
			if got, err := inv.ByCertificate(ctx, cert); err != nil || got != want {
				t.Errorf("%s: ByCertificate(%s) = %q, %v, want %q", inv.Table().Region(), cert, got, err, want)
			}
		}
	}
}

func mustMarshal(t *testing.T, d fleet.Device) map[string]types.AttributeValue {
	t.Helper()
	item, err := ddbitem.MarshalDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	return item
}

func TestIndexOptionPanics(t *testing.T) {
	for name, opts := range map[string][]Option{
		"twice":        {WithIndex("I", "A"), WithIndex("I", "B")},
		"no name":      {WithIndex("", "A")},
		"no attribute": {WithIndex("I", "")},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			NewGlobalTable("T", InventoryKey, []string{usw2}, opts...).Close()
		})
	}
}

// TestStreamLogKeepsTheRecentRecordsCheaply: past its cap the stream log
// keeps the most recent streamLogCap records for Records and StreamSince,
// and a write does not cost a shift of the whole log (issue 11: the local
// telemetry rate fell by half after 10,000 messages).
func TestStreamLogKeepsTheRecentRecordsCheaply(t *testing.T) {
	g := NewGlobalTable("t", KeySchema{HashKey: "ThingName"}, []string{usw2}, WithManualReplication())
	defer g.Close()
	tbl := g.Replica(usw2)
	ctx := context.Background()
	const writes = 2*streamLogCap + streamLogCap/2
	// below: the first streamLogCap writes, under the cap; above: as many
	// writes, every one past it.
	var below, above time.Duration
	mark := time.Now()
	for i := range writes {
		switch i {
		case streamLogCap:
			below = time.Since(mark)
		case streamLogCap + streamLogCap/2:
			mark = time.Now()
		}
		if err := tbl.PutItem(ctx, item(fmt.Sprintf("t-%06d", i), "v"), nil); err != nil {
			t.Fatal(err)
		}
	}
	above = time.Since(mark)
	recs := tbl.Records()
	if len(recs) != streamLogCap {
		t.Fatalf("Records() = %d records, want the last %d", len(recs), streamLogCap)
	}
	last := recs[len(recs)-1].Change.Keys["ThingName"].String()
	first := recs[0].Change.Keys["ThingName"].String()
	if last != fmt.Sprintf("t-%06d", writes-1) || first != fmt.Sprintf("t-%06d", writes-streamLogCap) {
		t.Fatalf("Records() spans %s..%s", first, last)
	}
	since, seq := tbl.StreamSince(int64(writes - 5))
	if seq != writes || len(since) != 5 || since[4].Change.Keys["ThingName"].String() != last {
		t.Fatalf("StreamSince(%d) = %d records, seq %d", writes-5, len(since), seq)
	}
	// As many writes past the cap cost about what they cost under it (a
	// shift of the whole log per write made them ~20x dearer).
	if above > 5*below+100*time.Millisecond {
		t.Errorf("%d writes past the cap took %v, under it %v", streamLogCap, above, below)
	}
}

func TestSequenceNumber(t *testing.T) {
	for _, seq := range []int64{0, 1, 9, 10, 12345, 999_999_999_999, 1<<62 + 7} {
		if got, want := sequenceNumber(seq), fmt.Sprintf("%021d", seq); got != want {
			t.Errorf("sequenceNumber(%d) = %s, want %s", seq, got, want)
		}
	}
}
