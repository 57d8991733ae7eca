package main

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/testkit/wiringtest"
	"github.com/mriot/mriot/internal/workflow/jitr"
)

// TestSettings: the environment the deployment gives jitr (events/env.json,
// equal to template.yaml's) configures it; without one of its required
// variables the cold start fails with an error naming it.
func TestSettings(t *testing.T) {
	s, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "JitrFunction", "eu-west-1")))
	if err != nil {
		t.Fatal(err)
	}
	if s.InventoryTable != "mriot-device-inventory" || s.LeasesTable != "mriot-device-leases" || s.ClaimsTable != "mriot-jitr-claims" ||
		s.DevicePolicyName != "mriot-device" || s.Region != "eu-west-1" {
		t.Errorf("settings %+v", s)
	}
	for _, v := range []string{"LEASES_TABLE", "INVENTORY_TABLE", "DEVICE_POLICY_NAME", "AWS_REGION"} {
		_, err := readSettings(wiringtest.Env(wiringtest.DeployedEnv(t, "JitrFunction", "eu-west-1", v)))
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("without %s: err = %v, want one naming it", v, err)
		}
	}
}

// TestBuild wires the handler over SDK clients (no call is made) and checks
// that a malformed event is dropped without touching AWS.
func TestBuild(t *testing.T) {
	s := wiring.RegistrySettings{InventoryTable: "inv", LeasesTable: "leases", DevicePolicyName: "mriot-device", Region: "eu-west-1"}
	h, err := build(aws.Config{}, s, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(context.Background(), []byte("{")); err != nil {
		t.Fatalf("a malformed event was returned for retry: %v", err)
	}
	// Without CLAIMS_TABLE jitr's port gets no claims at all, not a typed
	// nil pointer that would look like one.
	var c jitr.Claims = wiring.NewRegistryDeps(aws.Config{}, s).Claims
	if c != nil {
		t.Errorf("claims %#v without CLAIMS_TABLE, want none", c)
	}
	s.ClaimsTable = "mriot-jitr-claims"
	if c = wiring.NewRegistryDeps(aws.Config{}, s).Claims; c == nil {
		t.Error("no claims with CLAIMS_TABLE")
	}
	s.DevicePolicyName = "bad name"
	if _, err := build(aws.Config{}, s, obs.Discard()); err == nil {
		t.Error("build accepted an invalid policy name")
	}
}
