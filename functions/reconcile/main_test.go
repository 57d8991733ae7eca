package main

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/testkit/wiringtest"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// TestReadSettings: the environment the deployment gives the reconciler
// (events/env.json, equal to template.yaml's), the defaults, and every
// refused value, with an error naming its variable.
func TestReadSettings(t *testing.T) {
	env := func(set map[string]string, drop ...string) map[string]string {
		m := wiringtest.DeployedEnv(t, "ReconcileFunction", "eu-west-1", drop...)
		maps.Copy(m, set)
		return m
	}
	s, err := readSettings(wiringtest.Env(env(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s.InventoryTable != "mriot-device-inventory" || s.LeasesTable != "mriot-device-leases" || s.ClaimsTable != "mriot-jitr-claims" ||
		s.DevicePolicyName != "mriot-device" || s.Region != "eu-west-1" || s.QuotaShare != 0.2 || s.PendingThreshold != 10*time.Minute {
		t.Errorf("deployed settings %+v", s)
	}
	s, err = readSettings(wiringtest.Env(env(nil, "RECONCILE_QUOTA_SHARE", "RECONCILE_PENDING_THRESHOLD", "CLAIMS_TABLE")))
	if err != nil {
		t.Fatal(err)
	}
	if s.QuotaShare != reconcile.DefaultQuotaShare || s.PendingThreshold != reconcile.DefaultPendingThreshold || s.ClaimsTable != "" {
		t.Errorf("defaults: %+v", s)
	}
	s, err = readSettings(wiringtest.Env(env(map[string]string{"RECONCILE_QUOTA_SHARE": "1", "RECONCILE_PENDING_THRESHOLD": "30m"})))
	if err != nil || s.QuotaShare != 1 || s.PendingThreshold != 30*time.Minute {
		t.Errorf("share 1, threshold 30m: %+v, %v", s, err)
	}
	refused := []struct {
		name    string
		set     map[string]string
		drop    string
		wantVar string
	}{
		{name: "no lease table", drop: "LEASES_TABLE", wantVar: "LEASES_TABLE"},
		{name: "no inventory table", drop: "INVENTORY_TABLE", wantVar: "INVENTORY_TABLE"},
		{name: "no policy", drop: "DEVICE_POLICY_NAME", wantVar: "DEVICE_POLICY_NAME"},
		{name: "no region", drop: "AWS_REGION", wantVar: "AWS_REGION"},
		{name: "share not a number", set: map[string]string{"RECONCILE_QUOTA_SHARE": "a fifth"}, wantVar: "RECONCILE_QUOTA_SHARE"},
		{name: "share zero", set: map[string]string{"RECONCILE_QUOTA_SHARE": "0"}, wantVar: "RECONCILE_QUOTA_SHARE"},
		{name: "share negative", set: map[string]string{"RECONCILE_QUOTA_SHARE": "-0.1"}, wantVar: "RECONCILE_QUOTA_SHARE"},
		{name: "share above one", set: map[string]string{"RECONCILE_QUOTA_SHARE": "1.5"}, wantVar: "RECONCILE_QUOTA_SHARE"},
		{name: "share NaN", set: map[string]string{"RECONCILE_QUOTA_SHARE": "NaN"}, wantVar: "RECONCILE_QUOTA_SHARE"},
		{name: "threshold without unit", set: map[string]string{"RECONCILE_PENDING_THRESHOLD": "600"}, wantVar: "RECONCILE_PENDING_THRESHOLD"},
		{name: "threshold zero", set: map[string]string{"RECONCILE_PENDING_THRESHOLD": "0s"}, wantVar: "RECONCILE_PENDING_THRESHOLD"},
		{name: "threshold negative", set: map[string]string{"RECONCILE_PENDING_THRESHOLD": "-1m"}, wantVar: "RECONCILE_PENDING_THRESHOLD"},
		{name: "bad tracing", set: map[string]string{"TRACING": "sometimes"}, wantVar: "TRACING"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			var drop []string
			if tt.drop != "" {
				drop = append(drop, tt.drop)
			}
			_, err := readSettings(wiringtest.Env(env(tt.set, drop...)))
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Fatalf("err = %v, want one naming %s", err, tt.wantVar)
			}
		})
	}
}

// TestBuild wires the reconciler and its redriver over SDK clients, and
// invokes it once against an endpoint that refuses every call: its first
// call is the read of its saved position, a strongly consistent GetItem of
// the "#reconcile" item of LEASES_TABLE, and the refusal fails the
// invocation (the on-failure queue keeps it).
func TestBuild(t *testing.T) {
	var (
		mu    sync.Mutex
		calls []string
		first map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, r.Header.Get("X-Amz-Target"))
		if first == nil {
			_ = json.Unmarshal(body, &first)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}`)
	}))
	defer srv.Close()
	cfg := aws.Config{Region: "eu-west-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	s := settings{
		RegistrySettings: wiring.RegistrySettings{InventoryTable: "inv", LeasesTable: "leases", ClaimsTable: "claims",
			DevicePolicyName: "mriot-device", Region: "eu-west-1"},
		QuotaShare: 0.2, PendingThreshold: 10 * time.Minute,
	}
	d := wiring.NewRegistryDeps(cfg, s.RegistrySettings)
	r, rd, err := newReconciler(d, s, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if rd.jitr == nil {
		t.Fatal("the redriver is not bound to a jitr handler")
	}
	if r.Registry() == nil {
		t.Fatal("no registry")
	}
	h, err := build(cfg, s, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.Invoke(ctx, []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "position") {
		t.Fatalf("invoke against a refusing endpoint: %v, want the failure to load the position", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) == 0 || calls[0] != "DynamoDB_20120810.GetItem" {
		t.Fatalf("calls %v, want a GetItem first", calls)
	}
	key, _ := first["Key"].(map[string]any)
	thing, _ := key["ThingName"].(map[string]any)
	if first["TableName"] != "leases" || thing["S"] != "#reconcile" || first["ConsistentRead"] != true {
		t.Errorf("first call %v, want a consistent read of #reconcile in table leases", first)
	}

	s.DevicePolicyName = "bad name"
	if _, err := build(cfg, s, obs.Discard()); err == nil {
		t.Error("build accepted an invalid policy name")
	}
}
