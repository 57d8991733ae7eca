package reconcile_test

import (
	"context"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// TestRetirement: a device rotated from A to B. During the grace a pass
// finds no drift (A is the item's, not an orphan, though the certificate
// index names B only); once the grace ends the next invocation's
// retirement sweep removes A; a day later the sweep drops A from the item.
func TestRetirement(t *testing.T) {
	const grace = time.Hour
	w := newWorld(t, func(c *reconcile.Config) { c.Lease.RotationGrace = grace })
	ctx := context.Background()
	a := w.onboard("dev-r")
	xa, err := fleet.ParseCertificatePEM(a.PEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := fx.ca.Issue(pki.Options{CommonName: "dev-r", NotBefore: xa.NotBefore.Add(time.Second), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b := w.connect(leaf)
	// jitr with the reconciler's grace.
	e, err := converge.New(converge.Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
		Now: w.clock.Now, RotationGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.Converge(ctx, "dev-r", converge.Options{Function: "jitr", Presented: &b}); err != nil || res.Action != converge.Rotated {
		t.Fatalf("rotation: %s %v", res.Action, err)
	}
	b, _ = w.reg.CertificateByID(b.ID)
	rotated, _ := w.inv.Get(ctx, "dev-r")
	day := rotated.EarliestRetireAt().UTC().Format(time.DateOnly)
	if got, _ := w.inv.RetiringOn(ctx, day); len(got) != 1 {
		t.Fatalf("RetiringOn(%s) = %v, want dev-r", day, got)
	}
	if !w.live("dev-r", a) || !w.live("dev-r", b) {
		t.Fatal("A and B must both be live in the grace")
	}
	if rep := w.run(reconcile.Options{}); len(rep.Findings) != 0 {
		t.Errorf("in the grace: findings %+v", rep.Findings)
	}
	if !w.live("dev-r", a) {
		t.Error("A removed during its grace")
	}
	w.clock.Advance(grace)
	rep := w.run(reconcile.Options{})
	if rep.Swept == 0 {
		t.Errorf("the retirement sweep checked nothing: %+v", rep)
	}
	if k := kinds(rep); !k[converge.DriftRetiredNotRemoved+"/dev-r"] {
		t.Errorf("findings %v, want %s repaired", k, converge.DriftRetiredNotRemoved)
	}
	if _, ok := w.reg.CertificateByID(a.ID); ok {
		t.Error("A is still registered after its grace")
	}
	if !w.live("dev-r", b) {
		t.Error("B is not live")
	}
	if d, _ := w.inv.Get(ctx, "dev-r"); len(d.Retiring) != 1 {
		t.Errorf("A dropped from the item before the keep: %+v", d.Retiring)
	}
	w.clock.Advance(converge.DefaultRetireKeep)
	w.run(reconcile.Options{})
	if d, _ := w.inv.Get(ctx, "dev-r"); len(d.Retiring) != 0 || d.CertificateID != b.ID {
		t.Errorf("item after the keep: current %s, retiring %+v", d.CertificateID[:8], d.Retiring)
	}
	if got, _ := w.inv.RetiringOn(ctx, day); len(got) != 0 {
		t.Errorf("still in the retirement index: %v", got)
	}
}
