package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/testkit/wiringtest"
)

func envOf(m map[string]string) awsconf.Env {
	return awsconf.Env{Lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

func TestReadSettings(t *testing.T) {
	full := map[string]string{"COMMANDS_TABLE": "c", "PRESENCE_TABLE": "p", "INVENTORY_TABLE": "i",
		"IOT_DATA_ENDPOINT": "x-ats.iot.eu-west-1.amazonaws.com", "AWS_REGION": "eu-west-1"}
	without := func(k string) map[string]string {
		m := map[string]string{}
		for kk, v := range full {
			if kk != k {
				m[kk] = v
			}
		}
		return m
	}
	with := func(k, v string) map[string]string {
		m := without("")
		m[k] = v
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    settings
		wantErr bool
	}{
		{name: "all set", env: full, want: settings{CommandsTable: "c", PresenceTable: "p", InventoryTable: "i",
			DataEndpoint: "x-ats.iot.eu-west-1.amazonaws.com", Region: "eu-west-1"}},
		{name: "tracing", env: with("TRACING", "true"), want: settings{CommandsTable: "c", PresenceTable: "p", InventoryTable: "i",
			DataEndpoint: "x-ats.iot.eu-west-1.amazonaws.com", Region: "eu-west-1", Tracing: true}},
		{name: "no commands table", env: without("COMMANDS_TABLE"), wantErr: true},
		{name: "no presence table", env: without("PRESENCE_TABLE"), wantErr: true},
		{name: "no inventory", env: without("INVENTORY_TABLE"), wantErr: true},
		{name: "no endpoint", env: without("IOT_DATA_ENDPOINT"), wantErr: true},
		{name: "no region", env: without("AWS_REGION"), wantErr: true},
		{name: "bad tracing", env: with("TRACING", "maybe"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := readSettings(envOf(tt.env))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && s != tt.want {
				t.Errorf("settings %+v, want %+v", s, tt.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	h, err := build(aws.Config{Region: "eu-west-1"}, settings{CommandsTable: "c", PresenceTable: "p", InventoryTable: "i",
		DataEndpoint: "x-ats.iot.eu-west-1.amazonaws.com", Region: "eu-west-1"}, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	// A malformed ack is rejected before any AWS call.
	if _, err := h.Invoke(context.Background(), []byte(`{"thingName":"d","commandId":"a/b","ts":1}`)); err != nil {
		t.Fatalf("a rejected event was returned for retry: %v", err)
	}
	if _, err := build(aws.Config{Region: "eu-west-1"}, settings{Region: "eu-west-1"}, obs.Discard()); err == nil {
		t.Fatal("build without an endpoint succeeded")
	}
}

// TestDeployedSettings: the environment template.yaml gives the function
// (events/env.json) configures it, and each required variable is needed.
func TestDeployedSettings(t *testing.T) {
	s, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "CommandsFunction", "eu-west-1")))
	if err != nil {
		t.Fatal(err)
	}
	if s.CommandsTable != "mriot-commands" || s.PresenceTable != "mriot-presence" || s.InventoryTable != "mriot-device-inventory" || s.Region != "eu-west-1" {
		t.Fatalf("settings %+v", s)
	}
	for _, v := range []string{"COMMANDS_TABLE", "PRESENCE_TABLE", "INVENTORY_TABLE", "IOT_DATA_ENDPOINT", "AWS_REGION"} {
		if _, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "CommandsFunction", "eu-west-1", v))); err == nil {
			t.Errorf("without %s: no error", v)
		}
	}
}
