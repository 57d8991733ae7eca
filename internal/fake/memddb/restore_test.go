package memddb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/journal"
)

// entries describes every entry of a replica, tombstones included, with
// its last-writer-wins version: what a restart must keep.
func entries(tb *Table) []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []string
	for h, rs := range tb.items {
		for r, e := range rs {
			what := "tombstone"
			if e.item != nil {
				what = itemString(e.item)
			}
			out = append(out, fmt.Sprintf("%q %q %d %s %s", h, r, e.ts.UnixNano(), e.origin, what))
		}
	}
	slices.Sort(out)
	return out
}

// restart closes g, as a process that stops, and returns a new table made
// by mk, restored from j.
func restart(t *testing.T, g *GlobalTable, j journal.Journal, mk func() *GlobalTable, before func(*GlobalTable)) *GlobalTable {
	t.Helper()
	g.Close()
	g2 := mk()
	t.Cleanup(g2.Close)
	if before != nil {
		before(g2)
	}
	if err := g2.Restore(j); err != nil {
		t.Fatal(err)
	}
	return g2
}

func TestRestore(t *testing.T) {
	ctx := context.Background()
	regions := []string{euw1, usw2}
	for _, tc := range []struct {
		name string
		opts []Option
		// run writes on g, journaled; check looks at the restored table.
		run   func(t *testing.T, g *GlobalTable)
		check func(t *testing.T, before map[string][]string, g *GlobalTable, j *journal.Memory)
	}{
		{
			name: "items, updates and deletes, with their versions",
			run: func(t *testing.T, g *GlobalTable) {
				eu, us := g.Replica(euw1), g.Replica(usw2)
				for i := range 5 {
					if err := eu.PutItem(ctx, item(fmt.Sprint("d", i), "v1"), nil); err != nil {
						t.Fatal(err)
					}
				}
				_ = us.UpdateItem(ctx, key("d1"), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
					return item("d1", "v2"), nil
				})
				_ = eu.DeleteItem(ctx, key("d2"), nil)
				waitIdle(t, g)
			},
			check: func(t *testing.T, before map[string][]string, g *GlobalTable, _ *journal.Memory) {
				for _, r := range regions {
					if got := entries(g.Replica(r)); !slices.Equal(got, before[r]) {
						t.Errorf("%s after restore:\n%v\nwant\n%v", r, got, before[r])
					}
				}
				if got, _ := g.Replica(usw2).GetItem(ctx, key("d1")); val2(got) != "v2" {
					t.Errorf("d1 = %v", got)
				}
			},
		},
		{
			name: "a tombstone still beats an older write",
			run: func(t *testing.T, g *GlobalTable) {
				eu := g.Replica(euw1)
				_ = eu.PutItem(ctx, item("gone", "x"), nil)
				_ = eu.DeleteItem(ctx, key("gone"), nil)
				waitIdle(t, g)
			},
			check: func(t *testing.T, _ map[string][]string, g *GlobalTable, _ *journal.Memory) {
				us := g.Replica(usw2)
				e := us.items["Sgone"][""]
				if e == nil || e.item != nil {
					t.Fatalf("no tombstone after restore: %+v", e)
				}
				// A copy of a write older than the delete arrives late.
				us.enqueue(replication{hash: "Sgone", item: item("gone", "stale"), ts: e.ts.Add(-time.Second), origin: euw1})
				waitIdle(t, g)
				if got, _ := us.GetItem(ctx, key("gone")); got != nil {
					t.Errorf("an older write resurrected a deleted item: %v", got)
				}
			},
		},
		{
			name: "replications not yet applied are applied after the restart",
			opts: []Option{WithReplicationLag(time.Hour)},
			run: func(t *testing.T, g *GlobalTable) {
				if err := g.Replica(usw2).PutItem(ctx, item("late", "v"), nil); err != nil {
					t.Fatal(err)
				}
				_ = g.Replica(euw1).PutItem(ctx, item("other", "w"), nil)
				_ = g.Replica(usw2).DeleteItem(ctx, key("other"), nil) // usw2 has not seen it: no change there
			},
			check: func(t *testing.T, _ map[string][]string, g *GlobalTable, j *journal.Memory) {
				waitIdle(t, g) // due at once, whatever the lag
				if got, _ := g.Replica(euw1).GetItem(ctx, key("late")); val2(got) != "v" {
					t.Errorf("the pending replication did not land: %v", got)
				}
				if got, _ := g.Replica(usw2).GetItem(ctx, key("other")); val2(got) != "w" {
					t.Errorf("the pending replication did not land: %v", got)
				}
				for _, r := range regions {
					if n := j.Len(g.Replica(r).buckets.outbox); n != 0 {
						t.Errorf("%s's outbox holds %d replications after they landed", r, n)
					}
				}
			},
		},
		{
			name: "the indexes are rebuilt",
			opts: []Option{InventoryIndexes},
			run: func(t *testing.T, g *GlobalTable) {
				inv := NewInventory(g.Replica(euw1))
				if err := inv.Create(ctx, fleet.Device{ThingName: "idx", CertificateID: "c1", Status: fleet.StatusActive, Version: 1}); err != nil {
					t.Fatal(err)
				}
				waitIdle(t, g)
			},
			check: func(t *testing.T, _ map[string][]string, g *GlobalTable, _ *journal.Memory) {
				for _, r := range regions {
					if name, err := NewInventory(g.Replica(r)).ByCertificate(ctx, "c1"); err != nil || name != "idx" {
						t.Errorf("%s: ByCertificate = %q, %v", r, name, err)
					}
				}
				wantIndexConsistent(t, g)
			},
		},
		{
			name: "without a durable stream no record is journaled",
			run: func(t *testing.T, g *GlobalTable) {
				_ = g.Replica(euw1).PutItem(ctx, item("k", "v"), nil)
				waitIdle(t, g)
			},
			check: func(t *testing.T, _ map[string][]string, g *GlobalTable, j *journal.Memory) {
				for _, b := range j.Buckets() {
					if b == g.Replica(euw1).buckets.stream || b == g.Replica(usw2).buckets.stream {
						t.Errorf("stream records journaled in %s", b)
					}
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal.NewMemory()
			mk := func() *GlobalTable { return NewGlobalTable("tbl", InventoryKey, regions, tc.opts...) }
			g := mk()
			if err := g.Restore(j); err != nil {
				t.Fatal(err)
			}
			tc.run(t, g)
			before := map[string][]string{}
			for _, r := range regions {
				before[r] = entries(g.Replica(r))
			}
			tc.check(t, before, restart(t, g, j, mk, nil), j)
		})
	}
}

