// Package converge brings one region's IoT registry to a device's inventory
// item. It is the only code that changes a device's registry resources: jitr,
// replicate and the reconciler all call Engine.Converge.
//
// # One writer per device per region
//
// A run first takes the device's lease in the region's lease table (a
// conditional write with an owner, an expiry and a fencing counter) and holds
// it until it is done. A run that finds the lease held waits briefly, then
// stops with a retryable error (fleet.ErrBusy) so that its event is delivered
// again; an expired lease (its holder crashed) is taken over. A holder makes
// no mutating call once its lease is within a safety margin of its expiry (it
// renews the lease long before that), and every write it makes to the lease
// table is conditional on its owner and fence, so that a holder whose lease
// was taken over can change nothing.
//
// # Converge to the latest item, then check again
//
// Under the lease the run reads the current item from the region's replica
// and converges to it: the event that triggered the run is a trigger, never
// the truth. It reads the item again right before activating a certificate
// (the moment a device gains access) and after it; when the item changed, it
// converges again (up to MaxRounds).
//
// # Revocation and decommission are absorbing
//
// The run converges to the device as its item and its revocation record
// together say (fleet.Effective): a revocation record, which only
// revocations write and nothing deletes, restricts the device whatever a
// concurrent write of its item (last writer wins across regions) says.
// A REVOKED item's certificate is revoked here, and registered here as
// REVOKED from the item's PEM when this region does not know it yet, so that
// nothing can activate it later (AWS refuses any status change of a REVOKED
// certificate, and RegisterCertificate of a known certificate). A
// DECOMMISSIONED device's certificates are revoked first, then detached, and
// its thing deleted; the REVOKED certificates stay as the registry's
// tombstone. A certificate found REVOKED here while the item says ACTIVE
// with it makes the item REVOKED ("revocation wins"): the registry's REVOKED
// state is never undone, so it is the witness of a revocation that a
// global-table last-writer-wins race may have lost.
//
// Convergence toward a more restrictive state (REVOKED, DECOMMISSIONED, item
// gone) rolls forward only: a failure is retried or finished by a later run,
// never compensated by granting access back.
//
// # Compensations are obligations
//
// Convergence toward ACTIVE is a saga whose compensations only take away.
// One that fails is recorded in the device's ledger when the lease is
// released; the next run for the device in the region finishes it before
// anything else (or finds it superseded by the current item), and so does
// the reconciler.
//
// # The ledger
//
// The lease item also keeps the region's ledger of the device: the
// certificates mriot registered or converged for it here (noted before they
// are registered, so that a run that crashes right after RegisterCertificate
// still leaves a trace), the item it last converged to, and the obligations.
package converge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Registry is what convergence needs of a region's IoT registry (see
// contract.Registry for the semantics).
type Registry interface {
	DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error)
	RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error)
	UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error
	DeleteCertificate(ctx context.Context, id string) error
	DescribeThing(ctx context.Context, name string) (fleet.Thing, error)
	CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error)
	DeleteThing(ctx context.Context, name string) error
	AttachThingPrincipal(ctx context.Context, thing, principalARN string) error
	DetachThingPrincipal(ctx context.Context, thing, principalARN string) error
	ListThingPrincipals(ctx context.Context, thing string) ([]string, error)
	AttachPolicy(ctx context.Context, policy, principalARN string) error
	DetachPolicy(ctx context.Context, policy, principalARN string) error
	ListAttachedPolicies(ctx context.Context, principalARN string) ([]string, error)
	DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error)
}

// Inventory is what convergence needs of the region's inventory replica.
type Inventory interface {
	Get(ctx context.Context, thingName string) (fleet.Device, error)
	// Create writes d if no item exists, or the item holds the same
	// certificate ACTIVE (fleet.ErrConditionFailed otherwise).
	Create(ctx context.Context, d fleet.Device) error
	// Update replaces the item if its Version is expectVersion
	// (fleet.ErrConditionFailed; fleet.ErrNotFound when absent).
	Update(ctx context.Context, d fleet.Device, expectVersion int64) error
	// DeleteVersion deletes the item only at version (absent: success;
	// another version: fleet.ErrConditionFailed).
	DeleteVersion(ctx context.Context, thingName string, version int64) error
	// Revocation returns the thing's revocation record (fleet.ErrNotFound
	// when none); Revoke records one (see fleet.Revocation).
	Revocation(ctx context.Context, thingName string) (fleet.Revocation, error)
	Revoke(ctx context.Context, r fleet.Revocation) error
}

