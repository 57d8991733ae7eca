package contracttest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

var presenceBase = time.UnixMilli(1700000000000).UTC()

// sessionEv is the record of a lifecycle event in region at base+ms.
func sessionEv(thing, region, session string, connected bool, version, ms int64) fleet.SessionRecord {
	typ := fleet.EventDisconnected
	if connected {
		typ = fleet.EventConnected
	}
	return fleet.RecordOf(fleet.LifecycleEvent{ClientID: thing, Timestamp: presenceBase.UnixMilli() + ms, EventType: typ,
		SessionIdentifier: session, VersionNumber: version}, region)
}

func sameSession(a, b fleet.SessionRecord) bool {
	return a.ThingName == b.ThingName && a.Region == b.Region && a.SessionID == b.SessionID && a.Connected == b.Connected &&
		a.Started.Equal(b.Started) && a.EventAt.Equal(b.EventAt) && a.Version == b.Version && a.Seq == b.Seq
}

// Presence runs the contract.Presence contract against fresh presence tables.
func Presence(t *testing.T, newPresence func(t *testing.T) contract.Presence) {
	ctx := context.Background()
	t.Run("Record follows fleet.ApplySession", func(t *testing.T) {
		pr := newPresence(t)
		thing := "pres-" + randomSuffix(t)
		c1 := sessionEv(thing, "eu-west-1", "s1", true, 1, 100)
		d1 := sessionEv(thing, "eu-west-1", "s1", false, 1, 900)
		c2 := sessionEv(thing, "eu-west-1", "s2", true, 2, 850) // takes over: its connect precedes s1's disconnect
		d2 := sessionEv(thing, "eu-west-1", "s2", false, 2, 2000)
		tests := []struct {
			name    string
			ev      fleet.SessionRecord
			changed bool
		}{
			{"first connect", c1, true},
			{"duplicate connect", c1, false},
			{"its disconnect", d1, true},
			{"the connect again, late", c1, false},
			{"a newer connection", c2, true},
			{"the older disconnect, late", d1, false},
			{"the older connect, late", c1, false},
			{"the newer connection's end", d2, true},
			{"its duplicate", d2, false},
		}
		var model *fleet.SessionRecord
		for _, tt := range tests {
			want, wantChanged := fleet.ApplySession(model, tt.ev)
			if wantChanged != tt.changed {
				t.Fatalf("%s: the table says changed=%v, fleet.ApplySession %v", tt.name, tt.changed, wantChanged)
			}
			if wantChanged {
				if model != nil {
					want.Seq = model.Seq
				}
				want.Seq++
			}
			got, changed, err := pr.Record(ctx, tt.ev)
			wantErr(t, tt.name, err, nil)
			if changed != tt.changed || !sameSession(got, want) {
				t.Fatalf("%s: Record = %+v changed=%v, want %+v changed=%v", tt.name, got, changed, want, tt.changed)
			}
			model = &want
		}
		recs, err := pr.Sessions(ctx, thing, []string{"us-west-2", "eu-west-1"})
		wantErr(t, "Sessions", err, nil)
		if len(recs) != 1 || !sameSession(recs[0], *model) {
			t.Fatalf("Sessions = %+v, want [%+v]", recs, *model)
		}
	})
	t.Run("a disconnect before its connect keeps the connect's start", func(t *testing.T) {
		pr := newPresence(t)
		thing := "pres-" + randomSuffix(t)
		d := sessionEv(thing, "us-west-2", "s7", false, 7, 500)
		c := sessionEv(thing, "us-west-2", "s7", true, 7, 200)
		got, changed, err := pr.Record(ctx, d)
		wantErr(t, "Record disconnect", err, nil)
		if !changed || got.Connected || !got.Started.Equal(d.EventAt) || got.Seq != 1 {
			t.Fatalf("disconnect first: %+v changed=%v", got, changed)
		}
		got, changed, err = pr.Record(ctx, c)
		wantErr(t, "Record connect", err, nil)
		if !changed || got.Connected || !got.Started.Equal(c.EventAt) || !got.EventAt.Equal(d.EventAt) || got.Seq != 2 {
			t.Fatalf("its connect: %+v changed=%v, want disconnected, started at the connect", got, changed)
		}
	})
	t.Run("every order of one region's events leaves the same record", func(t *testing.T) {
		pr := newPresence(t)
		evs := []fleet.SessionRecord{
			sessionEv("x", "eu-west-1", "a", true, 3, 10), sessionEv("x", "eu-west-1", "a", false, 3, 50),
			sessionEv("x", "eu-west-1", "b", true, 4, 40), sessionEv("x", "eu-west-1", "b", false, 4, 90),
		}
		var first *fleet.SessionRecord
		for i, perm := range permutations(len(evs)) {
			thing := fmt.Sprintf("pres-%s-%d", randomSuffix(t), i)
			for _, j := range perm {
				ev := evs[j]
				ev.ThingName = thing
				_, _, err := pr.Record(ctx, ev)
				wantErr(t, "Record", err, nil)
			}
			recs, err := pr.Sessions(ctx, thing, []string{"eu-west-1"})
			wantErr(t, "Sessions", err, nil)
			if len(recs) != 1 {
				t.Fatalf("order %v: %d records", perm, len(recs))
			}
			r := recs[0]
			r.ThingName, r.Seq = "x", 0
			if first == nil {
				first = &r
			} else if !sameSession(r, *first) {
				t.Fatalf("order %v: %+v, first order left %+v", perm, r, *first)
			}
		}
		if first.SessionID != "b" || first.Connected || !first.Started.Equal(evs[2].EventAt) {
			t.Fatalf("final record %+v, want session b ended, started at its connect", *first)
		}
	})
	t.Run("Publish keeps the greater generation", func(t *testing.T) {
		pr := newPresence(t)
		thing := "pres-" + randomSuffix(t)
		_, err := pr.Get(ctx, thing)
		wantErr(t, "Get absent", err, fleet.ErrNotFound)
		p := fleet.Presence{ThingName: thing, Connected: true, Region: "eu-west-1", SessionID: "s1",
			Since: presenceBase, LastSeen: presenceBase, EventAt: presenceBase, Version: 3, Generation: 2,
			UpdatedAt: presenceBase.Add(time.Second)}
		tests := []struct {
			gen  int64
			want bool
		}{{2, true}, {2, false}, {1, false}, {5, true}, {4, false}}
		var stored fleet.Presence
		for _, tt := range tests {
			q := p
			q.Generation, q.Version = tt.gen, tt.gen
			ok, err := pr.Publish(ctx, q)
			wantErr(t, "Publish", err, nil)
			if ok != tt.want {
				t.Fatalf("Publish generation %d: %v, want %v", tt.gen, ok, tt.want)
			}
			if ok {
				stored = q
			}
			got, err := pr.Get(ctx, thing)
			wantErr(t, "Get", err, nil)
			if !fleet.SamePresence(got, stored) || !got.UpdatedAt.Equal(stored.UpdatedAt) {
				t.Fatalf("after generation %d: %+v, want %+v", tt.gen, got, stored)
			}
		}
		off := stored
		off.Connected, off.Since, off.Generation = false, time.Time{}, 9
		_, err = pr.Publish(ctx, off)
		wantErr(t, "Publish offline", err, nil)
		got, err := pr.Get(ctx, thing)
		wantErr(t, "Get", err, nil)
		if got.Connected || !got.Since.IsZero() || !got.LastSeen.Equal(presenceBase) {
			t.Fatalf("offline: %+v", got)
		}
		for _, bad := range []string{"", "a#b", "with space"} {
			_, err := pr.Get(ctx, bad)
			wantErr(t, "Get "+bad, err, fleet.ErrInvalid)
		}
	})
	t.Run("Connected pages through the connected devices only", func(t *testing.T) {
		pr := newPresence(t)
		sfx := randomSuffix(t)
		var want []string
		for i := range 9 {
			thing := fmt.Sprintf("conn-%s-%02d", sfx, i)
			p := fleet.Presence{ThingName: thing, Connected: i%3 != 0, Region: "us-west-2", SessionID: "s",
				LastSeen: presenceBase, EventAt: presenceBase, Generation: 1, UpdatedAt: presenceBase}
			if p.Connected {
				p.Since = presenceBase
				want = append(want, thing)
			}
			_, err := pr.Publish(ctx, p)
			wantErr(t, "Publish", err, nil)
		}
		// A session record is never listed.
		_, _, err := pr.Record(ctx, sessionEv("conn-"+sfx+"-99", "us-west-2", "s", true, 1, 1))
		wantErr(t, "Record", err, nil)
		for _, limit := range []int{1, 2, 4, 100} {
			eventually(t, fmt.Sprintf("Connected limit %d", limit), func() error {
				var got []string
				cursor := ""
				for pages := 0; ; pages++ {
					if pages > 20 {
						return fmt.Errorf("too many pages")
					}
					page, next, err := pr.Connected(ctx, limit, cursor)
					if err != nil {
						return err
					}
					if len(page) > limit {
						return fmt.Errorf("page of %d, limit %d", len(page), limit)
					}
					for _, p := range page {
						if !p.Connected || p.Since.IsZero() {
							return fmt.Errorf("listed %+v", p)
						}
						if strings.HasPrefix(p.ThingName, "conn-"+sfx) {
							got = append(got, p.ThingName)
						}
					}
					if next == "" {
						break
					}
					cursor = next
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					return fmt.Errorf("listed %v, want %v", got, want)
				}
				return nil
			})
		}
		for _, bad := range []string{"%%%", "QUJD", "OS94"} {
			if _, _, err := pr.Connected(ctx, 3, bad); err == nil {
				t.Errorf("cursor %q: no error", bad)
			}
		}
		_, _, err = pr.Connected(ctx, 0, "")
		wantErr(t, "limit 0", err, fleet.ErrInvalid)
	})
}

// permutations lists every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := slices.Insert(slices.Clone(p), i, n-1)
			out = append(out, q)
		}
	}
	return out
}
