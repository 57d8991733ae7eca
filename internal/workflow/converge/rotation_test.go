package converge

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/faultmatrix"
)

// rotated is the item of dev-1 rotated from fx.dev (A) to a newer
// certificate B, A retiring at retireAt; B's PEM is returned too.
func rotated(t *testing.T, retireAt time.Time) (fleet.Device, *pki.Leaf) {
	t.Helper()
	leaf, err := fx.ca.Issue(pki.Options{CommonName: thing, NotBefore: fx.dev.Cert.NotBefore.Add(time.Second), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a := item(fleet.StatusActive, origin, 1)
	b := fleet.Certificate{ID: fleet.CertificateID(leaf.Cert), PEM: leaf.CertPEM(), CACertificateID: a.CACertificateID}
	d, err := a.Rotated(b, retireAt, origin, t0)
	if err != nil {
		t.Fatal(err)
	}
	return d, leaf
}

// usable reports whether certificate id is ACTIVE here, attached to the
// thing, with the policy.
func (w *eworld) usable(t *testing.T, id string) bool {
	t.Helper()
	ctx := context.Background()
	c, err := w.reg.DescribeCertificate(ctx, id)
	if err != nil || c.Status != fleet.CertActive {
		return false
	}
	prs, _ := w.reg.ListThingPrincipals(ctx, thing)
	pols, _ := w.reg.ListAttachedPolicies(ctx, c.ARN)
	return slices.Contains(prs, c.ARN) && slices.Contains(pols, policy)
}

// TestRetiringCertificateLifecycle: a region converging a rotated item
// keeps the retiring certificate usable while in its grace (registering it
// from the item's PEM where unknown), removes it everywhere once its
// RetireAt has passed, and drops it from the item past RetireAt +
// RetireKeep once removed here.
func TestRetiringCertificateLifecycle(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	retireAt := t0.Add(time.Hour)
	d, _ := rotated(t, retireAt)
	a := fleet.CertificateID(fx.dev.Cert)
	if err := w.put(d); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		at          time.Time
		wantA       bool // A usable here
		wantAGone   bool
		wantRetires int // entries left in the item
	}{
		{name: "in grace: both usable", at: t0, wantA: true, wantRetires: 1},
		{name: "a second before RetireAt: still usable", at: retireAt.Add(-time.Second), wantA: true, wantRetires: 1},
		{name: "at RetireAt: removed, still named", at: retireAt, wantAGone: true, wantRetires: 1},
		{name: "past RetireAt + keep: dropped from the item", at: retireAt.Add(DefaultRetireKeep), wantAGone: true, wantRetires: 0},
	}
	for _, st := range steps {
		w.clock.now = st.at
		res, err := w.e.Converge(ctx, thing, Options{Function: "replicate"})
		if err != nil {
			t.Fatalf("%s: converge: %v", st.name, err)
		}
		if !w.usable(t, d.CertificateID) {
			t.Errorf("%s: B not usable", st.name)
		}
		if got := w.usable(t, a); got != st.wantA {
			t.Errorf("%s: A usable = %v, want %v", st.name, got, st.wantA)
		}
		if _, err := w.reg.DescribeCertificate(ctx, a); st.wantAGone && err == nil {
			t.Errorf("%s: A still registered here", st.name)
		}
		cur, _ := w.inv.Get(ctx, thing)
		if len(cur.Retiring) != st.wantRetires {
			t.Errorf("%s: item has %d retiring, want %d (%s)", st.name, len(cur.Retiring), st.wantRetires, res.Action)
		}
		kinds, err := w.e.Inspect(ctx, cur)
		if err != nil || len(kinds) != 0 {
			t.Errorf("%s: drift after converging: %v %v", st.name, kinds, err)
		}
	}
	if n := w.metrics.Get("CertificatesRetired", obs.D("Function", "replicate")); n != 1 {
		t.Errorf("CertificatesRetired = %v, want 1", n)
	}
	if l, _ := w.leases.Get(ctx, thing); slices.Contains(l.Ledger.Certificates, a) {
		t.Errorf("ledger still names A: %v", l.Ledger.Certificates)
	}
}

// TestInspectRetiring: the drift of retiring certificates is found.
func TestInspectRetiring(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	retireAt := t0.Add(time.Hour)
	d, _ := rotated(t, retireAt)
	if err := w.put(d); err != nil {
		t.Fatal(err)
	}
	if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		t.Fatal(err)
	}
	a := fleet.CertificateID(fx.dev.Cert)
	if err := w.reg.UpdateCertificate(ctx, a, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	if kinds, _ := w.e.Inspect(ctx, d); !slices.Equal(kinds, []string{DriftRetiringNotActive}) {
		t.Errorf("in grace, A inactive: %v", kinds)
	}
	w.clock.now = retireAt
	if kinds, _ := w.e.Inspect(ctx, d); !slices.Equal(kinds, []string{DriftRetiredNotRemoved}) {
		t.Errorf("past grace, A still there: %v", kinds)
	}
}

// TestRevocationTakesRetiringCertificates: a revoked device's retiring
// certificates are revoked with its current one; decommission too.
func TestRevocationTakesRetiringCertificates(t *testing.T) {
	for _, status := range []fleet.Status{fleet.StatusRevoked, fleet.StatusDecommissioned} {
		t.Run(string(status), func(t *testing.T) {
			w := newEWorld(t)
			ctx := context.Background()
			d, _ := rotated(t, t0.Add(time.Hour))
			if err := w.put(d); err != nil {
				t.Fatal(err)
			}
			if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
				t.Fatal(err)
			}
			r := d
			r.Status, r.Version = status, d.Version+1
			if err := w.put(r); err != nil {
				t.Fatal(err)
			}
			if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
				t.Fatal(err)
			}
			for _, id := range r.CertificateIDs() {
				if c, err := w.reg.DescribeCertificate(ctx, id); err != nil || c.Status != fleet.CertRevoked {
					t.Errorf("certificate %s: %s %v, want REVOKED", id[:8], c.Status, err)
				}
			}
		})
	}
}