// Leases is the region's device lease table (see contract.Leases).
type Leases interface {
	// Acquire takes the lease for owner until `until` if it is free or
	// expired at now; a held lease is a *fleet.LeaseHeldError (fleet.ErrBusy).
	Acquire(ctx context.Context, thing, owner string, now, until time.Time) (fleet.Lease, error)
	// Renew extends a held lease (fleet.ErrLeaseLost when no longer held).
	Renew(ctx context.Context, l fleet.Lease, until time.Time) (fleet.Lease, error)
	// Note adds certificate ids to the ledger (fleet.ErrLeaseLost when no
	// longer held).
	Note(ctx context.Context, l fleet.Lease, certIDs ...string) error
	// Release frees the lease and stores the ledger (fleet.ErrLeaseLost when
	// no longer held).
	Release(ctx context.Context, l fleet.Lease, ledger fleet.Ledger) error
	// Get reads a device's lease item without taking the lease
	// (fleet.ErrNotFound when there is none).
	Get(ctx context.Context, thing string) (fleet.Lease, error)
}

// Thing attributes mriot sets on the things it creates (an untyped thing may
// have three attributes).
const (
	// ManagedByAttribute = ManagedBy marks a thing mriot created: the
	// reconciler lists mriot's things with it, and a removal deletes only
	// such things when the inventory item is gone.
	ManagedByAttribute = "managedBy"
	ManagedBy          = "mriot"
	// CreatedByAttribute names the saga that created the thing: only a run
	// of that saga undoes it.
	CreatedByAttribute = "createdBy"
)

// Defaults of Config.
const (
	// DefaultLeaseDuration bounds a lease. A run whose context has a
	// deadline (a Lambda invocation) holds it only until that deadline plus
	// LeaseMargin, so that the retry of a run that crashed (Lambda retries
	// after a minute) finds it expired; a run that lives longer (the
	// reconciler) renews it.
	DefaultLeaseDuration = 90 * time.Second
	// LeaseMargin: a holder starts no mutating call with less than this left
	// of its lease (nor past its own deadline).
	LeaseMargin = 10 * time.Second
	// DefaultLeaseWait is how long a run waits for a held lease before it
	// stops with a retryable error.
	DefaultLeaseWait = 5 * time.Second
	// MaxRounds bounds the convergences of one run when the item keeps
	// changing under it; the next delivery goes on.
	MaxRounds = 4
)

// Config configures an Engine.
type Config struct {
	Registry   Registry
	Inventory  Inventory
	Leases     Leases
	Region     string
	PolicyName string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep waits d or until ctx ends (a timer when nil).
	Sleep func(ctx context.Context, d time.Duration) error
	// NewID returns a unique run id (random when nil).
	NewID func() string
	// LeaseDuration and LeaseWait: DefaultLeaseDuration, DefaultLeaseWait
	// when zero; a negative LeaseWait never waits.
	LeaseDuration time.Duration
	LeaseWait     time.Duration
	// RotationGrace is how long a rotated-out certificate stays valid
	// (DefaultRotationGrace when zero); RetireKeep how long past its grace
	// it stays named in the item (DefaultRetireKeep when zero).
	RotationGrace time.Duration
	RetireKeep    time.Duration
	// Deadline returns the run's deadline (ctx.Deadline when nil): a lease
	// lasts no longer than LeaseMargin past it.
	Deadline func(ctx context.Context) (time.Time, bool)
	Log      *slog.Logger // discarded when nil
	Metrics  obs.Metrics  // dropped when nil
	Tracer   obs.Tracer   // none when nil
	// Runner carries the saga settings; its Log, Metrics, Tracer and Now are
	// filled from the fields above when unset.
	Runner saga.Runner
}

