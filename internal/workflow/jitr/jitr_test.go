package jitr

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/testkit/faultmatrix"
	"github.com/mriot/mriot/internal/workflow/converge"
)

func TestFaultMatrix(t *testing.T) {
	fixtures(t)
	tests := []struct {
		name    string
		prepare func(*world) error
		// wantMutations is how many mutating calls a clean run makes.
		wantMutations int
	}{
		{"fresh", nil, 5},                // CreateThing, AttachThingPrincipal, AttachPolicy, PutItem, UpdateCertificate
		{"thing-exists", thingExists, 4}, // the thing is not created again
		{"attached", attached, 2},        // a crashed earlier run: only inventory and activation left
		{"replicated", replicated, 4},    // inventory from another region: no inventory write
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, err := faultmatrix.Run(scenario(tt.name, tt.prepare))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, c := range calls {
				if c.Mutating {
					n++
				}
			}
			if n != tt.wantMutations {
				t.Errorf("clean run made %d mutating calls, want %d: %v", n, tt.wantMutations, calls)
			}
		})
	}
}

func TestOnboard(t *testing.T) {
	w := deviceWorld(t)
	ctx := context.Background()
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := w.reg.DescribeCertificate(ctx, w.cert.ID)
	if err != nil || c.Status != fleet.CertActive {
		t.Fatalf("certificate %v %v, want ACTIVE", c.Status, err)
	}
	if got := w.reg.ThingsForPrincipal(w.cert.ARN); len(got) != 1 || got[0] != "dev-1" {
		t.Errorf("things of the certificate: %v", got)
	}
	if got, _ := w.reg.ListAttachedPolicies(ctx, w.cert.ARN); len(got) != 1 || got[0] != policy {
		t.Errorf("policies of the certificate: %v", got)
	}
	d, err := w.inv.Get(ctx, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	want := fleet.Device{ThingName: "dev-1", CertificateID: w.cert.ID, CertificatePEM: w.cert.PEM,
		CACertificateID: w.cert.CACertificateID, NotAfter: fx.dev.Cert.NotAfter.UTC(), NotBefore: fx.dev.Cert.NotBefore.UTC(),
		Status: fleet.StatusActive, OriginRegion: region, Version: 1, UpdatedAt: t0}
	if !d.NotAfter.Equal(want.NotAfter) || !d.UpdatedAt.Equal(want.UpdatedAt) || !d.NotBefore.Equal(want.NotBefore) {
		t.Errorf("times: %v %v %v, want %v %v %v", d.NotAfter, d.UpdatedAt, d.NotBefore, want.NotAfter, want.UpdatedAt, want.NotBefore)
	}
	d.NotAfter, d.UpdatedAt, d.NotBefore = want.NotAfter, want.UpdatedAt, want.NotBefore
	if !reflect.DeepEqual(d, want) {
		t.Errorf("inventory item\n got %+v\nwant %+v", d, want)
	}
	if got := w.metrics.Get("DeviceOnboarded", obs.D("Function", Function)); got != 1 {
		t.Errorf("DeviceOnboarded = %v", got)
	}
}

// TestRefusals covers certificates that must never connect (revoked) and
// devices that must not be onboarded now (refused, certificate left as is).
func TestRefusals(t *testing.T) {
	fixtures(t)
	ctx := context.Background()
	issue := func(cn string, o func(*pkiOptions)) string {
		opts := pkiOptions{CommonName: cn}
		if o != nil {
			o(&opts)
		}
		leaf, err := fx.ca.Issue(opts)
		if err != nil {
			t.Fatal(err)
		}
		return leaf.CertPEM()
	}
	tests := []struct {
		name       string
		pem        string
		prepare    func(*world) error
		event      func(*world) []byte // nil: the certificate's event
		wantStatus fleet.CertStatus
		wantReason string
	}{
		{name: "thing name invalid", pem: issue("bad name!", nil), wantStatus: fleet.CertRevoked, wantReason: fleet.ReasonThingName},
		{name: "no client auth", pem: issue("dev-2", func(o *pkiOptions) { o.ExtKeyUsage = serverAuth }),
			wantStatus: fleet.CertRevoked, wantReason: fleet.ReasonUsage},
		{name: "no EKU extension is accepted", pem: issue("dev-3", func(o *pkiOptions) { o.NoExtKeyUsage = true }),
			wantStatus: fleet.CertActive},
		{name: "outside validity", pem: issue("dev-4", func(o *pkiOptions) { o.NotBefore = t0.Add(-minute); o.Validity = hour }),
			prepare:    func(w *world) error { w.h.now = func() time.Time { return t0.Add(2 * hour) }; return nil },
			wantStatus: fleet.CertRevoked, wantReason: fleet.ReasonValidity},
		{name: "event names another CA", pem: fx.dev.CertPEM(),
			event:      func(w *world) []byte { return registeredEvent(w.cert.ID, fleet.CertificateID(fx.otherCA.Cert)) },
			wantStatus: fleet.CertRevoked, wantReason: fleet.ReasonCAMismatch},
		{name: "device revoked", pem: fx.dev.CertPEM(), prepare: inventoryStatus(fleet.StatusRevoked, ""),
			wantStatus: fleet.CertRevoked, wantReason: ReasonRevoked},
		{name: "device decommissioned", pem: fx.dev.CertPEM(), prepare: inventoryStatus(fleet.StatusDecommissioned, ""),
			wantStatus: fleet.CertRevoked, wantReason: ReasonRevoked},
		{name: "newer certificate onboarded", pem: fx.dev.CertPEM(), prepare: newerOnboarded,
			wantStatus: fleet.CertRevoked, wantReason: converge.RefusedOlder},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld(tt.pem)
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			if tt.prepare != nil {
				if err := tt.prepare(w); err != nil {
					t.Fatal(err)
				}
			}
			if tt.event != nil {
				w.payload = tt.event(w)
			}
			invBefore := w.tbl.Snapshot()
			if err := w.deliver(ctx); err != nil {
				t.Fatalf("delivery: %v (a refusal is not retried)", err)
			}
			c, err := w.reg.DescribeCertificate(ctx, w.cert.ID)
			if err != nil {
				t.Fatal(err)
			}
			if c.Status != tt.wantStatus {
				t.Errorf("certificate is %s, want %s", c.Status, tt.wantStatus)
			}
			if tt.wantReason == "" {
				return
			}
			if got := w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", tt.wantReason)); got != 1 {
				t.Errorf("Rejected{%s} = %v, want 1; metrics %v", tt.wantReason, got, w.metrics.Snapshot())
			}
			if len(w.reg.ThingList()) != 0 {
				t.Errorf("things created: %v", w.reg.ThingList())
			}
			if !equalItems(invBefore, w.tbl.Snapshot()) {
				t.Error("the inventory changed")
			}
			// Redelivery of a refused event changes nothing more.
			snap := w.reg.Snapshot()
			if err := w.deliver(ctx); err != nil {
				t.Fatal(err)
			}
			if !snap.Equal(w.reg.Snapshot()) {
				t.Error("a redelivered refusal changed the registry")
			}
		})
	}
}