func val2(item map[string]types.AttributeValue) string {
	if v, ok := item["Val"].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

// TestDurableStream: a record not yet delivered when the process stops is
// delivered after the restart, to a subscriber there already or to the
// first that comes; a delivered record is not delivered again.
func TestDurableStream(t *testing.T) {
	ctx := context.Background()
	mk := func() *GlobalTable {
		return NewGlobalTable("inv", InventoryKey, []string{euw1, usw2}, WithDurableStream(), WithReplicationLag(time.Millisecond))
	}
	for _, tc := range []struct {
		name          string
		subscribeLate bool // after Restore, rather than before
	}{
		{"to a subscriber there at Restore", false},
		{"to the first subscriber after Restore", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal.NewMemory()
			g := mk()
			if err := g.Restore(j); err != nil {
				t.Fatal(err)
			}
			eu := g.Replica(euw1)
			// Delivered before the stop.
			got := subscribe(t, eu)
			_ = eu.PutItem(ctx, item("early", "v"), nil)
			waitIdle(t, g)
			if len(got.get()) != 1 {
				t.Fatalf("delivered %d records, want 1", len(got.get()))
			}
			// Stuck in a subscriber that never returns when the process stops.
			stuck := make(chan struct{})
			defer close(stuck)
			unsub := eu.Subscribe(func(events.DynamoDBEventRecord) { <-stuck })
			_ = eu.PutItem(ctx, item("late", "v"), nil)
			_ = unsub
			var before []string
			g2 := restart(t, g, j, mk, func(g2 *GlobalTable) {
				if !tc.subscribeLate {
					got = subscribe(t, g2.Replica(euw1))
				}
			})
			if tc.subscribeLate {
				if n := len(g2.Replica(euw1).backlog); n == 0 {
					t.Fatal("no backlog kept for a later subscriber")
				}
				got = subscribe(t, g2.Replica(euw1))
			}
			waitIdle(t, g2)
			for _, rec := range got.get() {
				before = append(before, rec.EventName+" "+rec.Change.Keys[ddbitem.AttrThingName].String())
			}
			// "early" was delivered by every subscriber: it is not delivered
			// again. "late" was delivered by one of two: it is, once.
			if want := []string{"INSERT late"}; !slices.Equal(before, want) {
				t.Errorf("after the restart: %v, want %v", before, want)
			}
			if n := j.Len(g2.Replica(euw1).buckets.stream); n != 0 {
				t.Errorf("%d records still journaled after their delivery", n)
			}
			// The next record is numbered after the restored ones.
			_ = g2.Replica(euw1).PutItem(ctx, item("next", "v"), nil)
			waitIdle(t, g2)
			recs := got.get()
			if len(recs) != 2 || recs[1].Change.SequenceNumber <= recs[0].Change.SequenceNumber {
				t.Errorf("records after the restart: %+v", names(recs))
			}
		})
	}
}

