package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

const (
	eu = "eu-west-1"
	us = "us-west-2"
	ap = "ap-south-1"
)

var regions = []string{eu, us, ap}

func newHandler(t *testing.T, cfg api.Config) *api.Handler {
	t.Helper()
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, h http.Handler, method, target, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (body %s)", ct, r.body)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) errorText(t *testing.T) string {
	t.Helper()
	var e api.ErrorBody
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("error body without message: %s", r.body)
	}
	return e.Error
}

func TestNewRejectsBadConfig(t *testing.T) {
	f := apitest.New(t, regions)
	good := f.Config()
	cases := []struct {
		name   string
		change func(*api.Config)
	}{
		{"no inventory", func(c *api.Config) { c.Inventory = nil }},
		{"no telemetry", func(c *api.Config) { c.Telemetry = nil }},
		{"no registries", func(c *api.Config) { c.Registries = nil }},
		{"no policy", func(c *api.Config) { c.DevicePolicyName = "" }},
		{"region without registry", func(c *api.Config) { c.Regions = []string{eu, us, "sa-east-1"} }},
		{"region twice", func(c *api.Config) { c.Regions = []string{eu, eu, us} }},
		{"registry not listed", func(c *api.Config) { c.Regions = []string{eu, us} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			if _, err := api.New(cfg); err == nil {
				t.Fatal("New accepted a bad configuration")
			}
		})
	}
	cfg := good
	cfg.Regions = nil
	if _, err := api.New(cfg); err != nil {
		t.Fatalf("regions default to the registries' keys: %v", err)
	}
}