// newerOnboarded: the device is onboarded with a certificate issued after
// fx.dev, which is then refused (and revoked) as older.
func newerOnboarded(w *world) error {
	leaf, err := fx.ca.Issue(pkiOptions{CommonName: "dev-1", NotBefore: fx.dev.Cert.NotBefore.Add(time.Hour), Validity: 24 * time.Hour})
	if err != nil {
		return err
	}
	return w.inv.Create(context.Background(), fleet.Device{ThingName: "dev-1", CertificateID: fleet.CertificateID(leaf.Cert),
		CertificatePEM: leaf.CertPEM(), CACertificateID: w.cert.CACertificateID, NotBefore: leaf.Cert.NotBefore, Status: fleet.StatusActive,
		OriginRegion: other, Version: 2, UpdatedAt: t0})
}

func inventoryStatus(st fleet.Status, certID string) func(*world) error {
	return func(w *world) error {
		id := certID
		if id == "" {
			id = w.cert.ID
		}
		return w.inv.Create(context.Background(), fleet.Device{ThingName: "dev-1", CertificateID: id, Status: st,
			OriginRegion: other, Version: 2, UpdatedAt: t0})
	}
}

func TestBadEvents(t *testing.T) {
	fixtures(t)
	tests := []struct {
		name, payload, reason string
	}{
		{"not JSON", `{"certificateId":`, ReasonBadEvent},
		{"no certificate id", `{"caCertificateId":"` + strings.Repeat("b", 64) + `"}`, ReasonBadEvent},
		{"unknown certificate", string(registeredEvent(strings.Repeat("c", 64), strings.Repeat("d", 64))), ReasonCertGone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld("")
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			before := w.reg.Snapshot()
			if _, err := w.h.Invoke(context.Background(), []byte(tt.payload)); err != nil {
				t.Fatalf("Invoke: %v, want nil (not retried)", err)
			}
			if got := w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", tt.reason)); got != 1 {
				t.Errorf("Rejected{%s} = %v; metrics %v", tt.reason, got, w.metrics.Snapshot())
			}
			if !before.Equal(w.reg.Snapshot()) {
				t.Error("registry changed")
			}
		})
	}
}