// TestRotationRoundTrip: jitr's rotation through the engine: the newer
// presented certificate becomes current, the old one retires, both usable.
func TestRotationRoundTrip(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := w.put(item(fleet.StatusActive, origin, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		t.Fatal(err)
	}
	leaf, err := fx.ca.Issue(pki.Options{CommonName: thing, NotBefore: fx.dev.Cert.NotBefore.Add(time.Second), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := w.reg.AutoRegister(ctx, leaf.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.e.Converge(ctx, thing, Options{Function: "jitr", Presented: &c})
	if err != nil || res.Action != Rotated {
		t.Fatalf("converge: %s %v, want rotated", res.Action, err)
	}
	cur, _ := w.inv.Get(ctx, thing)
	if cur.CertificateID != c.ID || len(cur.Retiring) != 1 || !cur.Retiring[0].RetireAt.Equal(t0.Add(DefaultRotationGrace)) {
		t.Errorf("item %s retiring %+v", cur.CertificateID[:8], cur.Retiring)
	}
	if !w.usable(t, c.ID) || !w.usable(t, fleet.CertificateID(fx.dev.Cert)) {
		t.Error("both certificates must be usable during the grace")
	}
}

// TestConcurrentRotations: the device renewed twice (B, then C) and two
// regions each accepted one at the same moment; the global table's last
// writer wins. Whichever wins, the loser is not left ACTIVE here, and when
// the older one won, the device's next connection with the newer one
// rotates again: the newest certificate ends current, and the loser
// retires with A.
func TestConcurrentRotations(t *testing.T) {
	for _, olderWins := range []bool{false, true} {
		t.Run(map[bool]string{false: "newer wins", true: "older wins"}[olderWins], func(t *testing.T) {
			w := newEWorld(t)
			ctx := context.Background()
			nbA := fx.dev.Cert.NotBefore
			issue := func(d time.Duration) fleet.Certificate {
				leaf, err := fx.ca.Issue(pki.Options{CommonName: thing, NotBefore: nbA.Add(d), Validity: 24 * time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				return fleet.Certificate{ID: fleet.CertificateID(leaf.Cert), PEM: leaf.CertPEM(), CACertificateID: fleet.CertificateID(fx.ca.Cert)}
			}
			b, c := issue(time.Second), issue(2*time.Second)
			a := item(fleet.StatusActive, origin, 1)
			if err := w.put(a); err != nil {
				t.Fatal(err)
			}
			if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
				t.Fatal(err)
			}
			// This region accepts one; the other region's write of the
			// other wins.
			mine, theirs := c, b
			if !olderWins {
				mine, theirs = b, c
			}
			p, _, err := w.reg.AutoRegister(ctx, mine.PEM)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := w.e.Converge(ctx, thing, Options{Function: "jitr", Presented: &p}); err != nil || res.Action != Rotated {
				t.Fatalf("rotation here: %s %v", res.Action, err)
			}
			won, err := a.Rotated(theirs, t0.Add(time.Hour), origin, t0)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.put(won); err != nil {
				t.Fatal(err)
			}
			if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
				t.Fatal(err)
			}
			if got, _ := w.reg.DescribeCertificate(ctx, mine.ID); got.Status == fleet.CertActive {
				t.Errorf("the losing certificate %s is still ACTIVE here", mine.ID[:8])
			}
			if !w.usable(t, theirs.ID) || !w.usable(t, a.CertificateID) {
				t.Error("the winner and A (in its grace) must be usable")
			}
			if !olderWins {
				return
			}
			// The device keeps presenting C, the newest: it rotates again.
			p, _, err = w.reg.AutoRegister(ctx, c.PEM)
			if err != nil {
				t.Fatal(err)
			}
			if res, err := w.e.Converge(ctx, thing, Options{Function: "jitr", Presented: &p}); err != nil || res.Action != Rotated {
				t.Fatalf("rotation to the newest: %s %v", res.Action, err)
			}
			cur, _ := w.inv.Get(ctx, thing)
			if cur.CertificateID != c.ID || len(cur.Retiring) != 2 {
				t.Errorf("item %s retiring %+v, want C with A and B retiring", cur.CertificateID[:8], cur.Retiring)
			}
		})
	}
}

// TestSkipConvergedStillRetires: a duplicate stream record of a version
// this region converged to skips without the lease, except when a retiring
// certificate's grace has ended: then the convergence removes it.
func TestSkipConvergedStillRetires(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	retireAt := t0.Add(time.Hour)
	d, _ := rotated(t, retireAt)
	if err := w.put(d); err != nil {
		t.Fatal(err)
	}
	if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		t.Fatal(err)
	}
	a := fleet.CertificateID(fx.dev.Cert)
	if res, err := w.e.Converge(ctx, thing, Options{Function: "replicate", SkipConverged: true}); err != nil || res.Action != Unchanged || !w.usable(t, a) {
		t.Fatalf("in the grace: %s %v, A usable %v", res.Action, err, w.usable(t, a))
	}
	w.clock.now = retireAt
	if res, err := w.e.Converge(ctx, thing, Options{Function: "replicate", SkipConverged: true}); err != nil || res.Action != Converged {
		t.Fatalf("past the grace: %s %v, want converged", res.Action, err)
	}
	if _, err := w.reg.DescribeCertificate(ctx, a); err == nil {
		t.Error("A still registered past its grace")
	}
}

// renewed is dev-1's renewed certificate, the same in every world of a
// fault matrix.
var (
	renewedOnce sync.Once
	renewed     *pki.Leaf
	renewedErr  error
)

// rotationPresented: dev-1 is onboarded and converged here with A, and
// presents a renewed certificate B (auto-registered, PENDING_ACTIVATION).
func rotationPresented(w *eworld) error {
	ctx := context.Background()
	if err := w.put(item(fleet.StatusActive, origin, 1)); err != nil {
		return err
	}
	if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		return err
	}
	w.expireLeases()
	renewedOnce.Do(func() {
		renewed, renewedErr = fx.ca.Issue(pki.Options{CommonName: thing, NotBefore: fx.dev.Cert.NotBefore.Add(time.Second), Validity: 24 * time.Hour})
	})
	if renewedErr != nil {
		return renewedErr
	}
	c, _, err := w.reg.AutoRegister(ctx, renewed.CertPEM())
	if err != nil {
		return err
	}
	w.opts = Options{Function: "jitr", Presented: &c}
	return nil
}

// TestFaultMatrixOfTheRotation: every call of a clean rotation as a fault
// point: a terminal failure leaves the registry and the inventory as they
// were (the previous item put back), a retryable one and a crash roll
// forward on redelivery, a duplicate changes nothing.
func TestFaultMatrixOfTheRotation(t *testing.T) {
	fixtures(t)
	if _, err := faultmatrix.Run(matrixScenario("rotation", rotationPresented, nil)); err != nil {
		t.Fatal(err)
	}
}

// TestRetiringCertificateOfAnUnregisteredCA: a retiring certificate whose
// CA this region does not have cannot be registered here, and cannot be
// connected with here either: the convergence goes on without it and no
// drift is reported.
func TestRetiringCertificateOfAnUnregisteredCA(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	root, err := pki.NewRoot("elsewhere root", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := root.NewIntermediate("elsewhere devices", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := other.Issue(pki.Options{CommonName: thing, NotBefore: fx.dev.Cert.NotBefore.Add(-time.Hour), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d := item(fleet.StatusActive, origin, 2)
	d.Retiring = []fleet.RetiringCertificate{{CertificateID: fleet.CertificateID(leaf.Cert), CertificatePEM: leaf.CertPEM(),
		CACertificateID: fleet.CertificateID(other.Cert), RetireAt: t0.Add(time.Hour)}}
	if err := w.put(d); err != nil {
		t.Fatal(err)
	}
	if _, err := w.e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		t.Fatalf("converge: %v", err)
	}
	if !w.usable(t, d.CertificateID) {
		t.Error("the current certificate is not usable")
	}
	if kinds, err := w.e.Inspect(ctx, d); err != nil || len(kinds) != 0 {
		t.Errorf("drift %v %v", kinds, err)
	}
}
