package main

import (
	"context"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/obs"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadSettings(t *testing.T) {
	full := map[string]string{"PRESENCE_TABLE": "p", "INVENTORY_TABLE": "i", "REGIONS": "eu-west-1,us-west-2", "AWS_REGION": "us-west-2"}
	without := func(k string) map[string]string {
		m := map[string]string{}
		for kk, v := range full {
			if kk != k {
				m[kk] = v
			}
		}
		return m
	}
	with := func(k, v string) map[string]string { m := without(k); m[k] = v; return m }
	tests := []struct {
		name    string
		env     map[string]string
		want    settings
		wantErr bool
	}{
		{name: "all", env: full, want: settings{PresenceTable: "p", InventoryTable: "i", Regions: []string{"eu-west-1", "us-west-2"}, Region: "us-west-2"}},
		{name: "tracing", env: with("TRACING", "true"), want: settings{PresenceTable: "p", InventoryTable: "i", Regions: []string{"eu-west-1", "us-west-2"}, Region: "us-west-2", Tracing: true}},
		{name: "no presence table", env: without("PRESENCE_TABLE"), wantErr: true},
		{name: "no inventory table", env: without("INVENTORY_TABLE"), wantErr: true},
		{name: "no regions", env: without("REGIONS"), wantErr: true},
		{name: "no region", env: without("AWS_REGION"), wantErr: true},
		{name: "region not in regions", env: with("AWS_REGION", "ap-south-1"), wantErr: true},
		{name: "bad tracing", env: with("TRACING", "maybe"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := readSettings(envOf(tt.env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (s.PresenceTable != tt.want.PresenceTable || s.InventoryTable != tt.want.InventoryTable ||
				!slices.Equal(s.Regions, tt.want.Regions) || s.Region != tt.want.Region || s.Tracing != tt.want.Tracing) {
				t.Errorf("settings %+v, want %+v", s, tt.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	h, err := build(aws.Config{Region: "eu-west-1"}, settings{PresenceTable: "p", InventoryTable: "i",
		Regions: []string{"eu-west-1"}, Region: "eu-west-1"}, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	// Not a lifecycle event: rejected before any AWS call.
	if _, err := h.Invoke(context.Background(), []byte(`{"clientId":"d","eventType":"subscribed"}`)); err != nil {
		t.Fatalf("a rejected event was returned for retry: %v", err)
	}
}
