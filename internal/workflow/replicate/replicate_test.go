package replicate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/testkit/faultmatrix"
)

func TestFaultMatrix(t *testing.T) {
	fixtures(t)
	tests := []struct {
		name        string
		prepare     func(*world) error
		rollForward bool
		mutations   []string // the mutating calls of a clean run
	}{
		{"insert", inserted, false, []string{"RegisterCertificate", "CreateThing", "AttachThingPrincipal", "AttachPolicy", "UpdateCertificate"}},
		{"auto-registered-here", autoRegisteredHere, false, []string{"CreateThing", "AttachThingPrincipal", "AttachPolicy", "UpdateCertificate"}},
		{"thing-here", thingHere, false, []string{"RegisterCertificate", "AttachThingPrincipal", "AttachPolicy", "UpdateCertificate"}},
		{"newer-version", newerVersion, false, nil},
		{"revoked", changedTo(fleet.StatusRevoked, origin), true, []string{"UpdateCertificate"}},
		{"revoked-by-this-region", changedTo(fleet.StatusRevoked, here), true, []string{"UpdateCertificate"}},
		{"revoked-unknown-here", revokedUnknownHere, true, []string{"RegisterCertificate"}},
		{"decommissioned", changedTo(fleet.StatusDecommissioned, origin), true,
			[]string{"UpdateCertificate", "DetachPolicy", "DetachThingPrincipal", "DeleteThing"}},
		{"decommissioned-unknown-here", decommissionedUnknownHere, true, []string{"RegisterCertificate"}},
		{"removed", removed, true, []string{"DetachPolicy", "DetachThingPrincipal", "UpdateCertificate", "DeleteCertificate", "DeleteThing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, err := faultmatrix.Run(scenario(tt.name, tt.prepare, tt.rollForward))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range calls {
				if c.Mutating && c.Service == "iot" {
					got = append(got, c.Op)
				}
			}
			if !reflect.DeepEqual(got, tt.mutations) {
				t.Errorf("clean run mutations %v, want %v", got, tt.mutations)
			}
		})
	}
}

// TestNoChangeCostsOnlyTheReads: a record of a version this region was
// converged to already (a duplicate, a stale record) makes no registry call
// and no write: the lease item's ledger, the inventory item and the
// device's revocation record are read.
func TestNoChangeCostsOnlyTheReads(t *testing.T) {
	fixtures(t)
	tests := []struct {
		name    string
		prepare func(*world) error
	}{
		{"converged version", func(w *world) error {
			d := device(fleet.StatusActive, origin, 1)
			if err := w.converge(d); err != nil {
				return err
			}
			w.payload = envelope("INSERT", &d, thing)
			return nil
		}},
		{"revoked already", func(w *world) error {
			if err := changedTo(fleet.StatusRevoked, origin)(w); err != nil {
				return err
			}
			return w.deliver(context.Background())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld()
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			if err := tt.prepare(w); err != nil {
				t.Fatal(err)
			}
			in := faultmatrix.NewInjector()
			w.reg.SetHook(in.Before("iot"))
			w.tbl.SetHook(in.Before("ddb"))
			w.lt.Replica(here).SetHook(in.Before("leases"))
			if err := w.deliver(context.Background()); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range in.Calls() {
				got = append(got, c.String())
			}
			if want := []string{"leases:GetItem", "ddb:GetItem", "ddb:GetItem"}; !reflect.DeepEqual(got, want) {
				t.Errorf("calls %v, want %v", got, want)
			}
		})
	}
}

func TestOutOfOrderAndStaleRecords(t *testing.T) {
	fixtures(t)
	w, err := newWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	ctx := context.Background()
	if err := changedTo(fleet.StatusRevoked, origin)(w); err != nil {
		t.Fatal(err)
	}
	// The stale INSERT of version 1 arrives after the revocation: the
	// handler reads the current item and revokes.
	stale := device(fleet.StatusActive, origin, 1)
	if _, err := w.h.Invoke(ctx, envelope("INSERT", &stale, thing)); err != nil {
		t.Fatal(err)
	}
	c, err := w.reg.DescribeCertificate(ctx, stale.CertificateID)
	if err != nil || c.Status != fleet.CertRevoked {
		t.Fatalf("certificate %s %v, want REVOKED", c.Status, err)
	}
}

