package main

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/obs"
	"github.com/mriot/mriot/internal/wiring"
)

// TestBuild wires the handler over SDK clients (no call is made) and checks
// that a malformed event is dropped without touching AWS.
func TestBuild(t *testing.T) {
	s := wiring.RegistrySettings{InventoryTable: "inv", DevicePolicyName: "mriot-device", Region: "eu-west-1"}
	d := wiring.NewRegistryDeps(aws.Config{}, s)
	h, err := build(d, s, obs.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Invoke(context.Background(), []byte("{")); err != nil {
		t.Fatalf("a malformed event was returned for retry: %v", err)
	}
	if c := claims(d); c != nil {
		t.Errorf("claims %#v without CLAIMS_TABLE, want none", c)
	}
	s.ClaimsTable = "mriot-jitr-claims"
	if c := claims(wiring.NewRegistryDeps(aws.Config{}, s)); c == nil {
		t.Error("no claims with CLAIMS_TABLE")
	}
	s.DevicePolicyName = "bad name"
	if _, err := build(d, s, obs.Discard()); err == nil {
		t.Error("build accepted an invalid policy name")
	}
}