// Engine converges devices in one region.
type Engine struct {
	reg       Registry
	inv       Inventory
	leases    Leases
	region    string
	policy    string
	now       func() time.Time
	sleep     func(ctx context.Context, d time.Duration) error
	newID     func() string
	duration  time.Duration
	wait      time.Duration
	grace     time.Duration
	keep      time.Duration
	deadline  func(ctx context.Context) (time.Time, bool)
	log       *slog.Logger
	metrics   obs.Metrics
	runner    saga.Runner
	mutate    func([]saga.Step) []saga.Step // tests only: rewrite a saga's steps
	onAcquire func(ctx context.Context)     // tests only: called with the lease held
}

// New checks cfg and returns an Engine.
func New(cfg Config) (*Engine, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("converge: no registry")
	case cfg.Inventory == nil:
		return nil, errors.New("converge: no inventory")
	case cfg.Leases == nil:
		return nil, errors.New("converge: no lease table")
	case cfg.Region == "":
		return nil, errors.New("converge: no region")
	}
	if err := fleet.ValidatePolicyName(cfg.PolicyName); err != nil {
		return nil, fmt.Errorf("converge: device policy name: %w", err)
	}
	e := &Engine{
		reg: cfg.Registry, inv: cfg.Inventory, leases: cfg.Leases, region: cfg.Region, policy: cfg.PolicyName,
		now: cfg.Now, sleep: cfg.Sleep, newID: cfg.NewID, duration: cfg.LeaseDuration, wait: cfg.LeaseWait, deadline: cfg.Deadline,
		log: cfg.Log, metrics: cfg.Metrics,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.sleep == nil {
		e.sleep = Sleep
	}
	if e.newID == nil {
		e.newID = randomID
	}
	if e.duration <= 0 {
		e.duration = DefaultLeaseDuration
	}
	if e.wait == 0 {
		e.wait = DefaultLeaseWait
	}
	if e.grace = cfg.RotationGrace; e.grace <= 0 {
		e.grace = DefaultRotationGrace
	}
	if e.keep = cfg.RetireKeep; e.keep <= 0 {
		e.keep = DefaultRetireKeep
	}
	if e.deadline == nil {
		e.deadline = func(ctx context.Context) (time.Time, bool) { return ctx.Deadline() }
	}
	if e.log == nil {
		e.log = obs.Discard()
	}
	if e.metrics == nil {
		e.metrics = obs.Nop{}
	}
	tracer := cfg.Tracer
	if tracer == nil {
		tracer = obs.NopTracer{}
	}
	e.runner = cfg.Runner.Fill(e.log, e.metrics, tracer, e.now)
	return e, nil
}

// Region is the engine's region.
func (e *Engine) Region() string { return e.region }

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Options are the particulars of one convergence.
type Options struct {
	// Function names the caller (jitr, replicate, reconcile) in run ids,
	// logs and metrics.
	Function string
	// Presented is the certificate a device just presented here (jitr): it
	// is PENDING_ACTIVATION and valid. With no inventory item the run
	// onboards the device with it (writes the item); with an item holding it
	// ACTIVE it converges; with a REVOKED or DECOMMISSIONED item it is
	// revoked too; with an ACTIVE item holding another certificate the run
	// refuses it (Result.Refused) and changes nothing.
	Presented *fleet.Certificate
	// Hints are certificate ids the trigger names (a REMOVE record's old
	// image), removed with the device's when the item is gone.
	Hints []string
	// SkipConverged returns at once when the ledger shows the region
	// converged to the current item (a duplicate or stale stream record).
	SkipConverged bool
	// NoWait gives up at once on a held lease (the reconciler tries again
	// on its next pass).
	NoWait bool
}

// Action is what a convergence did.
type Action string

