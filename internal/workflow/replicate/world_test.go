package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
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
	here    = "eu-west-1"
	origin  = "us-east-1"
	account = "123456789012"
	policy  = "mriot-device"
	thing   = "dev-1"
)

var t0 = time.Now().UTC().Truncate(time.Second)

var fx struct {
	once sync.Once
	err  error
	ca   *pki.Authority
	dev  *pki.Leaf
}

func fixtures(tb testing.TB) {
	tb.Helper()
	fx.once.Do(func() {
		var root *pki.Authority
		if root, fx.err = pki.NewRoot("mriot test root", 48*time.Hour); fx.err != nil {
			return
		}
		if fx.ca, fx.err = root.NewIntermediate("mriot test devices", 48*time.Hour); fx.err != nil {
			return
		}
		fx.dev, fx.err = fx.ca.IssueDevice(thing, 24*time.Hour)
	})
	if fx.err != nil {
		tb.Fatalf("fixtures: %v", fx.err)
	}
}

// newRegistry is a region's registry with the CA and the device policy.
func newRegistry(region string) (*memiot.Registry, error) {
	ctx := context.Background()
	reg := memiot.New(region, account)
	if _, err := reg.RegisterCACertificate(ctx, fx.ca.CertPEM(), true); err != nil {
		return nil, err
	}
	if err := reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		return nil, err
	}
	return reg, nil
}

// device is the inventory item of the fixture device.
func device(status fleet.Status, originRegion string, version int64) fleet.Device {
	return fleet.Device{
		ThingName: thing, CertificateID: fleet.CertificateID(fx.dev.Cert), CertificatePEM: fx.dev.CertPEM(),
		CACertificateID: fleet.CertificateID(fx.ca.Cert), NotAfter: fx.dev.Cert.NotAfter.UTC(),
		Status: status, OriginRegion: originRegion, Version: version, UpdatedAt: t0,
	}
}

// world is this region: registry, inventory replica and a replicate handler.
type world struct {
	reg     *memiot.Registry
	g       *memddb.GlobalTable
	tbl     *memddb.Table
	inv     *memddb.Inventory
	lt      *memddb.GlobalTable
	leases  *memddb.Leases
	h       *Handler
	metrics *obs.Recorder
	payload []byte
}

func newWorld() (*world, error) {
	w := &world{metrics: obs.NewRecorder()}
	var err error
	if w.reg, err = newRegistry(here); err != nil {
		return nil, err
	}
	w.g = memddb.NewGlobalTable("inventory", memddb.InventoryKey, []string{here})
	w.tbl = w.g.Replica(here)
	w.inv = memddb.NewInventory(w.tbl)
	w.lt = memddb.NewGlobalTable("leases", memddb.LeasesKey, []string{here})
	w.leases = memddb.NewLeases(w.lt.Replica(here))
	w.h, err = New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: here, PolicyName: policy,
		Now: func() time.Time { return t0 }, Metrics: w.metrics})
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (w *world) close() { w.g.Close(); w.lt.Close() }

// expireLeases ends every lease of the world's lease table, as the passing
// of a crashed run's deadline does before Lambda delivers its event again.
func (w *world) expireLeases() {
	for _, item := range w.lt.Replica(here).Snapshot() {
		l, err := ddbitem.UnmarshalLease(item)
		if err != nil || l.Owner == "" {
			continue
		}
		_ = w.leases.Release(context.Background(), l, l.Ledger)
	}
}

func (w *world) deliver(ctx context.Context) error {
	_, err := w.h.Invoke(ctx, w.payload)
	return err
}

// put writes d to the replica (create, or replace at the next version).
func (w *world) put(d fleet.Device) error {
	ctx := context.Background()
	cur, err := w.inv.Get(ctx, d.ThingName)
	if err != nil {
		return w.inv.Create(ctx, d)
	}
	return w.inv.Update(ctx, d, cur.Version)
}

// envelope wraps a stream record as the EventBridge Pipe delivers it.
func envelope(eventName string, d *fleet.Device, thingName string) []byte {
	rec := events.DynamoDBEventRecord{
		EventID: "ev-1", EventName: eventName, EventVersion: "1.1", EventSource: "aws:dynamodb", AWSRegion: here,
		Change: events.DynamoDBStreamRecord{
			Keys:           map[string]events.DynamoDBAttributeValue{ddbitem.AttrThingName: events.NewStringAttribute(thingName)},
			StreamViewType: "NEW_IMAGE",
		},
	}
	if d != nil {
		item, err := ddbitem.MarshalDevice(*d)
		if err == nil {
			rec.Change.NewImage, _ = ddbitem.ToStreamImage(item)
		}
	}
	return bridge(rec)
}

