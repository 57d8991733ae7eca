package api_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

func newPresence(t *testing.T) *memddb.Presence {
	g := memddb.NewGlobalTable("presence", memddb.PresenceKey, []string{eu}, memddb.PresenceIndexes)
	t.Cleanup(g.Close)
	return memddb.NewPresence(g.Replica(eu))
}

var presenceT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func publish(t *testing.T, p *memddb.Presence, thing string, connected bool, region string, gen int64) {
	t.Helper()
	pr := fleet.Presence{ThingName: thing, Connected: connected, Region: region, SessionID: "s-" + thing,
		LastSeen: presenceT0.Add(time.Minute), EventAt: presenceT0.Add(time.Minute), Generation: gen, UpdatedAt: presenceT0}
	if connected {
		pr.Since = presenceT0
	}
	if _, err := p.Publish(context.Background(), pr); err != nil {
		t.Fatal(err)
	}
}

func TestDevicePresence(t *testing.T) {
	f := apitest.New(t, regions)
	for _, n := range []string{"dev-on", "dev-off", "dev-never"} {
		f.Onboard(t, n, nil)
	}
	p := newPresence(t)
	publish(t, p, "dev-on", true, us, 1)
	publish(t, p, "dev-off", false, eu, 1)
	cfg := f.Config()
	cfg.Presence = p
	h := newHandler(t, cfg)
	tests := []struct {
		name      string
		connected *api.Connection
		lastSeen  bool
	}{
		{"dev-on", &api.Connection{Region: us, Since: presenceT0, SessionID: "s-dev-on"}, true},
		{"dev-off", nil, true},
		{"dev-never", nil, false},
	}
	for _, tt := range tests {
		r := do(t, h, "GET", "/devices/"+tt.name, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", tt.name, r.status, r.body)
		}
		var v api.DeviceView
		r.decode(t, &v)
		if (v.Connected == nil) != (tt.connected == nil) || v.Connected != nil && *v.Connected != *tt.connected {
			t.Errorf("%s: connected %+v, want %+v", tt.name, v.Connected, tt.connected)
		}
		if (v.LastSeen != nil) != tt.lastSeen || v.LastSeen != nil && !v.LastSeen.Equal(presenceT0.Add(time.Minute)) {
			t.Errorf("%s: lastSeen %v, want set=%v", tt.name, v.LastSeen, tt.lastSeen)
		}
		// The agreed shape: absent, not null, when not connected or never seen.
		if tt.connected == nil && strings.Contains(string(r.body), `"connected"`) {
			t.Errorf("%s: body has connected: %s", tt.name, r.body)
		}
		if !tt.lastSeen && strings.Contains(string(r.body), `"lastSeen"`) {
			t.Errorf("%s: body has lastSeen: %s", tt.name, r.body)
		}
	}
	// Without a presence table the view has neither.
	r := do(t, newHandler(t, f.Config()), "GET", "/devices/dev-on", "")
	if strings.Contains(string(r.body), `"connected"`) || strings.Contains(string(r.body), `"lastSeen"`) {
		t.Errorf("no presence table: %s", r.body)
	}
}

type failingPresence struct{ err error }

func (f failingPresence) Get(context.Context, string) (fleet.Presence, error) {
	return fleet.Presence{}, f.err
}
func (f failingPresence) Connected(context.Context, int, string) ([]fleet.Presence, string, error) {
	return nil, "", f.err
}

func TestListConnected(t *testing.T) {
	f := apitest.New(t, regions)
	p := newPresence(t)
	var want []string
	for i := range 7 {
		n := fmt.Sprintf("dev-%d", i)
		f.Onboard(t, n, nil)
		publish(t, p, n, i%2 == 0, ap, 1)
		if i%2 == 0 {
			want = append(want, n)
		}
	}
	publish(t, p, "not-a-device", true, ap, 1) // connected, but no inventory item: left out
	cfg := f.Config()
	cfg.Presence = p
	h := newHandler(t, cfg)
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("paging does not end")
		}
		target := "/devices?connected=true&limit=2"
		if cursor != "" {
			target += "&cursor=" + url.QueryEscape(cursor)
		}
		r := do(t, h, "GET", target, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
		var list api.DeviceList
		r.decode(t, &list)
		for _, it := range list.Items {
			if it.Connected == nil || it.Connected.Region != ap || it.Status != fleet.StatusActive {
				t.Fatalf("item %+v", it)
			}
			got = append(got, it.ThingName)
		}
		if list.Next == "" {
			break
		}
		cursor = list.Next
	}
	if fmt.Sprint(sortedCopy(got)) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	bad := []struct {
		target string
		status int
	}{
		{"/devices?connected=false", 400},
		{"/devices?connected=yes", 400},
		{"/devices?connected=true&limit=0", 400},
		{"/devices?connected=true&cursor=%25%25", 400},
	}
	for _, b := range bad {
		if r := do(t, h, "GET", b.target, ""); r.status != b.status {
			t.Errorf("%s: %d %s, want %d", b.target, r.status, r.body, b.status)
		}
	}
	if r := do(t, newHandler(t, f.Config()), "GET", "/devices?connected=true", ""); r.status != 501 {
		t.Errorf("no presence table: %d, want 501", r.status)
	}
	cfg.Presence = failingPresence{err: fmt.Errorf("read: %w", fleet.ErrUnavailable)}
	if r := do(t, newHandler(t, cfg), "GET", "/devices?connected=true", ""); r.status != 503 {
		t.Errorf("presence unavailable: %d, want 503", r.status)
	}
	// A failed presence read leaves the device view without presence, served.
	if r := do(t, newHandler(t, cfg), "GET", "/devices/dev-0", ""); r.status != 200 || strings.Contains(string(r.body), `"connected"`) {
		t.Errorf("device view with presence unavailable: %d %s", r.status, r.body)
	}
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }
