package converge

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
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

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// eworld is one region with an engine: registry, inventory replica, lease
// table.
type eworld struct {
	clock   *testClock
	reg     *memiot.Registry
	g       *memddb.GlobalTable
	tbl     *memddb.Table
	inv     *memddb.Inventory
	lt      *memddb.GlobalTable
	leases  *memddb.Leases
	e       *Engine
	metrics *obs.Recorder
	opts    Options
}

func newEWorld(tb testing.TB) *eworld {
	tb.Helper()
	fixtures(tb)
	w, err := makeEWorld()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.close)
	return w
}

func makeEWorld() (*eworld, error) {
	ctx := context.Background()
	w := &eworld{clock: &testClock{now: t0}, metrics: obs.NewRecorder()}
	w.reg = memiot.New(here, account, memiot.WithClock(w.clock.Now))
	if _, err := w.reg.RegisterCACertificate(ctx, fx.ca.CertPEM(), true); err != nil {
		return nil, err
	}
	if err := w.reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		return nil, err
	}
	w.g = memddb.NewGlobalTable("inventory", memddb.InventoryKey, []string{here})
	w.tbl = w.g.Replica(here)
	w.inv = memddb.NewInventory(w.tbl)
	w.lt = memddb.NewGlobalTable("leases", memddb.LeasesKey, []string{here})
	w.leases = memddb.NewLeases(w.lt.Replica(here))
	var err error
	w.e, err = New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: here, PolicyName: policy,
		Now: w.clock.Now, Metrics: w.metrics, LeaseWait: -1})
	if err != nil {
		return nil, err
	}
	return w, nil
}

func (w *eworld) close() { w.g.Close(); w.lt.Close() }

func (w *eworld) converge(ctx context.Context) error {
	_, err := w.e.Converge(ctx, thing, w.opts)
	return err
}

func item(status fleet.Status, originRegion string, version int64) fleet.Device {
	return fleet.Device{
		ThingName: thing, CertificateID: fleet.CertificateID(fx.dev.Cert), CertificatePEM: fx.dev.CertPEM(),
		CACertificateID: fleet.CertificateID(fx.ca.Cert), NotAfter: fx.dev.Cert.NotAfter.UTC(),
		Status: status, OriginRegion: originRegion, Version: version, UpdatedAt: t0,
	}
}

// put writes d (create, or replace the stored version).
func (w *eworld) put(d fleet.Device) error {
	ctx := context.Background()
	cur, err := w.inv.Get(ctx, d.ThingName)
	if errors.Is(err, fleet.ErrNotFound) {
		return w.inv.Create(ctx, d)
	}
	if err != nil {
		return err
	}
	return w.inv.Update(ctx, d, cur.Version)
}

// presented: the device connected here; jitr converges with its certificate.
func (w *eworld) presented() error {
	c, _, err := w.reg.AutoRegister(context.Background(), fx.dev.CertPEM())
	if err != nil {
		return err
	}
	w.opts = Options{Function: "jitr", Presented: &c}
	return nil
}

type estate struct {
	Registry  memiot.State
	Inventory []map[string]types.AttributeValue
}

func (w *eworld) state() any { return estate{Registry: w.reg.Snapshot(), Inventory: w.tbl.Snapshot()} }

func (w *eworld) expireLeases() {
	for _, it := range w.lt.Replica(here).Snapshot() {
		l, err := ddbitem.UnmarshalLease(it)
		if err == nil && l.Owner != "" {
			_ = w.leases.Release(context.Background(), l, l.Ledger)
		}
	}
}

// matrixScenario builds fault-matrix worlds for the engine: prepare arranges
// the state and the options, mutate breaks a saga on purpose.
func matrixScenario(name string, prepare func(*eworld) error, mutate func([]saga.Step) []saga.Step) faultmatrix.Scenario {
	return faultmatrix.Scenario{Name: name, New: func(in *faultmatrix.Injector) (*faultmatrix.World, error) {
		w, err := makeEWorld()
		if err != nil {
			return nil, err
		}
		if err := prepare(w); err != nil {
			w.close()
			return nil, err
		}
		w.e.mutate = mutate
		w.reg.SetHook(in.Before("iot"))
		w.reg.SetAfter(in.After("iot"))
		w.tbl.SetHook(in.Before("ddb"))
		w.tbl.SetAfter(in.After("ddb"))
		deliver := func(ctx context.Context) error {
			w.expireLeases()
			if p := w.opts.Presented; p != nil {
				// jitr describes the certificate it presents to the engine
				// at every delivery.
				c, _ := w.reg.CertificateByID(p.ID)
				w.opts.Presented = &c
			}
			return w.converge(ctx)
		}
		return &faultmatrix.World{Deliver: deliver, State: w.state, Close: w.close}, nil
	}}
}

