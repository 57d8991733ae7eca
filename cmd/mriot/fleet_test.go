package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

// TestFleetCommands runs `mriot fleet` against the real API handler over
// HTTP, as an operator would against the local stack's API.
func TestFleetCommands(t *testing.T) {
	regions := []string{"eu-west-1", "us-west-2"}
	f := apitest.New(t, regions)
	all := map[string]apitest.Step{regions[0]: apitest.Attached, regions[1]: apitest.Attached}
	f.Onboard(t, "dev-1", all)
	d2 := f.Onboard(t, "dev-2", map[string]apitest.Step{regions[0]: apitest.Attached})
	// dev-2 was rotated: its previous certificate is in its grace.
	prev := d2
	d2.Retiring = []fleet.RetiringCertificate{{CertificateID: "0ld", RetireAt: time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)}}
	d2.Version++
	if err := f.Inventory.Update(context.Background(), d2, prev.Version); err != nil {
		t.Fatal(err)
	}
	f.Publish(t, "dev-1", 1767225600000, regions[0], "id-1", `{"temp":21.5}`)
	f.Publish(t, "dev-1", 1767225601000, regions[1], "id-2", `{"temp":22}`)
	// dev-1 is connected in us-west-2; commands go to a commands table.
	pg := memddb.NewGlobalTable("presence", memddb.PresenceKey, regions[:1], memddb.PresenceIndexes)
	t.Cleanup(pg.Close)
	pres := memddb.NewPresence(pg.Replica(regions[0]))
	since := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := pres.Publish(context.Background(), fleet.Presence{ThingName: "dev-1", Connected: true, Region: regions[1], SessionID: "s-1",
		Since: since, LastSeen: since, EventAt: since, Generation: 1, UpdatedAt: since}); err != nil {
		t.Fatal(err)
	}
	cg := memddb.NewGlobalTable("commands", memddb.CommandsKey, regions[:1])
	t.Cleanup(cg.Close)
	cmds := memddb.NewCommands(cg.Replica(regions[0]))
	cfg := f.Config()
	cfg.Presence, cfg.Commands = pres, cmds
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	t.Setenv(endpointEnv, srv.URL)
	t.Setenv(apiTokenEnv, "s3cret")
	run := fleetCLI(t)

	cases := []struct {
		args    []string
		want    []string // in the output
		notWant []string // not in the output
		wantErr string
	}{
		{args: []string{"ls"}, want: []string{"THING", "dev-1  ACTIVE", "dev-2  ACTIVE"}, notWant: []string{"CONNECTED"}},
		{args: []string{"get", "dev-1"}, want: []string{"live everywhere: yes", "eu-west-1", "us-west-2", "ACTIVE"}},
		{args: []string{"get", "dev-2"}, want: []string{"live everywhere: no", "not live", "never seen connected", "previous certificate 0ld works until 2026-03-08T12:00:00Z"}},
		{args: []string{"telemetry", "dev-1"}, want: []string{"1767225600000", `{"temp":21.5}`, "1767225601000"}},
		{args: []string{"telemetry", "dev-1", "--limit", "1"}, want: []string{"1767225601000", "older messages: --all"}},
		{args: []string{"telemetry", "dev-1", "--limit", "1", "--all"}, want: []string{"1767225601000", "1767225600000"}},
		{args: []string{"telemetry", "dev-1", "--since", "1767225601000", "--limit", "1", "--all"}, want: []string{"1767225601000"}, notWant: []string{"1767225600000", "older messages"}},
		{args: []string{"telemetry", "dev-1", "--since", "2026-01-01T00:00:00.5Z"}, want: []string{"1767225601000"}, notWant: []string{"1767225600000"}},
		{args: []string{"telemetry", "dev-1", "--since", "last week"}, wantErr: "HTTP 400: since"},
		{args: []string{"ls", "--connected"}, want: []string{"CONNECTED IN", "dev-1  ACTIVE  eu-west-1  us-west-2", "2026-03-01T12:00:00Z"}, notWant: []string{"dev-2"}},
		{args: []string{"get", "dev-1"}, want: []string{"connected in us-west-2 since 2026-03-01T12:00:00Z"}},
		{args: []string{"send", "dev-1", "--payload", `{"op":"reboot"}`, "--ttl", "1h"}, want: []string{"command ", "to dev-1: QUEUED until"}},
		{args: []string{"commands", "dev-1"}, want: []string{"ID", "STATUS", "QUEUED", `{"op":"reboot"}`}},
		{args: []string{"send", "dev-1", "--payload", `{oops`}, wantErr: "is not JSON"},
		{args: []string{"send", "dev-1"}, wantErr: "--payload is required"},
		{args: []string{"send", "dev-1", "--payload", "1", "--ttl", "1500ms"}, wantErr: "whole number of seconds"},
		{args: []string{"send", "nobody", "--payload", "1"}, wantErr: "HTTP 404"},
		{args: []string{"revoke", "dev-1"}, want: []string{"dev-1: revoke accepted"}},
		{args: []string{"send", "dev-1", "--payload", "1"}, wantErr: "HTTP 409"},
		{args: []string{"revoke", "dev-1"}, want: []string{"dev-1: already so"}},
		{args: []string{"ls", "--status", "REVOKED"}, want: []string{"dev-1  REVOKED"}},
		{args: []string{"decommission", "dev-2"}, want: []string{"dev-2: decommission accepted"}},
		{args: []string{"get", "nobody"}, wantErr: "HTTP 404: get device nobody: not found"},
		{args: []string{"revoke", "dev-2"}, wantErr: "HTTP 409"},
		{args: []string{"ls", "--status", "bogus"}, wantErr: `--status "bogus"`},
		{args: []string{"ls", "-o", "yaml"}, wantErr: `-o "yaml"`},
		{args: []string{"ls", "--sigv4", "on"}, wantErr: "needs --region"},
		{args: []string{"ls", "--endpoint", "ftp://x"}, wantErr: "--endpoint"},
	}
	for _, tc := range cases {
		out, err := run(tc.args...)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: err = %v, want %q\n%s", tc.args, err, tc.wantErr, out)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v\n%s", tc.args, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(out, w) {
				t.Errorf("%v: output has %q:\n%s", tc.args, w, out)
			}
		}
	}
	if auth != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the token from %s", auth, apiTokenEnv)
	}
	// -o json prints the API's answer as it is.
	out, err := run("get", "dev-1", "-o", "json")
	var v api.DeviceView
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.ThingName != "dev-1" || v.Status != "REVOKED" {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	var queued api.CommandList
	if out, err = run("commands", "dev-1", "-o", "json"); err != nil || json.Unmarshal([]byte(out), &queued) != nil ||
		len(queued.Items) != 1 || queued.Items[0].Status != fleet.CommandQueued {
		t.Fatalf("commands -o json: %v\n%s", err, out)
	}
	out, err = run("ls", "-o", "json")
	var list struct{ Items []api.DeviceSummary }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != 2 {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
}

// TestFleetSendWait: send --wait returns once the device has acknowledged
// the command, and fails when the command stays unacknowledged past
// --timeout.
func TestFleetSendWait(t *testing.T) {
	regions := []string{"eu-west-1", "us-west-2"}
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", nil)
	cg := memddb.NewGlobalTable("commands", memddb.CommandsKey, regions[:1])
	t.Cleanup(cg.Close)
	cmds := memddb.NewCommands(cg.Replica(regions[0]))
	cfg := f.Config()
	cfg.Commands = cmds
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv(endpointEnv, srv.URL)
	run := fleetCLI(t)
	// The device: once the command is queued, it is delivered and acknowledged.
	ctx := t.Context()
	acked := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			open, err := cmds.Open(ctx, "dev-1")
			if err == nil && len(open) == 1 {
				id, now := open[0].ID, f.Now
				acked <- errors.Join(cmds.Claim(ctx, "dev-1", id, "s-1", regions[0], now, open[0].ExpiresAt),
					cmds.MarkSent(ctx, "dev-1", id, "s-1", regions[0], now), cmds.Ack(ctx, "dev-1", id, now, ""))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	out, err := run("send", "dev-1", "--payload", `{"op":"reboot"}`, "--wait", "--timeout", "20s")
	if err != nil || !strings.Contains(out, "ACKED (delivered in eu-west-1, 1 time(s))") {
		t.Fatalf("send --wait: %v\n%s", err, out)
	}
	if err := <-acked; err != nil {
		t.Fatalf("the device's delivery and ack: %v", err)
	}
	// Nobody acknowledges this one.
	out, err = run("send", "dev-1", "--payload", "2", "--wait", "--timeout", "1500ms")
	if err == nil || !strings.Contains(err.Error(), "still QUEUED after 1.5s") {
		t.Fatalf("send --wait without an ack: %v\n%s", err, out)
	}
}

// fleetCLI runs `mriot fleet args...` and returns what it printed.
func fleetCLI(t *testing.T) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		return run(t, t.Context(), append([]string{"fleet"}, args...)...)
	}
}
