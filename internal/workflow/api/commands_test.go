package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

func commandsHandler(t *testing.T) (*apitest.Fleet, *memddb.Commands, http.Handler) {
	t.Helper()
	f := apitest.New(t, regions)
	g := memddb.NewGlobalTable("commands", memddb.CommandsKey, regions[:1])
	t.Cleanup(g.Close)
	cmds := memddb.NewCommands(g.Replica(regions[0]))
	cfg := f.Config()
	cfg.Commands = cmds
	return f, cmds, newHandler(t, cfg)
}

func TestPostCommand(t *testing.T) {
	f, _, h := commandsHandler(t)
	f.Onboard(t, "dev-1", nil)
	f.Onboard(t, "dev-rev", nil)
	if r := do(t, h, "POST", "/devices/dev-rev/revoke", ""); r.status != http.StatusAccepted {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	big := `{"payload":"` + strings.Repeat("x", fleet.MaxCommandPayload) + `"}`
	tests := []struct {
		name, thing, body string
		status            int
		ttl               time.Duration
	}{
		{"object payload, default ttl", "dev-1", `{"payload":{"op":"reboot"}}`, http.StatusAccepted, 24 * time.Hour},
		{"number payload, ttl", "dev-1", `{"payload":42,"ttlSeconds":60}`, http.StatusAccepted, time.Minute},
		{"max ttl", "dev-1", `{"payload":"x","ttlSeconds":604800}`, http.StatusAccepted, 7 * 24 * time.Hour},
		{"ttl too long", "dev-1", `{"payload":"x","ttlSeconds":604801}`, http.StatusBadRequest, 0},
		{"ttl zero", "dev-1", `{"payload":"x","ttlSeconds":0}`, http.StatusBadRequest, 0},
		{"no payload", "dev-1", `{"ttlSeconds":60}`, http.StatusBadRequest, 0},
		{"null payload", "dev-1", `{"payload":null}`, http.StatusBadRequest, 0},
		{"unknown field", "dev-1", `{"payload":1,"qos":2}`, http.StatusBadRequest, 0},
		{"not JSON", "dev-1", `{"payload":`, http.StatusBadRequest, 0},
		{"too large", "dev-1", big, http.StatusBadRequest, 0},
		{"unknown device", "dev-none", `{"payload":1}`, http.StatusNotFound, 0},
		{"revoked device", "dev-rev", `{"payload":1}`, http.StatusConflict, 0},
		{"bad thing name", "a%2Fb", `{"payload":1}`, http.StatusBadRequest, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, h, "POST", "/devices/"+tt.thing+"/commands", tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.status != http.StatusAccepted {
				r.errorText(t)
				return
			}
			var v api.CommandView
			r.decode(t, &v)
			if v.ThingName != tt.thing || v.Status != fleet.CommandQueued || fleet.ValidateCommandID(v.ID) != nil ||
				!v.CreatedAt.Equal(f.Now) || v.ExpiresAt.Sub(v.CreatedAt) != tt.ttl || v.SentAt != nil || v.AckedAt != nil {
				t.Fatalf("command %+v", v)
			}
			var req api.CommandRequest
			_ = json.Unmarshal([]byte(tt.body), &req)
			if string(v.Payload) != string(req.Payload) {
				t.Errorf("payload %s, want %s as given", v.Payload, req.Payload)
			}
		})
	}
}

func TestListAndGetCommands(t *testing.T) {
	f, cmds, h := commandsHandler(t)
	f.Onboard(t, "dev-1", nil)
	var ids []string
	for i := range 5 {
		f.Now = f.Now.Add(time.Second)
		r := do(t, h, "POST", "/devices/dev-1/commands", fmt.Sprintf(`{"payload":{"n":%d},"ttlSeconds":60}`, i))
		var v api.CommandView
		r.decode(t, &v)
		ids = append(ids, v.ID)
	}
	ctx := context.Background()
	if err := cmds.Claim(ctx, "dev-1", ids[4], "s1", eu, f.Now, f.Now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := cmds.Ack(ctx, "dev-1", ids[3], f.Now, `"ok"`); err != nil {
		t.Fatal(err)
	}
	var got []api.CommandView
	cursor := ""
	for {
		r := do(t, h, "GET", "/devices/dev-1/commands?limit=2&cursor="+cursor, "")
		if r.status != http.StatusOK {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		var page api.CommandList
		r.decode(t, &page)
		got = append(got, page.Items...)
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(got) != 5 || got[0].ID != ids[4] || got[4].ID != ids[0] {
		t.Fatalf("listed %d, want 5 newest first", len(got))
	}
	if got[0].Status != fleet.CommandSent || got[0].Deliveries != 1 || got[0].SentRegion != eu || got[1].Status != fleet.CommandAcked || got[1].AckedAt == nil {
		t.Fatalf("statuses: %+v %+v", got[0], got[1])
	}
	// Past the expiry, what is not ACKED shows EXPIRED.
	f.Now = f.Now.Add(2 * time.Minute)
	r := do(t, h, "GET", "/devices/dev-1/commands/"+ids[0], "")
	var one api.CommandView
	r.decode(t, &one)
	if one.Status != fleet.CommandExpired {
		t.Fatalf("expired command shows %s", one.Status)
	}
	r = do(t, h, "GET", "/devices/dev-1/commands/"+ids[3], "")
	r.decode(t, &one)
	if one.Status != fleet.CommandAcked {
		t.Fatalf("acked command shows %s", one.Status)
	}
	for _, tt := range []struct {
		target string
		status int
	}{
		{"/devices/dev-1/commands/0000000000000-none", http.StatusNotFound},
		{"/devices/dev-1/commands/a.b!", http.StatusBadRequest},
		{"/devices/dev-1/commands?cursor=@@", http.StatusBadRequest},
		{"/devices/dev-1/commands?limit=0", http.StatusBadRequest},
	} {
		if r := do(t, h, "GET", tt.target, ""); r.status != tt.status {
			t.Errorf("GET %s: %d, want %d (%s)", tt.target, r.status, tt.status, r.body)
		}
	}
}

func TestCommandRoutesNeedTheTable(t *testing.T) {
	f := apitest.New(t, regions)
	h := newHandler(t, f.Config())
	if r := do(t, h, "GET", "/devices/dev-1/commands", ""); r.status != http.StatusNotFound {
		t.Fatalf("without a commands table: %d", r.status)
	}
}
