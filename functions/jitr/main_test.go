package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/obs"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadSettings(t *testing.T) {
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
			s, err := readSettings(envOf(m))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (s.InventoryTable != "inv" || s.DevicePolicyName != "mriot-device" || s.Region != "eu-west-1" || !s.Tracing) {
				t.Errorf("settings %+v", s)
			}
		})
	}
}

// TestBuild wires the handler over SDK clients (no call is made) and checks
// that a malformed event is dropped without touching AWS.
func TestBuild(t *testing.T) {
	h, err := build(aws.Config{Region: "eu-west-1"}, settings{InventoryTable: "inv", DevicePolicyName: "mriot-device", Region: "eu-west-1"}, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(context.Background(), []byte("{")); err != nil {
		t.Fatalf("a malformed event was returned for retry: %v", err)
	}
	if _, err := build(aws.Config{}, settings{InventoryTable: "inv", DevicePolicyName: "bad name", Region: "eu-west-1"}, obs.Discard()); err == nil {
		t.Error("build accepted an invalid policy name")
	}
}
