package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/testkit/wiringtest"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

var regions = []string{"eu-west-1", "us-west-2"}

// event is the fixture of an API Gateway HTTP API event for method and
// target, with body (base64-encoded when b64).
func event(t *testing.T, method, target, body string, b64 bool) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/get-device.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	path, query, _ := strings.Cut(target, "?")
	ev["rawPath"], ev["rawQueryString"] = path, query
	rc := ev["requestContext"].(map[string]any)
	h := rc["http"].(map[string]any)
	h["method"], h["path"] = method, path
	if body != "" {
		if b64 {
			body = base64.StdEncoding.EncodeToString([]byte(body))
		}
		ev["body"], ev["isBase64Encoded"] = body, b64
	}
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// invoke runs the event through the same decoding entry point lambda.Start
// uses.
func invoke(t *testing.T, h http.Handler, payload []byte) events.APIGatewayV2HTTPResponse {
	t.Helper()
	out, err := lambda.NewHandler(lambdaHandler(h)).Invoke(context.Background(), payload)
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("decode response %s: %v", out, err)
	}
	return resp
}

func newFleet(t *testing.T) (*apitest.Fleet, *api.Handler) {
	t.Helper()
	f := apitest.New(t, regions)
	f.Onboard(t, "dev-1", map[string]apitest.Step{"eu-west-1": apitest.Attached, "us-west-2": apitest.Activated})
	f.Publish(t, "dev-1", f.Now.UnixMilli(), "eu-west-1", "m1", `{"message":"Hello From Test-001"}`)
	f.Publish(t, "dev-1", f.Now.UnixMilli()+5, "us-west-2", "m2", `{"temp":21.5}`)
	h, err := api.New(f.Config())
	if err != nil {
		t.Fatal(err)
	}
	return f, h
}

// TestProxyMatchesPlainHandler: through the Lambda proxy, every read answers
// exactly what the plain handler answers.
func TestProxyMatchesPlainHandler(t *testing.T) {
	_, h := newFleet(t)
	cases := []struct{ method, target string }{
		{"GET", "/healthz"},
		{"GET", "/devices"},
		{"GET", "/devices?limit=1"},
		{"GET", "/devices/dev-1"},
		{"GET", "/devices/dev-1/telemetry"},
		{"GET", "/devices/dev-1/telemetry?limit=1"},
		{"GET", "/devices/dev-1/telemetry?limit=zero"},
		{"GET", "/devices/nobody"},
		{"GET", "/devices/bad.name"},
		{"DELETE", "/devices/dev-1"},
		{"POST", "/regions/eu-west-1/down"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.target, nil))
			resp := invoke(t, h, event(t, tc.method, tc.target, "", false))
			if resp.StatusCode != rec.Code {
				t.Fatalf("status %d through Lambda, %d plain (%s)", resp.StatusCode, rec.Code, resp.Body)
			}
			if resp.IsBase64Encoded {
				t.Fatal("JSON body base64-encoded")
			}
			if resp.Body != rec.Body.String() {
				t.Fatalf("body through Lambda:\n%s\nplain:\n%s", resp.Body, rec.Body)
			}
			if ct := resp.Headers["Content-Type"]; ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
		})
	}
}

func TestProxyRevoke(t *testing.T) {
	f, h := newFleet(t)
	resp := invoke(t, h, event(t, "POST", "/devices/dev-1/revoke", "", false))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
	}
	var rec api.DeviceRecord
	if err := json.Unmarshal([]byte(resp.Body), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Status != fleet.StatusRevoked || rec.Version != 2 {
		t.Fatalf("record %+v", rec)
	}
	d, err := f.Inventory.Get(context.Background(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != fleet.StatusRevoked || d.Version != 2 {
		t.Fatalf("stored %+v", d)
	}
	// Again: idempotent.
	if resp := invoke(t, h, event(t, "POST", "/devices/dev-1/revoke", "", false)); resp.StatusCode != http.StatusOK {
		t.Fatalf("second revoke: %d %s", resp.StatusCode, resp.Body)
	}
}

// TestProxyBody: a request body, plain or base64-encoded by API Gateway,
// reaches the handler (the admin CA route, which the Lambda does not serve,
// is exercised through a handler that has an admin).
func TestProxyBody(t *testing.T) {
	f := apitest.New(t, regions)
	admin := &recordingAdmin{}
	cfg := f.Config()
	cfg.Admin = admin
	h, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, b64 := range []bool{false, true} {
		resp := invoke(t, h, event(t, "POST", "/regions/us-west-2/ca", f.CA.CertPEM(), b64))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("base64 %v: status %d: %s", b64, resp.StatusCode, resp.Body)
		}
	}
	if len(admin.pems) != 2 || admin.pems[0] != f.CA.CertPEM() || admin.pems[1] != f.CA.CertPEM() {
		t.Fatalf("admin got %d bodies", len(admin.pems))
	}
}

type recordingAdmin struct{ pems []string }

func (a *recordingAdmin) SetRegionDown(context.Context, string, bool) error { return nil }
func (a *recordingAdmin) RegisterCA(_ context.Context, _ string, pem string) (string, error) {
	a.pems = append(a.pems, pem)
	return "ca-id", nil
}
func (a *recordingAdmin) Reconcile(_ context.Context, region string) (reconcile.Report, error) {
	return reconcile.Report{Region: region, Findings: []reconcile.Finding{}}, nil
}
func (a *recordingAdmin) PublishToDevice(context.Context, string, string, []byte, byte) (map[string]int, error) {
	return map[string]int{}, nil
}

func TestReadSettings(t *testing.T) {
	full := map[string]string{
		"INVENTORY_TABLE": "inventory", "DATA_TABLE": "data", "PRESENCE_TABLE": "presence", "LEASES_TABLE": "leases",
		"REGIONS": "eu-west-1, us-west-2", "DEVICE_POLICY_NAME": "device-policy",
	}
	cases := []struct {
		name    string
		unset   string
		wantErr bool
	}{
		{"complete", "", false},
		{"no inventory table", "INVENTORY_TABLE", true},
		{"no data table", "DATA_TABLE", true},
		{"no presence table", "PRESENCE_TABLE", true},
		{"no lease table", "LEASES_TABLE", true},
		{"no regions", "REGIONS", true},
		{"no policy", "DEVICE_POLICY_NAME", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := awsconf.Env{Lookup: func(name string) (string, bool) {
				if name == tc.unset {
					return "", false
				}
				v, ok := full[name]
				return v, ok
			}}
			s, err := readSettings(env)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), tc.unset) {
					t.Fatalf("error %v, want one naming %s", err, tc.unset)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := settings{InventoryTable: "inventory", DataTable: "data", PresenceTable: "presence", LeasesTable: "leases", Regions: []string{"eu-west-1", "us-west-2"}, DevicePolicyName: "device-policy"}
			if fmt.Sprint(s) != fmt.Sprint(want) {
				t.Fatalf("settings %+v, want %+v", s, want)
			}
		})
	}
}

