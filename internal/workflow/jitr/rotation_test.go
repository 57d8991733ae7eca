package jitr

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// TestRotation: dev-1 is onboarded with fx.dev (certificate A); the device
// then presents another certificate B for the same thing. B is accepted as
// the current certificate when it was issued after A, refused and revoked
// otherwise (and when it was retired already); a retiring certificate in its
// grace is made usable here.
func TestRotation(t *testing.T) {
	fixtures(t)
	ctx := context.Background()
	nbA := fx.dev.Cert.NotBefore.UTC()
	const grace = time.Hour
	tests := []struct {
		name      string
		notBefore time.Time
		// retired: B is named in the item's Retiring, past its grace.
		retired bool
		// otherCA: B is signed by the other auto-registration CA.
		otherCA     bool
		wantStatus  fleet.CertStatus
		wantRefusal string
	}{
		{name: "newer is the new current certificate", notBefore: nbA.Add(time.Second), wantStatus: fleet.CertActive},
		{name: "newer from another auto-registration CA", notBefore: nbA.Add(30 * time.Second), otherCA: true, wantStatus: fleet.CertActive},
		{name: "same NotBefore is refused", notBefore: nbA, wantStatus: fleet.CertRevoked, wantRefusal: converge.RefusedOlder},
		{name: "older is refused", notBefore: nbA.Add(-time.Hour), wantStatus: fleet.CertRevoked, wantRefusal: converge.RefusedOlder},
		{name: "retired is refused", notBefore: nbA.Add(time.Second), retired: true, wantStatus: fleet.CertRevoked, wantRefusal: converge.RefusedRetired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := deviceWorld(t)
			w.h.engine = rotationEngine(t, w, grace)
			if err := w.deliver(ctx); err != nil {
				t.Fatal(err)
			}
			a := w.cert
			ca := fx.ca
			if tt.otherCA {
				ca = fx.otherCA
			}
			leaf, err := ca.Issue(pkiOptions{CommonName: "dev-1", NotBefore: tt.notBefore, Validity: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if tt.retired {
				item, _ := w.inv.Get(ctx, "dev-1")
				next := item
				next.Retiring = []fleet.RetiringCertificate{{CertificateID: fleet.CertificateID(leaf.Cert), CertificatePEM: leaf.CertPEM(),
					CACertificateID: a.CACertificateID, RetireAt: t0.Add(-time.Minute)}}
				next.Version++
				if err := w.inv.Update(ctx, next, item.Version); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := w.inv.Get(ctx, "dev-1")
			b, _, err := w.reg.AutoRegister(ctx, leaf.CertPEM())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.h.Invoke(ctx, registeredEvent(b.ID, b.CACertificateID)); err != nil {
				t.Fatalf("deliver B: %v", err)
			}
			got, _ := w.reg.DescribeCertificate(ctx, b.ID)
			if got.Status != tt.wantStatus {
				t.Errorf("B is %s, want %s", got.Status, tt.wantStatus)
			}
			if ca, _ := w.reg.DescribeCertificate(ctx, a.ID); ca.Status != fleet.CertActive {
				t.Errorf("A is %s, want ACTIVE (in its grace, or still current)", ca.Status)
			}
			item, err := w.inv.Get(ctx, "dev-1")
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantRefusal != "" {
				if item.Version != before.Version || item.CertificateID != a.ID {
					t.Errorf("item changed by a refusal: %+v", item)
				}
				if n := w.metrics.Get("RotationsRefused", obs.D("Function", Function), obs.D("Reason", tt.wantRefusal)); n != 1 {
					t.Errorf("RotationsRefused{%s} = %v; %v", tt.wantRefusal, n, w.metrics.Snapshot())
				}
				if n := w.metrics.Get("CertificateRevoked", obs.D("Function", Function), obs.D("Reason", tt.wantRefusal)); n != 1 {
					t.Errorf("CertificateRevoked{%s} = %v", tt.wantRefusal, n)
				}
				return
			}
			if item.CertificateID != b.ID || !item.NotBefore.Equal(tt.notBefore) || item.Version != before.Version+1 {
				t.Errorf("item: current %s NotBefore %v version %d; want B %v version %d", item.CertificateID[:8], item.NotBefore,
					item.Version, tt.notBefore, before.Version+1)
			}
			if item.CACertificateID != got.CACertificateID {
				t.Errorf("item CA %s, want B's %s", item.CACertificateID[:8], got.CACertificateID[:8])
			}
			want := []fleet.RetiringCertificate{{CertificateID: a.ID, CertificatePEM: a.PEM, CACertificateID: a.CACertificateID, RetireAt: t0.Add(grace)}}
			if !slices.EqualFunc(item.Retiring, want, func(x, y fleet.RetiringCertificate) bool {
				return x.CertificateID == y.CertificateID && x.CertificatePEM == y.CertificatePEM && x.RetireAt.Equal(y.RetireAt)
			}) {
				t.Errorf("retiring %+v, want A until %v", item.Retiring, t0.Add(grace))
			}
			prs, _ := w.reg.ListThingPrincipals(ctx, "dev-1")
			if !slices.Contains(prs, got.ARN) || !slices.Contains(prs, a.ARN) {
				t.Errorf("principals of dev-1 %v: want A and B", prs)
			}
			if n := w.metrics.Get("CertificatesRotated", obs.D("Function", Function)); n != 1 {
				t.Errorf("CertificatesRotated = %v", n)
			}
		})
	}
}

// TestRetiringCertificatePresented: the item names B current and A
// retiring in its grace; a region that does not know A yet sees the device
// present A (it connected there before the rotation reached it): A is made
// usable, not refused.
func TestRetiringCertificatePresented(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	w.h.engine = rotationEngine(t, w, time.Hour)
	a := w.cert
	leaf, err := fx.ca.Issue(pkiOptions{CommonName: "dev-1", NotBefore: fx.dev.Cert.NotBefore.Add(time.Second), Validity: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	x := leaf.Cert
	item := fleet.Device{ThingName: "dev-1", CertificateID: fleet.CertificateID(x), CertificatePEM: leaf.CertPEM(),
		CACertificateID: a.CACertificateID, NotAfter: x.NotAfter, NotBefore: x.NotBefore, Status: fleet.StatusActive,
		OriginRegion: other, Version: 2, UpdatedAt: t0,
		Retiring: []fleet.RetiringCertificate{{CertificateID: a.ID, CertificatePEM: a.PEM, CACertificateID: a.CACertificateID, RetireAt: t0.Add(time.Hour)}}}
	if err := w.inv.Create(ctx, item); err != nil {
		t.Fatal(err)
	}
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if c, _ := w.reg.DescribeCertificate(ctx, a.ID); c.Status != fleet.CertActive {
		t.Errorf("A is %s, want ACTIVE in its grace", c.Status)
	}
	if c, _ := w.reg.DescribeCertificate(ctx, item.CertificateID); c.Status != fleet.CertInactive && c.Status != fleet.CertActive {
		t.Errorf("B is %s, want registered here", c.Status)
	} else if c.Status != fleet.CertActive {
		t.Errorf("B is %s, want ACTIVE", c.Status)
	}
	if got, _ := w.inv.Get(ctx, "dev-1"); got.Version != 2 {
		t.Errorf("item rewritten: version %d", got.Version)
	}
}

func rotationEngine(t *testing.T, w *world, grace time.Duration) *converge.Engine {
	t.Helper()
	e, err := converge.New(converge.Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
		Now: func() time.Time { return t0 }, Metrics: w.metrics, RotationGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
