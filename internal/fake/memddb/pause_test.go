package memddb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

const apse2 = "ap-southeast-2"

// pauseWrite is one write of TestPauseAndResume: a put of key=val in region
// at t0+at, or a delete of key when val is "".
type pauseWrite struct {
	region, key, val string
	at               time.Duration
}

// recordText is "INSERT k=v", "MODIFY k=v" or "REMOVE k".
func recordText(r events.DynamoDBEventRecord) string {
	k := r.Change.Keys["ThingName"].String()
	if r.EventName == "REMOVE" {
		return "REMOVE " + k
	}
	return r.EventName + " " + k + "=" + val(r.Change.NewImage)
}

func recordTexts(c *collector, from int) []string {
	recs := c.get()
	out := []string{}
	for _, r := range recs[min(from, len(recs)):] {
		out = append(out, recordText(r))
	}
	return out
}

// contents is a replica's items as key -> Val.
func contents(tb *Table) map[string]string {
	out := map[string]string{}
	for _, it := range tb.Snapshot() {
		out[it["ThingName"].(*types.AttributeValueMemberS).Value] = it["Val"].(*types.AttributeValueMemberS).Value
	}
	return out
}

// TestPauseAndResume: a paused replica (a region outage) neither receives
// nor sends replication and delivers no stream record; the others go on
// replicating among themselves. On Resume what queued in both directions
// lands in order, conflicts resolve last writer wins by the writes'
// timestamps, and the held stream records are delivered.
func TestPauseAndResume(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	regions := []string{usw2, euw1, apse2}
	none := []string{}
	tests := []struct {
		name          string
		before        []pauseWrite // replicated everywhere before the pause
		inFlight      []pauseWrite // written just before the pause, not yet replicated
		during        []pauseWrite // while euw1 is paused
		wantDuring    map[string]map[string]string
		recordsDuring map[string][]string // delivered while paused (after the before writes)
		want          map[string]string   // every replica after Resume
		recordsAfter  map[string][]string // delivered after Resume
	}{
		{
			name:       "writes made elsewhere queue for it",
			during:     []pauseWrite{{usw2, "k", "1", time.Second}, {usw2, "k", "2", 2 * time.Second}},
			wantDuring: map[string]map[string]string{usw2: {"k": "2"}, apse2: {"k": "2"}, euw1: {}},
			recordsDuring: map[string][]string{
				usw2: {"INSERT k=1", "MODIFY k=2"}, apse2: {"INSERT k=1", "MODIFY k=2"}, euw1: none},
			want:         map[string]string{"k": "2"},
			recordsAfter: map[string][]string{euw1: {"INSERT k=1", "MODIFY k=2"}, usw2: none, apse2: none},
		},
		{
			name:          "its own writes queue to go out, its stream waits",
			during:        []pauseWrite{{euw1, "k", "1", time.Second}, {euw1, "j", "1", 2 * time.Second}},
			wantDuring:    map[string]map[string]string{euw1: {"k": "1", "j": "1"}, usw2: {}, apse2: {}},
			recordsDuring: map[string][]string{euw1: none, usw2: none, apse2: none},
			want:          map[string]string{"k": "1", "j": "1"},
			recordsAfter: map[string][]string{
				euw1: {"INSERT k=1", "INSERT j=1"}, usw2: {"INSERT k=1", "INSERT j=1"}, apse2: {"INSERT k=1", "INSERT j=1"}},
		},
		{
			name:          "a write in flight when it goes down goes out when it is back",
			inFlight:      []pauseWrite{{euw1, "k", "1", time.Second}},
			wantDuring:    map[string]map[string]string{euw1: {"k": "1"}, usw2: {}, apse2: {}},
			recordsDuring: map[string][]string{euw1: {"INSERT k=1"}, usw2: none, apse2: none},
			want:          map[string]string{"k": "1"},
			recordsAfter:  map[string][]string{euw1: none, usw2: {"INSERT k=1"}, apse2: {"INSERT k=1"}},
		},
		{
			name:          "a write in flight to it lands when it is back",
			inFlight:      []pauseWrite{{usw2, "k", "1", time.Second}},
			wantDuring:    map[string]map[string]string{euw1: {}, usw2: {"k": "1"}, apse2: {"k": "1"}},
			recordsDuring: map[string][]string{euw1: none, usw2: {"INSERT k=1"}, apse2: {"INSERT k=1"}},
			want:          map[string]string{"k": "1"},
			recordsAfter:  map[string][]string{euw1: {"INSERT k=1"}, usw2: none, apse2: none},
		},
		{
			name:          "conflict: its later write wins everywhere",
			during:        []pauseWrite{{usw2, "k", "us", time.Second}, {euw1, "k", "eu", 2 * time.Second}},
			wantDuring:    map[string]map[string]string{usw2: {"k": "us"}, apse2: {"k": "us"}, euw1: {"k": "eu"}},
			recordsDuring: map[string][]string{usw2: {"INSERT k=us"}, apse2: {"INSERT k=us"}, euw1: none},
			want:          map[string]string{"k": "eu"},
			// eu's own record, then nothing: the older write from us-west-2 loses.
			recordsAfter: map[string][]string{euw1: {"INSERT k=eu"}, usw2: {"MODIFY k=eu"}, apse2: {"MODIFY k=eu"}},
		},
		{
			name:          "conflict: the later write made elsewhere wins everywhere",
			during:        []pauseWrite{{euw1, "k", "eu", time.Second}, {usw2, "k", "us", 2 * time.Second}},
			wantDuring:    map[string]map[string]string{usw2: {"k": "us"}, apse2: {"k": "us"}, euw1: {"k": "eu"}},
			recordsDuring: map[string][]string{usw2: {"INSERT k=us"}, apse2: {"INSERT k=us"}, euw1: none},
			want:          map[string]string{"k": "us"},
			recordsAfter:  map[string][]string{euw1: {"INSERT k=eu", "MODIFY k=us"}, usw2: none, apse2: none},
		},
		{
			name:          "a delete made elsewhere reaches it",
			before:        []pauseWrite{{usw2, "k", "1", 0}, {usw2, "j", "1", 0}},
			during:        []pauseWrite{{usw2, "k", "", time.Second}},
			wantDuring:    map[string]map[string]string{usw2: {"j": "1"}, apse2: {"j": "1"}, euw1: {"k": "1", "j": "1"}},
			recordsDuring: map[string][]string{usw2: {"REMOVE k"}, apse2: {"REMOVE k"}, euw1: none},
			want:          map[string]string{"j": "1"},
			recordsAfter:  map[string][]string{euw1: {"REMOVE k"}, usw2: none, apse2: none},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			// An hour of lag: nothing replicates but through Flush, which
			// skips the lag of every replication that is not held.
			g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, regions, WithReplicationLag(time.Hour), WithClock(clock.Now))
			defer g.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			write := func(w pauseWrite) {
				t.Helper()
				clock.Set(t0.Add(w.at))
				var err error
				if w.val == "" {
					err = g.Replica(w.region).DeleteItem(ctx, key(w.key), nil)
				} else {
					err = g.Replica(w.region).PutItem(ctx, item(w.key, w.val), nil)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			flush := func() {
				t.Helper()
				if err := g.Flush(ctx); err != nil {
					t.Fatalf("Flush with a paused replica: %v", err)
				}
			}
			for _, w := range tt.before {
				write(w)
			}
			flush()
			cols := map[string]*collector{}
			for _, r := range regions {
				cols[r] = subscribe(t, g.Replica(r))
			}
			for _, w := range tt.inFlight {
				write(w)
				// Its own stream record is delivered; its replication is
				// still on its way (an hour of lag).
				for deadline := time.Now().Add(5 * time.Second); len(cols[w.region].get()) == 0; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("the stream record of %v was not delivered", w)
					}
				}
			}
			if err := g.Pause(euw1); err != nil {
				t.Fatal(err)
			}
			if !g.Paused(euw1) || g.Paused(usw2) {
				t.Fatalf("Paused: %s %v, %s %v", euw1, g.Paused(euw1), usw2, g.Paused(usw2))
			}
			for _, w := range tt.during {
				write(w)
			}
			flush()
			for _, r := range regions {
				if got := contents(g.Replica(r)); !maps.Equal(got, tt.wantDuring[r]) {
					t.Errorf("while paused, %s holds %v, want %v", r, got, tt.wantDuring[r])
				}
				if got := recordTexts(cols[r], 0); !slices.Equal(got, tt.recordsDuring[r]) {
					t.Errorf("while paused, %s delivered %q, want %q", r, got, tt.recordsDuring[r])
				}
			}
			if g.Held() == 0 {
				t.Error("Held() = 0 while writes wait for the paused replica")
			}
			seen := map[string]int{}
			for _, r := range regions {
				seen[r] = len(cols[r].get())
			}
			if err := g.Resume(euw1); err != nil {
				t.Fatal(err)
			}
			flush()
			if g.Held() != 0 || g.Paused(euw1) {
				t.Errorf("after Resume: Held() = %d, Paused = %v", g.Held(), g.Paused(euw1))
			}
			for _, r := range regions {
				if got := contents(g.Replica(r)); !maps.Equal(got, tt.want) {
					t.Errorf("after Resume, %s holds %v, want %v", r, got, tt.want)
				}
				if got := recordTexts(cols[r], seen[r]); !slices.Equal(got, tt.recordsAfter[r]) {
					t.Errorf("after Resume, %s delivered %q, want %q", r, got, tt.recordsAfter[r])
				}
			}
			if !reflect.DeepEqual(g.Replica(usw2).Snapshot(), g.Replica(euw1).Snapshot()) {
				t.Error("replicas did not converge")
			}
		})
	}
}