// Actions.
const (
	// Unchanged: the region was converged already.
	Unchanged Action = "unchanged"
	// Converged: the region's registry was changed to match the item.
	Converged Action = "converged"
	// Onboarded: the run wrote the item of a new device and converged to it
	// (jitr with Presented).
	Onboarded Action = "onboarded"
	// Refused: the presented certificate is not the item's, which is ACTIVE,
	// and was issued no later than the item's (or was retired): nothing
	// changed; Result.Refusal says why.
	Refused Action = "refused"
	// Rotated: the presented certificate, issued after the item's, became
	// the device's current one; the previous one retires after the grace.
	Rotated Action = "rotated"
)

// Result tells what a convergence did.
type Result struct {
	Action Action
	// Item is the item converged to; Found is false when there is none.
	Item  fleet.Device
	Found bool
	// Rounds is how many times the run converged (the item changed under it
	// Rounds-1 times).
	Rounds int
	// Obligations is how many obligations of earlier runs this run finished.
	Obligations int
	// Promoted: a certificate REVOKED here made the ACTIVE item REVOKED.
	Promoted bool
	// Refusal is why a presented certificate was refused (RefusedOlder,
	// RefusedRetired) with Detail; empty unless Action is Refused.
	Refusal, Detail string
}

// Converge converges thing in the engine's region under its lease: it
// finishes the obligations earlier runs left, then converges to the current
// item, again while the item changes under it. A held lease is a retryable
// error (fleet.ErrBusy), as is an item that kept changing for MaxRounds.
func (e *Engine) Converge(ctx context.Context, thing string, o Options) (Result, error) {
	if err := fleet.ValidateThingName(thing); err != nil {
		return Result{}, fmt.Errorf("converge: %w", err)
	}
	if o.Function == "" {
		o.Function = "converge"
	}
	if o.SkipConverged && o.Presented == nil && len(o.Hints) == 0 {
		if res, ok, err := e.converged(ctx, thing); err != nil || ok {
			return res, err
		}
	}
	owner := o.Function + "/" + e.region + "/" + e.newID()
	log := e.log.With(slog.String("thingName", thing), slog.String("region", e.region), slog.String("run", owner))
	l, err := e.acquire(ctx, log, thing, owner, o)
	if err != nil {
		return Result{}, err
	}
	r := &run{e: e, o: o, log: log, thing: thing, lease: l, ledger: l.Ledger, certs: map[string]fleet.Certificate{}}
	if o.Presented != nil {
		r.certs[o.Presented.ID] = *o.Presented
	}
	if e.onAcquire != nil {
		e.onAcquire(ctx)
	}
	res, err := r.converge(ctx)
	if rerr := r.release(ctx); rerr != nil && err == nil {
		err = rerr
	}
	return res, err
}

// converged reports, without taking the lease, whether the region's ledger
// shows it converged to the current item with nothing left to finish (a
// duplicate or stale record: two reads and no write). The ledger is written
// only when a run releases the lease, so a run in progress does not make it
// match a version it has not finished.
func (e *Engine) converged(ctx context.Context, thing string) (Result, bool, error) {
	l, err := e.leases.Get(ctx, thing)
	if errors.Is(err, fleet.ErrNotFound) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("read the lease of %s in %s: %w", thing, e.region, err)
	}
	if len(l.Ledger.Obligations) > 0 || l.Ledger.Converged.Version == 0 {
		return Result{}, false, nil
	}
	item, found, _, err := e.read(ctx, thing)
	if err != nil || !found || !l.Ledger.Converged.Matches(item) {
		return Result{}, false, err
	}
	if retireDue(item, l.Ledger, e.now()) {
		return Result{}, false, nil // a certificate to retire here: converge
	}
	return Result{Action: Unchanged, Item: item, Found: true}, true, nil
}

