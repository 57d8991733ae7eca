package wiring

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/obs"
	"github.com/mriot/mriot/internal/obs/xraytrace"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadRegistrySettings(t *testing.T) {
	full := map[string]string{"INVENTORY_TABLE": "inv", "DEVICE_POLICY_NAME": "mriot-device", "AWS_REGION": "eu-west-1", "TRACING": "true"}
	tests := []struct {
		name    string
		drop    string
		set     map[string]string
		wantErr bool
	}{
		{name: "complete"},
		{name: "no table", drop: "INVENTORY_TABLE", wantErr: true},
		{name: "no policy", drop: "DEVICE_POLICY_NAME", wantErr: true},
		{name: "no region", drop: "AWS_REGION", wantErr: true},
		{name: "bad tracing", set: map[string]string{"TRACING": "maybe"}, wantErr: true},
		{name: "claims table", set: map[string]string{"CLAIMS_TABLE": "claims"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range full {
				if k != tt.drop {
					m[k] = v
				}
			}
			for k, v := range tt.set {
				m[k] = v
			}
			s, err := ReadRegistrySettings(envOf(m))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (s.InventoryTable != "inv" || s.DevicePolicyName != "mriot-device" || s.Region != "eu-west-1" || !s.Tracing) {
				t.Errorf("settings %+v", s)
			}
			if err == nil && s.ClaimsTable != tt.set["CLAIMS_TABLE"] {
				t.Errorf("ClaimsTable = %q, want %q", s.ClaimsTable, tt.set["CLAIMS_TABLE"])
			}
		})
	}
}

func TestNewRegistryDeps(t *testing.T) {
	d := NewRegistryDeps(aws.Config{}, RegistrySettings{InventoryTable: "inv", Region: "us-west-2", Tracing: true})
	if d.Registry == nil || d.Inventory == nil || d.Metrics == nil {
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