func TestHealth(t *testing.T) {
	f := apitest.New(t, regions)
	cases := []struct {
		name   string
		health func() error
		status int
		body   string
	}{
		{"no check", nil, 200, `{"status":"ok","regions":["eu-west-1","us-west-2","ap-south-1"]}`},
		{"healthy", func() error { return nil }, 200, `{"status":"ok","regions":["eu-west-1","us-west-2","ap-south-1"]}`},
		{"unhealthy", func() error { return errors.New("region us-west-2 endpoint not listening") }, 503,
			`{"error":"unhealthy: region us-west-2 endpoint not listening"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.Config()
			cfg.Health = tc.health
			r := do(t, newHandler(t, cfg), "GET", "/healthz", "")
			if r.status != tc.status || strings.TrimSpace(string(r.body)) != tc.body {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

func TestListDevicesPages(t *testing.T) {
	f := apitest.New(t, regions)
	names := []string{"dev-a", "dev-b", "dev-c", "dev-d", "dev-e"}
	for _, n := range names {
		f.Onboard(t, n, nil)
	}
	h := newHandler(t, f.Config())

	var got []string
	cursor := ""
	for page := 0; ; page++ {
		if page > len(names) {
			t.Fatal("paging does not end")
		}
		target := "/devices?limit=2"
		if cursor != "" {
			target += "&cursor=" + cursor
		}
		r := do(t, h, "GET", target, "")
		if r.status != 200 {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
		var list api.DeviceList
		r.decode(t, &list)
		if len(list.Items) > 2 {
			t.Fatalf("page of %d items with limit 2", len(list.Items))
		}
		for _, it := range list.Items {
			if it.Status != fleet.StatusActive || it.OriginRegion != eu {
				t.Fatalf("item %+v", it)
			}
			got = append(got, it.ThingName)
		}
		if list.Next == "" {
			break
		}
		cursor = list.Next
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("listed %v, want %v", got, names)
	}

	// Default limit: everything on one page, and "items" is [] (not null) when empty.
	r := do(t, h, "GET", "/devices", "")
	var all api.DeviceList
	r.decode(t, &all)
	if len(all.Items) != len(names) || all.Next != "" {
		t.Fatalf("default page: %+v", all)
	}
	empty := apitest.New(t, regions)
	r = do(t, newHandler(t, empty.Config()), "GET", "/devices", "")
	if strings.TrimSpace(string(r.body)) != `{"items":[]}` {
		t.Fatalf("empty list: %s", r.body)
	}
}

func TestBadRequests(t *testing.T) {
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", nil)
	h := newHandler(t, f.Config())
	cases := []struct {
		method, target string
		status         int
		contains       string
	}{
		{"GET", "/devices?limit=0", 400, "limit"},
		{"GET", "/devices?limit=1001", 400, "limit"},
		{"GET", "/devices?limit=x", 400, "limit"},
		{"GET", "/devices?limit=", 400, "limit"},
		{"GET", "/devices?cursor=bad%20cursor", 400, "cursor"},
		{"GET", "/devices/bad%20name", 400, "thing name"},
		{"GET", "/devices/" + strings.Repeat("a", 129), 400, "thing name"},
		{"GET", "/devices/dev%2F1", 400, "thing name"},
		{"GET", "/devices/unknown-device", 404, "not found"},
		{"GET", "/devices/dev-1/telemetry?limit=0", 400, "limit"},
		{"GET", "/devices/dev-1/telemetry?limit=1001", 400, "limit"},
		{"GET", "/devices/dev-1/telemetry?limit=-5", 400, "limit"},
		{"GET", "/devices/dev-1/telemetry?since=yesterday", 400, "since"},
		{"GET", "/devices/dev-1/telemetry?since=-5m", 400, "since"},
		{"GET", "/devices/bad.name/telemetry", 400, "thing name"},
		{"POST", "/devices/unknown-device/revoke", 404, "not found"},
		{"POST", "/devices/bad$name/decommission", 400, "thing name"},
		{"DELETE", "/devices/dev-1", 405, "not allowed"},
		{"POST", "/devices", 405, "not allowed"},
		{"GET", "/devices/dev-1/revoke", 405, "not allowed"},
		{"GET", "/nothing-here", 404, "no route"},
		{"GET", "/devices/dev-1/telemetry/extra", 404, "no route"},
		// Without an Admin the admin routes do not exist.
		{"POST", "/regions/eu-west-1/down", 404, "no route"},
		{"POST", "/regions/eu-west-1/ca", 404, "no route"},
		{"POST", "/ca", 404, "no route"},
		{"POST", "/devices/dev-1/messages?topic=e/dev-1/cmd", 404, "no route"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			r := do(t, h, tc.method, tc.target, "")
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			msg := r.errorText(t)
			if !strings.Contains(msg, tc.contains) {
				t.Fatalf("error %q does not mention %q", msg, tc.contains)
			}
			// Said once: "get device X: get device X: not found" repeats
			// what the request was.
			parts := strings.Split(msg, ": ")
			for i := 1; i < len(parts); i++ {
				if slices.Contains(parts[:i], parts[i]) || strings.Contains(strings.Join(parts[i:], ": "), parts[0]) {
					t.Fatalf("error %q repeats itself", msg)
				}
			}
		})
	}
	r := do(t, h, "PUT", "/devices/dev-1/revoke", "")
	if got := r.header.Get("Allow"); got != "POST" {
		t.Fatalf("Allow %q, want POST", got)
	}
}

// TestDeviceView checks the per-region view: live everywhere, partly
// onboarded regions, and a region whose registry errors.
func TestDeviceView(t *testing.T) {
	all := map[string]apitest.Step{eu: apitest.Attached, us: apitest.Attached, ap: apitest.Attached}
	live := api.RegionView{Thing: true, CertificateStatus: fleet.CertActive, PrincipalAttached: true, PolicyAttached: true}
	cases := []struct {
		name     string
		upTo     map[string]apitest.Step
		failing  string // a region whose registry fails every call
		failOp   string // only this operation fails (empty: all)
		wantLive bool
		want     map[string]api.RegionView
	}{
		{name: "live everywhere", upTo: all, wantLive: true,
			want: map[string]api.RegionView{eu: live, us: live, ap: live}},
		{name: "onboarding in progress",
			upTo:     map[string]apitest.Step{eu: apitest.Attached, us: apitest.Registered, ap: apitest.PrincipalAttached},
			wantLive: false,
			want: map[string]api.RegionView{
				eu: live,
				us: {CertificateStatus: fleet.CertPendingActivation},
				ap: {Thing: true, CertificateStatus: fleet.CertActive, PrincipalAttached: true},
			}},
		{name: "thing without certificate",
			upTo: map[string]apitest.Step{eu: apitest.Attached, us: apitest.Attached},
			want: map[string]api.RegionView{eu: live, us: live, ap: {}}},
		{name: "region unavailable", upTo: all, failing: ap,
			want: map[string]api.RegionView{eu: live, us: live,
				ap: {Error: "describe thing dev-1: DescribeThing: ServiceUnavailableException: service is temporarily unavailable: unavailable"}}},
		{name: "region throttles policy listing", upTo: all, failing: us, failOp: "ListAttachedPolicies",
			want: map[string]api.RegionView{eu: live, ap: live,
				us: {Thing: true, CertificateStatus: fleet.CertActive, PrincipalAttached: true,
					Error: "list policies of arn:aws:iot:us-west-2:123456789012:cert/ID: ListAttachedPolicies: ThrottlingException: Rate exceeded: throttled"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New(t, regions)
			d := f.Onboard(t, "dev-1", tc.upTo)
			if tc.failing != "" {
				f.Registries[tc.failing].SetHook(func(_ context.Context, op string) error {
					switch {
					case tc.failOp == "":
						return memiot.Unavailable(op)
					case op == tc.failOp:
						return memiot.Throttled(op)
					}
					return nil
				})
			}
			r := do(t, newHandler(t, f.Config()), "GET", "/devices/dev-1", "")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var v api.DeviceView
			r.decode(t, &v)
			wantRec := api.DeviceRecord{ThingName: "dev-1", Status: fleet.StatusActive, CertificateID: d.CertificateID,
				OriginRegion: eu, Version: 1, UpdatedAt: f.Now}
			if !reflect.DeepEqual(v.DeviceRecord, wantRec) {
				t.Fatalf("record %+v, want %+v", v.DeviceRecord, wantRec)
			}
			if v.Live != tc.wantLive {
				t.Fatalf("live %v, want %v: %s", v.Live, tc.wantLive, r.body)
			}
			if len(v.Regions) != len(regions) {
				t.Fatalf("regions %v", v.Regions)
			}
			for region, want := range tc.want {
				want.Error = strings.ReplaceAll(want.Error, "cert/ID", "cert/"+d.CertificateID)
				if got := v.Regions[region]; got != want {
					t.Errorf("%s: got %+v, want %+v", region, got, want)
				}
			}
		})
	}
}

func TestDeviceViewJSONShape(t *testing.T) {
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", map[string]apitest.Step{eu: apitest.Attached, us: apitest.Attached, ap: apitest.Attached})
	r := do(t, newHandler(t, f.Config()), "GET", "/devices/dev-1", "")
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"thingName", "status", "certificateId", "originRegion", "version", "regions", "live"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, r.body)
		}
	}
	euView := m["regions"].(map[string]any)[eu].(map[string]any)
	for _, k := range []string{"thing", "certificateStatus", "principalAttached", "policyAttached"} {
		if _, ok := euView[k]; !ok {
			t.Errorf("no regions.%s.%s in %s", eu, k, r.body)
		}
	}
	if _, ok := euView["error"]; ok {
		t.Errorf("error shown for a healthy region: %s", r.body)
	}
	if _, ok := m["certificatePem"]; ok {
		t.Errorf("certificate PEM leaked: %s", r.body)
	}
}

// TestDeviceViewReadsRegionsConcurrently holds every registry call until all
// regions have started: a sequential reader would time out.
func TestDeviceViewReadsRegionsConcurrently(t *testing.T) {
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", map[string]apitest.Step{eu: apitest.Attached, us: apitest.Attached, ap: apitest.Attached})
	var wg sync.WaitGroup
	wg.Add(len(regions))
	started := make(chan struct{})
	go func() { wg.Wait(); close(started) }()
	for _, region := range regions {
		var once sync.Once
		f.Registries[region].SetHook(func(ctx context.Context, op string) error {
			once.Do(wg.Done)
			select {
			case <-started:
				return nil
			case <-time.After(5 * time.Second):
				return memiot.Unavailable(op + " (regions read one after the other)")
			}
		})
	}
	r := do(t, newHandler(t, f.Config()), "GET", "/devices/dev-1", "")
	var v api.DeviceView
	r.decode(t, &v)
	if !v.Live {
		t.Fatalf("not live: %s", r.body)
	}
}

func TestTelemetry(t *testing.T) {
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", nil)
	base := f.Now.UnixMilli()
	f.Publish(t, "dev-1", base, eu, "m1", `{"temp":20}`)
	f.Publish(t, "dev-1", base+1000, us, "m2", `"Hello From Test-001"`)
	f.Publish(t, "dev-1", base+2000, eu, "m3", `{"temp":22,"tags":["a","b"]}`)
	f.Publish(t, "dev-2", base+3000, eu, "m4", `{"other":true}`)
	h := newHandler(t, f.Config())
	cases := []struct {
		target string
		want   []api.TelemetryItem
	}{
		{"/devices/dev-1/telemetry", []api.TelemetryItem{
			{Device: "dev-1", TS: base + 2000, Region: eu, Message: json.RawMessage(`{"temp":22,"tags":["a","b"]}`)},
			{Device: "dev-1", TS: base + 1000, Region: us, Message: json.RawMessage(`"Hello From Test-001"`)},
			{Device: "dev-1", TS: base, Region: eu, Message: json.RawMessage(`{"temp":20}`)},
		}},
		{"/devices/dev-1/telemetry?limit=1", []api.TelemetryItem{
			{Device: "dev-1", TS: base + 2000, Region: eu, Message: json.RawMessage(`{"temp":22,"tags":["a","b"]}`)},
		}},
		{"/devices/nobody/telemetry", []api.TelemetryItem{}},
		// since, in epoch milliseconds, RFC 3339 or a duration back from
		// the API's clock: the messages at or after it.
		{fmt.Sprintf("/devices/dev-1/telemetry?since=%d", base+1000), []api.TelemetryItem{
			{Device: "dev-1", TS: base + 2000, Region: eu, Message: json.RawMessage(`{"temp":22,"tags":["a","b"]}`)},
			{Device: "dev-1", TS: base + 1000, Region: us, Message: json.RawMessage(`"Hello From Test-001"`)},
		}},
		{"/devices/dev-1/telemetry?since=" + url.QueryEscape(f.Now.Add(1500*time.Millisecond).Format(time.RFC3339Nano)), []api.TelemetryItem{
			{Device: "dev-1", TS: base + 2000, Region: eu, Message: json.RawMessage(`{"temp":22,"tags":["a","b"]}`)},
		}},
		{fmt.Sprintf("/devices/dev-1/telemetry?since=%d", base+5000), []api.TelemetryItem{}},
	}
	for _, tc := range cases {
		t.Run(tc.target, func(t *testing.T) {
			r := do(t, h, "GET", tc.target, "")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var got api.TelemetryList
			r.decode(t, &got)
			if len(got.Items) != len(tc.want) {
				t.Fatalf("items %s, want %d", r.body, len(tc.want))
			}
			for i := range tc.want {
				g, w := got.Items[i], tc.want[i]
				if g.Device != w.Device || g.TS != w.TS || g.Region != w.Region || string(g.Message) != string(w.Message) {
					t.Errorf("item %d: %+v (%s), want %+v (%s)", i, g, g.Message, w, w.Message)
				}
			}
		})
	}
	// The message is embedded as JSON, not as a quoted string.
	r := do(t, h, "GET", "/devices/dev-1/telemetry?limit=1", "")
	if !strings.Contains(string(r.body), `"message":{"temp":22,"tags":["a","b"]}`) {
		t.Fatalf("message not raw JSON: %s", r.body)
	}

	// Pages of two: the next cursor leads to the older messages, and the
	// last page has none.
	var first, second api.TelemetryList
	do(t, h, "GET", "/devices/dev-1/telemetry?limit=2", "").decode(t, &first)
	if len(first.Items) != 2 || first.Next == "" || first.Items[0].TS != base+2000 {
		t.Fatalf("first page %+v", first)
	}
	do(t, h, "GET", "/devices/dev-1/telemetry?limit=2&cursor="+first.Next, "").decode(t, &second)
	if len(second.Items) != 1 || second.Next != "" || second.Items[0].TS != base {
		t.Fatalf("second page %+v", second)
	}
	// A page that reaches past since is the last: no cursor into older
	// messages.
	var bounded api.TelemetryList
	do(t, h, "GET", fmt.Sprintf("/devices/dev-1/telemetry?limit=3&since=%d", base+1000), "").decode(t, &bounded)
	if len(bounded.Items) != 2 || bounded.Next != "" {
		t.Fatalf("page bounded by since: %+v", bounded)
	}
	do(t, h, "GET", fmt.Sprintf("/devices/dev-1/telemetry?limit=1&since=%d", base+1000), "").decode(t, &bounded)
	if len(bounded.Items) != 1 || bounded.Next == "" {
		t.Fatalf("a page within since keeps its cursor: %+v", bounded)
	}
	// A duration counts back from the API's clock: an hour back holds all three.
	do(t, h, "GET", "/devices/dev-1/telemetry?since=1h", "").decode(t, &bounded)
	if len(bounded.Items) != 3 {
		t.Fatalf("since=1h: %+v", bounded)
	}
	if r := do(t, h, "GET", "/devices/dev-1/telemetry?cursor=%25bad", ""); r.status != 400 || !strings.Contains(r.errorText(t), "cursor") {
		t.Fatalf("bad cursor: %d %s", r.status, r.body)
	}
}

// racingInventory lets a concurrent writer change the item before each of the
// first n updates, as another API call or region would.
type racingInventory struct {
	api.Inventory
	mu      sync.Mutex
	n       int
	updates int
	// race is the concurrent writer's change to the stored item.
	race func(d *fleet.Device)
}

func (ri *racingInventory) Update(ctx context.Context, d fleet.Device, expect int64) error {
	ri.mu.Lock()
	ri.updates++
	racing := ri.updates <= ri.n
	ri.mu.Unlock()
	if racing {
		cur, err := ri.Inventory.Get(ctx, d.ThingName)
		if err != nil {
			return err
		}
		prev := cur.Version
		cur.Version++
		ri.race(&cur)
		if err := ri.Inventory.Update(ctx, cur, prev); err != nil {
			return fmt.Errorf("concurrent writer: %w", err)
		}
	}
	return ri.Inventory.Update(ctx, d, expect)
}

func TestStatusChanges(t *testing.T) {
	touch := func(d *fleet.Device) { d.UpdatedAt = d.UpdatedAt.Add(time.Second) }
	cases := []struct {
		name       string
		initial    fleet.Status
		action     string
		races      int
		race       func(*fleet.Device)
		status     int
		wantStatus fleet.Status // stored afterwards
		wantVer    int64        // stored afterwards
		wantErr    string
		// wantRecord is the revocation record afterwards ("": the
		// effective status, wantStatus unless the record restricts more).
		wantRecord fleet.Status
		// theirs: the stored item is the concurrent writer's, not this
		// request's (its UpdatedAt is theirs).
		theirs bool
	}{
		{name: "revoke active", initial: fleet.StatusActive, action: "revoke", status: 202, wantStatus: fleet.StatusRevoked, wantVer: 2},
		{name: "revoke revoked is idempotent", initial: fleet.StatusRevoked, action: "revoke", status: 200, wantStatus: fleet.StatusRevoked, wantVer: 1},
		{name: "revoke decommissioned", initial: fleet.StatusDecommissioned, action: "revoke", status: 409, wantStatus: fleet.StatusDecommissioned, wantVer: 1, wantErr: "cannot become REVOKED"},
		{name: "decommission active", initial: fleet.StatusActive, action: "decommission", status: 202, wantStatus: fleet.StatusDecommissioned, wantVer: 2},
		{name: "decommission revoked", initial: fleet.StatusRevoked, action: "decommission", status: 202, wantStatus: fleet.StatusDecommissioned, wantVer: 2},
		{name: "decommission decommissioned is idempotent", initial: fleet.StatusDecommissioned, action: "decommission", status: 200, wantStatus: fleet.StatusDecommissioned, wantVer: 1},
		{name: "revoke after two conflicting writes", initial: fleet.StatusActive, action: "revoke", races: 2, race: touch,
			status: 202, wantStatus: fleet.StatusRevoked, wantVer: 4},
		// The revocation record holds though the item keeps losing: the
		// device is revoked (the record says so), the item catches up
		// later (converge).
		{name: "revoke holds through repeated conflicts", initial: fleet.StatusActive, action: "revoke", races: 100, race: touch,
			status: 202, wantStatus: fleet.StatusActive, wantVer: 6, wantRecord: fleet.StatusRevoked},
		{name: "revoke meets a concurrent decommission", initial: fleet.StatusActive, action: "revoke", races: 1,
			race:   func(d *fleet.Device) { d.Status = fleet.StatusDecommissioned },
			status: 409, wantStatus: fleet.StatusDecommissioned, wantVer: 2, wantErr: "is DECOMMISSIONED and cannot become REVOKED"},
		// The item reaches REVOKED between this request's record and its
		// update: the record's own stream run caught it up (seen in
		// internal/local under load), or another revoke raced this one.
		// This request changed the device: 202, not "it already was".
		{name: "revoke meets its record's catch-up or a concurrent revoke", initial: fleet.StatusActive, action: "revoke", races: 1,
			race:   func(d *fleet.Device) { d.Status = fleet.StatusRevoked },
			status: 202, wantStatus: fleet.StatusRevoked, wantVer: 2, theirs: true},
		{name: "decommission meets its record's catch-up", initial: fleet.StatusRevoked, action: "decommission", races: 1,
			race:   func(d *fleet.Device) { d.Status = fleet.StatusDecommissioned },
			status: 202, wantStatus: fleet.StatusDecommissioned, wantVer: 2, theirs: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New(t, regions)
			d := f.Onboard(t, "dev-1", nil)
			ctx := context.Background()
			if tc.initial != fleet.StatusActive {
				d.Status = tc.initial
				if err := f.Inventory.Update(ctx, d, 1); err != nil {
					t.Fatal(err)
				}
			}
			cfg := f.Config()
			f.Now = f.Now.Add(time.Hour)
			cfg.Inventory = &racingInventory{Inventory: f.Inventory, n: tc.races, race: tc.race}
			r := do(t, newHandler(t, cfg), "POST", "/devices/dev-1/"+tc.action, "")
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			stored, err := f.Inventory.Get(ctx, "dev-1")
			if err != nil {
				t.Fatal(err)
			}
			if stored.Status != tc.wantStatus || stored.Version != tc.wantVer {
				t.Fatalf("stored %s v%d, want %s v%d", stored.Status, stored.Version, tc.wantStatus, tc.wantVer)
			}
			if stored.CertificatePEM != d.CertificatePEM || stored.CertificateID != d.CertificateID {
				t.Fatal("status change lost the certificate")
			}
			// A revoke or decommission that was accepted left a revocation
			// record at least as restrictive as what was asked; GET shows the
			// device as restricted as the record says.
			wantRecord := tc.wantRecord
			if wantRecord == "" && tc.status/100 == 2 && tc.initial == fleet.StatusActive {
				wantRecord = tc.wantStatus
			}
			rec, rerr := f.Inventory.Revocation(ctx, "dev-1")
			switch {
			case wantRecord == "" && rerr == nil && tc.status/100 == 2 && tc.initial != fleet.StatusActive:
				// Set up without a record: an idempotent answer writes none.
			case wantRecord != "" && (rerr != nil || !fleet.Restricts(rec.Status, wantRecord)):
				t.Fatalf("revocation record %+v %v, want at least %s", rec, rerr, wantRecord)
			}
			if wantRecord != "" {
				var view api.DeviceView
				do(t, newHandler(t, f.Config()), "GET", "/devices/dev-1", "").decode(t, &view)
				if !fleet.Restricts(view.Status, wantRecord) {
					t.Fatalf("GET shows %s, want at least %s", view.Status, wantRecord)
				}
			}
			if tc.wantErr != "" {
				if msg := r.errorText(t); !strings.Contains(msg, tc.wantErr) {
					t.Fatalf("error %q does not mention %q", msg, tc.wantErr)
				}
				return
			}
			var resp api.DeviceRecord
			r.decode(t, &resp)
			if tc.wantRecord != "" {
				if resp.Status != tc.wantRecord || resp.ThingName != "dev-1" {
					t.Fatalf("response %+v, want %s", resp, tc.wantRecord)
				}
				return
			}
			if resp.Status != tc.wantStatus || resp.Version != tc.wantVer || resp.ThingName != "dev-1" {
				t.Fatalf("response %+v", resp)
			}
			if tc.status == 202 && !tc.theirs && (!resp.UpdatedAt.Equal(f.Now) || !stored.UpdatedAt.Equal(f.Now)) {
				t.Fatalf("UpdatedAt %v / stored %v, want %v", resp.UpdatedAt, stored.UpdatedAt, f.Now)
			}
		})
	}
}

func TestStatusChangeBackendErrors(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"throttled", fmt.Errorf("GetItem: %w", fleet.ErrThrottled), 503},
		{"unavailable", fmt.Errorf("GetItem: %w", fleet.ErrUnavailable), 503},
		{"unexpected", errors.New("boom"), 500},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New(t, regions)
			f.Onboard(t, "dev-1", nil)
			cfg := f.Config()
			cfg.Inventory = failingInventory{err: tc.err}
			h := newHandler(t, cfg)
			for _, target := range []string{"/devices/dev-1/revoke", "/devices/dev-1", "/devices"} {
				method := "GET"
				if strings.HasSuffix(target, "revoke") {
					method = "POST"
				}
				r := do(t, h, method, target, "")
				if r.status != tc.status {
					t.Fatalf("%s: status %d, want %d", target, r.status, tc.status)
				}
				if msg := r.errorText(t); !strings.Contains(msg, tc.err.Error()) {
					t.Fatalf("error %q hides %q", msg, tc.err)
				}
			}
		})
	}
}

type failingInventory struct{ err error }

func (f failingInventory) Get(context.Context, string) (fleet.Device, error) {
	return fleet.Device{}, f.err
}
func (f failingInventory) List(context.Context, int, string) ([]fleet.Device, string, error) {
	return nil, "", f.err
}
func (f failingInventory) Update(context.Context, fleet.Device, int64) error { return f.err }
func (f failingInventory) Revocation(context.Context, string) (fleet.Revocation, error) {
	return fleet.Revocation{}, f.err
}
func (f failingInventory) Revoke(context.Context, fleet.Revocation) error { return f.err }

// fakeAdmin records admin calls against the memiot registries. A region
// marked down refuses CA registrations, as the local stack's does.
type fakeAdmin struct {
	mu   sync.Mutex
	down map[string]bool
	regs map[string]*memiot.Registry
	// published records PublishToDevice calls; sessions and publishErr are
	// its answer.
	published  []publishCall
	sessions   map[string]int
	publishErr error
}

type publishCall struct {
	thing, topic, payload string
	qos                   byte
}

func (a *fakeAdmin) PublishToDevice(_ context.Context, thing, topic string, payload []byte, qos byte) (map[string]int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.published = append(a.published, publishCall{thing: thing, topic: topic, payload: string(payload), qos: qos})
	return a.sessions, a.publishErr
}

func (a *fakeAdmin) SetRegionDown(_ context.Context, region string, down bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.down[region] = down
	return nil
}

func (a *fakeAdmin) RegisterCA(ctx context.Context, region, pemText string) (string, error) {
	a.mu.Lock()
	down := a.down[region]
	a.mu.Unlock()
	if down {
		return "", fmt.Errorf("region %s is down: %w", region, fleet.ErrUnavailable)
	}
	ca, err := a.regs[region].RegisterCACertificate(ctx, pemText, true)
	if err != nil {
		return "", err
	}
	return ca.ID, nil
}

func (a *fakeAdmin) Reconcile(_ context.Context, region string) (reconcile.Report, error) {
	return reconcile.Report{Region: region, Complete: true, Findings: []reconcile.Finding{{Kind: "thing_missing", ThingName: "dev-1", Repaired: true}}}, nil
}

func TestAdmin(t *testing.T) {
	f := apitest.New(t, regions)
	admin := &fakeAdmin{down: map[string]bool{}, regs: f.Registries}
	cfg := f.Config()
	cfg.Admin = admin
	h := newHandler(t, cfg)

	other, err := pki.NewRoot("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.IssueDevice("not-a-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, target, body string
		status             int
		check              func(t *testing.T, r response)
	}{
		{name: "down", target: "/regions/us-west-2/down", status: 200, check: func(t *testing.T, r response) {
			if !admin.down[us] {
				t.Fatal("region not marked down")
			}
		}},
		{name: "up", target: "/regions/us-west-2/up", status: 200, check: func(t *testing.T, r response) {
			if admin.down[us] {
				t.Fatal("region not marked up")
			}
		}},
		{name: "down unknown region", target: "/regions/mars-1/down", status: 404},
		{name: "register CA", target: "/regions/ap-south-1/ca", body: other.CertPEM(), status: 201, check: func(t *testing.T, r response) {
			var out map[string]string
			r.decode(t, &out)
			want := fleet.CertificateID(other.Cert)
			if out["caCertificateId"] != want {
				t.Fatalf("caCertificateId %q, want %q", out["caCertificateId"], want)
			}
			if _, err := f.Registries[ap].DescribeCACertificate(context.Background(), want); err != nil {
				t.Fatalf("CA not registered in %s: %v", ap, err)
			}
			if _, err := f.Registries[eu].DescribeCACertificate(context.Background(), want); !errors.Is(err, fleet.ErrNotFound) {
				t.Fatalf("CA registered in %s too: %v", eu, err)
			}
		}},
		{name: "register CA twice", target: "/regions/ap-south-1/ca", body: other.CertPEM(), status: 409},
		{name: "register CA unknown region", target: "/regions/mars-1/ca", body: other.CertPEM(), status: 404},
		{name: "register garbage", target: "/regions/eu-west-1/ca", body: "not a certificate", status: 400},
		{name: "register empty", target: "/regions/eu-west-1/ca", body: "", status: 400},
		{name: "register a leaf", target: "/regions/eu-west-1/ca", body: leaf.CertPEM(), status: 400},
		{name: "register a huge body", target: "/regions/eu-west-1/ca", body: strings.Repeat("A", api.MaxCABody+1), status: 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, h, "POST", tc.target, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status >= 400 {
				r.errorText(t)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestRequestLogging(t *testing.T) {
	f := apitest.New(t, regions)
	var buf bytes.Buffer
	cfg := f.Config()
	cfg.Logger = slogJSON(&buf)
	h := newHandler(t, cfg)
	do(t, h, "GET", "/devices/nobody?x=1", "")
	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "api request" {
			line = m
		}
	}
	if line == nil || line["status"] != float64(404) || line["path"] != "/devices/nobody" || line["method"] != "GET" || line["query"] != "x=1" {
		t.Fatalf("request log line %v in %s", line, buf.String())
	}
}

// FuzzPaths sends arbitrary paths, queries, methods and bodies: every
// answer is JSON with a sane status, and nothing panics.
func FuzzPaths(f *testing.F) {
	fl := apitest.New(f, regions)
	fl.Onboard(f, "dev-1", map[string]apitest.Step{eu: apitest.Attached})
	fl.Publish(f, "dev-1", fl.Now.UnixMilli(), eu, "m1", `{"t":1}`)
	cfg := fl.Config()
	cfg.Admin = &fakeAdmin{down: map[string]bool{}, regs: fl.Registries}
	h, err := api.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/devices", "/devices/dev-1", "/devices/dev-1/telemetry?limit=2", "/devices?limit=1&cursor=dev-0",
		"/devices/%00", "/devices/dev-1/revoke", "/regions/eu-west-1/ca", "/healthz", "/devices/../x", "//devices"} {
		f.Add("GET", s, "")
		f.Add("POST", s, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	}
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if method != "GET" && method != "POST" && method != "DELETE" {
			method = "GET"
		}
		req, err := http.NewRequest(method, "http://api.local"+target, strings.NewReader(body))
		if err != nil {
			return // not a request a server could receive
		}
		req.RequestURI = target
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 300 && rec.Code < 400 {
			return // ServeMux's path-cleaning redirect
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: Content-Type %q", method, target, ct)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %q: body is not JSON: %s", method, target, rec.Body)
		}
	})
}

// TestRevocationRecordRestrictsTheDevice: a device whose revocation record
// says REVOKED is shown REVOKED though its item (which lost a race) says
// ACTIVE, and cannot be revoked into less.
func TestRevocationRecordRestrictsTheDevice(t *testing.T) {
	f := apitest.New(t, regions)
	d := f.Onboard(t, "dev-1", nil)
	ctx := context.Background()
	if err := f.Inventory.Revoke(ctx, fleet.Revocation{ThingName: "dev-1", Status: fleet.StatusDecommissioned, CertificateID: d.CertificateID,
		CertificatePEM: d.CertificatePEM, CACertificateID: d.CACertificateID}); err != nil {
		t.Fatal(err)
	}
	h := newHandler(t, f.Config())
	var view api.DeviceView
	do(t, h, "GET", "/devices/dev-1", "").decode(t, &view)
	if view.Status != fleet.StatusDecommissioned {
		t.Errorf("GET shows %s, want DECOMMISSIONED (the record)", view.Status)
	}
	if r := do(t, h, "POST", "/devices/dev-1/revoke", ""); r.status != http.StatusConflict {
		t.Errorf("revoke of a decommissioned device: %d, want 409", r.status)
	}
	// Decommission again: the item catches up with the record.
	if r := do(t, h, "POST", "/devices/dev-1/decommission", ""); r.status != http.StatusAccepted {
		t.Errorf("decommission: %d %s, want 202", r.status, r.body)
	}
	if got, _ := f.Inventory.Get(ctx, "dev-1"); got.Status != fleet.StatusDecommissioned {
		t.Errorf("item %s, want DECOMMISSIONED", got.Status)
	}
}

// fakeDrift answers drift reports a page at a time.
type fakeDrift struct{ calls []string }

func (d *fakeDrift) Drift(_ context.Context, region, cursor string, maxChecks int) (reconcile.Report, error) {
	d.calls = append(d.calls, fmt.Sprintf("%s %q %d", region, cursor, maxChecks))
	if cursor == "" {
		return reconcile.Report{Region: region, DryRun: true, Checked: maxChecks, Next: "page-2",
			Findings: []reconcile.Finding{{Kind: "policy_detached", ThingName: "dev-1"}}}, nil
	}
	return reconcile.Report{Region: region, DryRun: true, Complete: true, Findings: []reconcile.Finding{}}, nil
}

func TestDriftRoute(t *testing.T) {
	f := apitest.New(t, regions)
	cfg := f.Config()
	drift := &fakeDrift{}
	cfg.Drift = drift
	h := newHandler(t, cfg)
	var rep reconcile.Report
	r := do(t, h, "GET", "/regions/"+regions[1]+"/drift?limit=10", "")
	if r.status != http.StatusOK {
		t.Fatalf("drift: %d %s", r.status, r.body)
	}
	r.decode(t, &rep)
	if rep.Next != "page-2" || len(rep.Findings) != 1 || rep.Complete {
		t.Errorf("first page %+v", rep)
	}
	do(t, h, "GET", "/regions/"+regions[1]+"/drift?cursor=page-2", "").decode(t, &rep)
	if !rep.Complete {
		t.Errorf("second page %+v", rep)
	}
	want := []string{regions[1] + ` "" 10`, regions[1] + ` "page-2" 200`}
	if fmt.Sprint(drift.calls) != fmt.Sprint(want) {
		t.Errorf("calls %v, want %v", drift.calls, want)
	}
	for target, status := range map[string]int{
		"/regions/mars-1/drift":                      http.StatusNotFound,
		"/regions/" + regions[0] + "/drift?limit=0":  http.StatusBadRequest,
		"/regions/" + regions[0] + "/drift?limit=x1": http.StatusBadRequest,
	} {
		if r := do(t, h, "GET", target, ""); r.status != status {
			t.Errorf("%s: %d, want %d", target, r.status, status)
		}
	}
	// Without a Drift, the route does not exist.
	if r := do(t, newHandler(t, f.Config()), "GET", "/regions/"+regions[0]+"/drift", ""); r.status != http.StatusNotFound {
		t.Errorf("drift without a reporter: %d, want 404", r.status)
	}
}

// TestRegisterCAEverywhere: POST /ca registers the CA in every region; a
// region that has it already counts as done, so that the call can be
// repeated once a region that was down is back; a region that fails is
// reported with its error and gives the answer its status.
func TestRegisterCAEverywhere(t *testing.T) {
	other, err := pki.NewRoot("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.IssueDevice("not-a-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := fleet.CertificateID(other.Cert)
	ctx := context.Background()
	cases := []struct {
		name   string
		setup  func(t *testing.T, f *apitest.Fleet, a *fakeAdmin)
		body   string
		status int
		// want is each region's status; nil: the answer is an ErrorBody.
		want map[string]string
		// registered: the regions that hold the CA afterwards.
		registered []string
	}{
		{name: "every region", body: other.CertPEM(), status: 201,
			want:       map[string]string{eu: api.CARegistered, us: api.CARegistered, ap: api.CARegistered},
			registered: regions},
		{name: "one region had it", body: other.CertPEM(), status: 201,
			setup: func(t *testing.T, f *apitest.Fleet, _ *fakeAdmin) {
				if _, err := f.Registries[us].RegisterCACertificate(ctx, other.CertPEM(), true); err != nil {
					t.Fatal(err)
				}
			},
			want:       map[string]string{eu: api.CARegistered, us: api.CAAlreadyRegistered, ap: api.CARegistered},
			registered: regions},
		{name: "every region had it", body: other.CertPEM(), status: 200,
			setup: func(t *testing.T, f *apitest.Fleet, _ *fakeAdmin) {
				for _, r := range regions {
					if _, err := f.Registries[r].RegisterCACertificate(ctx, other.CertPEM(), true); err != nil {
						t.Fatal(err)
					}
				}
			},
			want:       map[string]string{eu: api.CAAlreadyRegistered, us: api.CAAlreadyRegistered, ap: api.CAAlreadyRegistered},
			registered: regions},
		{name: "a region is down", body: other.CertPEM(), status: 503,
			setup: func(_ *testing.T, _ *apitest.Fleet, a *fakeAdmin) { a.down[ap] = true },
			want:  map[string]string{eu: api.CARegistered, us: api.CARegistered, ap: api.CAFailed},
			// The others have it: repeating the call once ap is back completes it.
			registered: []string{eu, us}},
		{name: "a leaf certificate", body: leaf.CertPEM(), status: 400,
			want: map[string]string{eu: api.CAFailed, us: api.CAFailed, ap: api.CAFailed}},
		{name: "garbage", body: "not a certificate", status: 400},
		{name: "empty", body: "", status: 400},
		{name: "huge", body: strings.Repeat("A", api.MaxCABody+1), status: 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New(t, regions)
			admin := &fakeAdmin{down: map[string]bool{}, regs: f.Registries}
			cfg := f.Config()
			cfg.Admin = admin
			h := newHandler(t, cfg)
			if tc.setup != nil {
				tc.setup(t, f, admin)
			}
			r := do(t, h, "POST", "/ca", tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.want == nil {
				r.errorText(t)
			} else {
				var out api.CARegistrations
				r.decode(t, &out)
				if out.CACertificateID != id && tc.body == other.CertPEM() {
					t.Errorf("caCertificateId %q, want %q", out.CACertificateID, id)
				}
				if len(out.Regions) != len(tc.want) {
					t.Errorf("regions %v, want %v", out.Regions, tc.want)
				}
				for region, status := range tc.want {
					got := out.Regions[region]
					if got.Status != status {
						t.Errorf("%s: %+v, want status %q", region, got, status)
					}
					if (status == api.CAFailed) != (got.Error != "") || (status != api.CAFailed) != (got.CACertificateID == id) {
						t.Errorf("%s: %+v: an error exactly when failed, the CA id otherwise", region, got)
					}
				}
				if failed := tc.status >= 400; failed != (out.Error != "") {
					t.Errorf("error %q with status %d", out.Error, tc.status)
				}
			}
			for _, region := range regions {
				_, err := f.Registries[region].DescribeCACertificate(ctx, id)
				if want := slices.Contains(tc.registered, region); want != (err == nil) {
					t.Errorf("%s holds the CA: %v, want %v", region, err == nil, want)
				}
			}
		})
	}
}

// TestPublishToDevice: POST /devices/{thingName}/messages checks the device
// and the topic (under e/<thing>/ only, where the device policy lets the
// device receive) and hands the body to the stack, which answers how many
// sessions it reached.
func TestPublishToDevice(t *testing.T) {
	cases := []struct {
		name, target, body string
		publishErr         error
		status             int
		contains           string       // in the error
		want               *publishCall // the call the stack got
	}{
		{name: "delivered", target: "/devices/dev-1/messages?topic=e/dev-1/cmd", body: `{"led":"on"}`, status: 202,
			want: &publishCall{thing: "dev-1", topic: "e/dev-1/cmd", payload: `{"led":"on"}`}},
		{name: "qos 1, deeper topic", target: "/devices/dev-1/messages?topic=e/dev-1/a/b&qos=1", body: "x", status: 202,
			want: &publishCall{thing: "dev-1", topic: "e/dev-1/a/b", payload: "x", qos: 1}},
		{name: "empty payload", target: "/devices/dev-1/messages?topic=e/dev-1/ping", status: 202,
			want: &publishCall{thing: "dev-1", topic: "e/dev-1/ping"}},
		{name: "no topic", target: "/devices/dev-1/messages", body: "x", status: 400, contains: "topic query parameter is required"},
		{name: "another device's topic", target: "/devices/dev-1/messages?topic=e/dev-2/cmd", body: "x", status: 400, contains: "not under e/dev-1/"},
		{name: "a prefix of the name", target: "/devices/dev-1/messages?topic=e/dev-10/cmd", body: "x", status: 400, contains: "not under e/dev-1/"},
		{name: "uplink topic", target: "/devices/dev-1/messages?topic=i/dev-1/m", body: "x", status: 400, contains: "not under e/dev-1/"},
		{name: "no suffix", target: "/devices/dev-1/messages?topic=e/dev-1/", body: "x", status: 400, contains: "not under e/dev-1/"},
		{name: "wildcard", target: "/devices/dev-1/messages?topic=e/dev-1/%23", body: "x", status: 400, contains: "wildcard"},
		{name: "too many slashes", target: "/devices/dev-1/messages?topic=e/dev-1/a/b/c/d/e/f/g", body: "x", status: 400, contains: "slashes"},
		{name: "too long", target: "/devices/dev-1/messages?topic=e/dev-1/" + strings.Repeat("a", api.MaxTopicBytes), body: "x", status: 400, contains: "bytes"},
		{name: "qos 2", target: "/devices/dev-1/messages?topic=e/dev-1/cmd&qos=2", body: "x", status: 400, contains: "qos"},
		{name: "unknown device", target: "/devices/nobody/messages?topic=e/nobody/cmd", body: "x", status: 404, contains: "not found"},
		{name: "bad thing name", target: "/devices/bad$name/messages?topic=e/bad$name/cmd", body: "x", status: 400, contains: "thing name"},
		{name: "payload too large", target: "/devices/dev-1/messages?topic=e/dev-1/cmd", body: strings.Repeat("x", api.MaxMessageBody+1), status: 413, contains: "larger"},
		{name: "stack unavailable", target: "/devices/dev-1/messages?topic=e/dev-1/cmd", body: "x", status: 503, contains: "unavailable",
			publishErr: fmt.Errorf("endpoint: %w", fleet.ErrUnavailable), want: &publishCall{thing: "dev-1", topic: "e/dev-1/cmd", payload: "x"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := apitest.New(t, regions)
			f.Onboard(t, "dev-1", nil)
			admin := &fakeAdmin{down: map[string]bool{}, regs: f.Registries,
				sessions: map[string]int{eu: 1, us: 0, ap: 2}, publishErr: tc.publishErr}
			cfg := f.Config()
			cfg.Admin = admin
			r := do(t, newHandler(t, cfg), "POST", tc.target, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			switch {
			case tc.want == nil && len(admin.published) != 0:
				t.Errorf("the stack was asked to publish %+v", admin.published)
			case tc.want != nil && (len(admin.published) != 1 || admin.published[0] != *tc.want):
				t.Errorf("the stack was asked %+v, want %+v", admin.published, *tc.want)
			}
			if tc.status >= 400 {
				if msg := r.errorText(t); !strings.Contains(msg, tc.contains) {
					t.Errorf("error %q does not mention %q", msg, tc.contains)
				}
				return
			}
			var out api.DownlinkResult
			r.decode(t, &out)
			if out.Topic != tc.want.topic || out.QoS != int(tc.want.qos) || out.Sessions != 3 || len(out.Regions) != 3 || out.Regions[ap] != 2 {
				t.Errorf("answer %+v", out)
			}
		})
	}
}
