package ddbitem

import (
	"errors"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestPresenceItems(t *testing.T) {
	at := time.UnixMilli(1767225600123).UTC()
	tests := []fleet.Presence{
		{ThingName: "dev-1", Connected: true, Region: "eu-west-1", SessionID: "s1", Since: at, LastSeen: at.Add(time.Second),
			EventAt: at, Version: 3, Generation: 7, UpdatedAt: at.Add(2 * time.Second)},
		{ThingName: "dev-2", Region: "us-west-2", SessionID: "s2", LastSeen: at, EventAt: at, Generation: 1, UpdatedAt: at},
	}
	for _, p := range tests {
		item, err := MarshalPresence(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, in := item[AttrOnlineShard]; in != p.Connected {
			t.Errorf("%s: OnlineShard present %v, want %v (the sparse index holds connected devices only)", p.ThingName, in, p.Connected)
		}
		got, err := UnmarshalPresence(item)
		if err != nil || !fleet.SamePresence(got, p) || !got.UpdatedAt.Equal(p.UpdatedAt) {
			t.Errorf("round trip %+v: %+v, %v", p, got, err)
		}
		img, err := ToStreamImage(item)
		if err != nil {
			t.Fatal(err)
		}
		sp, ok, err := PresenceFromStreamImage(img)
		if err != nil || !ok || !fleet.SamePresence(sp, p) {
			t.Errorf("stream image %+v: %+v %v %v", p, sp, ok, err)
		}
	}
	r := fleet.SessionRecord{ThingName: "dev-1", Region: "eu-west-1", SessionID: "s1", Connected: true, Started: at, EventAt: at, Version: 2, Seq: 4}
	item, err := MarshalSession(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalSession(item)
	if err != nil || got != r {
		t.Errorf("session round trip: %+v, %v", got, err)
	}
	img, err := ToStreamImage(item)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := PresenceFromStreamImage(img); ok || err != nil {
		t.Errorf("a session record's image read as a presence item: %v %v", ok, err)
	}
	if _, err := UnmarshalPresence(item); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("a session record unmarshalled as a presence item: %v", err)
	}
	if _, err := MarshalSession(fleet.SessionRecord{ThingName: "dev-1"}); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("a session record without region: %v", err)
	}
	for _, c := range []string{"", PresenceCursor("3", "dev-9")} {
		shard, thing, err := ParsePresenceCursor(c)
		if err != nil || (c != "" && (shard != 3 || thing != "dev-9")) {
			t.Errorf("cursor %q: %d %q %v", c, shard, thing, err)
		}
	}
	for _, bad := range []string{"%%", PresenceCursor("9", "dev"), PresenceCursor("1", "a#b"), PresenceCursor("x", "dev")} {
		if _, _, err := ParsePresenceCursor(bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("cursor %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzParsePresenceCursor: a cursor from a client is one PresenceCursor
// made, or ErrInvalid.
func FuzzParsePresenceCursor(f *testing.F) {
	f.Add("")
	f.Add(PresenceCursor("0", "dev-1"))
	f.Add("%%%")
	f.Fuzz(func(t *testing.T, c string) {
		shard, thing, err := ParsePresenceCursor(c)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if c == "" {
			return
		}
		if shard < 0 || shard >= PresenceShards || fleet.ValidateThingName(thing) != nil {
			t.Fatalf("accepted %q as %d %q", c, shard, thing)
		}
	})
}
