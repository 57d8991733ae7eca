package fleet_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestParseAckEvent(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   fleet.AckEvent
		errors bool
	}{
		{"with an object result", `{"thingName":"dev-1","commandId":"1777636800000-00000000000000a1","ts":1777636805000,"result":{"ok":true}}`,
			fleet.AckEvent{ThingName: "dev-1", CommandID: "1777636800000-00000000000000a1", TS: 1777636805000, Result: `{"ok":true}`}, false},
		{"without a result", `{"thingName":"dev-1","commandId":"c1","ts":5}`, fleet.AckEvent{ThingName: "dev-1", CommandID: "c1", TS: 5}, false},
		{"null result", `{"thingName":"dev-1","commandId":"c1","ts":5,"result":null}`, fleet.AckEvent{ThingName: "dev-1", CommandID: "c1", TS: 5}, false},
		{"not JSON", `{`, fleet.AckEvent{}, true},
		{"no thing", `{"commandId":"c1","ts":5}`, fleet.AckEvent{}, true},
		{"bad thing", `{"thingName":"a/b","commandId":"c1","ts":5}`, fleet.AckEvent{}, true},
		{"no command", `{"thingName":"dev-1","ts":5}`, fleet.AckEvent{}, true},
		{"command with a slash", `{"thingName":"dev-1","commandId":"a/b","ts":5}`, fleet.AckEvent{}, true},
		{"command with a wildcard", `{"thingName":"dev-1","commandId":"#","ts":5}`, fleet.AckEvent{}, true},
		{"command too long", `{"thingName":"dev-1","commandId":"` + strings.Repeat("a", 65) + `","ts":5}`, fleet.AckEvent{}, true},
		{"ts zero", `{"thingName":"dev-1","commandId":"c1","ts":0}`, fleet.AckEvent{}, true},
		{"ts fractional", `{"thingName":"dev-1","commandId":"c1","ts":1.5}`, fleet.AckEvent{}, true},
		{"ts string", `{"thingName":"dev-1","commandId":"c1","ts":"5"}`, fleet.AckEvent{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fleet.ParseAckEvent([]byte(tt.in))
			if tt.errors {
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAckEvent = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	long, err := fleet.ParseAckEvent([]byte(`{"thingName":"d","commandId":"c","ts":1,"result":"` + strings.Repeat("é", 300) + `"}`))
	if err != nil || len(long.Result) > fleet.MaxAckResult || !utf8.ValidString(long.Result) {
		t.Fatalf("a long result is kept as %d bytes (valid UTF-8: %v), %v", len(long.Result), utf8.ValidString(long.Result), err)
	}
}

func FuzzParseAckEvent(f *testing.F) {
	f.Add([]byte(`{"thingName":"test_001","commandId":"1777636800000-00000000000000a1","ts":1777636805000,"result":{"ok":true}}`))
	f.Add([]byte(`{"thingName":"d","commandId":"c","ts":1e3,"result":"` + strings.Repeat("ü", 200) + `"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := fleet.ParseAckEvent(b)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if fleet.ValidateThingName(ev.ThingName) != nil || fleet.ValidateCommandID(ev.CommandID) != nil || ev.TS <= 0 ||
			len(ev.Result) > fleet.MaxAckResult || strings.ContainsAny(ev.CommandID, "/+#") {
			t.Fatalf("accepted invalid event %+v", ev)
		}
	})
}

func TestCommandIDs(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	a, b := fleet.NewCommandID(now), fleet.NewCommandID(now.Add(time.Millisecond))
	if err := fleet.ValidateCommandID(a); err != nil {
		t.Fatal(err)
	}
	if !(a < b) || len(a) != len(b) {
		t.Fatalf("ids %s and %s are not time-ordered", a, b)
	}
	if fleet.CommandTopic("d", a) != "e/d/cmd/"+a || fleet.AckTopic("d", a) != "i/d/ack/"+a {
		t.Fatal("topics")
	}
}

func TestCommandEffective(t *testing.T) {
	exp := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		status fleet.CommandStatus
		at     time.Time
		want   fleet.CommandStatus
	}{
		{fleet.CommandQueued, exp.Add(-time.Millisecond), fleet.CommandQueued},
		{fleet.CommandQueued, exp, fleet.CommandExpired},
		{fleet.CommandSent, exp.Add(time.Hour), fleet.CommandExpired},
		{fleet.CommandAcked, exp.Add(time.Hour), fleet.CommandAcked},
		{fleet.CommandExpired, exp.Add(-time.Hour), fleet.CommandExpired},
	}
	for _, tt := range tests {
		if got := (fleet.Command{Status: tt.status, ExpiresAt: exp}).Effective(tt.at); got != tt.want {
			t.Errorf("%s at %s: %s, want %s", tt.status, tt.at, got, tt.want)
		}
	}
}