// TestDeployedSettings: the environment the deployment gives the API
// (events/env.json, equal to template.yaml's) configures it.
func TestDeployedSettings(t *testing.T) {
	s, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "ApiFunction", "eu-west-1")))
	if err != nil {
		t.Fatal(err)
	}
	if s.LeasesTable != "mriot-device-leases" || s.InventoryTable != "mriot-device-inventory" || len(s.Regions) == 0 {
		t.Errorf("settings %+v", s)
	}
}

// TestBuild wires the SDK clients (no call is made) and serves /healthz.
func TestBuild(t *testing.T) {
	cfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	h, err := build(cfg, settings{InventoryTable: "inventory", DataTable: "data", PresenceTable: "presence", LeasesTable: "leases",
		Regions: []string{"eu-west-1", "us-west-2"}, DevicePolicyName: "device-policy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := invoke(t, h, event(t, "GET", "/healthz", "", false))
	var health api.Health
	if err := json.Unmarshal([]byte(resp.Body), &health); resp.StatusCode != http.StatusOK || err != nil ||
		health.Status != "ok" || !slices.Equal(health.Regions, []string{"eu-west-1", "us-west-2"}) {
		t.Fatalf("healthz: %d %s", resp.StatusCode, resp.Body)
	}
	if _, err := build(cfg, settings{InventoryTable: "inventory", DataTable: "data", PresenceTable: "presence", LeasesTable: "leases", DevicePolicyName: "p"}, nil); err == nil {
		t.Fatal("built a handler without regions")
	}
	if _, err := build(cfg, settings{InventoryTable: "inventory", DataTable: "data", PresenceTable: "presence", LeasesTable: "leases",
		Regions: []string{"eu-west-1"}, DevicePolicyName: "bad name"}, nil); err == nil {
		t.Fatal("built a handler with an invalid policy name")
	}
}

// TestDriftReadsTheRegionsLeaseTable: GET /regions/{region}/drift is wired
// to that region's reconciler, run dry: its first call is the Scan of
// pending obligations in the region's own lease table (signed for that
// region, not the home region), and no call writes. The endpoint refuses
// every call, so the report fails.
func TestDriftReadsTheRegionsLeaseTable(t *testing.T) {
	type call struct{ target, table, scope string }
	var (
		mu    sync.Mutex
		calls []call
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ TableName string }
		_ = json.NewDecoder(r.Body).Decode(&body)
		_, scope, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=AKID/")
		mu.Lock()
		calls = append(calls, call{r.Header.Get("X-Amz-Target"), body.TableName, scope})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}`)
	}))
	defer srv.Close()
	cfg := aws.Config{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	h, err := build(cfg, settings{InventoryTable: "inventory", DataTable: "data", PresenceTable: "presence", LeasesTable: "leases",
		Regions: []string{"eu-west-1", "us-west-2"}, DevicePolicyName: "device-policy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := invoke(t, h, event(t, "GET", "/regions/us-west-2/drift?limit=5", "", false))
	if resp.StatusCode < 400 {
		t.Fatalf("drift against a refusing endpoint: %d %s", resp.StatusCode, resp.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) == 0 {
		t.Fatal("no call made")
	}
	if c := calls[0]; c.target != "DynamoDB_20120810.Scan" || c.table != "leases" || !strings.Contains(c.scope, "/us-west-2/dynamodb/") {
		t.Errorf("first call %+v, want a Scan of table leases signed for us-west-2", c)
	}
	for _, c := range calls {
		if op := strings.TrimPrefix(c.target, "DynamoDB_20120810."); op != "Scan" && op != "GetItem" && op != "Query" {
			t.Errorf("a dry run called %s", c.target)
		}
	}
	if resp := invoke(t, h, event(t, "GET", "/regions/ap-south-1/drift", "", false)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("drift of a region the API does not serve: %d %s", resp.StatusCode, resp.Body)
	}
}
