// Package apitest builds an in-memory fleet for tests of the API: one
// memiot registry per region with the device policy and a registered CA, a
// memddb inventory and data table, and helpers that onboard devices into
// chosen regions and store telemetry.
package apitest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/api"
)

// Account is the account id of the registries.
const Account = "123456789012"

// Policy is the device policy name.
const Policy = "mriot-device"

// HomeRegion is the region of the inventory and data table replicas the API reads.
func (f *Fleet) HomeRegion() string { return f.Regions[0] }

// Fleet is an in-memory fleet.
type Fleet struct {
	Regions    []string
	Registries map[string]*memiot.Registry
	Inventory  *memddb.Inventory
	Telemetry  *memddb.Telemetry
	CA         *pki.Authority
	// Now is the fixed clock of the API built by Config.
	Now time.Time
}

// New builds a fleet over regions (the first one is home). Inject registry
// faults with f.Registries[region].SetHook. The tables close when the test
// ends.
func New(t testing.TB, regions []string) *Fleet {
	t.Helper()
	ctx := context.Background()
	root, err := pki.NewRoot("apitest root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewIntermediate("apitest intermediate", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &Fleet{Regions: regions, Registries: map[string]*memiot.Registry{}, CA: ca,
		Now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	for _, r := range regions {
		reg := memiot.New(r, Account)
		if err := reg.CreatePolicy(ctx, Policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.RegisterCACertificate(ctx, ca.CertPEM(), true); err != nil {
			t.Fatal(err)
		}
		f.Registries[r] = reg
	}
	inv := memddb.NewGlobalTable("inventory", memddb.InventoryKey, regions[:1])
	data := memddb.NewGlobalTable("data", memddb.DataKey, regions[:1])
	t.Cleanup(inv.Close)
	t.Cleanup(data.Close)
	f.Inventory = memddb.NewInventory(inv.Replica(regions[0]))
	f.Telemetry = memddb.NewTelemetry(data.Replica(regions[0]))
	return f
}

// Config is an API configuration over the fleet: every region's registry,
// the home replicas, the device policy and a fixed clock.
func (f *Fleet) Config() api.Config {
	regs := map[string]api.RegionRegistry{}
	for r, reg := range f.Registries {
		regs[r] = reg
	}
	return api.Config{
		Inventory: f.Inventory, Telemetry: f.Telemetry, Registries: regs, Regions: f.Regions,
		DevicePolicyName: Policy, Now: func() time.Time { return f.Now },
	}
}

// Step is a part of a device's onboarding in one region.
type Step int

// Onboarding steps, in order: a device that has gone through Attached in a
// region is live there.
const (
	Registered        Step = iota + 1 // certificate registered PENDING_ACTIVATION
	Activated                         // certificate ACTIVE
	ThingMade                         // thing created
	PrincipalAttached                 // certificate attached to the thing
	Attached                          // policy attached to the certificate: live
)

// Onboard issues a certificate for name, writes the device ACTIVE at version
// 1 into the inventory, and takes it up to the given step in each region
// (regions absent from upTo are left untouched).
func (f *Fleet) Onboard(t testing.TB, name string, upTo map[string]Step) fleet.Device {
	t.Helper()
	ctx := context.Background()
	leaf, err := f.CA.IssueDevice(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pemText := leaf.CertPEM()
	d := fleet.Device{
		ThingName: name, CertificateID: fleet.CertificateID(leaf.Cert), CertificatePEM: pemText,
		CACertificateID: fleet.CertificateID(f.CA.Cert), NotAfter: leaf.Cert.NotAfter.UTC().Truncate(time.Second),
		Status: fleet.StatusActive, OriginRegion: f.Regions[0], Version: 1, UpdatedAt: f.Now,
	}
	if err := f.Inventory.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	for region, step := range upTo {
		reg := f.Registries[region]
		if reg == nil {
			t.Fatalf("unknown region %s", region)
		}
		if err := onboardIn(ctx, reg, d, pemText, step); err != nil {
			t.Fatalf("onboard %s in %s: %v", name, region, err)
		}
	}
	return d
}

func onboardIn(ctx context.Context, reg *memiot.Registry, d fleet.Device, pemText string, step Step) error {
	if step < Registered {
		return nil
	}
	cert, err := reg.RegisterCertificate(ctx, pemText, fleet.CertPendingActivation)
	if err != nil {
		return fmt.Errorf("register certificate: %w", err)
	}
	if step < Activated {
		return nil
	}
	if err := reg.UpdateCertificate(ctx, cert.ID, fleet.CertActive); err != nil {
		return fmt.Errorf("activate certificate: %w", err)
	}
	if step < ThingMade {
		return nil
	}
	if _, err := reg.CreateThing(ctx, d.ThingName, nil); err != nil {
		return fmt.Errorf("create thing: %w", err)
	}
	if step < PrincipalAttached {
		return nil
	}
	if err := reg.AttachThingPrincipal(ctx, d.ThingName, cert.ARN); err != nil {
		return fmt.Errorf("attach principal: %w", err)
	}
	if step < Attached {
		return nil
	}
	if err := reg.AttachPolicy(ctx, Policy, cert.ARN); err != nil {
		return fmt.Errorf("attach policy: %w", err)
	}
	return nil
}

// Publish stores a telemetry message as the ingest function would.
func (f *Fleet) Publish(t testing.TB, device string, ts int64, region, id, payload string) {
	t.Helper()
	m := fleet.Message{Device: device, Timestamp: ts, ID: id, Region: region, Payload: []byte(payload),
		SortKey: fleet.SortKey(ts, id), ExpiresAt: f.Now.Add(24 * time.Hour)}
	if err := f.Telemetry.Put(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}
