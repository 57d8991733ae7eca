package fleet_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

var pt0 = time.UnixMilli(1767225600000).UTC()

func rec(region, session string, connected bool, version int64, startMS, atMS int64) fleet.SessionRecord {
	return fleet.SessionRecord{ThingName: "d", Region: region, SessionID: session, Connected: connected,
		Started: pt0.Add(time.Duration(startMS) * time.Millisecond), EventAt: pt0.Add(time.Duration(atMS) * time.Millisecond), Version: version}
}

func ev(region, session string, connected bool, version, atMS int64) fleet.SessionRecord {
	return rec(region, session, connected, version, atMS, atMS)
}

func TestApplySession(t *testing.T) {
	c1 := ev("eu", "s1", true, 1, 100)
	d1 := ev("eu", "s1", false, 1, 500)
	tests := []struct {
		name    string
		stored  *fleet.SessionRecord
		ev      fleet.SessionRecord
		want    fleet.SessionRecord
		changed bool
	}{
		{"first event", nil, c1, c1, true},
		{"duplicate connect", &c1, c1, c1, false},
		{"disconnect of the stored connection keeps its start", &c1, d1, rec("eu", "s1", false, 1, 100, 500), true},
		{"its connect, late, after the disconnect", new(rec("eu", "s1", false, 1, 100, 500)), c1, rec("eu", "s1", false, 1, 100, 500), false},
		{"disconnect first: started at the disconnect", nil, d1, rec("eu", "s1", false, 1, 500, 500), true},
		{"then its connect moves the start back", new(rec("eu", "s1", false, 1, 500, 500)), c1, rec("eu", "s1", false, 1, 100, 500), true},
		{"a newer connection", &d1, ev("eu", "s2", true, 2, 600), ev("eu", "s2", true, 2, 600), true},
		// DUPLICATE_CLIENTID: the old session's disconnect is timestamped
		// after the new connect, but its version is older.
		{"takeover: the old disconnect, later in time, is older", new(ev("eu", "s2", true, 2, 450)), d1, ev("eu", "s2", true, 2, 450), false},
		{"an older connection's connect", new(ev("eu", "s2", true, 2, 600)), c1, ev("eu", "s2", true, 2, 600), false},
		{"a newer connection's disconnect before its connect", &c1, ev("eu", "s3", false, 3, 900), ev("eu", "s3", false, 3, 900), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := fleet.ApplySession(tt.stored, tt.ev)
			if changed != tt.changed || !sameRecord(got, tt.want) {
				t.Fatalf("ApplySession = %+v, %v; want %+v, %v", got, changed, tt.want, tt.changed)
			}
		})
	}
}

func sameRecord(a, b fleet.SessionRecord) bool {
	return a.ThingName == b.ThingName && a.Region == b.Region && a.SessionID == b.SessionID && a.Connected == b.Connected &&
		a.Started.Equal(b.Started) && a.EventAt.Equal(b.EventAt) && a.Version == b.Version
}

func TestFoldPresence(t *testing.T) {
	now := pt0.Add(time.Hour)
	at := func(ms int64) time.Time { return pt0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name      string
		recs      []fleet.SessionRecord
		connected bool
		region    string
		since     time.Time
		lastSeen  time.Time
	}{
		{"never seen", nil, false, "", time.Time{}, time.Time{}},
		{"connected in one region", []fleet.SessionRecord{rec("eu", "a", true, 0, 100, 100)}, true, "eu", at(100), at(100)},
		// The device moved from eu to us; eu's keepalive timeout published
		// the disconnect after the device was in us already.
		{"moved: a late disconnect of the old region", []fleet.SessionRecord{rec("eu", "a", false, 0, 100, 900), rec("us", "b", true, 4, 500, 500)},
			true, "us", at(500), at(900)},
		// eu died and never published the disconnect.
		{"moved: the old region never says", []fleet.SessionRecord{rec("eu", "a", true, 0, 100, 100), rec("us", "b", true, 4, 500, 500)},
			true, "us", at(500), at(500)},
		{"moved, then offline", []fleet.SessionRecord{rec("eu", "a", true, 0, 100, 100), rec("us", "b", false, 4, 500, 700)},
			false, "us", time.Time{}, at(700)},
		{"back in the old region", []fleet.SessionRecord{rec("eu", "c", true, 1, 800, 800), rec("us", "b", false, 4, 500, 700)},
			true, "eu", at(800), at(800)},
		{"same start: the later event", []fleet.SessionRecord{rec("eu", "a", false, 0, 100, 300), rec("us", "b", true, 4, 100, 100)},
			false, "eu", time.Time{}, at(300)},
		{"same start and event: the region name decides", []fleet.SessionRecord{rec("eu", "a", true, 0, 100, 100), rec("us", "b", true, 4, 100, 100)},
			true, "us", at(100), at(100)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.recs {
				tt.recs[i].Seq = int64(i + 1)
			}
			p := fleet.FoldPresence("d", tt.recs, now)
			if p.ThingName != "d" || p.Connected != tt.connected || p.Region != tt.region || !p.Since.Equal(tt.since) ||
				!p.LastSeen.Equal(tt.lastSeen) || !p.UpdatedAt.Equal(now) {
				t.Fatalf("FoldPresence = %+v", p)
			}
			if want := int64(len(tt.recs) * (len(tt.recs) + 1) / 2); p.Generation != want {
				t.Errorf("generation %d, want %d (the sum of Seq)", p.Generation, want)
			}
			// The fold does not depend on the records' order.
			rev := make([]fleet.SessionRecord, len(tt.recs))
			for i, r := range tt.recs {
				rev[len(rev)-1-i] = r
			}
			if q := fleet.FoldPresence("d", rev, now); !fleet.SamePresence(p, q) {
				t.Errorf("reversed records fold to %+v, not %+v", q, p)
			}
		})
	}
}