func TestRestoreRefuses(t *testing.T) {
	ctx := context.Background()
	mk := func() *GlobalTable {
		return NewGlobalTable("tbl", InventoryKey, []string{euw1, usw2}, WithDurableStream())
	}
	b := mk().Replica(euw1).buckets
	goodItem, _ := encodeItem(item("k", "v"))
	for _, tc := range []struct {
		name   string
		bucket string
		key    []byte
		value  []byte
	}{
		{"an item key without a hash key", b.items, []byte{0}, encodeEntry(time.Now(), euw1, goodItem)},
		{"an item key longer than itself", b.items, []byte{9, 'S'}, encodeEntry(time.Now(), euw1, goodItem)},
		{"an entry of another version", b.items, entryKey("Sk", ""), append([]byte{2}, encodeEntry(time.Now(), euw1, goodItem)[1:]...)},
		{"a truncated entry", b.items, entryKey("Sk", ""), encodeEntry(time.Now(), euw1, goodItem)[:8]},
		{"an entry with bytes after it", b.items, entryKey("Sk", ""), append(encodeEntry(time.Now(), euw1, goodItem), 0)},
		{"an item under another key", b.items, entryKey("Sother", ""), encodeEntry(time.Now(), euw1, goodItem)},
		{"an entry without an origin", b.items, entryKey("Sk", ""), encodeEntry(time.Now(), "", goodItem)},
		{"a replication key of 3 bytes", b.outbox, []byte{1, 2, 3}, encodeReplication("Sk", "", time.Now(), euw1, goodItem)},
		{"a replication of another key", b.outbox, journal.SeqKey(1), encodeReplication("Sother", "", time.Now(), euw1, goodItem)},
		{"a replication without a hash key", b.outbox, journal.SeqKey(1), encodeReplication("", "", time.Now(), euw1, nil)},
		{"a stream record that is not JSON", b.stream, journal.SeqKey(1), []byte("{")},
		{"a stream record without keys", b.stream, journal.SeqKey(1), []byte(`{"eventName":"INSERT"}`)},
		{"a stream record numbered 0", b.stream, journal.SeqKey(0), []byte(`{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"S":"k"}}}}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := journal.NewMemory()
			j.Set(tc.bucket, tc.key, tc.value)
			g := mk()
			defer g.Close()
			err := g.Restore(j)
			if !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("Restore: %v, want ErrCorrupt", err)
			}
			if err := g.Replica(euw1).PutItem(ctx, item("x", "y"), nil); err != nil {
				t.Fatal(err)
			}
			if j.Len(b.items) > 1 {
				t.Error("a table whose Restore failed journals")
			}
		})
	}
	t.Run("twice, closed, or without a journal", func(t *testing.T) {
		g := mk()
		if err := g.Restore(nil); err == nil {
			t.Error("Restore(nil) succeeded")
		}
		j := journal.NewMemory()
		if err := g.Restore(j); err != nil {
			t.Fatal(err)
		}
		if err := g.Restore(j); err == nil {
			t.Error("a second Restore succeeded")
		}
		g.Close()
		if err := mk().Restore(j); err != nil {
			t.Error(err)
		}
		closed := mk()
		closed.Close()
		if err := closed.Restore(j); err == nil {
			t.Error("Restore of a closed table succeeded")
		}
	})
}

// TestAWriteThatIsNotKeptFails: a journal that fails (a full disk) fails
// the write with ErrUnavailable, so the caller retries or reports it.
func TestAWriteThatIsNotKeptFails(t *testing.T) {
	j := journal.NewMemory()
	g := NewGlobalTable("tbl", InventoryKey, []string{euw1})
	defer g.Close()
	if err := g.Restore(j); err != nil {
		t.Fatal(err)
	}
	j.Fail(errors.New("no space left on device"))
	err := g.Replica(euw1).PutItem(context.Background(), item("k", "v"), nil)
	if !errors.Is(err, fleet.ErrUnavailable) {
		t.Fatalf("PutItem: %v, want ErrUnavailable", err)
	}
}

// TestJournalOfAWrite: one write is one group, with its copies for the
// other replicas, and a write that changes nothing journals nothing.
func TestJournalOfAWrite(t *testing.T) {
	j := journal.NewMemory()
	g := NewGlobalTable("tbl", InventoryKey, []string{euw1, usw2, "ap-south-1"}, WithReplicationLag(time.Hour))
	defer g.Close()
	if err := g.Restore(j); err != nil {
		t.Fatal(err)
	}
	eu := g.Replica(euw1)
	if err := eu.PutItem(context.Background(), item("k", "v"), nil); err != nil {
		t.Fatal(err)
	}
	if err := eu.PutItem(context.Background(), item("k", "v"), nil); err != nil {
		t.Fatal(err)
	}
	if n := j.Appends(); n != 1 {
		t.Errorf("%d groups, want 1", n)
	}
	want := map[string]int{eu.buckets.items: 1, g.Replica(usw2).buckets.outbox: 1, g.Replica("ap-south-1").buckets.outbox: 1}
	got := map[string]int{}
	for _, b := range j.Buckets() {
		got[b] = j.Len(b)
	}
	if !maps.Equal(got, want) {
		t.Errorf("journal %v, want %v", got, want)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	full := map[string]types.AttributeValue{
		"S": s("text ✓"), "N": n("-12.5e3"), "B": &types.AttributeValueMemberB{Value: []byte{0, 1, 255}},
		"Empty": &types.AttributeValueMemberB{Value: []byte{}},
		"T":     &types.AttributeValueMemberBOOL{Value: true}, "F": &types.AttributeValueMemberBOOL{Value: false},
		"NULL": &types.AttributeValueMemberNULL{Value: true},
		"SS":   &types.AttributeValueMemberSS{Value: []string{"a", "b"}}, "NS": &types.AttributeValueMemberNS{Value: []string{"1", "2"}},
		"BS": &types.AttributeValueMemberBS{Value: [][]byte{{1}, {2, 3}}},
		"L":  &types.AttributeValueMemberL{Value: []types.AttributeValue{s("x"), &types.AttributeValueMemberL{Value: []types.AttributeValue{}}}},
		"M":  &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"in": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}}},
	}
	for _, tc := range []struct {
		name string
		item map[string]types.AttributeValue
	}{
		{"every type", full},
		{"a tombstone", nil},
		{"an empty item", map[string]types.AttributeValue{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc, err := encodeItem(tc.item)
			if err != nil {
				t.Fatal(err)
			}
			ts := time.Unix(1700000000, 123456789)
			e, err := decodeEntry(encodeEntry(ts, euw1, enc))
			if err != nil {
				t.Fatal(err)
			}
			if !e.ts.Equal(ts) || e.origin != euw1 || !sameItem(e.item, tc.item) {
				t.Errorf("entry: %+v", e)
			}
			rep, err := decodeReplication(encodeReplication("S\x00k", "Nr", ts, usw2, enc))
			if err != nil {
				t.Fatal(err)
			}
			if rep.hash != "S\x00k" || rep.rng != "Nr" || !rep.ts.Equal(ts) || rep.origin != usw2 || !sameItem(rep.item, tc.item) {
				t.Errorf("replication: %+v", rep)
			}
		})
	}
	if _, err := encodeItem(map[string]types.AttributeValue{"x": nil}); err == nil {
		t.Error("an attribute without a value encoded")
	}
	h, r, err := decodeEntryKey(entryKey("S\x00a", "Sb"))
	if err != nil || h != "S\x00a" || r != "Sb" {
		t.Errorf("entry key: %q %q %v", h, r, err)
	}
}

// sameItem compares items holding nil and empty maps apart.
func sameItem(a, b map[string]types.AttributeValue) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	ea, _ := encodeItem(a)
	eb, _ := encodeItem(b)
	da := decoder{b: ea}
	db := decoder{b: eb}
	return fmt.Sprint(itemString(da.item(0))) == fmt.Sprint(itemString(db.item(0)))
}

func itemString(item map[string]types.AttributeValue) string {
	img, err := ddbitem.ToStreamImage(item)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(img)) {
		b, _ := img[k].MarshalJSON()
		out = append(out, k+"="+string(b))
	}
	return fmt.Sprint(out)
}

// FuzzDecodeRecord: no stored bytes make a decoder panic or allocate
// beyond them, and what decodes encodes back to what decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	enc, _ := encodeItem(map[string]types.AttributeValue{
		"ThingName": s("k"), "L": &types.AttributeValueMemberL{Value: []types.AttributeValue{n("1"), &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"b": &types.AttributeValueMemberBS{Value: [][]byte{{1}}}}}}},
		"SS": &types.AttributeValueMemberSS{Value: []string{"x"}}, "T": &types.AttributeValueMemberBOOL{Value: true}, "0": &types.AttributeValueMemberNULL{Value: true},
	})
	ts := time.Unix(0, 42)
	f.Add(encodeEntry(ts, euw1, enc))
	f.Add(encodeEntry(ts, euw1, nil))
	f.Add(encodeReplication("Sk", "", ts, usw2, enc))
	f.Add(entryKey("Sk", "Nr"))
	f.Add([]byte(`{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"S":"k"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decodeEntry(b); err == nil {
			var item []byte
			if e.item != nil {
				if item, err = encodeItem(e.item); err != nil {
					t.Fatalf("a decoded item does not encode: %v", err)
				}
			}
			e2, err := decodeEntry(encodeEntry(e.ts, e.origin, item))
			if err != nil || !e2.ts.Equal(e.ts) || e2.origin != e.origin || itemString(e2.item) != itemString(e.item) || (e2.item == nil) != (e.item == nil) {
				t.Fatalf("entry round trip: %+v, %v; was %+v", e2, err, e)
			}
		}
		if rep, err := decodeReplication(b); err == nil && rep.hash == "" {
			t.Fatal("a replication without a hash key decoded")
		}
		if h, r, err := decodeEntryKey(b); err == nil && !slices.Equal(entryKey(h, r), b) {
			t.Fatalf("entry key %q %q encodes to %x, not %x", h, r, entryKey(h, r), b)
		}
		_, _ = decodeDelivery(journal.SeqKey(1), b)
	})
}

// TestDeferredDurability: a write of a table WithDeferredDurability does not
// wait for its commit (the journal keeps it in order all the same).
func TestDeferredDurability(t *testing.T) {
	j := journal.NewMemory()
	g := NewGlobalTable("data", DataKey, []string{euw1}, WithDeferredDurability())
	defer g.Close()
	if err := g.Restore(j); err != nil {
		t.Fatal(err)
	}
	tel := NewTelemetry(g.Replica(euw1))
	if err := tel.Put(context.Background(), fleet.Message{Device: "d", Timestamp: 1700000000000, ID: "1", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if j.Len(g.Replica(euw1).buckets.items) != 1 {
		t.Error("the write was not journaled")
	}
	j.Fail(errors.New("no space left on device"))
	if err := tel.Put(context.Background(), fleet.Message{Device: "d", Timestamp: 1700000000000, ID: "2", Payload: []byte(`{}`)}); err != nil {
		t.Errorf("a deferred write waited for its commit: %v", err)
	}
}

// TestRestoreFillsAnAddedReplica: a region added to the table since the
// journal was written gets the items (and tombstones) of an existing
// replica, and a record on its stream for each item; a replica that is
// empty because its copies are still in its outbox is not filled.
func TestRestoreFillsAnAddedReplica(t *testing.T) {
	ctx := context.Background()
	j := journal.NewMemory()
	two := func() *GlobalTable {
		return NewGlobalTable("inv", InventoryKey, []string{euw1, usw2}, WithDurableStream(), WithReplicationLag(time.Millisecond))
	}
	g := two()
	if err := g.Restore(j); err != nil {
		t.Fatal(err)
	}
	_ = g.Replica(euw1).PutItem(ctx, item("a", "1"), nil)
	_ = g.Replica(euw1).PutItem(ctx, item("b", "2"), nil)
	_ = g.Replica(euw1).DeleteItem(ctx, key("b"), nil)
	waitIdle(t, g)
	g.Close()

	const aps1 = "ap-south-1"
	g3 := NewGlobalTable("inv", InventoryKey, []string{euw1, usw2, aps1}, WithDurableStream(), WithReplicationLag(time.Millisecond))
	defer g3.Close()
	got := subscribe(t, g3.Replica(aps1))
	if err := g3.Restore(j); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, g3)
	if want := entries(g3.Replica(euw1)); !slices.Equal(entries(g3.Replica(aps1)), want) {
		t.Errorf("the added replica:\n%v\nwant\n%v", entries(g3.Replica(aps1)), want)
	}
	if recs := got.get(); len(recs) != 1 || recs[0].EventName != "INSERT" || recs[0].Change.Keys[ddbitem.AttrThingName].String() != "a" {
		t.Errorf("records on the added replica's stream: %v", names(recs))
	}
	// Later writes reach it, and it is restored as any replica next time.
	_ = g3.Replica(usw2).PutItem(ctx, item("c", "3"), nil)
	waitIdle(t, g3)
	if it, _ := g3.Replica(aps1).GetItem(ctx, key("c")); val2(it) != "3" {
		t.Errorf("a later write did not reach the added replica: %v", it)
	}

	t.Run("not a replica whose copies are pending", func(t *testing.T) {
		j := journal.NewMemory()
		g := NewGlobalTable("inv", InventoryKey, []string{euw1, usw2}, WithReplicationLag(time.Hour))
		if err := g.Restore(j); err != nil {
			t.Fatal(err)
		}
		_ = g.Replica(euw1).PutItem(ctx, item("a", "1"), nil)
		_ = g.Replica(euw1).DeleteItem(ctx, key("a"), nil)
		g.Close()
		g2 := NewGlobalTable("inv", InventoryKey, []string{euw1, usw2})
		defer g2.Close()
		if err := g2.Restore(j); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, g2)
		// Filled from euw1, usw2 would get the tombstone only; applying its
		// outbox gives it the same in the end, through its own stream.
		if want := entries(g2.Replica(euw1)); !slices.Equal(entries(g2.Replica(usw2)), want) {
			t.Errorf("usw2 %v, want %v", entries(g2.Replica(usw2)), want)
		}
		if n := len(g2.Replica(usw2).Records()); n != 2 {
			t.Errorf("usw2 emitted %d records, want the 2 of its outbox (INSERT, REMOVE)", n)
		}
	})
}