// TestRevocationRecordTriggersItsDevice: a revocation record's stream
// record (key <thing>#revocation) converges the device, which the record
// restricts whatever its item says: here the item still says ACTIVE, as
// when a concurrent write elsewhere won over the REVOKED item.
func TestRevocationRecordTriggersItsDevice(t *testing.T) {
	fixtures(t)
	w, err := newWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	ctx := context.Background()
	d := device(fleet.StatusActive, origin, 1)
	if err := w.converge(d); err != nil {
		t.Fatal(err)
	}
	if err := w.inv.Revoke(ctx, fleet.Revocation{ThingName: thing, Status: fleet.StatusRevoked, CertificateID: d.CertificateID,
		CertificatePEM: d.CertificatePEM, CACertificateID: d.CACertificateID, UpdatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	tr, err := ParseEvent(envelope("INSERT", nil, thing+fleet.RevocationSuffix))
	if err != nil || tr.ThingName != thing {
		t.Fatalf("ParseEvent: %+v %v, want the trigger of %s", tr, err, thing)
	}
	if _, err := w.h.Invoke(ctx, envelope("INSERT", nil, thing+fleet.RevocationSuffix)); err != nil {
		t.Fatal(err)
	}
	if c, _ := w.reg.CertificateByID(d.CertificateID); c.Status != fleet.CertRevoked {
		t.Errorf("certificate %s, want REVOKED: the record restricts the device", c.Status)
	}
}

func TestBadEvents(t *testing.T) {
	fixtures(t)
	tests := []struct{ name, payload string }{
		{"not JSON", `{`},
		{"no detail", `{"id":"x","detail-type":"DeviceInventoryChange"}`},
		{"detail not a record", `{"detail":"text"}`},
		{"no key", `{"detail":{"eventName":"INSERT","dynamodb":{"Keys":{}}}}`},
		{"numeric key", `{"detail":{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"N":"1"}}}}}`},
		{"bad thing name", `{"detail":{"eventName":"INSERT","dynamodb":{"Keys":{"ThingName":{"S":"a b"}}}}}`},
		{"unknown event name", `{"detail":{"eventName":"TRUNCATE","dynamodb":{"Keys":{"ThingName":{"S":"a"}}}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEvent([]byte(tt.payload)); !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("ParseEvent: %v, want ErrInvalid", err)
			}
			w, err := newWorld()
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			if _, err := w.h.Invoke(context.Background(), []byte(tt.payload)); err != nil {
				t.Fatalf("Invoke: %v, want nil (not retried)", err)
			}
			if got := w.metrics.Get("Rejected", obs.D("Function", Function), obs.D("Reason", ReasonBadEvent)); got != 1 {
				t.Errorf("Rejected = %v", got)
			}
		})
	}
}

// TestEventFixtures decodes the deploy fixtures and the package's testdata.
func TestEventFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/replicate-*.json")
	more, _ := filepath.Glob("../../../events/replicate-*.json")
	if len(more) == 0 {
		t.Log("no ../../../events/replicate-*.json")
	}
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := ParseEvent(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		want := strings.ToUpper(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "replicate-"), ".json"))
		if tr.EventName != want || tr.ThingName == "" {
			t.Errorf("%s: %+v, want event %s", f, tr, want)
		}
	}
}

// TestItemWhosePEMIsAnotherCertificate: an inventory item whose PEM does not
// hash to its certificate id is refused before anything is registered: no
// certificate, least of all an ACTIVE one, is left behind in this region.
func TestItemWhosePEMIsAnotherCertificate(t *testing.T) {
	fixtures(t)
	w, err := newWorld()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	stranger, err := fx.ca.IssueDevice("stranger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d := device(fleet.StatusActive, origin, 1)
	d.CertificatePEM = stranger.CertPEM()
	w.payload = envelope("INSERT", &d, thing)
	if err := w.put(d); err != nil {
		t.Fatal(err)
	}
	before := w.state()
	err = w.deliver(context.Background())
	if err == nil || saga.IsRetryable(err) {
		t.Errorf("deliver: %v, want a terminal error", err)
	}
	if after := w.state(); !reflect.DeepEqual(after, before) {
		t.Errorf("registry changed:%s", before.(state).Diff(after))
	}
}
