package jitr

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/testkit/faultmatrix"
)

const (
	region  = "eu-west-1"
	other   = "us-east-1"
	account = "123456789012"
	policy  = "mriot-device"
)

// t0 is the handlers' clock: fixed, so that states of separate worlds compare.
var t0 = time.Now().UTC().Truncate(time.Second)

// fixtures: one CA hierarchy and a few device certificates for the package.
var fx struct {
	once     sync.Once
	err      error
	root, ca *pki.Authority
	otherCA  *pki.Authority
	dev      *pki.Leaf // "dev-1", valid
}

func fixtures(tb testing.TB) {
	tb.Helper()
	fx.once.Do(func() {
		fx.root, fx.err = pki.NewRoot("mriot test root", 48*time.Hour)
		if fx.err != nil {
			return
		}
		fx.ca, fx.err = fx.root.NewIntermediate("mriot test devices", 48*time.Hour)
		if fx.err != nil {
			return
		}
		fx.otherCA, fx.err = fx.root.NewIntermediate("mriot other devices", 48*time.Hour)
		if fx.err != nil {
			return
		}
		fx.dev, fx.err = fx.ca.IssueDevice("dev-1", 24*time.Hour)
	})
	if fx.err != nil {
		tb.Fatalf("fixtures: %v", fx.err)
	}
}

// world is one region: registry, inventory and a jitr handler.
type world struct {
	reg     *memiot.Registry
	g       *memddb.GlobalTable
	tbl     *memddb.Table
	inv     *memddb.Inventory
	lt      *memddb.GlobalTable
	leases  *memddb.Leases
	h       *Handler
	metrics *obs.Recorder
	cert    fleet.Certificate // the device certificate, auto-registered
	payload []byte            // its registered event
}

// newWorld registers the CAs and the policy and auto-registers pemText as
// IoT Core does when the device first connects.
func newWorld(pemText string) (*world, error) {
	ctx := context.Background()
	w := &world{reg: memiot.New(region, account), metrics: obs.NewRecorder()}
	for _, ca := range []*pki.Authority{fx.ca, fx.otherCA} {
		if _, err := w.reg.RegisterCACertificate(ctx, ca.CertPEM(), true); err != nil {
			return nil, err
		}
	}
	if err := w.reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		return nil, err
	}
	w.g = memddb.NewGlobalTable("inventory", memddb.InventoryKey, []string{region})
	w.tbl = w.g.Replica(region)
	w.inv = memddb.NewInventory(w.tbl)
	w.lt = memddb.NewGlobalTable("leases", memddb.LeasesKey, []string{region})
	w.leases = memddb.NewLeases(w.lt.Replica(region))
	var err error
	w.h, err = New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
		Now: func() time.Time { return t0 }, Metrics: w.metrics})
	if err != nil {
		return nil, err
	}
	if pemText != "" {
		w.cert, _, err = w.reg.AutoRegister(ctx, pemText)
		if err != nil {
			return nil, err
		}
		w.payload = registeredEvent(w.cert.ID, w.cert.CACertificateID)
	}
	return w, nil
}

// deviceWorld is a region in which the device "dev-1" has just connected for
// the first time (its certificate auto-registered), closed with the test.
func deviceWorld(t *testing.T) *world {
	t.Helper()
	fixtures(t)
	w, err := newWorld(fx.dev.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w
}

func registeredEvent(certID, caID string) []byte {
	b, _ := json.Marshal(map[string]any{
		"certificateId": certID, "caCertificateId": caID, "timestamp": t0.UnixMilli(),
		"certificateStatus": "PENDING_ACTIVATION", "awsAccountId": account,
		"certificateRegistrationTimestamp": nil,
	})
	return b
}

func (w *world) close() { w.g.Close(); w.lt.Close() }

// expireLeases ends every lease of the world's lease table, as the passing
// of a crashed run's deadline does before Lambda delivers its event again.
func (w *world) expireLeases() {
	for _, item := range w.lt.Replica(region).Snapshot() {
		l, err := ddbitem.UnmarshalLease(item)
		if err != nil || l.Owner == "" {
			continue
		}
		_ = w.leases.Release(context.Background(), l, l.Ledger)
	}
}

// forget drops the handler's in-process memory (claims, recent onboardings,
// CA cache), as a fresh Lambda instance has none.
func (w *world) forget() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	clear(w.h.inFlight)
	clear(w.h.done)
	clear(w.h.caPEM)
}

func (w *world) deliver(ctx context.Context) error {
	_, err := w.h.Invoke(ctx, w.payload)
	return err
}

// state is everything jitr may change in a region.
type state struct {
	Registry  memiot.State
	Inventory []map[string]types.AttributeValue
}

func (w *world) state() any { return state{Registry: w.reg.Snapshot(), Inventory: w.tbl.Snapshot()} }