// acquire takes thing's lease, waiting up to the lease wait while another
// run holds it.
func (e *Engine) acquire(ctx context.Context, log *slog.Logger, thing, owner string, o Options) (fleet.Lease, error) {
	wait := e.wait
	if o.NoWait || wait < 0 {
		wait = 0
	}
	giveUp := e.now().Add(wait)
	backoff := 50 * time.Millisecond
	for {
		now := e.now()
		l, err := e.leases.Acquire(ctx, thing, owner, now, e.until(ctx, now))
		if err == nil {
			return l, nil
		}
		var held *fleet.LeaseHeldError
		if !errors.As(err, &held) {
			return fleet.Lease{}, fmt.Errorf("take the lease on %s in %s: %w", thing, e.region, err)
		}
		if e.now().Add(backoff).After(giveUp) {
			e.metrics.Count("LeaseContended", 1, obs.D("Function", o.Function))
			log.InfoContext(ctx, "device is being converged by another run; retry later",
				slog.String("holder", held.Owner), slog.Time("until", held.Until))
			return fleet.Lease{}, fmt.Errorf("converge %s in %s: %w", thing, e.region, err)
		}
		if err := e.sleep(ctx, backoff); err != nil {
			return fleet.Lease{}, fmt.Errorf("wait for the lease on %s: %w: %w", thing, fleet.ErrBusy, err)
		}
		backoff = min(2*backoff, time.Second)
	}
}

// until is when a lease taken or renewed at now ends: after the lease
// duration, or LeaseMargin after the run's deadline if that comes first.
func (e *Engine) until(ctx context.Context, now time.Time) time.Time {
	until := now.Add(e.duration)
	if dl, ok := e.deadline(ctx); ok && dl.Add(e.margin()).Before(until) {
		until = dl.Add(e.margin())
	}
	return until
}

// margin is how close to its expiry a lease may be for its holder to start a
// mutating call.
func (e *Engine) margin() time.Duration { return min(LeaseMargin, e.duration/6) }

// run is one convergence of one device under its lease.
type run struct {
	e      *Engine
	o      Options
	log    *slog.Logger
	thing  string
	lease  fleet.Lease
	ledger fleet.Ledger
	// lost is set once the lease is known to be lost: nothing more is written.
	lost bool
	// certs are the certificates this run described, registered or changed,
	// by id: what a later round knows without asking again.
	certs map[string]fleet.Certificate
	// revokedCert is the certificate of the device's revocation record.
	revokedCert string
	// refused and refusal say why a presented certificate was refused.
	refused, refusal string
	// rotated: this run rotated the item to the presented certificate.
	rotated bool
}

// guard is called before every mutating call: it renews the lease once half
// of it is spent (when renewing extends it) and refuses the call
// (fleet.ErrLeaseLost) when the lease is lost or about to expire.
func (r *run) guard(ctx context.Context) error {
	if r.lost {
		return fmt.Errorf("%s no longer holds the lease on %s: %w", r.lease.Owner, r.thing, fleet.ErrLeaseLost)
	}
	now := r.e.now()
	left := r.lease.Until.Sub(now)
	if until := r.e.until(ctx, now); left < r.e.duration/2 && until.Sub(r.lease.Until) > r.e.margin() {
		l, err := r.e.leases.Renew(ctx, r.lease, until)
		switch {
		case err == nil:
			r.lease = l
			left = l.Until.Sub(now)
		case errors.Is(err, fleet.ErrLeaseLost):
			r.lost = true
			r.e.metrics.Count("LeaseLost", 1, obs.D("Function", r.o.Function))
			return fmt.Errorf("renew the lease on %s: %w", r.thing, err)
		default:
			r.log.WarnContext(ctx, "renewing the lease failed", slog.String("error", err.Error()), slog.Duration("left", left))
		}
	}
	if left < r.e.margin() {
		return fmt.Errorf("the lease on %s expires in %s: %w", r.thing, left, fleet.ErrLeaseLost)
	}
	return nil
}