func TestSplitPresenceKey(t *testing.T) {
	for _, tt := range []struct{ key, thing, region string }{
		{"dev-1", "dev-1", ""}, {fleet.PresenceRegionKey("dev-1", "eu-west-1"), "dev-1", "eu-west-1"},
	} {
		if th, r := fleet.SplitPresenceKey(tt.key); th != tt.thing || r != tt.region {
			t.Errorf("SplitPresenceKey(%q) = %q, %q", tt.key, th, r)
		}
	}
	if fleet.ValidateThingName(fleet.PresenceRegionKey("dev-1", "eu-west-1")) == nil {
		t.Error("a session record's key is a valid thing name: stream readers could take it for a device")
	}
}

func TestParseLifecycleEvent(t *testing.T) {
	for _, f := range []string{"presence-connected.json", "presence-disconnected.json"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "events", f))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := fleet.ParseLifecycleEvent(raw)
		if err != nil || ev.ClientID != "test_001" || ev.SessionIdentifier == "" || ev.Timestamp <= 0 {
			t.Errorf("%s: %+v, %v", f, ev, err)
		}
	}
	ok := `{"clientId":"d","timestamp":1,"eventType":"connected","sessionIdentifier":"s","principalIdentifier":"p","versionNumber":0}`
	if _, err := fleet.ParseLifecycleEvent([]byte(ok)); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	bad := []string{
		``, `null`, `[]`, `{}`, ok + `{}`,
		`{"clientId":"a#b","timestamp":1,"eventType":"connected","sessionIdentifier":"s","versionNumber":0}`,
		`{"clientId":"d","timestamp":0,"eventType":"connected","sessionIdentifier":"s","versionNumber":0}`,
		`{"clientId":"d","timestamp":1,"eventType":"subscribed","sessionIdentifier":"s","versionNumber":0}`,
		`{"clientId":"d","timestamp":1,"eventType":"connected","sessionIdentifier":"","versionNumber":0}`,
		`{"clientId":"d","timestamp":1,"eventType":"connected","sessionIdentifier":"s","versionNumber":-1}`,
		`{"clientId":"d","timestamp":"1","eventType":"connected","sessionIdentifier":"s","versionNumber":0}`,
	}
	for _, b := range bad {
		if _, err := fleet.ParseLifecycleEvent([]byte(b)); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", b, err)
		}
	}
}

// FuzzParseLifecycleEvent: any input is an event that passes the checks,
// or ErrInvalid; never a panic.
func FuzzParseLifecycleEvent(f *testing.F) {
	for _, name := range []string{"presence-connected.json", "presence-disconnected.json"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "events", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"clientId":"d","timestamp":1,"eventType":"disconnected","sessionIdentifier":"s","versionNumber":9,"clientInitiatedDisconnect":false}`))
	f.Add([]byte(`{"clientId":"+","timestamp":-1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := fleet.ParseLifecycleEvent(raw)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if fleet.ValidateThingName(ev.ClientID) != nil || ev.Timestamp <= 0 || ev.SessionIdentifier == "" || ev.VersionNumber < 0 ||
			ev.EventType != fleet.EventConnected && ev.EventType != fleet.EventDisconnected {
			t.Fatalf("accepted %+v", ev)
		}
		r := fleet.RecordOf(ev, "eu-west-1")
		if r.Connected != (ev.EventType == fleet.EventConnected) || r.EventAt.UnixMilli() != ev.Timestamp {
			t.Fatalf("RecordOf(%+v) = %+v", ev, r)
		}
	})
}