// TestPauseWithTheReplicator runs a paused replica with real replication
// goroutines and no lag: WaitIdle returns while work is held, and the work
// lands once the replica resumes.
func TestPauseWithTheReplicator(t *testing.T) {
	g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1})
	defer g.Close()
	ctx := context.Background()
	eu := subscribe(t, g.Replica(euw1))
	if err := g.Pause(euw1); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := g.Replica(usw2).PutItem(ctx, item(fmt.Sprintf("k%02d", i), "1"), nil); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, g)
	if n := g.Replica(euw1).Len(); n != 0 || len(eu.get()) != 0 {
		t.Fatalf("the paused replica received %d items and delivered %d records", n, len(eu.get()))
	}
	if got := g.Replica(euw1).Queued(); got != 20 {
		t.Errorf("Queued() = %d, want the 20 held replications", got)
	}
	if err := g.Resume(euw1); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, g)
	if n := g.Replica(euw1).Len(); n != 20 || len(eu.get()) != 20 {
		t.Fatalf("after Resume the replica holds %d items and delivered %d records, want 20 and 20", n, len(eu.get()))
	}
	for i, r := range eu.get() {
		if k := r.Change.Keys["ThingName"].String(); k != fmt.Sprintf("k%02d", i) {
			t.Fatalf("record %d is of %s: out of order", i, k)
		}
	}
}