// note records certificate ids in the ledger before the run registers or
// converges them, so that a crash right after leaves a trace.
func (r *run) note(ctx context.Context, ids ...string) error {
	var missing []string
	for _, id := range ids {
		if id != "" && !contains(r.ledger.Certificates, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := r.guard(ctx); err != nil {
		return err
	}
	if err := r.e.leases.Note(ctx, r.lease, missing...); err != nil {
		if errors.Is(err, fleet.ErrLeaseLost) {
			r.lost = true
		}
		return fmt.Errorf("note certificates of %s: %w", r.thing, err)
	}
	r.ledger = r.ledger.WithCertificates(missing...)
	return nil
}

// release frees the lease with the ledger; a transient failure is retried a
// few times. Obligations that cannot be recorded are logged in full.
func (r *run) release(ctx context.Context) error {
	if r.lost {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = r.e.leases.Release(ctx, r.lease, r.ledger); err == nil || !fleet.IsTransient(err) || errors.Is(err, fleet.ErrLeaseLost) {
			break
		}
		_ = r.e.sleep(ctx, time.Duration(attempt)*100*time.Millisecond)
	}
	if err == nil {
		return nil
	}
	attrs := []any{slog.String("error", err.Error())}
	if len(r.ledger.Obligations) > 0 {
		attrs = append(attrs, slog.Any("obligations", r.ledger.Obligations))
		r.e.metrics.Count("ObligationUnrecorded", float64(len(r.ledger.Obligations)), obs.D("Function", r.o.Function))
	}
	r.log.ErrorContext(ctx, "releasing the lease failed; it expires by itself", attrs...)
	return fmt.Errorf("release the lease on %s: %w", r.thing, err)
}

// read returns the device as its item and its revocation record say
// (fleet.Effective; found=false when neither exists), and the record
// (zero when none).
func (e *Engine) read(ctx context.Context, thing string) (fleet.Device, bool, fleet.Revocation, error) {
	d, err := e.inv.Get(ctx, thing)
	found := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return fleet.Device{}, false, fleet.Revocation{}, fmt.Errorf("get inventory of %s: %w", thing, err)
	}
	rev, err := e.inv.Revocation(ctx, thing)
	revoked := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return fleet.Device{}, false, fleet.Revocation{}, fmt.Errorf("get revocation of %s: %w", thing, err)
	}
	d, found = fleet.Effective(d, found, rev, revoked)
	return d, found, rev, nil
}

// Read returns the device as its item and its revocation record say
// (fleet.Effective; found=false when neither exists).
func (e *Engine) Read(ctx context.Context, thing string) (fleet.Device, bool, error) {
	d, found, _, err := e.read(ctx, thing)
	return d, found, err
}

// read is Engine.read for the run, which remembers the revocation record's
// certificate.
func (r *run) read(ctx context.Context) (fleet.Device, bool, error) {
	d, found, rev, err := r.e.read(ctx, r.thing)
	if err == nil && rev.CertificateID != "" {
		r.revokedCert = rev.CertificateID
	}
	return d, found, err
}

// errRevokedHere: the item's certificate is REVOKED in this region while the
// item says ACTIVE. It is a superseded run: the engine makes the item
// REVOKED and converges again.
var errRevokedHere = fmt.Errorf("certificate is REVOKED in this region: %w", saga.ErrSuperseded)

// errItemChanged: the item changed since the run read it.
var errItemChanged = fmt.Errorf("inventory item changed: %w", saga.ErrSuperseded)

func (r *run) converge(ctx context.Context) (Result, error) {
	res := Result{}
	item, found, err := r.read(ctx)
	if err != nil {
		return res, err
	}
	if len(r.ledger.Obligations) > 0 {
		n, err := r.finishObligations(ctx, &item, &found)
		res.Obligations = n
		if err != nil {
			return res, err
		}
	}
	for round := 1; ; round++ {
		res.Rounds, res.Item, res.Found = round, item, found
		if round > MaxRounds {
			return res, fmt.Errorf("the inventory item of %s changed %d times during the run: %w", r.thing, MaxRounds, fleet.ErrBusy)
		}
		if r.o.SkipConverged && r.o.Presented == nil && len(r.o.Hints) == 0 && found && r.ledger.Converged.Matches(item) &&
			!retireDue(item, r.ledger, r.e.now()) {
			res.Action = stronger(res.Action, Unchanged)
			return res, nil
		}
		act, target, err := r.apply(ctx, item, found)
		superseded := false
		switch {
		case errors.Is(err, errRevokedHere):
			if err := r.promote(ctx, item); err != nil {
				return res, err
			}
			res.Promoted, superseded = true, true
		case errors.Is(err, saga.ErrSuperseded):
			r.e.metrics.Count("Superseded", 1, obs.D("Function", r.o.Function))
			superseded = true
		case err != nil:
			return res, err
		case act == Refused:
			res.Action, res.Refusal, res.Detail = Refused, r.refused, r.refusal
			return res, nil
		default:
			res.Action = stronger(res.Action, act)
		}
		// Check again after converging: an item that changed meanwhile is
		// converged to in the next round.
		again, foundAgain, err := r.read(ctx)
		if err != nil {
			return res, err
		}
		if !superseded && foundAgain == target.found && (!foundAgain || same(again, target.item)) {
			res.Item, res.Found = again, foundAgain
			r.catchUp(ctx, again)
			return res, nil
		}
		item, found = again, foundAgain
	}
}