func bridge(rec events.DynamoDBEventRecord) []byte {
	detail, _ := json.Marshal(rec)
	b, _ := json.Marshal(events.EventBridgeEvent{
		Version: "0", ID: "e-1", DetailType: "DeviceInventoryChange", Source: "mriot.inventory",
		AccountID: account, Time: t0, Region: here, Resources: []string{}, Detail: detail,
	})
	return b
}

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
	out := ""
	for id, c := range s.Registry.Certificates {
		if oc, ok := o.Registry.Certificates[id]; !ok {
			out += " certificate " + id[:8] + " gone;"
		} else if oc != c {
			out += fmt.Sprintf(" certificate %s %s -> %s;", id[:8], c.Status, oc.Status)
		}
	}
	for id, c := range o.Registry.Certificates {
		if _, ok := s.Registry.Certificates[id]; !ok {
			out += fmt.Sprintf(" certificate %s appeared (%s);", id[:8], c.Status)
		}
	}
	if fmt.Sprint(s.Registry.Things) != fmt.Sprint(o.Registry.Things) {
		out += fmt.Sprintf(" things %v -> %v;", s.Registry.Things, o.Registry.Things)
	}
	if fmt.Sprint(s.Registry.ThingPrincipals) != fmt.Sprint(o.Registry.ThingPrincipals) {
		out += fmt.Sprintf(" thing principals %d -> %d;", len(s.Registry.ThingPrincipals), len(o.Registry.ThingPrincipals))
	}
	if fmt.Sprint(s.Registry.PrincipalPolicies) != fmt.Sprint(o.Registry.PrincipalPolicies) {
		out += fmt.Sprintf(" principal policies %d -> %d;", len(s.Registry.PrincipalPolicies), len(o.Registry.PrincipalPolicies))
	}
	if !reflect.DeepEqual(s.Inventory, o.Inventory) {
		out += " inventory changed;"
	}
	if out == "" {
		out = " deep difference"
	}
	return out
}

// converge brings w's registry to d (as a clean earlier delivery would have).
func (w *world) converge(d fleet.Device) error {
	if err := w.put(d); err != nil {
		return err
	}
	_, err := w.h.Invoke(context.Background(), envelope("INSERT", &d, d.ThingName))
	return err
}

// scenario builds fault-matrix worlds: prepare arranges the pre-existing
// state; rollForward for the restrictive convergences. The matrix injects
// its faults into the registry and the inventory; the lease table's own
// failures have their own tests.
func scenario(name string, prepare func(*world) error, rollForward bool) faultmatrix.Scenario {
	return faultmatrix.Scenario{Name: name, RollForward: rollForward, New: func(in *faultmatrix.Injector) (*faultmatrix.World, error) {
		w, err := newWorld()
		if err != nil {
			return nil, err
		}
		if err := prepare(w); err != nil {
			w.close()
			return nil, fmt.Errorf("prepare: %w", err)
		}
		w.reg.SetHook(in.Before("iot"))
		w.reg.SetAfter(in.After("iot"))
		w.tbl.SetHook(in.Before("ddb"))
		w.tbl.SetAfter(in.After("ddb"))
		// A redelivery comes after a crashed delivery's lease expired.
		deliver := func(ctx context.Context) error {
			w.expireLeases()
			return w.deliver(ctx)
		}
		return &faultmatrix.World{Deliver: deliver, State: w.state, Close: w.close}, nil
	}}
}

// Prepared states.

// inserted: another region onboarded the device; nothing here yet.
func inserted(w *world) error {
	d := device(fleet.StatusActive, origin, 1)
	w.payload = envelope("INSERT", &d, thing)
	return w.put(d)
}

// autoRegisteredHere: as inserted, and the device has also connected here:
// its certificate is PENDING_ACTIVATION in this registry.
func autoRegisteredHere(w *world) error {
	if _, _, err := w.reg.AutoRegister(context.Background(), fx.dev.CertPEM()); err != nil {
		return err
	}
	return inserted(w)
}

// thingHere: as inserted, and a thing of that name exists here already.
func thingHere(w *world) error {
	if _, err := w.reg.CreateThing(context.Background(), thing, map[string]string{"owner": "ops"}); err != nil {
		return err
	}
	return inserted(w)
}

// newerVersion: converged to version 1, the item is now at version 2.
func newerVersion(w *world) error {
	if err := w.converge(device(fleet.StatusActive, origin, 1)); err != nil {
		return err
	}
	d := device(fleet.StatusActive, origin, 2)
	w.payload = envelope("MODIFY", &d, thing)
	return w.put(d)
}

func changedTo(status fleet.Status, originRegion string) func(*world) error {
	return func(w *world) error {
		if err := w.converge(device(fleet.StatusActive, origin, 1)); err != nil {
			return err
		}
		d := device(status, originRegion, 2)
		w.payload = envelope("MODIFY", &d, thing)
		return w.put(d)
	}
}

// revokedUnknownHere: the device was revoked before this region ever
// converged it: the region records the revocation (the certificate
// registered REVOKED from the item's PEM).
func revokedUnknownHere(w *world) error {
	d := device(fleet.StatusRevoked, origin, 2)
	w.payload = envelope("INSERT", &d, thing)
	return w.put(d)
}

// decommissionedUnknownHere: the same with a decommissioned device.
func decommissionedUnknownHere(w *world) error {
	d := device(fleet.StatusDecommissioned, origin, 2)
	w.payload = envelope("INSERT", &d, thing)
	return w.put(d)
}

// removed: converged, then the item was deleted.
func removed(w *world) error {
	if err := w.converge(device(fleet.StatusActive, origin, 1)); err != nil {
		return err
	}
	w.payload = envelope("REMOVE", nil, thing)
	return w.inv.Delete(context.Background(), thing)
}