// TestRetryableReadFailure: a throttled describe is returned for a retry.
func TestRetryableReadFailure(t *testing.T) {
	w := deviceWorld(t)
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op == "DescribeCACertificate" {
			return memiot.Throttled(op)
		}
		return nil
	})
	err := w.deliver(context.Background())
	if !saga.IsRetryable(err) || !errors.Is(err, fleet.ErrThrottled) {
		t.Fatalf("err = %v, want a retryable throttling error", err)
	}
	if c, _ := w.reg.DescribeCertificate(context.Background(), w.cert.ID); c.Status != fleet.CertPendingActivation {
		t.Errorf("certificate is %s, want PENDING_ACTIVATION", c.Status)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	fixtures(t)
	w, err := newWorld("")
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no registry", Config{Inventory: w.inv, Region: region, PolicyName: policy}},
		{"no inventory", Config{Registry: w.reg, Region: region, PolicyName: policy}},
		{"no region", Config{Registry: w.reg, Inventory: w.inv, PolicyName: policy}},
		{"bad policy", Config{Registry: w.reg, Inventory: w.inv, Region: region, PolicyName: "a b"}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
}

// TestEventFixtures decodes the deploy fixtures that belong to jitr, and the
// package's own testdata.
func TestEventFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.json")
	if f := "../../../events/jitr-registered.json"; fileExists(f) {
		files = append(files, f)
	} else {
		t.Log("no ../../../events/jitr-registered.json; checking testdata only")
	}
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := fleet.ParseCertificateRegisteredEvent(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if ev.CertificateStatus != fleet.CertPendingActivation {
			t.Errorf("%s: status %q", f, ev.CertificateStatus)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

type pkiOptions = pki.Options

var serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}

const (
	hour   = time.Hour
	minute = time.Minute
)

func equalItems(a, b []map[string]types.AttributeValue) bool { return reflect.DeepEqual(a, b) }

// TestRollbackKeepsAnInventoryItemRewrittenByAnotherRegion: this run wrote
// the item, another region onboarding the same device at the same moment
// rewrote it (global tables: last writer wins), then this run failed
// terminally. The rollback must not delete the other region's item.
func TestRollbackKeepsAnInventoryItemRewrittenByAnotherRegion(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	theirs := fleet.Device{ThingName: "dev-1", CertificateID: w.cert.ID, CertificatePEM: w.cert.PEM,
		CACertificateID: w.cert.CACertificateID, NotAfter: fx.dev.Cert.NotAfter.UTC(), Status: fleet.StatusActive,
		OriginRegion: other, Version: 1, UpdatedAt: t0}
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op != "UpdateCertificate" {
			return nil
		}
		if err := w.inv.Create(ctx, theirs); err != nil {
			t.Errorf("the other region's write: %v", err)
		}
		return memiot.Invalid(op)
	})
	if err := w.deliver(ctx); err == nil || saga.IsRetryable(err) {
		t.Fatalf("deliver: %v, want a terminal error", err)
	}
	got, err := w.inv.Get(ctx, "dev-1")
	if err != nil {
		t.Fatalf("the other region's item was deleted by the rollback: %v", err)
	}
	if got.OriginRegion != other {
		t.Errorf("item origin %s, want %s", got.OriginRegion, other)
	}
}

// TestRollbackKeepsAnInventoryItemRevokedDuringTheUndo: this run wrote the
// item and then failed terminally; between the undo's read of the item (still
// this run's) and its delete, an operator revoked the device (a conditional
// put with Version 2). The undo's delete is conditional on the version it
// read, so the revoke survives.
func TestRollbackKeepsAnInventoryItemRevokedDuringTheUndo(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	var activated, revoked atomic.Bool
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op != "UpdateCertificate" {
			return nil
		}
		activated.Store(true)
		return memiot.Invalid(op)
	})
	// The first read after the failed activation is the undo's.
	w.tbl.SetAfter(func(ctx context.Context, op string) {
		if op != "GetItem" || !activated.Load() || revoked.Swap(true) {
			return
		}
		cur, err := w.inv.Get(ctx, "dev-1")
		if err != nil {
			t.Errorf("the operator's read: %v", err)
			return
		}
		next := cur
		next.Status, next.Version, next.UpdatedAt = fleet.StatusRevoked, cur.Version+1, t0.Add(time.Second)
		if err := w.inv.Update(ctx, next, cur.Version); err != nil {
			t.Errorf("the operator's revoke: %v", err)
		}
	})
	if err := w.deliver(ctx); err == nil || saga.IsRetryable(err) {
		t.Fatalf("deliver: %v, want a terminal error", err)
	}
	if !revoked.Load() {
		t.Fatal("the undo never read the item: the race was not staged")
	}
	got, err := w.inv.Get(ctx, "dev-1")
	if err != nil {
		t.Fatalf("the operator's revoke was deleted by the rollback: %v", err)
	}
	if got.Status != fleet.StatusRevoked || got.Version != 2 {
		t.Errorf("item %s version %d, want REVOKED version 2", got.Status, got.Version)
	}
}

// TestPolicyNameWithADot: AWS allows [\w+=,.@-] in policy names; a name such
// as mriot.device is not a thing name but must not fail jitr at cold start.
func TestPolicyNameWithADot(t *testing.T) {
	w := deviceWorld(t)
	if _, err := New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: "mriot.device"}); err != nil {
		t.Fatalf("New with policy mriot.device: %v", err)
	}
	if _, err := New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: "mriot device"}); err == nil {
		t.Fatal("New accepted the policy name \"mriot device\"")
	}
}
