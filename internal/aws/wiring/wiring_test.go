package wiring

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/xraytrace"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadRegistrySettings(t *testing.T) {
	full := map[string]string{"INVENTORY_TABLE": "inv", "LEASES_TABLE": "leases", "DEVICE_POLICY_NAME": "mriot-device", "AWS_REGION": "eu-west-1", "TRACING": "true"}
	tests := []struct {
		name    string
		drop    string
		set     map[string]string
		wantErr string // the variable the error names
	}{
		{name: "complete"},
		{name: "no table", drop: "INVENTORY_TABLE", wantErr: "INVENTORY_TABLE"},
		{name: "no lease table", drop: "LEASES_TABLE", wantErr: "LEASES_TABLE"},
		{name: "empty lease table", set: map[string]string{"LEASES_TABLE": " "}, wantErr: "LEASES_TABLE"},
		{name: "no policy", drop: "DEVICE_POLICY_NAME", wantErr: "DEVICE_POLICY_NAME"},
		{name: "no region", drop: "AWS_REGION", wantErr: "AWS_REGION"},
		{name: "bad tracing", set: map[string]string{"TRACING": "maybe"}, wantErr: "TRACING"},
		{name: "claims table", set: map[string]string{"CLAIMS_TABLE": "claims"}},
		{name: "rotation grace", set: map[string]string{"ROTATION_GRACE": "90s"}},
		{name: "bad rotation grace", set: map[string]string{"ROTATION_GRACE": "7"}, wantErr: "ROTATION_GRACE"},
		{name: "zero rotation grace", set: map[string]string{"ROTATION_GRACE": "0s"}, wantErr: "ROTATION_GRACE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range full {
				if k != tt.drop {
					m[k] = v
				}
			}
			maps.Copy(m, tt.set)
			s, err := ReadRegistrySettings(envOf(m))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.InventoryTable != "inv" || s.LeasesTable != "leases" || s.DevicePolicyName != "mriot-device" || s.Region != "eu-west-1" || !s.Tracing {
				t.Errorf("settings %+v", s)
			}
			wantGrace := fleet.DefaultRotationGrace
			if v, ok := tt.set["ROTATION_GRACE"]; ok {
				wantGrace, _ = time.ParseDuration(v)
			}
			if s.RotationGrace != wantGrace {
				t.Errorf("RotationGrace = %v, want %v", s.RotationGrace, wantGrace)
			}
			if s.ClaimsTable != tt.set["CLAIMS_TABLE"] {
				t.Errorf("ClaimsTable = %q, want %q", s.ClaimsTable, tt.set["CLAIMS_TABLE"])
			}
		})
	}
}

func TestNewRegistryDeps(t *testing.T) {
	d := NewRegistryDeps(aws.Config{}, RegistrySettings{InventoryTable: "inv", LeasesTable: "leases", Region: "us-west-2", Tracing: true})
	if d.Registry == nil || d.Inventory == nil || d.Leases == nil || d.Metrics == nil {
		t.Fatalf("deps %+v", d)
	}
	if d.Claims != nil {
		t.Errorf("claims adapter %v without CLAIMS_TABLE", d.Claims)
	}
	if d := NewRegistryDeps(aws.Config{}, RegistrySettings{InventoryTable: "inv", ClaimsTable: "claims", Region: "us-west-2"}); d.Claims == nil {
		t.Error("no claims adapter with CLAIMS_TABLE")
	}
	if _, ok := d.Tracer.(xraytrace.Tracer); !ok {
		t.Errorf("tracing on gives tracer %T", d.Tracer)
	}
	if _, ok := Tracer(false).(obs.NopTracer); !ok {
		t.Errorf("tracing off gives tracer %T", Tracer(false))
	}
}

type echo struct{ err error }

func (e echo) Invoke(_ context.Context, p []byte) ([]byte, error) {
	Metrics().Count("Invoked", 1, obs.D("Function", "test"))
	return p, e.err
}

// TestFlushedWritesEachInvocation: the counts of an invocation are written
// when it ends, failed or not, and not again.
func TestFlushedWritesEachInvocation(t *testing.T) {
	var buf bytes.Buffer
	old := metrics
	metrics = obs.NewBatch(obs.NewEMF(&buf, obs.Namespace))
	defer func() { metrics = old }()
	for _, h := range []echo{{}, {err: errors.New("boom")}} {
		buf.Reset()
		out, err := Flushed(h).Invoke(context.Background(), []byte("x"))
		if string(out) != "x" || !errors.Is(err, h.err) {
			t.Fatalf("Invoke = %q, %v", out, err)
		}
		if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 1 || !bytes.Contains(buf.Bytes(), []byte(`"Invoked":1`)) {
			t.Fatalf("after the invocation: %d lines: %s", n, buf.String())
		}
	}
}