// TestPauseAccounting: held work does not keep WaitIdle waiting, a
// subscriber that goes away while its records are held leaves nothing
// behind, pausing twice is pausing once, an unknown region is ErrNotFound,
// and ApplyNext (manual replication) skips what is held.
func TestPauseAccounting(t *testing.T) {
	ctx := context.Background()
	t.Run("unsubscribe while held", func(t *testing.T) {
		g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1})
		defer g.Close()
		unsubscribe := g.Replica(euw1).Subscribe(func(events.DynamoDBEventRecord) {})
		for range 2 {
			if err := g.Pause(euw1); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.Replica(euw1).PutItem(ctx, item("k", "1"), nil); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, g)
		if got := g.Held(); got != 2 { // the replication out, the stream record
			t.Errorf("Held() = %d, want 2", got)
		}
		unsubscribe()
		if got := g.Held(); got != 1 {
			t.Errorf("Held() after unsubscribe = %d, want 1", got)
		}
		if err := g.Resume(euw1); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, g)
		if got := g.Held(); got != 0 {
			t.Errorf("Held() after Resume = %d", got)
		}
		if got := contents(g.Replica(usw2)); got["k"] != "1" {
			t.Errorf("us-west-2 holds %v", got)
		}
	})
	t.Run("unknown region", func(t *testing.T) {
		g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2})
		defer g.Close()
		if err := g.Pause("mars-1"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Pause(mars-1) = %v, want ErrNotFound", err)
		}
		if err := g.Resume("mars-1"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Resume(mars-1) = %v, want ErrNotFound", err)
		}
	})
	t.Run("manual replication", func(t *testing.T) {
		g := NewGlobalTable("T", KeySchema{HashKey: "ThingName"}, []string{usw2, euw1, apse2}, WithManualReplication())
		defer g.Close()
		if err := g.Replica(usw2).PutItem(ctx, item("from-us", "1"), nil); err != nil {
			t.Fatal(err)
		}
		if err := g.Pause(usw2); err != nil {
			t.Fatal(err)
		}
		if err := g.Replica(apse2).PutItem(ctx, item("from-ap", "1"), nil); err != nil {
			t.Fatal(err)
		}
		eu := g.Replica(euw1)
		if !eu.ApplyNext() || eu.ApplyNext() {
			t.Fatal("ApplyNext did not land exactly the one replication that is not held")
		}
		if got := contents(eu); !maps.Equal(got, map[string]string{"from-ap": "1"}) {
			t.Fatalf("eu-west-1 holds %v, want the write of ap-southeast-2 only", got)
		}
		if err := g.Resume(usw2); err != nil {
			t.Fatal(err)
		}
		if !eu.ApplyNext() {
			t.Fatal("the held replication was not released")
		}
		if got := contents(eu); len(got) != 2 {
			t.Errorf("eu-west-1 holds %v", got)
		}
	})
}