// stronger returns the more telling of two actions of one run.
func stronger(a, b Action) Action {
	rank := map[Action]int{"": 0, Unchanged: 1, Converged: 2, Rotated: 3, Onboarded: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// same reports whether two reads of an item are the same version of it.
func same(a, b fleet.Device) bool {
	return a.Version == b.Version && a.Status == b.Status && a.CertificateID == b.CertificateID && a.OriginRegion == b.OriginRegion
}

// catchUp writes the device's item with its revocation record's status when
// the record is the more restrictive (the record's own write won, the
// item's lost a race): the item then says what the region was converged to.
// A failure is only logged: the record holds either way, and the next run
// tries again.
func (r *run) catchUp(ctx context.Context, eff fleet.Device) {
	if r.revokedCert == "" || eff.Version == 0 {
		return
	}
	item, err := r.e.inv.Get(ctx, r.thing)
	if err != nil || item.Status == eff.Status || !fleet.Restricts(eff.Status, item.Status) {
		return
	}
	if r.guard(ctx) != nil {
		return
	}
	prev := item.Version
	item.Status, item.Version, item.UpdatedAt = eff.Status, prev+1, r.e.now().UTC()
	if err := r.e.inv.Update(ctx, item, prev); err != nil {
		r.log.InfoContext(ctx, "catching the item up with its revocation record failed", slog.String("error", err.Error()))
		return
	}
	r.log.InfoContext(ctx, "item caught up with its revocation record", slog.String("status", string(item.Status)),
		slog.Int64("version", item.Version))
	r.e.metrics.Count("ItemCaughtUp", 1, obs.D("Function", r.o.Function))
}

// promote makes the ACTIVE item REVOKED at the next version: its
// certificate is REVOKED in this region, and AWS never un-revokes a
// certificate.
func (r *run) promote(ctx context.Context, item fleet.Device) error {
	if err := r.guard(ctx); err != nil {
		return err
	}
	now := r.e.now().UTC()
	if err := r.e.inv.Revoke(ctx, fleet.Revocation{ThingName: item.ThingName, Status: fleet.StatusRevoked, CertificateID: item.CertificateID,
		CertificatePEM: item.CertificatePEM, CACertificateID: item.CACertificateID, UpdatedAt: now}); err != nil {
		return fmt.Errorf("record the revocation of %s: %w", r.thing, err)
	}
	prev := item.Version
	item.Status, item.Version, item.UpdatedAt = fleet.StatusRevoked, prev+1, now
	err := r.e.inv.Update(ctx, item, prev)
	switch {
	case err == nil:
		r.log.WarnContext(ctx, "certificate is REVOKED in this region: the device is revoked everywhere (revocation wins)",
			slog.String("certificateId", item.CertificateID), slog.Int64("version", item.Version))
		r.e.metrics.Count("RevocationPromoted", 1, obs.D("Function", r.o.Function))
		return nil
	case errors.Is(err, fleet.ErrConditionFailed), errors.Is(err, fleet.ErrNotFound):
		return nil // the item changed meanwhile: converge to what it is now
	}
	return fmt.Errorf("revoke %s in the inventory: %w", r.thing, err)
}

func contains(ids []string, id string) bool {
	return slices.Contains(ids, id)
}