// Diff names what differs between two states.
func (s state) Diff(other any) string {
	o, ok := other.(state)
	if !ok {
		return fmt.Sprintf("state of type %T", other)
	}
	var parts []string
	for id, c := range s.Registry.Certificates {
		if oc, ok := o.Registry.Certificates[id]; !ok {
			parts = append(parts, "certificate "+id[:8]+" gone")
		} else if oc != c {
			parts = append(parts, fmt.Sprintf("certificate %s %s -> %s", id[:8], c.Status, oc.Status))
		}
	}
	for id := range o.Registry.Certificates {
		if _, ok := s.Registry.Certificates[id]; !ok {
			parts = append(parts, "certificate "+id[:8]+" appeared")
		}
	}
	if fmt.Sprint(s.Registry.Things) != fmt.Sprint(o.Registry.Things) {
		parts = append(parts, fmt.Sprintf("things %v -> %v", names(s.Registry.Things), names(o.Registry.Things)))
	}
	if fmt.Sprint(s.Registry.ThingPrincipals) != fmt.Sprint(o.Registry.ThingPrincipals) {
		parts = append(parts, fmt.Sprintf("thing principals %d -> %d", len(s.Registry.ThingPrincipals), len(o.Registry.ThingPrincipals)))
	}
	if fmt.Sprint(s.Registry.PrincipalPolicies) != fmt.Sprint(o.Registry.PrincipalPolicies) {
		parts = append(parts, fmt.Sprintf("principal policies %v -> %v", s.Registry.PrincipalPolicies, o.Registry.PrincipalPolicies))
	}
	if len(s.Inventory) != len(o.Inventory) {
		parts = append(parts, fmt.Sprintf("inventory items %d -> %d", len(s.Inventory), len(o.Inventory)))
	} else if !reflect.DeepEqual(s.Inventory, o.Inventory) {
		parts = append(parts, "inventory item changed")
	}
	if len(parts) == 0 {
		parts = append(parts, "deep difference")
	}
	return strings.Join(parts, "; ")
}

func names(m map[string]fleet.Thing) []string {
	var out []string
	for n, th := range m {
		out = append(out, fmt.Sprintf("%s%v", n, th.Attributes))
	}
	return out
}

// scenario builds fault-matrix worlds: prepare arranges the pre-existing
// state. The matrix injects its faults into the registry and the inventory;
// the lease table's own failures have their own tests.
func scenario(name string, prepare func(*world) error) faultmatrix.Scenario {
	return faultmatrix.Scenario{Name: name, New: func(in *faultmatrix.Injector) (*faultmatrix.World, error) {
		w, err := newWorld(fx.dev.CertPEM())
		if err != nil {
			return nil, err
		}
		if prepare != nil {
			if err := prepare(w); err != nil {
				w.close()
				return nil, err
			}
		}
		w.reg.SetHook(in.Before("iot"))
		w.reg.SetAfter(in.After("iot"))
		w.tbl.SetHook(in.Before("ddb"))
		w.tbl.SetAfter(in.After("ddb"))
		// Every delivery of the matrix is handled as by a fresh Lambda
		// instance, with none of this process's duplicate-event memory, so
		// that redeliveries and duplicates go through the registry. Each
		// delivery gets a fresh claims table too: one table shared by the
		// deliveries would drop every redelivery after a clean run as
		// onboarded_elsewhere (the clock is fixed at t0, within the done
		// window), so the matrix would check convergence on runs that make no
		// registry call. A fresh table still takes the claim and marks or
		// releases it on every delivery; its own failures are
		// TestClaimsTableFailureDoesNotStopOnboarding's, outside the injector,
		// so that the matrix enumerates the same calls as without it.
		// A redelivery comes after a crashed delivery's lease expired.
		deliver := func(ctx context.Context) error {
			w.forget()
			w.expireLeases()
			claims := memddb.NewGlobalTable("jitr-claims", memddb.ClaimsKey, []string{region})
			defer claims.Close()
			w.h.claims = memddb.NewClaims(claims.Replica(region))
			return w.deliver(ctx)
		}
		return &faultmatrix.World{Deliver: deliver, State: w.state, Close: w.close}, nil
	}}
}

// Pre-existing states.
func thingExists(w *world) error {
	_, err := w.reg.CreateThing(context.Background(), "dev-1", map[string]string{"owner": "ops"})
	return err
}

func attached(w *world) error {
	ctx := context.Background()
	if err := thingExists(w); err != nil {
		return err
	}
	if err := w.reg.AttachThingPrincipal(ctx, "dev-1", w.cert.ARN); err != nil {
		return err
	}
	return w.reg.AttachPolicy(ctx, policy, w.cert.ARN)
}

// replicated: the inventory knows the device from another region, this
// region's registry has only the auto-registered certificate.
func replicated(w *world) error {
	return w.inv.Create(context.Background(), fleet.Device{
		ThingName: "dev-1", CertificateID: w.cert.ID, CertificatePEM: w.cert.PEM, CACertificateID: w.cert.CACertificateID,
		NotAfter: fx.dev.Cert.NotAfter.UTC(), Status: fleet.StatusActive, OriginRegion: other, Version: 1, UpdatedAt: t0.Add(-time.Minute),
	})
}
