package fleetapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/operator/fleetapi"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

var regions = []string{"eu-west-1", "us-west-2"}

func TestRegionOf(t *testing.T) {
	cases := []struct {
		host, want string
		ok         bool
	}{
		{"abc123.execute-api.eu-west-1.amazonaws.com", "eu-west-1", true},
		{"abc123.execute-api.cn-north-1.amazonaws.com.cn", "cn-north-1", true},
		{"ABC123.EXECUTE-API.US-WEST-2.AMAZONAWS.COM:443", "us-west-2", true},
		{"127.0.0.1:8080", "", false},
		{"api.example.com", "", false},
		{"execute-api.amazonaws.com", "", false},
	}
	for _, tc := range cases {
		got, ok := fleetapi.RegionOf(tc.host)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RegionOf(%q) = %q, %v; want %q, %v", tc.host, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSigV4MatchesTheSDK: the client's request carries the signature the
// SDK's own signer gives the same request (method, URL, empty body's hash,
// execute-api in the region, time), and the headers SigV4 needs.
func TestSigV4MatchesTheSDK(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	creds := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token")
	u, _ := url.Parse("https://abc123.execute-api.eu-west-1.amazonaws.com")
	c := &fleetapi.Client{Endpoint: u, Credentials: creds, Region: "eu-west-1", Now: func() time.Time { return at }}
	q := url.Values{"limit": {"10"}, "cursor": {"dev-1"}}
	got, err := c.NewRequest(ctx, http.MethodGet, "/devices", q, nil)
	if err != nil {
		t.Fatal(err)
	}

	want, _ := http.NewRequest(http.MethodGet, "https://abc123.execute-api.eu-west-1.amazonaws.com/devices?cursor=dev-1&limit=10", nil)
	want.Header.Set("Accept", "application/json")
	v, _ := creds.Retrieve(ctx)
	empty := sha256.Sum256(nil)
	if err := v4.NewSigner().SignHTTP(ctx, v, want, hex.EncodeToString(empty[:]), "execute-api", "eu-west-1", at); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if got.Header.Get(h) == "" || got.Header.Get(h) != want.Header.Get(h) {
			t.Errorf("%s = %q, want %q", h, got.Header.Get(h), want.Header.Get(h))
		}
	}
	first := got.Header.Get("Authorization")
	if auth := got.Header.Get("Authorization"); !bytes.Contains([]byte(auth), []byte("/20261130/eu-west-1/execute-api/aws4_request")) {
		t.Errorf("Authorization %q is not scoped to execute-api in eu-west-1", auth)
	}

	// A request with a body is signed over the body's hash.
	body := []byte(`{"payload":{"op":"reboot"},"ttlSeconds":60}`)
	got, err = c.NewRequest(ctx, http.MethodPost, "/devices/dev-1/commands", nil, body)
	if err != nil {
		t.Fatal(err)
	}
	want, _ = http.NewRequest(http.MethodPost, "https://abc123.execute-api.eu-west-1.amazonaws.com/devices/dev-1/commands", bytes.NewReader(body))
	want.Header.Set("Accept", "application/json")
	want.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, v, want, hex.EncodeToString(sum[:]), "execute-api", "eu-west-1", at); err != nil {
		t.Fatal(err)
	}
	if got.Header.Get("Authorization") != want.Header.Get("Authorization") {
		t.Errorf("POST Authorization = %q, want %q", got.Header.Get("Authorization"), want.Header.Get("Authorization"))
	}
	if got.Header.Get("Authorization") == first {
		t.Error("the POST's signature equals the GET's")
	}

	// No credentials: a clear error, not an unsigned request.
	c.Credentials = credentials.NewStaticCredentialsProvider("", "", "")
	if _, err := c.NewRequest(ctx, http.MethodGet, "/devices", nil, nil); !errors.Is(err, fleetapi.ErrSigning) {
		t.Errorf("empty credentials: %v, want ErrSigning", err)
	}
}

