package reconcile_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

const (
	region  = "eu-west-1"
	account = "123456789012"
	policy  = "mriot-device"
)

var fx struct {
	once sync.Once
	err  error
	ca   *pki.Authority
}

func fixtures(tb testing.TB) {
	tb.Helper()
	fx.once.Do(func() {
		var root *pki.Authority
		if root, fx.err = pki.NewRoot("mriot test root", 48*time.Hour); fx.err != nil {
			return
		}
		fx.ca, fx.err = root.NewIntermediate("mriot test devices", 48*time.Hour)
	})
	if fx.err != nil {
		tb.Fatalf("fixtures: %v", fx.err)
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// world is one region with its reconciler and a jitr handler that onboards
// devices as IoT Core's registered events would.
type world struct {
	t       *testing.T
	clock   *clock
	reg     *memiot.Registry
	inv     *memddb.Inventory
	invT    *memddb.Table
	leases  *memddb.Leases
	leaseT  *memddb.Table
	jitr    *jitr.Handler
	rec     *reconcile.Reconciler
	metrics *obs.Recorder
	slept   time.Duration
}

func newWorld(t *testing.T, opts ...func(*reconcile.Config)) *world {
	t.Helper()
	fixtures(t)
	ctx := context.Background()
	w := &world{t: t, clock: &clock{now: time.Now().UTC().Truncate(time.Second)}, metrics: obs.NewRecorder()}
	w.reg = memiot.New(region, account, memiot.WithClock(w.clock.Now))
	if _, err := w.reg.RegisterCACertificate(ctx, fx.ca.CertPEM(), true); err != nil {
		t.Fatal(err)
	}
	if err := w.reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		t.Fatal(err)
	}
	g := memddb.NewGlobalTable("inventory", memddb.InventoryKey, []string{region}, memddb.InventoryIndexes, memddb.WithClock(w.clock.Now))
	t.Cleanup(g.Close)
	w.invT = g.Replica(region)
	w.inv = memddb.NewInventory(w.invT)
	lt := memddb.NewGlobalTable("leases", memddb.LeasesKey, []string{region})
	t.Cleanup(lt.Close)
	w.leaseT = lt.Replica(region)
	w.leases = memddb.NewLeases(w.leaseT)
	sleep := func(_ context.Context, d time.Duration) error { w.slept += d; w.clock.Advance(d); return nil }
	var err error
	w.jitr, err = jitr.New(jitr.Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
		Now: w.clock.Now, Lease: converge.Config{Sleep: sleep}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := reconcile.Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Redriver: w.jitr, Region: region,
		PolicyName: policy, PageSize: 2, Now: w.clock.Now, Metrics: w.metrics, Lease: converge.Config{Sleep: sleep}}
	for _, o := range opts {
		o(&cfg)
	}
	if w.rec, err = reconcile.New(cfg); err != nil {
		t.Fatal(err)
	}
	return w
}

// device is a device certificate of the world's CA.
func (w *world) device(name string) *pki.Leaf {
	w.t.Helper()
	leaf, err := fx.ca.IssueDevice(name, 24*time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	return leaf
}

// connect is a device connecting: auto-registered PENDING_ACTIVATION.
func (w *world) connect(leaf *pki.Leaf) fleet.Certificate {
	w.t.Helper()
	c, _, err := w.reg.AutoRegister(context.Background(), leaf.CertPEM())
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

// onboard connects the device and runs jitr on its registered event.
func (w *world) onboard(name string) fleet.Certificate {
	w.t.Helper()
	c := w.connect(w.device(name))
	if err := w.jitr.Handle(context.Background(), fleet.CertificateRegisteredEvent{CertificateID: c.ID, CACertificateID: c.CACertificateID}); err != nil {
		w.t.Fatal(err)
	}
	c, _ = w.reg.CertificateByID(c.ID)
	if c.Status != fleet.CertActive {
		w.t.Fatalf("%s: certificate %s after jitr", name, c.Status)
	}
	return c
}

// recordRevocation writes the device's revocation record at the given time
// and not its item, as when the API's item write was lost (the item says
// ACTIVE, the record REVOKED, the certificate is ACTIVE): the drift the
// reconciler exists for. A record more than two days old is outside the
// sweep of recent revocations.
func (w *world) recordRevocation(name string, c fleet.Certificate, at time.Time) {
	w.t.Helper()
	ctx := context.Background()
	d, err := w.inv.Get(ctx, name)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.inv.Revoke(ctx, fleet.Revocation{ThingName: name, Status: fleet.StatusRevoked, CertificateID: c.ID,
		CertificatePEM: d.CertificatePEM, CACertificateID: d.CACertificateID, UpdatedAt: at}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) live(name string, c fleet.Certificate) bool {
	cur, ok := w.reg.CertificateByID(c.ID)
	return ok && cur.Status == fleet.CertActive && slices.Contains(w.reg.ThingsForPrincipal(c.ARN), name) &&
		len(w.reg.PoliciesForPrincipal(c.ARN)) == 1
}

func (w *world) run(o reconcile.Options) reconcile.Report {
	w.t.Helper()
	rep, err := w.rec.Run(context.Background(), o)
	if err != nil {
		w.t.Fatal(err)
	}
	return rep
}

func kinds(rep reconcile.Report) map[string]bool {
	out := map[string]bool{}
	for _, f := range rep.Findings {
		out[f.Kind+"/"+f.ThingName] = f.Repaired
	}
	return out
}

// TestRepairsDriftMadeBehindTheSystemsBack: a thing deleted, a policy
// detached, a certificate deactivated, a certificate left
// PENDING_ACTIVATION past the threshold (its event lost), a stray thing
// mriot created, and a certificate activated with no item: one pass finds
// each, repairs it through the convergence, reports it, and counts it.
func TestRepairsDriftMadeBehindTheSystemsBack(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	a, b, c, dd := w.onboard("dev-a"), w.onboard("dev-b"), w.onboard("dev-c"), w.onboard("dev-d")
	// dev-a: its thing deleted.
	if err := w.reg.DetachThingPrincipal(ctx, "dev-a", a.ARN); err != nil {
		t.Fatal(err)
	}
	if err := w.reg.DeleteThing(ctx, "dev-a"); err != nil {
		t.Fatal(err)
	}
	// dev-b: its policy detached. dev-c: its certificate deactivated.
	if err := w.reg.DetachPolicy(ctx, policy, b.ARN); err != nil {
		t.Fatal(err)
	}
	if err := w.reg.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	// dev-d: both, two drift kinds on one device.
	if err := w.reg.DetachPolicy(ctx, policy, dd.ARN); err != nil {
		t.Fatal(err)
	}
	if err := w.reg.UpdateCertificate(ctx, dd.ID, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	// dev-p connected 20 minutes ago; its registered event was lost.
	p := w.connect(w.device("dev-p"))
	// A thing mriot created, no item accounts for it (a lost race).
	if _, err := w.reg.CreateThing(ctx, "stray", map[string]string{converge.ManagedByAttribute: converge.ManagedBy,
		converge.CreatedByAttribute: "jitr/gone"}); err != nil {
		t.Fatal(err)
	}
	// dev-o: someone activated a device's certificate in the console; no
	// item names it.
	o := w.connect(w.device("dev-o"))
	if err := w.reg.UpdateCertificate(ctx, o.ID, fleet.CertActive); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(20 * time.Minute)

	rep := w.run(reconcile.Options{})
	if !rep.Complete {
		t.Fatalf("pass not complete: %+v", rep)
	}
	want := map[string]bool{
		converge.DriftThingMissing + "/dev-a":         true,
		converge.DriftPolicyDetached + "/dev-b":       true,
		converge.DriftCertificateNotActive + "/dev-c": true,
		reconcile.DriftOrphanThing + "/stray":         true,
		reconcile.DriftOrphanCertificate + "/dev-o":   true,
		reconcile.DriftPendingCertificate + "/":       true,  // named by its certificate id
		converge.DriftPrincipalDetached + "/dev-a":    false, // the missing thing says it: no thing, no attachment to report
	}
	got := kinds(rep)
	for k, repaired := range want {
		if !repaired {
			if _, ok := got[k]; ok {
				t.Errorf("finding %s reported; want none", k)
			}
			continue
		}
		if r, ok := got[k]; !ok || !r {
			t.Errorf("finding %s: reported %v, repaired %v; want reported and repaired (all: %v)", k, ok, r, got)
		}
	}
	for name, cert := range map[string]fleet.Certificate{"dev-a": a, "dev-b": b, "dev-c": c, "dev-d": dd} {
		if !w.live(name, cert) {
			t.Errorf("%s not live after the pass", name)
		}
	}
	if got, _ := w.reg.CertificateByID(p.ID); got.Status != fleet.CertActive {
		t.Errorf("the pending certificate is %s: jitr should have onboarded it", got.Status)
	}
	if _, err := w.reg.DescribeThing(ctx, "stray"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("stray thing: %v, want removed", err)
	}
	if _, ok := w.reg.CertificateByID(o.ID); ok {
		t.Error("the orphan certificate is still registered")
	}
	if n := w.metrics.Get("DriftFound", obs.D("Function", reconcile.Function), obs.D("Kind", reconcile.DriftOrphanThing)); n != 1 {
		t.Errorf("DriftFound{orphan_thing} = %v", n)
	}
	if n := w.metrics.Get("DriftRepaired", obs.D("Function", reconcile.Function), obs.D("Kind", converge.DriftPolicyDetached)); n != 2 {
		t.Errorf("DriftRepaired{policy_detached} = %v", n)
	}
	if n := w.metrics.Get("DriftUnrepaired", obs.D("Function", reconcile.Function)); n != 0 || rep.Unrepaired() != 0 {
		t.Errorf("DriftUnrepaired = %v, report %d: every finding was repaired", n, rep.Unrepaired())
	}
	// The next pass finds nothing.
	if rep := w.run(reconcile.Options{}); len(rep.Findings) != 0 || rep.Pass != 2 {
		t.Errorf("second pass: %+v, want pass 2 with no finding", rep)
	}
}

// TestDryRunChangesNothing: a dry run reports the drift, changes nothing,
// saves no position, and pages with its cursor.
func TestDryRunChangesNothing(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	for _, n := range []string{"dev-1", "dev-2", "dev-3"} {
		c := w.onboard(n)
		if err := w.reg.DetachPolicy(ctx, policy, c.ARN); err != nil {
			t.Fatal(err)
		}
	}
	before := w.reg.Snapshot()
	var found []reconcile.Finding
	cursor := ""
	for page := 1; ; page++ {
		rep := w.run(reconcile.Options{DryRun: true, Cursor: cursor, MaxChecks: 1})
		found = append(found, rep.Findings...)
		if rep.Complete {
			break
		}
		if rep.Next == "" || page > 20 {
			t.Fatalf("page %d: incomplete without a cursor: %+v", page, rep)
		}
		cursor = rep.Next
	}
	if len(found) != 3 {
		t.Errorf("found %+v, want the three detached policies", found)
	}
	if !w.reg.Snapshot().Equal(before) {
		t.Error("a dry run changed the registry")
	}
	if c, err := w.leases.LoadCursor(ctx); err != nil || c.Revision != 0 {
		t.Errorf("saved position %+v %v, want none", c, err)
	}
}

// TestResumesWhereItStopped: an invocation that reaches its deadline saves
// its position; the next goes on from there, and the pass completes.
func TestResumesWhereItStopped(t *testing.T) {
	// A device's repair takes ten calls, 3 s on this clock: the reconciler
	// starts none with less than its stop margin left.
	w := newWorld(t, func(c *reconcile.Config) { c.StopMargin = 4 * time.Second })
	ctx := context.Background()
	var certs []fleet.Certificate
	for _, n := range []string{"dev-1", "dev-2", "dev-3", "dev-4", "dev-5"} {
		c := w.onboard(n)
		if err := w.reg.DetachPolicy(ctx, policy, c.ARN); err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	// Every registry call costs 300 ms of the (test's) clock: an
	// invocation with a 5 s budget repairs a device or two.
	w.reg.SetHook(func(context.Context, string) error { w.clock.Advance(300 * time.Millisecond); return nil })
	invocations := 0
	for {
		invocations++
		if invocations > 30 {
			t.Fatal("the pass never completed")
		}
		dctx, cancel := context.WithDeadline(ctx, time.Now().Add(time.Hour))
		rep, err := w.rec.Run(deadlineAt(dctx, w.clock.Now().Add(5*time.Second)), reconcile.Options{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if rep.Complete {
			break
		}
	}
	if invocations < 3 {
		t.Errorf("the pass completed in %d invocations; want the budget to cut it", invocations)
	}
	for i, c := range certs {
		if !w.live([]string{"dev-1", "dev-2", "dev-3", "dev-4", "dev-5"}[i], c) {
			t.Errorf("device %d not repaired", i+1)
		}
	}
}

// deadlineAt is ctx whose Deadline answers at (the reconciler stops by the
// clock it is given, against that deadline).
func deadlineAt(ctx context.Context, at time.Time) context.Context { return deadlineCtx{ctx, at} }

type deadlineCtx struct {
	context.Context
	at time.Time
}

func (d deadlineCtx) Deadline() (time.Time, bool) { return d.at, true }

// TestSpendsItsShareOfTheQuota: with a 10 TPS quota and a share of 0.5, the
// reconciler makes at most 5 DescribeCertificate calls per second.
func TestSpendsItsShareOfTheQuota(t *testing.T) {
	w := newWorld(t, func(c *reconcile.Config) {
		c.Quotas = map[string]float64{"DescribeCertificate": 10}
		c.QuotaShare = 0.5
	})
	for _, n := range []string{"dev-1", "dev-2", "dev-3", "dev-4"} {
		w.onboard(n)
	}
	var calls []time.Time
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op == "DescribeCertificate" {
			calls = append(calls, w.clock.Now())
		}
		return nil
	})
	w.run(reconcile.Options{})
	if len(calls) < 4 {
		t.Fatalf("%d DescribeCertificate calls", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].Sub(calls[i-1]); gap < 200*time.Millisecond {
			t.Errorf("calls %d and %d %s apart; the share allows one per 200ms", i-1, i, gap)
		}
	}
}

// TestConcurrentInvocationStops: an invocation whose saved position another
// invocation advanced stops with ErrConcurrentRun.
func TestConcurrentInvocationStops(t *testing.T) {
	w := newWorld(t)
	w.onboard("dev-1")
	ctx := context.Background()
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op == "DescribeThing" {
			// Another invocation saves first.
			c, err := w.leases.LoadCursor(ctx)
			if err == nil {
				_, _ = w.leases.SaveCursor(ctx, c)
			}
		}
		return nil
	})
	if _, err := w.rec.Run(ctx, reconcile.Options{}); !errors.Is(err, reconcile.ErrConcurrentRun) {
		t.Fatalf("Run: %v, want ErrConcurrentRun", err)
	}
	h := reconcile.NewHandler(w.rec)
	if _, err := h.Invoke(ctx, nil); err != nil {
		t.Errorf("Invoke of a concurrent run: %v, want a quiet end", err)
	}
}

// TestRevokedDeviceFirst: a revoked device whose certificate was re-activated
// behind the system's back is revoked again in the revocations phase.
func TestRevokedDeviceFirst(t *testing.T) {
	w := newWorld(t)
	c := w.onboard("dev-r")
	// Revoked three days ago: the pass's revocations phase, not the sweep.
	w.recordRevocation("dev-r", c, w.clock.Now().Add(-72*time.Hour))
	// The item still says ACTIVE (its write was lost); the record says
	// REVOKED; the certificate is ACTIVE.
	rep := w.run(reconcile.Options{})
	if got := kinds(rep)[converge.DriftCertificateNotRevoked+"/dev-r"]; !got {
		t.Errorf("findings %+v, want certificate_not_revoked repaired", rep.Findings)
	}
	if rep.Swept != 0 {
		t.Errorf("swept %d: a revocation three days old is the pass's", rep.Swept)
	}
	if got, _ := w.reg.CertificateByID(c.ID); got.Status != fleet.CertRevoked {
		t.Errorf("certificate %s, want REVOKED", got.Status)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	w := newWorld(t)
	for name, cfg := range map[string]reconcile.Config{
		"no registry":  {Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy},
		"no inventory": {Registry: w.reg, Leases: w.leases, Region: region, PolicyName: policy},
		"no leases":    {Registry: w.reg, Inventory: w.inv, Region: region, PolicyName: policy},
		"share above 1": {Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
			QuotaShare: 1.5},
		"no region": {Registry: w.reg, Inventory: w.inv, Leases: w.leases, PolicyName: policy},
	} {
		if _, err := reconcile.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestOneFailedCallCostsNoDevice: a transient failure of any single call a
// pass makes, to the registry, the inventory or the lease table, costs a
// retry, never a device: the pass still repairs every drift, skips nothing
// and leaves nothing unrepaired. A skipped device waits a whole pass (five
// minutes in AWS); before the reads were retried, one throttled read of a
// revoked device's item skipped it, and the simulation found its
// certificate ACTIVE past the bound (seed 2769 of make soak).
//
// The matrix: a clean pass is counted, then one world per call of the
// pass, in which that call (the nth call of its operation) fails with a
// throttling error.
func TestOneFailedCallCostsNoDevice(t *testing.T) {
	type call struct {
		source, op string
		nth        int
	}
	// drift makes five kinds of drift, at least one per phase, and returns
	// the certificates the checks look at.
	drift := func(w *world) (revoked, orphan, detached, pending fleet.Certificate) {
		ctx := context.Background()
		revoked = w.onboard("dev-r")
		w.recordRevocation("dev-r", revoked, w.clock.Now())
		detached = w.onboard("dev-b")
		if err := w.reg.DetachPolicy(ctx, policy, detached.ARN); err != nil {
			t.Fatal(err)
		}
		if _, err := w.reg.CreateThing(ctx, "stray", map[string]string{converge.ManagedByAttribute: converge.ManagedBy,
			converge.CreatedByAttribute: "jitr/gone"}); err != nil {
			t.Fatal(err)
		}
		orphan = w.connect(w.device("dev-o"))
		if err := w.reg.UpdateCertificate(ctx, orphan.ID, fleet.CertActive); err != nil {
			t.Fatal(err)
		}
		pending = w.connect(w.device("dev-p")) // its registered event lost
		w.clock.Advance(20 * time.Minute)
		return revoked, orphan, detached, pending
	}
	// hook counts the pass's calls per source and operation and fails the
	// one named by fail (none when fail.op is "").
	hook := func(counts map[string]int, source string, fail call) func(context.Context, string) error {
		return func(_ context.Context, op string) error {
			counts[source+":"+op]++
			if source == fail.source && op == fail.op && counts[source+":"+op] == fail.nth {
				return fmt.Errorf("%s: ThrottlingException (injected): %w", op, fleet.ErrThrottled)
			}
			return nil
		}
	}
	run := func(t *testing.T, fail call) (reconcile.Report, map[string]int) {
		w := newWorld(t)
		revoked, orphan, detached, pending := drift(w)
		counts := map[string]int{}
		w.reg.SetHook(hook(counts, "iot", fail))
		w.invT.SetHook(hook(counts, "inventory", fail))
		w.leaseT.SetHook(hook(counts, "leases", fail))
		rep := w.run(reconcile.Options{})
		w.reg.SetHook(nil)
		w.invT.SetHook(nil)
		w.leaseT.SetHook(nil)
		if !rep.Complete || rep.Skipped != 0 || rep.Unrepaired() != 0 {
			t.Errorf("pass complete %v, %d skipped, %d unrepaired: %+v", rep.Complete, rep.Skipped, rep.Unrepaired(), rep.Findings)
		}
		reported := map[string]bool{}
		for _, f := range rep.Findings {
			k := f.Kind + "/" + f.ThingName + "/" + f.Certificate
			if reported[k] {
				t.Errorf("finding %s reported twice", k)
			}
			reported[k] = true
		}
		for k, want := range map[string]bool{
			converge.DriftCertificateNotRevoked + "/dev-r": true,
			converge.DriftPolicyDetached + "/dev-b":        true,
			reconcile.DriftOrphanThing + "/stray":          true,
			reconcile.DriftOrphanCertificate + "/dev-o":    true,
			reconcile.DriftPendingCertificate + "/":        true,
		} {
			if got, ok := kinds(rep)[k]; !ok || got != want {
				t.Errorf("finding %s: reported %v, repaired %v", k, ok, got)
			}
		}
		if c, _ := w.reg.CertificateByID(revoked.ID); c.Status != fleet.CertRevoked {
			t.Errorf("revoked device's certificate %s", c.Status)
		}
		if !w.live("dev-b", detached) {
			t.Error("dev-b not live")
		}
		if _, err := w.reg.DescribeThing(context.Background(), "stray"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("stray thing: %v", err)
		}
		if _, ok := w.reg.CertificateByID(orphan.ID); ok {
			t.Error("orphan certificate still registered")
		}
		if c, _ := w.reg.CertificateByID(pending.ID); c.Status != fleet.CertActive {
			t.Errorf("pending certificate %s: jitr should have onboarded it", c.Status)
		}
		return rep, counts
	}
	_, counts := run(t, call{})
	if t.Failed() {
		t.FailNow()
	}
	var matrix []call
	for key, n := range counts {
		source, op, _ := strings.Cut(key, ":")
		for i := 1; i <= n; i++ {
			matrix = append(matrix, call{source, op, i})
		}
	}
	slices.SortFunc(matrix, func(a, b call) int {
		return cmp.Or(strings.Compare(a.source, b.source), strings.Compare(a.op, b.op), a.nth-b.nth)
	})
	if len(matrix) < 40 {
		t.Fatalf("a pass of %d calls: the scenario does little", len(matrix))
	}
	for _, c := range matrix {
		t.Run(fmt.Sprintf("%s:%s#%d", c.source, c.op, c.nth), func(t *testing.T) { run(t, c) })
	}
}

// TestWaitsOutAHeldLeaseOfARevokedDevice: the lease of a revoked device is
// held by a run that crashed (it lasts until its deadline plus a margin).
// The pass waits for it to end and revokes the certificate, rather than
// leaving the device ACTIVE until the next pass; an ACTIVE device's held
// lease is not waited for (its drift is left to the next pass).
func TestWaitsOutAHeldLeaseOfARevokedDevice(t *testing.T) {
	tests := []struct {
		name     string
		revoke   bool
		wantKind string
		repaired bool
		minSlept time.Duration
	}{
		{"revoked device", true, converge.DriftCertificateNotRevoked, true, 70 * time.Second},
		{"active device", false, converge.DriftPolicyDetached, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			ctx := context.Background()
			c := w.onboard("dev-1")
			if tt.revoke {
				w.recordRevocation("dev-1", c, w.clock.Now())
			} else if err := w.reg.DetachPolicy(ctx, policy, c.ARN); err != nil {
				t.Fatal(err)
			}
			now := w.clock.Now()
			if _, err := w.leases.Acquire(ctx, "dev-1", "replicate/eu-west-1/crashed", now, now.Add(70*time.Second)); err != nil {
				t.Fatal(err)
			}
			rep := w.run(reconcile.Options{})
			if len(rep.Findings) != 1 {
				t.Errorf("%d findings, want one: %+v", len(rep.Findings), rep.Findings)
			}
			if got, ok := kinds(rep)[tt.wantKind+"/dev-1"]; !ok || got != tt.repaired {
				t.Errorf("finding %s: reported %v, repaired %v; want repaired %v (%+v)", tt.wantKind, ok, got, tt.repaired, rep.Findings)
			}
			if w.slept < tt.minSlept {
				t.Errorf("slept %s, want at least %s", w.slept, tt.minSlept)
			}
			if !tt.repaired && w.slept > 10*time.Second {
				t.Errorf("slept %s for an ACTIVE device's lease", w.slept)
			}
			if got, _ := w.reg.CertificateByID(c.ID); tt.revoke && got.Status != fleet.CertRevoked {
				t.Errorf("certificate %s, want REVOKED", got.Status)
			}
		})
	}
}

// TestRevokedDeviceGetsMoreTries: a repair that fails four times in a row
// is given up for an ACTIVE device (three tries; the next pass tries
// again) but not for a revoked one (five tries), whose certificate would
// otherwise stay ACTIVE for another pass.
func TestRevokedDeviceGetsMoreTries(t *testing.T) {
	tests := []struct {
		name     string
		revoke   bool
		kind     string
		repaired bool
	}{
		{"revoked device", true, converge.DriftCertificateNotRevoked, true},
		{"active device", false, converge.DriftCertificateNotActive, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			ctx := context.Background()
			c := w.onboard("dev-1")
			if tt.revoke {
				w.recordRevocation("dev-1", c, w.clock.Now())
			} else if err := w.reg.UpdateCertificate(ctx, c.ID, fleet.CertInactive); err != nil {
				t.Fatal(err)
			}
			failures := 4
			w.reg.SetHook(func(_ context.Context, op string) error {
				if op == "UpdateCertificate" && failures > 0 {
					failures--
					return memiot.Throttled(op)
				}
				return nil
			})
			rep := w.run(reconcile.Options{})
			if got, ok := kinds(rep)[tt.kind+"/dev-1"]; !ok || got != tt.repaired {
				t.Errorf("finding %s: reported %v, repaired %v; want repaired %v (%+v)", tt.kind, ok, got, tt.repaired, rep.Findings)
			}
		})
	}
}

// TestSweepChecksRecentRevocationsWhereverThePassIs: a pass that resumes
// past its revocations phase (a large fleet's pass takes hours; a crashed
// one resumes) still revokes, at once, the certificate of a device revoked
// since; a recent revocation this region was converged to costs no
// registry call. Seed 21717 of the simulation found the first: a pass
// crashed, the region was down at the next, and the one after resumed in
// the certificates phase with a revoked device ACTIVE.
func TestSweepChecksRecentRevocationsWhereverThePassIs(t *testing.T) {
	tests := []struct {
		name       string
		converged  bool // the region converged the device to its revocation
		wantSwept  int
		wantCalls  bool // registry calls for the device
		wantStatus fleet.CertStatus
	}{
		{"revocation not applied here", false, 1, true, fleet.CertRevoked},
		{"revocation applied here", true, 0, false, fleet.CertRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			ctx := context.Background()
			c := w.onboard("dev-1")
			w.recordRevocation("dev-1", c, w.clock.Now())
			if tt.converged {
				// What replicate does when the revocation reaches the region.
				e, err := converge.New(converge.Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region,
					PolicyName: policy, Now: w.clock.Now})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.Converge(ctx, "dev-1", converge.Options{Function: "replicate"}); err != nil {
					t.Fatal(err)
				}
			}
			// The pass in progress is in its last phase.
			if _, err := w.leases.SaveCursor(ctx, fleet.ReconcileCursor{Phase: reconcile.PhaseCertificates, Pass: 7,
				PassStarted: w.clock.Now().Add(-time.Hour)}); err != nil {
				t.Fatal(err)
			}
			calls := 0
			w.reg.SetHook(func(context.Context, string) error { calls++; return nil })
			rep := w.run(reconcile.Options{})
			if rep.Swept != tt.wantSwept || rep.Pass != 7 {
				t.Errorf("pass %d swept %d, want pass 7 and %d swept", rep.Pass, rep.Swept, tt.wantSwept)
			}
			if got, _ := w.reg.CertificateByID(c.ID); got.Status != tt.wantStatus {
				t.Errorf("certificate %s, want %s", got.Status, tt.wantStatus)
			}
			// The certificates phase lists one CA (two calls) and its
			// certificates (one): anything more was the sweep's.
			if more := calls > 3; more != tt.wantCalls {
				t.Errorf("%d registry calls; want calls for the device: %v", calls, tt.wantCalls)
			}
		})
	}
}