// Prepared states.
func jitrFresh(w *eworld) error { return w.presented() }

func jitrThingExists(w *eworld) error {
	if _, err := w.reg.CreateThing(context.Background(), thing, map[string]string{"owner": "ops"}); err != nil {
		return err
	}
	return w.presented()
}

func jitrAttached(w *eworld) error {
	ctx := context.Background()
	if err := jitrThingExists(w); err != nil {
		return err
	}
	if err := w.reg.AttachThingPrincipal(ctx, thing, w.opts.Presented.ARN); err != nil {
		return err
	}
	return w.reg.AttachPolicy(ctx, policy, w.opts.Presented.ARN)
}

func replicaInsert(w *eworld) error {
	w.opts = Options{Function: "replicate", SkipConverged: true}
	return w.put(item(fleet.StatusActive, origin, 1))
}

func replicaPreRegistered(w *eworld) error {
	if _, err := w.reg.RegisterCertificate(context.Background(), fx.dev.CertPEM(), fleet.CertInactive); err != nil {
		return err
	}
	return replicaInsert(w)
}

// TestFaultMatrixOfTheSagas runs the matrix over the engine's convergence
// toward ACTIVE, as jitr and as replicate call it.
func TestFaultMatrixOfTheSagas(t *testing.T) {
	fixtures(t)
	for name, prepare := range map[string]func(*eworld) error{
		"jitr-fresh": jitrFresh, "jitr-thing-exists": jitrThingExists, "jitr-attached": jitrAttached,
		"replica-insert": replicaInsert, "replica-pre-registered": replicaPreRegistered,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := faultmatrix.Run(matrixScenario(name, prepare, nil)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFaultMatrixCatchesBrokenCompensation proves that the matrix fails when
// a compensation of the sagas is removed, or made to undo a resource that
// existed before the run.
func TestFaultMatrixCatchesBrokenCompensation(t *testing.T) {
	fixtures(t)
	tests := []struct {
		name    string
		prepare func(*eworld) error
		mutate  func([]saga.Step) []saga.Step
	}{
		{"no undo of create-thing", jitrFresh, faultmatrix.DropUndo(StepCreateThing)},
		{"no undo of attach-principal", jitrFresh, faultmatrix.DropUndo(StepAttachPrincipal)},
		{"no undo of attach-policy", jitrFresh, faultmatrix.DropUndo(StepAttachPolicy)},
		{"no undo of write-inventory", jitrFresh, faultmatrix.DropUndo(StepWriteInventory)},
		{"no undo of register", replicaInsert, faultmatrix.DropUndo(StepRegister)},
		{"create-thing deletes a pre-existing thing", jitrThingExists, faultmatrix.AlwaysChanged(StepCreateThing)},
		{"attach-principal detaches a pre-existing attachment", jitrAttached, faultmatrix.AlwaysChanged(StepAttachPrincipal)},
		{"attach-policy detaches a pre-existing policy", jitrAttached, faultmatrix.AlwaysChanged(StepAttachPolicy)},
		{"register deletes a pre-existing certificate", replicaPreRegistered, faultmatrix.AlwaysChanged(StepRegister)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := faultmatrix.Run(matrixScenario(tt.name, tt.prepare, tt.mutate))
			if err == nil {
				t.Fatal("the fault matrix passed an engine with a broken compensation")
			}
			t.Logf("caught: %.300s", err)
		})
	}
}

func (w *eworld) lease(t *testing.T) fleet.Lease {
	t.Helper()
	l, err := w.leases.Get(context.Background(), thing)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (w *eworld) cert(t *testing.T) fleet.Certificate {
	t.Helper()
	c, _ := w.reg.CertificateByID(fleet.CertificateID(fx.dev.Cert))
	return c
}

// TestHeldLeaseIsRetryable: a run that finds the device's lease held by a
// live run changes nothing and stops with a retryable ErrBusy naming the
// holder; once the holder's lease expires (it crashed), a run takes over.
func TestHeldLeaseIsRetryable(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	held, err := w.leases.Acquire(ctx, thing, "crashed-run", t0, t0.Add(DefaultLeaseDuration))
	if err != nil {
		t.Fatal(err)
	}
	before := w.state()
	err = w.converge(ctx)
	var lh *fleet.LeaseHeldError
	if !errors.As(err, &lh) || lh.Owner != "crashed-run" || !saga.IsRetryable(err) {
		t.Fatalf("converge under a held lease: %v, want a retryable *LeaseHeldError naming crashed-run", err)
	}
	if !reflect.DeepEqual(w.state(), before) {
		t.Fatal("a run without the lease changed the registry")
	}
	if got := w.metrics.Get("LeaseContended", obs.D("Function", "replicate")); got != 1 {
		t.Errorf("LeaseContended = %v", got)
	}
	w.clock.Advance(DefaultLeaseDuration)
	if err := w.converge(ctx); err != nil {
		t.Fatalf("after the lease expired: %v", err)
	}
	if c := w.cert(t); c.Status != fleet.CertActive {
		t.Errorf("certificate %s after the takeover, want ACTIVE", c.Status)
	}
	l := w.lease(t)
	if l.Owner != "" || l.Fence != held.Fence+1 {
		t.Errorf("lease after the run: owner %q fence %d, want free at fence %d", l.Owner, l.Fence, held.Fence+1)
	}
	// The crashed run can record nothing any more: its fence is stale.
	if err := w.leases.Release(ctx, held, fleet.Ledger{}); !errors.Is(err, fleet.ErrLeaseLost) {
		t.Errorf("stale holder's release: %v, want ErrLeaseLost", err)
	}
}

// TestWaitForALeaseReleasedSoon: a run waits (up to LeaseWait) for a lease
// that its holder releases meanwhile.
func TestWaitForALeaseReleasedSoon(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	held, err := w.leases.Acquire(ctx, thing, "other-run", t0, t0.Add(DefaultLeaseDuration))
	if err != nil {
		t.Fatal(err)
	}
	slept := 0
	w.e.wait = 2 * time.Second
	w.e.sleep = func(ctx context.Context, d time.Duration) error {
		slept++
		w.clock.Advance(d)
		if slept == 3 {
			return w.leases.Release(ctx, held, held.Ledger)
		}
		return nil
	}
	if err := w.converge(ctx); err != nil {
		t.Fatalf("converge: %v", err)
	}
	if slept != 3 {
		t.Errorf("slept %d times, want 3", slept)
	}
}

// TestStaleHolderStops: a run whose lease was taken over while it was
// paused makes no further mutating call.
func TestStaleHolderStops(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	calls := 0
	w.reg.SetHook(func(ctx context.Context, op string) error {
		if op == "CreateThing" && calls == 0 {
			calls++
			// The run is paused past its lease; another run takes over.
			w.clock.Advance(DefaultLeaseDuration + time.Second)
			if _, err := w.leases.Acquire(ctx, thing, "taker", w.clock.Now(), w.clock.Now().Add(DefaultLeaseDuration)); err != nil {
				t.Errorf("take over: %v", err)
			}
		}
		return nil
	})
	err := w.converge(ctx)
	if !errors.Is(err, fleet.ErrLeaseLost) || !saga.IsRetryable(err) {
		t.Fatalf("converge: %v, want a retryable ErrLeaseLost", err)
	}
	if c := w.cert(t); c.Status == fleet.CertActive {
		t.Error("the stale holder activated the certificate")
	}
	if got, _ := w.reg.ListAttachedPolicies(ctx, w.cert(t).ARN); len(got) != 0 {
		t.Errorf("the stale holder attached %v", got)
	}
}

// TestLongRunRenewsItsLease: a run past half its lease renews it before its
// next mutating call.
func TestLongRunRenewsItsLease(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	w.reg.SetHook(func(ctx context.Context, op string) error {
		w.clock.Advance(20 * time.Second) // a slow registry: 20 s a call
		return nil
	})
	if err := w.converge(ctx); err != nil {
		t.Fatalf("converge: %v", err)
	}
	if c := w.cert(t); c.Status != fleet.CertActive {
		t.Errorf("certificate %s, want ACTIVE", c.Status)
	}
}

// TestLeaseEndsWithTheDeadline: a run with a deadline holds its lease only
// until shortly after it, so that Lambda's retry of a crashed run finds it
// free.
func TestLeaseEndsWithTheDeadline(t *testing.T) {
	w := newEWorld(t)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(30*time.Second))
	defer cancel()
	dl, _ := ctx.Deadline()
	if got, want := w.e.until(ctx, t0), dl.Add(LeaseMargin); !got.Equal(want) && !got.Before(t0.Add(DefaultLeaseDuration)) {
		t.Errorf("until = %v, want %v", got, want)
	}
	if got := w.e.until(context.Background(), t0); !got.Equal(t0.Add(DefaultLeaseDuration)) {
		t.Errorf("until without a deadline = %v, want the full duration", got)
	}
}

// TestFailedCompensationBecomesAnObligation: an undo that fails is recorded
// in the ledger, and the next run finishes it first.
func TestFailedCompensationBecomesAnObligation(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := jitrFresh(w); err != nil {
		t.Fatal(err)
	}
	before := w.state()
	w.reg.SetHook(func(ctx context.Context, op string) error {
		switch op {
		case "UpdateCertificate":
			return memiot.Invalid(op)
		case "DetachPolicy":
			return memiot.Throttled(op)
		}
		return nil
	})
	if err := w.converge(ctx); err == nil {
		t.Fatal("converge succeeded; want the injected terminal failure")
	}
	l := w.lease(t)
	if len(l.Ledger.Obligations) != 1 || l.Ledger.Obligations[0].Kind != fleet.ObligationDetachPolicy ||
		l.Ledger.Obligations[0].Policy != policy || l.Ledger.Obligations[0].Saga == "" {
		t.Fatalf("obligations %+v, want the policy detachment", l.Ledger.Obligations)
	}
	if got := w.metrics.Get("ObligationRecorded", obs.D("Function", "jitr")); got != 1 {
		t.Errorf("ObligationRecorded = %v", got)
	}
	// The next run (no onboarding this time: the device is not presented)
	// finishes the obligation before anything else.
	w.reg.SetHook(nil)
	w.opts = Options{Function: "replicate"}
	res, err := w.e.Converge(ctx, thing, w.opts)
	if err != nil || res.Obligations != 1 {
		t.Fatalf("next run: %+v, %v; want one obligation finished", res, err)
	}
	if len(w.lease(t).Ledger.Obligations) != 0 {
		t.Error("obligation still recorded")
	}
	if after := w.state(); !reflect.DeepEqual(after, before) {
		t.Errorf("state after the obligation: %+v\nwant %+v", after, before)
	}
}

// TestObligationSupersededByAnActiveItem: an obligation that would take
// away what the current ACTIVE item needs is dropped as superseded, and the
// device stays live.
func TestObligationSupersededByAnActiveItem(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	if err := w.converge(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := w.leases.Acquire(ctx, thing, "failed-run", t0, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c := w.cert(t)
	ledger := l.Ledger
	ledger.Obligations = []fleet.Obligation{{Kind: fleet.ObligationDetachPolicy, Thing: thing, Certificate: c.ID, Principal: c.ARN, Policy: policy, Saga: "x", Step: StepAttachPolicy}}
	ledger.Converged = fleet.Converged{}
	if err := w.leases.Release(ctx, l, ledger); err != nil {
		t.Fatal(err)
	}
	if err := w.converge(ctx); err != nil {
		t.Fatal(err)
	}
	if got := w.metrics.Get("ObligationCompleted", obs.D("Function", "replicate"), obs.D("How", "superseded")); got != 1 {
		t.Errorf("ObligationCompleted{superseded} = %v", got)
	}
	if pols, _ := w.reg.ListAttachedPolicies(ctx, c.ARN); len(pols) != 1 {
		t.Errorf("policies %v, want the device policy kept", pols)
	}
}

// TestRevocationWins: a certificate found REVOKED here while the item says
// ACTIVE with it makes the item REVOKED at the next version, and the region
// converges to that.
func TestRevocationWins(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if _, err := w.reg.RegisterCertificate(ctx, fx.dev.CertPEM(), fleet.CertRevoked); err != nil {
		t.Fatal(err)
	}
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	res, err := w.e.Converge(ctx, thing, w.opts)
	if err != nil || !res.Promoted {
		t.Fatalf("converge: %+v, %v; want the item promoted", res, err)
	}
	d, err := w.inv.Get(ctx, thing)
	if err != nil || d.Status != fleet.StatusRevoked || d.Version != 2 {
		t.Fatalf("item %s v%d %v, want REVOKED v2", d.Status, d.Version, err)
	}
	if c := w.cert(t); c.Status != fleet.CertRevoked {
		t.Errorf("certificate %s", c.Status)
	}
}

// TestRevokedUnknownHereIsRecorded: a region that never knew the
// certificate registers it REVOKED, so that nothing activates it later; a
// later ACTIVE convergence of a stale record cannot undo it.
func TestRevokedUnknownHereIsRecorded(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	w.opts = Options{Function: "replicate"}
	if err := w.put(item(fleet.StatusRevoked, origin, 2)); err != nil {
		t.Fatal(err)
	}
	if err := w.converge(ctx); err != nil {
		t.Fatal(err)
	}
	if c := w.cert(t); c.Status != fleet.CertRevoked {
		t.Fatalf("certificate %q, want REVOKED", c.Status)
	}
	if err := w.reg.UpdateCertificate(ctx, w.cert(t).ID, fleet.CertActive); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("activating the recorded revocation: %v, want refused", err)
	}
}

// TestRevokedWithoutTheCAHere: a region without the device's CA cannot
// record the revocation; the run says so and succeeds (a device cannot
// connect here with that certificate either).
func TestRevokedWithoutTheCAHere(t *testing.T) {
	fixtures(t)
	w := newEWorld(t)
	ctx := context.Background()
	other := memiot.New(here, account, memiot.WithClock(w.clock.Now))
	if err := other.CreatePolicy(ctx, policy, `{}`); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Registry: other, Inventory: w.inv, Leases: w.leases, Region: here, PolicyName: policy,
		Now: w.clock.Now, Metrics: w.metrics})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.put(item(fleet.StatusRevoked, origin, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Converge(ctx, thing, Options{Function: "replicate"}); err != nil {
		t.Fatal(err)
	}
	if got := w.metrics.Get("RevocationNotRecorded", obs.D("Function", "replicate")); got != 1 {
		t.Errorf("RevocationNotRecorded = %v", got)
	}
}

// TestAbsentKeepsWhatIsNotOurs: with the item gone, a thing mriot did not
// create stays (only mriot's certificates are detached from it), and the
// device's own PENDING_ACTIVATION registration and REVOKED tombstones stay.
func TestAbsentKeepsWhatIsNotOurs(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if _, err := w.reg.CreateThing(ctx, thing, map[string]string{"owner": "ops"}); err != nil {
		t.Fatal(err)
	}
	if err := replicaInsert(w); err != nil {
		t.Fatal(err)
	}
	if err := w.converge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.inv.Delete(ctx, thing); err != nil {
		t.Fatal(err)
	}
	if err := w.converge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.reg.DescribeThing(ctx, thing); err != nil {
		t.Errorf("the operator's thing was deleted: %v", err)
	}
	if prs, _ := w.reg.ListThingPrincipals(ctx, thing); len(prs) != 0 {
		t.Errorf("principals %v left on it", prs)
	}
	if _, ok := w.reg.CertificateByID(fleet.CertificateID(fx.dev.Cert)); ok {
		t.Error("the certificate mriot registered here is still there")
	}
	if l := w.lease(t); len(l.Ledger.Certificates) != 0 || l.Ledger.Converged != (fleet.Converged{}) {
		t.Errorf("ledger %+v, want empty", l.Ledger)
	}
}

// TestRotationIsRefused: a device presenting another certificate than its
// ACTIVE item's, issued before it, is refused: the presented certificate
// is revoked and nothing else changes.
func TestRotationIsRefused(t *testing.T) {
	w := newEWorld(t)
	ctx := context.Background()
	if err := w.put(item(fleet.StatusActive, origin, 1)); err != nil {
		t.Fatal(err)
	}
	next, err := fx.ca.Issue(pki.Options{CommonName: thing, NotBefore: fx.dev.Cert.NotBefore.Add(-time.Minute), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := w.reg.AutoRegister(ctx, next.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	before := w.state()
	res, err := w.e.Converge(ctx, thing, Options{Function: "jitr", Presented: &c})
	if err != nil || res.Action != Refused || res.Refusal != RefusedOlder {
		t.Fatalf("converge: %+v %v, want refused as older", res, err)
	}
	want := before.(estate)
	cert := want.Registry.Certificates[c.ID]
	cert.Status = fleet.CertRevoked
	want.Registry.Certificates[c.ID] = cert
	if !reflect.DeepEqual(w.state(), want) {
		t.Error("a refused run changed more than the presented certificate's status")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	w := newEWorld(t)
	good := Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: here, PolicyName: "mriot.device@v2"}
	if _, err := New(good); err != nil {
		t.Fatalf("a valid policy name with '.' and '@': %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no registry":  func(c *Config) { c.Registry = nil },
		"no inventory": func(c *Config) { c.Inventory = nil },
		"no leases":    func(c *Config) { c.Leases = nil },
		"no region":    func(c *Config) { c.Region = "" },
		"bad policy":   func(c *Config) { c.PolicyName = "a b" },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if _, err := New(c); err == nil {
				t.Error("accepted")
			}
		})
	}
}