// TestClientAgainstTheAPI drives the real API handler over HTTP: list,
// view, telemetry, revoke (202, then 200), decommission, errors as fleet
// sentinels, and the bearer token when one is set.
func TestClientAgainstTheAPI(t *testing.T) {
	f := apitest.New(t, regions)
	all := map[string]apitest.Step{regions[0]: apitest.Attached, regions[1]: apitest.Attached}
	f.Onboard(t, "dev-1", all)
	f.Onboard(t, "dev-2", all)
	f.Publish(t, "dev-1", 1767225600000, regions[0], "id-1", `{"temp":21.5}`)
	cg := memddb.NewGlobalTable("commands", memddb.CommandsKey, regions[:1])
	t.Cleanup(cg.Close)
	cfg := f.Config()
	cfg.Commands = memddb.NewCommands(cg.Replica(regions[0]))
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sawToken string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawToken = r.Header.Get("Authorization")
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := &fleetapi.Client{Endpoint: u, Token: "s3cret"}
	ctx := context.Background()

	page, err := c.ListDevices(ctx, fleetapi.DeviceQuery{Limit: 1})
	if err != nil || len(page.Items) != 1 || page.Next == "" {
		t.Fatalf("first page %+v, %v", page, err)
	}
	if sawToken != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the bearer token", sawToken)
	}
	page2, err := c.ListDevices(ctx, fleetapi.DeviceQuery{Limit: 1, Cursor: page.Next})
	if err != nil || len(page2.Items) != 1 || page2.Items[0].ThingName == page.Items[0].ThingName {
		t.Fatalf("second page %+v, %v", page2, err)
	}
	v, err := c.Device(ctx, "dev-1")
	if err != nil || !v.Live || len(v.Regions) != 2 {
		t.Fatalf("view %+v, %v", v, err)
	}
	f.Publish(t, "dev-1", 1767225601000, regions[1], "id-2", `{"temp":22}`)
	tel, err := c.Telemetry(ctx, "dev-1", fleetapi.TelemetryQuery{Limit: 1})
	if err != nil || len(tel.Items) != 1 || string(tel.Items[0].Message) != `{"temp":22}` || tel.Next == "" {
		t.Fatalf("telemetry %+v, %v", tel, err)
	}
	if tel, err = c.Telemetry(ctx, "dev-1", fleetapi.TelemetryQuery{Limit: 1, Cursor: tel.Next}); err != nil || len(tel.Items) != 1 || string(tel.Items[0].Message) != `{"temp":21.5}` || tel.Next != "" {
		t.Fatalf("older telemetry %+v, %v", tel, err)
	}
	if tel, err = c.Telemetry(ctx, "dev-1", fleetapi.TelemetryQuery{Since: "1767225601000"}); err != nil || len(tel.Items) != 1 || tel.Next != "" {
		t.Fatalf("telemetry since the second message %+v, %v", tel, err)
	}
	sent, err := c.SendCommand(ctx, "dev-1", json.RawMessage(`{"op":"reboot"}`), time.Hour)
	if err != nil || sent.Status != fleet.CommandQueued || !sent.ExpiresAt.Equal(sent.CreatedAt.Add(time.Hour)) {
		t.Fatalf("send: %+v, %v", sent, err)
	}
	if got, err := c.Command(ctx, "dev-1", sent.ID); err != nil || got.ID != sent.ID || string(got.Payload) != `{"op":"reboot"}` {
		t.Fatalf("command: %+v, %v", got, err)
	}
	if list, err := c.Commands(ctx, "dev-1", 10, ""); err != nil || len(list.Items) != 1 || list.Items[0].ID != sent.ID {
		t.Fatalf("commands: %+v, %v", list, err)
	}
	if _, err := c.Command(ctx, "dev-1", sent.ID+"x"); err == nil {
		t.Fatal("an unknown command id was found")
	}
	rec, changed, err := c.Revoke(ctx, "dev-1")
	if err != nil || !changed || rec.Status != fleet.StatusRevoked {
		t.Fatalf("revoke: %+v %v %v", rec, changed, err)
	}
	if _, changed, err = c.Revoke(ctx, "dev-1"); err != nil || changed {
		t.Fatalf("revoke again: changed %v, %v; want no change", changed, err)
	}
	if rec, changed, err = c.Decommission(ctx, "dev-2"); err != nil || !changed || rec.Status != fleet.StatusDecommissioned {
		t.Fatalf("decommission: %+v %v %v", rec, changed, err)
	}
	_, err = c.Device(ctx, "nobody")
	var apiErr *fleetapi.APIError
	if !errors.Is(err, fleet.ErrNotFound) || !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Message != "get device nobody: not found" {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := c.Device(ctx, "bad name"); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if _, _, err := c.Revoke(ctx, "dev-2"); !errors.Is(err, fleet.ErrConditionFailed) {
		t.Fatalf("revoke a decommissioned device: %v, want a conflict", err)
	}
}

// TestWaitCommand: --wait polls until the command's status is final, rides
// over a 503, and stops with the context, saying the last status it saw.
func TestWaitCommand(t *testing.T) {
	script := []struct {
		code   int
		status fleet.CommandStatus
	}{{200, fleet.CommandQueued}, {503, ""}, {200, fleet.CommandSent}, {200, fleet.CommandAcked}}
	var mu sync.Mutex // the server's goroutines and the test's
	var calls int
	count := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/devices/dev-1/commands/c-1" {
			http.Error(w, `{"error":"no route"}`, 404)
			return
		}
		mu.Lock()
		step := script[min(calls, len(script)-1)]
		calls++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(step.code)
		if step.code != 200 {
			_, _ = w.Write([]byte(`{"error":"busy"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(api.CommandView{ID: "c-1", ThingName: "dev-1", Status: step.status})
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := &fleetapi.Client{Endpoint: u}
	ctx := context.Background()
	got, err := c.WaitCommand(ctx, "dev-1", "c-1", time.Millisecond)
	if n := count(); err != nil || got.Status != fleet.CommandAcked || n != 4 {
		t.Fatalf("wait: %+v, %v after %d calls; want ACKED after 4", got, err, n)
	}

	// A command that stays SENT: the wait ends with the context, and says so.
	mu.Lock()
	script = script[2:3]
	calls = 0
	mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	got, err = c.WaitCommand(ctx, "dev-1", "c-1", time.Millisecond)
	if n := count(); !errors.Is(err, context.DeadlineExceeded) || got.Status != fleet.CommandSent || n < 2 {
		t.Fatalf("wait past the deadline: %+v, %v after %d calls", got, err, n)
	}
	// An unknown command is an answer, not something to wait for.
	if _, err := c.WaitCommand(context.Background(), "dev-1", "nope", time.Millisecond); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("unknown command: %v", err)
	}
	// SendCommand refuses what the API would: a payload that is not JSON.
	if _, err := c.SendCommand(context.Background(), "dev-1", json.RawMessage(`{oops`), 0); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("bad payload: %v", err)
	}
}
