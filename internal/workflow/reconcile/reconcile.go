// Package reconcile repairs drift between one region's IoT registry and the
// device inventory: the scheduled Lambda of every region (and `mriot local`'s
// periodic pass). It finds what the event-driven functions missed (an event
// that exhausted its retries, a resource changed behind the system's back, a
// compensation that failed) and repairs it through the very same convergence
// code (internal/workflow/converge) under the same per-device lease.
//
// A pass walks four phases, each in pages, saving its position in the
// region's lease table after every page so that the next invocation resumes
// where this one stopped (a pass may span many invocations):
//
//  1. obligations: devices whose ledger holds compensations a run could not
//     finish are converged (which finishes them first);
//  2. revocations: every revoked or decommissioned device (each has a
//     revocation record) is inspected read-only and, on drift, converged:
//     first, because a revoked device left active is the drift that matters
//     most;
//  3. inventory: so is every other device (its item with its record);
//  4. things: every thing mriot created (managedBy=mriot) without an item is
//     removed (converged to no item);
//  5. certificates: every certificate of an auto-registration CA is checked:
//     one left PENDING_ACTIVATION longer than a threshold is re-driven
//     through jitr; one in another state that no item names is removed.
//
// Orphans are removed rather than adopted: the inventory is the truth, and a
// device whose resources exist without an item was rolled back or lost an
// onboarding race; removing them lets it onboard again, validated, on its
// next connection, where adopting them would bypass validation (and could
// bring back a device whose revocation a race erased). REVOKED certificates
// are never removed: they are the registry's record of a revocation.
//
// The reconciler spends at most a configured share of each registry API's
// quota (it waits for tokens), stops before its invocation's deadline, and
// takes no lease it would have to wait for (a device in convergence elsewhere
// is left for the next pass).
package reconcile

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// Registry is what the reconciler needs of its region's IoT registry: what
// convergence needs, and the listings it walks.
type Registry interface {
	converge.Registry
	ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) ([]fleet.Thing, string, error)
	ListCACertificates(ctx context.Context) ([]fleet.CACertificate, error)
	ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) ([]fleet.Certificate, string, error)
}

// Inventory is what the reconciler needs of the region's inventory replica.
type Inventory interface {
	converge.Inventory
	List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error)
	Revocations(ctx context.Context, limit int, cursor string) ([]fleet.Revocation, string, error)
	// ByCertificate returns the thing whose item holds the certificate
	// (fleet.ErrNotFound when none; eventually consistent).
	ByCertificate(ctx context.Context, certID string) (string, error)
	// RevokedOn returns the things whose revocation record was written or
	// upgraded on day (UTC, 2006-01-02; eventually consistent).
	RevokedOn(ctx context.Context, day string) ([]string, error)
	// RetiringOn returns the things whose earliest retiring certificate
	// ends its grace on day (UTC; eventually consistent).
	RetiringOn(ctx context.Context, day string) ([]string, error)
}

// Leases is what the reconciler needs of the region's lease table.
type Leases interface {
	converge.Leases
	Pending(ctx context.Context, limit int, cursor string) ([]fleet.Lease, string, error)
	LoadCursor(ctx context.Context) (fleet.ReconcileCursor, error)
	SaveCursor(ctx context.Context, c fleet.ReconcileCursor) (fleet.ReconcileCursor, error)
}

// Redriver handles a registered-certificate event as jitr does
// (jitr.Handler.Handle): the reconciler re-drives a certificate left
// PENDING_ACTIVATION through it.
type Redriver interface {
	Handle(ctx context.Context, ev fleet.CertificateRegisteredEvent) error
}

// Function is the function name in logs and metric dimensions.
const Function = "reconcile"

// Phases of a pass, in order.
const (
	PhaseObligations  = "obligations"
	PhaseInventory    = "inventory"
	PhaseRevocations  = "revocations"
	PhaseThings       = "things"
	PhaseCertificates = "certificates"
)

var phases = []string{PhaseObligations, PhaseRevocations, PhaseInventory, PhaseThings, PhaseCertificates}

// Drift kinds beyond those of converge.Inspect.
const (
	DriftObligation         = "obligation"
	DriftOrphanThing        = "orphan_thing"
	DriftOrphanCertificate  = "orphan_certificate"
	DriftPendingCertificate = "pending_certificate"
)

// Defaults of Config.
const (
	DefaultPageSize         = 50
	DefaultQuotaShare       = 0.2
	DefaultPendingThreshold = 10 * time.Minute
	// DefaultStopMargin is kept from the invocation's deadline to save the
	// position and log the report.
	DefaultStopMargin = 10 * time.Second
)

// Config configures a Reconciler.
type Config struct {
	Registry  Registry
	Inventory Inventory
	Leases    Leases
	// Redriver re-drives certificates left PENDING_ACTIVATION (nil: they are
	// reported, not re-driven).
	Redriver   Redriver
	Region     string
	PolicyName string
	// Quotas are the registry operations' rates (calls per second) and
	// QuotaShare the share of them the reconciler may spend (default
	// DefaultQuotaShare); operations without a quota are not limited.
	Quotas     map[string]float64
	QuotaShare float64
	// PendingThreshold: a certificate PENDING_ACTIVATION for longer is
	// re-driven (default DefaultPendingThreshold).
	PendingThreshold time.Duration
	PageSize         int
	StopMargin       time.Duration
	// Lease tunes the convergence engine (sleep, run ids, lease duration);
	// its other fields come from this Config.
	Lease   converge.Config
	Now     func() time.Time
	Log     *slog.Logger
	Metrics obs.Metrics
	Tracer  obs.Tracer
}

// Reconciler reconciles one region.
type Reconciler struct {
	reg       Registry
	inv       Inventory
	leases    Leases
	redriver  Redriver
	engine    *converge.Engine
	region    string
	threshold time.Duration
	page      int
	margin    time.Duration
	keep      time.Duration // how long a retired certificate stays named in the item
	now       func() time.Time
	sleep     func(ctx context.Context, d time.Duration) error
	log       *slog.Logger
	metrics   obs.Metrics
}

// New checks cfg and returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	switch {
	case cfg.Registry == nil:
		return nil, errors.New("reconcile: no registry")
	case cfg.Inventory == nil:
		return nil, errors.New("reconcile: no inventory")
	case cfg.Leases == nil:
		return nil, errors.New("reconcile: no lease table")
	case cfg.QuotaShare < 0 || cfg.QuotaShare > 1:
		return nil, fmt.Errorf("reconcile: quota share %v is not in [0,1]", cfg.QuotaShare)
	}
	r := &Reconciler{
		inv: cfg.Inventory, leases: cfg.Leases, redriver: cfg.Redriver, region: cfg.Region,
		threshold: cfg.PendingThreshold, page: cfg.PageSize, margin: cfg.StopMargin,
		now: cfg.Now, log: cfg.Log, metrics: cfg.Metrics,
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = obs.Discard()
	}
	if r.metrics == nil {
		r.metrics = obs.Nop{}
	}
	if r.threshold <= 0 {
		r.threshold = DefaultPendingThreshold
	}
	if r.page <= 0 {
		r.page = DefaultPageSize
	}
	if r.margin <= 0 {
		r.margin = DefaultStopMargin
	}
	share := cfg.QuotaShare
	if share == 0 {
		share = DefaultQuotaShare
	}
	sleep := cfg.Lease.Sleep
	if sleep == nil {
		sleep = converge.Sleep
	}
	r.sleep = sleep
	r.reg = newLimited(cfg.Registry, cfg.Quotas, share, r.now, sleep)
	ec := cfg.Lease
	ec.Registry, ec.Inventory, ec.Leases, ec.Region, ec.PolicyName = r.reg, cfg.Inventory, cfg.Leases, cfg.Region, cfg.PolicyName
	ec.Now, ec.Log, ec.Metrics, ec.Tracer = r.now, r.log, r.metrics, cfg.Tracer
	var err error
	if r.engine, err = converge.New(ec); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	r.keep = r.engine.RetireKeep()
	return r, nil
}

// Registry is the reconciler's registry: the one it was given, behind its
// share of the quotas (give the same to the Redriver).
func (r *Reconciler) Registry() Registry { return r.reg }

// Finding is one drift found.
type Finding struct {
	Kind        string `json:"kind"`
	ThingName   string `json:"thingName,omitempty"`
	Certificate string `json:"certificateId,omitempty"`
	// Repaired: converged (or re-driven) and no longer found.
	Repaired bool   `json:"repaired"`
	Error    string `json:"error,omitempty"`
}

// Report is what one invocation found and did.
type Report struct {
	Region string `json:"region"`
	DryRun bool   `json:"dryRun"`
	Pass   int64  `json:"pass"`
	// Checked is how many items, things and certificates were looked at;
	// Skipped how many could not be (a failure; the next pass looks again).
	Checked int `json:"checked"`
	Skipped int `json:"skipped"`
	// Swept is how many recent revocations the sweep checked (see
	// Reconciler.Run), of Checked.
	Swept    int       `json:"swept"`
	Findings []Finding `json:"findings"`
	// Complete: the pass reached its end in this invocation.
	Complete bool `json:"complete"`
	// Next resumes a dry run where this one stopped ("" when complete).
	Next string `json:"next,omitempty"`
}

// Unrepaired counts the findings left unrepaired.
func (rep Report) Unrepaired() int {
	n := 0
	for _, f := range rep.Findings {
		if !f.Repaired {
			n++
		}
	}
	return n
}

// Options of one invocation.
type Options struct {
	// DryRun reports the drift and changes nothing (no convergence, no
	// re-drive, no saved position): GET /regions/{region}/drift.
	DryRun bool
	// Cursor resumes a dry run (Report.Next); a real run resumes from the
	// position saved in the lease table.
	Cursor string
	// MaxChecks bounds a dry run's checks (0: no bound but the deadline).
	MaxChecks int
}

// ErrConcurrentRun: another invocation advanced the saved position first.
var ErrConcurrentRun = errors.New("another reconciler invocation is running in this region")

// Run reconciles until the pass ends or the invocation's deadline (less the
// stop margin) is near, and returns what it found. A real run resumes from,
// and saves, its position in the lease table.
func (r *Reconciler) Run(ctx context.Context, o Options) (Report, error) {
	rep := Report{Region: r.region, DryRun: o.DryRun, Findings: []Finding{}}
	var cur fleet.ReconcileCursor
	if o.DryRun {
		var err error
		if cur, err = decodeCursor(o.Cursor); err != nil {
			return rep, err
		}
	} else {
		var err error
		if cur, err = r.loadCursor(ctx); err != nil {
			return rep, fmt.Errorf("load the reconciler's position: %w", err)
		}
		if cur.Phase == "" {
			cur.Pass, cur.PassStarted = cur.Pass+1, r.now().UTC()
			cur.Phase = phases[0]
		}
	}
	if cur.Phase == "" {
		cur.Phase = phases[0]
	}
	rep.Pass = cur.Pass
	p := &pass{r: r, o: o, rep: &rep, cur: cur, stopAt: r.stopAt(ctx)}
	var err error
	if !o.DryRun {
		err = p.sweep(ctx)
	}
	if err == nil {
		err = p.run(ctx)
	} else if errors.Is(err, errStop) {
		err = nil // the invocation's time went to the sweep; the pass resumes next time
	}
	if !o.DryRun {
		r.metrics.Count("DriftUnrepaired", float64(rep.Unrepaired()), obs.D("Function", Function))
		r.metrics.Count("ReconcileChecked", float64(rep.Checked), obs.D("Function", Function))
		if rep.Complete {
			r.metrics.Count("ReconcilePassCompleted", 1, obs.D("Function", Function))
		}
	}
	level := slog.LevelInfo
	if rep.Unrepaired() > 0 || err != nil {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("region", r.region), slog.Bool("dryRun", o.DryRun), slog.Int64("pass", rep.Pass),
		slog.Int("checked", rep.Checked), slog.Int("swept", rep.Swept), slog.Int("findings", len(rep.Findings)), slog.Int("unrepaired", rep.Unrepaired()),
		slog.Bool("complete", rep.Complete)}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	r.log.LogAttrs(ctx, level, "reconcile finished", attrs...)
	return rep, err
}

// loadCursor reads the saved position, retrying a transient failure.
func (r *Reconciler) loadCursor(ctx context.Context) (fleet.ReconcileCursor, error) {
	p := &pass{r: r}
	var c fleet.ReconcileCursor
	err := p.retry(ctx, func() (err error) { c, err = r.leases.LoadCursor(ctx); return })
	return c, err
}

func (r *Reconciler) stopAt(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl.Add(-r.margin)
	}
	return time.Time{}
}

// pass is one invocation's walk.
type pass struct {
	r      *Reconciler
	o      Options
	rep    *Report
	cur    fleet.ReconcileCursor
	stopAt time.Time
}

// attempts bounds the tries of the reconciler's own calls within one
// invocation (the SDK's retryer has retried each already): its listing and
// bookkeeping, each device's reads, and each device's check and repair. A
// device's own failure never stops the pass, but it costs the device a whole
// pass (minutes), so one failed read must not skip it.
const attempts = 3

// restrictedAttempts bounds the tries of a revoked or decommissioned
// device's check and repair (see item).
const restrictedAttempts = 5

// retry runs call up to attempts times while it fails (any failure: these
// are reads and bookkeeping writes, harmless to repeat), but for an answer
// (not found), a lost condition (another invocation) or the end of the
// invocation.
func (p *pass) retry(ctx context.Context, call func() error) error {
	var err error
	for i := 1; i <= attempts; i++ {
		if err = call(); err == nil || errors.Is(err, fleet.ErrNotFound) || errors.Is(err, fleet.ErrConditionFailed) || ctx.Err() != nil || i == attempts {
			return err
		}
		if serr := p.r.sleep(ctx, time.Duration(i)*200*time.Millisecond); serr != nil {
			return err
		}
	}
	return err
}

// errStop: the invocation's time (or a dry run's check budget) is spent.
var errStop = errors.New("stop")

// enough stops the invocation when its time is spent; a stop within a page
// has that page done again by the next invocation (every check is
// idempotent).
func (p *pass) enough(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return errStop
	}
	if !p.stopAt.IsZero() && !p.r.now().Before(p.stopAt) {
		return errStop
	}
	return nil
}

// another is enough before a page: a dry run's check budget stops it there
// too, so that its next cursor always moves on.
func (p *pass) another(ctx context.Context) error {
	if p.o.MaxChecks > 0 && p.rep.Checked >= p.o.MaxChecks {
		return errStop
	}
	return p.enough(ctx)
}

func (p *pass) run(ctx context.Context) error {
	for {
		i := slices.Index(phases, p.cur.Phase)
		if i < 0 {
			p.r.log.WarnContext(ctx, "unknown reconciler phase; starting a new pass", slog.String("phase", p.cur.Phase))
			p.cur.Phase, p.cur.Cursor = phases[0], ""
			continue
		}
		err := p.phase(ctx, p.cur.Phase)
		switch {
		case errors.Is(err, errStop):
			p.rep.Next = encodeCursor(p.cur)
			return nil
		case err != nil:
			return err
		}
		if i == len(phases)-1 {
			p.rep.Complete = true
			next := fleet.ReconcileCursor{Pass: p.cur.Pass, Revision: p.cur.Revision}
			return p.save(ctx, next)
		}
		if err := p.save(ctx, fleet.ReconcileCursor{Phase: phases[i+1], Pass: p.cur.Pass, PassStarted: p.cur.PassStarted, Revision: p.cur.Revision}); err != nil {
			return err
		}
	}
}

// save records the position (not in a dry run, which only moves in memory).
// A failed save does not stop the pass: it goes on from memory, and the
// next save records further (what a later invocation redoes from the last
// saved position is idempotent). Only another invocation's save stops it.
func (p *pass) save(ctx context.Context, c fleet.ReconcileCursor) error {
	if p.o.DryRun {
		p.cur = c
		return nil
	}
	var saved fleet.ReconcileCursor
	err := p.retry(ctx, func() (err error) { saved, err = p.r.leases.SaveCursor(ctx, c); return })
	switch {
	case errors.Is(err, fleet.ErrConditionFailed):
		return fmt.Errorf("save the reconciler's position: %w", ErrConcurrentRun)
	case err != nil:
		p.r.log.WarnContext(ctx, "saving the reconciler's position failed; going on", slog.String("error", err.Error()))
		p.cur = c
		return nil
	}
	p.cur = saved
	return nil
}

// A phase's position is the cursor of the page it is in and how many of
// that page's items are done ("<page cursor>\n<done>"), so that an
// invocation that stops within a page resumes after what it did: a page that
// never fits in one invocation still gets through.
func splitPosition(pos string) (string, int) {
	page, done, ok := strings.Cut(pos, "\n")
	if !ok {
		return pos, 0
	}
	n, err := strconv.Atoi(done)
	if err != nil || n < 0 {
		return page, 0
	}
	return page, n
}

func joinPosition(page string, done int) string {
	if done == 0 {
		return page
	}
	return page + "\n" + strconv.Itoa(done)
}

// walk goes through a paged listing from position start: fetch returns a
// page's size and the next page's cursor ("" at the end), each checks the
// page's i-th item. It saves the position (after prefix) after every page,
// and where it stops within a page.
func (p *pass) walk(ctx context.Context, what, prefix, start string, fetch func(cursor string) (int, string, error), each func(i int) error) error {
	page, done := splitPosition(start)
	for {
		if err := p.another(ctx); err != nil {
			return err
		}
		var n int
		var next string
		if err := p.retry(ctx, func() (err error) { n, next, err = fetch(page); return }); err != nil {
			return fmt.Errorf("list %s: %w", what, err)
		}
		for i := done; i < n; i++ {
			if err := p.enough(ctx); err != nil {
				if serr := p.position(ctx, prefix+joinPosition(page, i)); serr != nil {
					return serr
				}
				return err
			}
			if err := each(i); err != nil {
				return err
			}
		}
		done = 0
		if next == "" {
			return nil
		}
		page = next
		if err := p.position(ctx, prefix+next); err != nil {
			return err
		}
	}
}

// position saves pos as the position within the current phase.
func (p *pass) position(ctx context.Context, pos string) error {
	c := p.cur
	c.Cursor = pos
	return p.save(ctx, c)
}

func (p *pass) phase(ctx context.Context, phase string) error {
	switch phase {
	case PhaseObligations:
		return p.obligations(ctx)
	case PhaseInventory:
		return p.inventory(ctx)
	case PhaseRevocations:
		return p.revocations(ctx)
	case PhaseThings:
		return p.things(ctx)
	}
	return p.certificates(ctx)
}

// find records a finding, counts it, and returns its index in the report
// (an index, not a pointer: later findings move the slice).
func (p *pass) find(kind, thing, cert string) int {
	p.rep.Findings = append(p.rep.Findings, Finding{Kind: kind, ThingName: thing, Certificate: cert})
	if !p.o.DryRun {
		p.r.metrics.Count("DriftFound", 1, obs.D("Function", Function), obs.D("Kind", kind))
	}
	return len(p.rep.Findings) - 1
}

func (p *pass) repaired(i int) {
	f := &p.rep.Findings[i]
	f.Repaired = true
	p.r.metrics.Count("DriftRepaired", 1, obs.D("Function", Function), obs.D("Kind", f.Kind))
}

// converge converges thing without waiting for its lease. A held lease is
// no failure: the device is being converged; the next pass looks again.
func (p *pass) converge(ctx context.Context, thing string, hints ...string) error {
	_, err := p.r.engine.Converge(ctx, thing, converge.Options{Function: Function, Hints: hints, NoWait: true})
	return err
}

// convergeRetrying is converge tried again while it fails transiently.
func (p *pass) convergeRetrying(ctx context.Context, thing string, hints ...string) error {
	return p.again(ctx, func() error { return p.converge(ctx, thing, hints...) })
}

// again runs a repair up to attempts times while it fails with a transient
// error (throttled, unavailable, the lease held a moment), a second and
// then two apart, as item does with its checks. A repair is a convergence
// or a jitr run: both are idempotent and start from what they read.
func (p *pass) again(ctx context.Context, repair func() error) error {
	var err error
	for i := 1; i <= attempts; i++ {
		if err = repair(); err == nil || !fleet.IsTransient(err) || ctx.Err() != nil || i == attempts {
			return err
		}
		if serr := p.r.sleep(ctx, time.Duration(i)*time.Second); serr != nil {
			return err
		}
	}
	return err
}

func (p *pass) failed(ctx context.Context, i int, err error) {
	f := &p.rep.Findings[i]
	f.Error = err.Error()
	p.r.log.WarnContext(ctx, "drift not repaired", slog.String("kind", f.Kind), slog.String("thingName", f.ThingName),
		slog.String("certificateId", f.Certificate), slog.String("error", f.Error), slog.String("class", errClass(err)))
}

func errClass(err error) string {
	if fleet.IsTransient(err) {
		return "retryable"
	}
	return "terminal"
}

// obligations converges every device whose ledger holds obligations.
func (p *pass) obligations(ctx context.Context) error {
	var leases []fleet.Lease
	return p.walk(ctx, "pending obligations", "", p.cur.Cursor, func(cursor string) (n int, next string, err error) {
		leases, next, err = p.r.leases.Pending(ctx, p.r.page, cursor)
		return len(leases), next, err
	}, func(i int) error {
		l := leases[i]
		p.rep.Checked++
		f := p.find(DriftObligation, l.ThingName, "")
		if p.o.DryRun {
			return nil
		}
		if err := p.convergeRetrying(ctx, l.ThingName); err != nil {
			p.failed(ctx, f, err)
			return nil
		}
		var after fleet.Lease
		if err := p.retry(ctx, func() (err error) { after, err = p.r.leases.Get(ctx, l.ThingName); return }); err == nil && len(after.Ledger.Obligations) == 0 {
			p.repaired(f)
		}
		return nil
	})
}

// inventory inspects every device without a revocation record (those with
// one were, in the revocations phase) and converges the drifted ones.
func (p *pass) inventory(ctx context.Context) error {
	var items []fleet.Device
	return p.walk(ctx, "the inventory", "", p.cur.Cursor, func(cursor string) (n int, next string, err error) {
		items, next, err = p.r.inv.List(ctx, p.r.page, cursor)
		return len(items), next, err
	}, func(i int) error {
		d := items[i]
		// A device with a revocation record was checked in the revocations
		// phase (an ACTIVE item beside a record: the item's write was
		// lost); one without is checked here, a revoked item without a
		// record (written before records existed) included.
		err := p.retry(ctx, func() error { _, err := p.r.inv.Revocation(ctx, d.ThingName); return err })
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, fleet.ErrNotFound):
			p.skipped(ctx, d.ThingName, err)
			return nil
		}
		p.rep.Checked++
		return p.item(ctx, d)
	})
}

// sweepDays is how many UTC days of revocations the sweep reads: today's
// and yesterday's, so that a revocation is swept for at least 24 hours
// (the stream's retention: replicate has given up on it by then).
const sweepDays = 2

// sweep checks, before the long pass goes on, every device revoked or
// decommissioned in the last sweepDays days whose revocation this region
// has not been converged to (its ledger says so). The pass checks
// revoked devices first, but a pass over a large fleet, or one that
// crashed and resumes, takes longer than the revocation's bound: the
// sweep, at every invocation, is what bounds how long a revocation that
// replicate failed to apply stays unapplied here. A device the region was
// converged to the revocation costs two table reads and no registry call;
// drift behind the system's back on such a device is the pass's to find.
func (p *pass) sweep(ctx context.Context) error {
	if read, err := p.sweepIndex(ctx, "revocation", sweepDays, p.r.inv.RevokedOn, p.sweepOne); !read || err != nil {
		return err
	}
	return p.retirements(ctx)
}

// sweepIndex reads a sparse day index (list) for the last days UTC days,
// oldest first, and checks each device it names once (one). A failed read
// is logged and ends the sweep with read false (the long pass still checks
// every device, in its own time); err is the pass's time running out.
func (p *pass) sweepIndex(ctx context.Context, what string, days int, list func(ctx context.Context, day string) ([]string, error),
	one func(ctx context.Context, thing string)) (read bool, err error) {
	today := p.r.now().UTC()
	seen := map[string]bool{}
	for i := days - 1; i >= 0; i-- {
		day := today.AddDate(0, 0, -i).Format(time.DateOnly)
		var things []string
		if err := p.retry(ctx, func() (err error) { things, err = list(ctx, day); return }); err != nil {
			p.r.log.WarnContext(ctx, what+" sweep failed", slog.String("day", day), slog.String("error", err.Error()),
				slog.String("class", errClass(err)))
			return false, nil
		}
		for _, thing := range things {
			if seen[thing] {
				continue
			}
			seen[thing] = true
			if err := p.enough(ctx); err != nil {
				return true, err
			}
			one(ctx, thing)
		}
	}
	return true, nil
}

// sweepOne checks one recently revoked device unless this region was
// converged to its revocation.
func (p *pass) sweepOne(ctx context.Context, thing string) {
	var rec fleet.Revocation
	err := p.retry(ctx, func() (err error) { rec, err = p.r.inv.Revocation(ctx, thing); return })
	if errors.Is(err, fleet.ErrNotFound) {
		return // the index is ahead of the record's replication: the pass will see it
	}
	if err != nil {
		p.skipped(ctx, thing, err)
		return
	}
	var l fleet.Lease
	err = p.retry(ctx, func() (err error) { l, err = p.r.leases.Get(ctx, thing); return })
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		p.skipped(ctx, thing, err)
		return
	}
	if c := l.Ledger.Converged; err == nil && c.CertificateID == rec.CertificateID && fleet.Restricts(c.Status, rec.Status) {
		return // converged to it here
	}
	var d fleet.Device
	err = p.retry(ctx, func() (err error) { d, err = p.r.inv.Get(ctx, thing); return })
	found := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		p.skipped(ctx, thing, err)
		return
	}
	p.rep.Checked++
	p.rep.Swept++
	d, _ = fleet.Effective(d, found, rec, true)
	_ = p.item(ctx, d)
}

// revocations inspects every device with a revocation record: its item
// with the record, or the record alone.
func (p *pass) revocations(ctx context.Context) error {
	var recs []fleet.Revocation
	return p.walk(ctx, "revocations", "", p.cur.Cursor, func(cursor string) (n int, next string, err error) {
		recs, next, err = p.r.inv.Revocations(ctx, p.r.page, cursor)
		return len(recs), next, err
	}, func(i int) error {
		rec := recs[i]
		var d fleet.Device
		err := p.retry(ctx, func() (err error) { d, err = p.r.inv.Get(ctx, rec.ThingName); return })
		found := err == nil
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			p.skipped(ctx, rec.ThingName, err)
			return nil
		}
		p.rep.Checked++
		d, _ = fleet.Effective(d, found, rec, true)
		return p.item(ctx, d)
	})
}

// effective is the device as its item and its revocation record say.
func (p *pass) effective(ctx context.Context, d fleet.Device) (fleet.Device, error) {
	rev, err := p.r.inv.Revocation(ctx, d.ThingName)
	if errors.Is(err, fleet.ErrNotFound) {
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("get revocation of %s: %w", d.ThingName, err)
	}
	d, _ = fleet.Effective(d, true, rev, true)
	return d, nil
}

// skipped logs a device the pass could not look at (the next pass will).
func (p *pass) skipped(ctx context.Context, thing string, err error) {
	p.rep.Skipped++
	p.r.log.WarnContext(ctx, "device skipped in this pass", slog.String("thingName", thing), slog.String("error", err.Error()),
		slog.String("class", errClass(err)))
}

// item inspects one device and repairs its drift, trying up to attempts
// times when a read or the convergence fails (a moment later the registry
// or the table usually answers). What still fails is recorded (its
// findings unrepaired, with the error) or, when nothing was found yet,
// logged and skipped: the pass goes on, and the next pass looks again.
func (p *pass) item(ctx context.Context, d fleet.Device) error {
	c := check{p: p, found: map[string]int{}}
	restricted := d.Status != fleet.StatusActive
	tries := attempts
	if restricted {
		// A revoked or decommissioned device that stays ACTIVE here waits
		// for the next invocation, minutes, if this one gives up on it: it
		// gets more tries, 1, 2, 4 and 8 s apart.
		tries = restrictedAttempts
	}
	var err error
	for i := 1; i <= tries; i++ {
		var retry bool
		if retry, err = c.try(ctx, d); !retry {
			return nil
		}
		if i == tries {
			break
		}
		wait := time.Duration(i) * time.Second
		if restricted {
			wait = time.Duration(1<<(i-1)) * time.Second
		}
		if held := p.heldUntil(err); restricted && !held.IsZero() {
			// Its lease is held by another run, which may have crashed: its
			// lease lasts up to a minute and a half. Waiting for it here,
			// rather than for the next pass, keeps the revocation's bound.
			wait = max(wait, held.Sub(p.r.now())+time.Second)
		}
		if serr := p.r.sleep(ctx, wait); serr != nil {
			break
		}
	}
	if len(c.found) == 0 {
		p.skipped(ctx, d.ThingName, err)
		return nil
	}
	for _, f := range c.found {
		if !p.rep.Findings[f].Repaired {
			p.failed(ctx, f, err)
		}
	}
	return nil
}

// heldUntil is when the lease that refused err ends, if err is that
// refusal and the invocation has the time to wait for it (zero otherwise).
func (p *pass) heldUntil(err error) time.Time {
	var held *fleet.LeaseHeldError
	if !errors.As(err, &held) || (!p.stopAt.IsZero() && !held.Until.Add(time.Second).Before(p.stopAt)) {
		return time.Time{}
	}
	return held.Until
}

// check is item's record of one device's findings across its tries, by
// drift kind. A finding is recorded the moment an inspection sees it, and
// repaired the moment a later inspection no longer does: a try that
// repaired part of the drift before it failed still reports what it found
// and repaired.
type check struct {
	p     *pass
	found map[string]int // drift kind → index in the report's findings
}

// seen records the kinds an inspection of d found, and marks repaired the
// kinds found before that it no longer finds.
func (c *check) seen(d fleet.Device, kinds []string) {
	for kind, f := range c.found {
		if !slices.Contains(kinds, kind) && !c.p.rep.Findings[f].Repaired && !c.p.o.DryRun {
			c.p.repaired(f)
		}
	}
	for _, kind := range kinds {
		if _, ok := c.found[kind]; !ok {
			c.found[kind] = c.p.find(kind, d.ThingName, d.CertificateID)
		}
	}
}

// try is one try of item: retry reports a failure worth another try.
func (c *check) try(ctx context.Context, d fleet.Device) (retry bool, err error) {
	p := c.p
	d, err = p.effective(ctx, d)
	if err != nil {
		return true, err
	}
	kinds, err := p.r.engine.Inspect(ctx, d)
	if err != nil {
		return true, err
	}
	c.seen(d, kinds)
	if len(kinds) == 0 || p.o.DryRun {
		return false, nil
	}
	if err := p.converge(ctx, d.ThingName); err != nil {
		return true, err
	}
	// What is left: the device as it is now (its item may have changed
	// meanwhile), inspected again.
	var cur fleet.Device
	var ok bool
	var left []string
	err = p.retry(ctx, func() (err error) {
		if cur, ok, err = p.r.engine.Read(ctx, d.ThingName); err != nil || !ok {
			return err
		}
		left, err = p.r.engine.Inspect(ctx, cur)
		return err
	})
	switch {
	case err != nil:
		for _, f := range c.found {
			p.failed(ctx, f, fmt.Errorf("repair not verified: %w", err))
		}
	case ok:
		c.seen(cur, left)
	}
	// Gone (its item deleted meanwhile): the next pass looks at what is
	// left of it, as an orphan.
	return false, nil
}

// things removes the things mriot created that no item accounts for.
func (p *pass) things(ctx context.Context) error {
	var things []fleet.Thing
	return p.walk(ctx, "mriot's things", "", p.cur.Cursor, func(cursor string) (n int, next string, err error) {
		things, next, err = p.r.reg.ListThings(ctx, converge.ManagedByAttribute, converge.ManagedBy, p.r.page, cursor)
		return len(things), next, err
	}, func(i int) error {
		th := things[i]
		p.rep.Checked++
		var found bool
		err := p.retry(ctx, func() (err error) { _, found, err = p.r.engine.Read(ctx, th.Name); return })
		switch {
		case err != nil:
			p.skipped(ctx, th.Name, err)
			return nil
		case found:
			return nil
		}
		f := p.find(DriftOrphanThing, th.Name, "")
		if p.o.DryRun {
			return nil
		}
		if err := p.convergeRetrying(ctx, th.Name); err != nil {
			p.failed(ctx, f, err)
			return nil
		}
		if err := p.retry(ctx, func() error { _, err := p.r.reg.DescribeThing(ctx, th.Name); return err }); errors.Is(err, fleet.ErrNotFound) {
			p.repaired(f)
		}
		return nil
	})
}

// certificates walks the certificates of every auto-registration CA, in CA
// id order. The position is "<caId>/<position within the CA>".
func (p *pass) certificates(ctx context.Context) error {
	var cas []fleet.CACertificate
	if err := p.retry(ctx, func() (err error) { cas, err = p.r.reg.ListCACertificates(ctx); return }); err != nil {
		return fmt.Errorf("list CA certificates: %w", err)
	}
	ids := make([]string, 0, len(cas))
	for _, ca := range cas {
		ids = append(ids, ca.ID)
	}
	slices.Sort(ids)
	startCA, within, _ := strings.Cut(p.cur.Cursor, "/")
	for i, caID := range ids {
		if caID < startCA {
			continue
		}
		if caID != startCA {
			within = ""
		}
		var ca fleet.CACertificate
		if err := p.retry(ctx, func() (err error) { ca, err = p.r.reg.DescribeCACertificate(ctx, caID); return }); err != nil {
			return fmt.Errorf("describe CA certificate %s: %w", caID, err)
		}
		if ca.AutoRegistration {
			var certs []fleet.Certificate
			err := p.walk(ctx, "certificates of CA "+caID, caID+"/", within, func(cursor string) (n int, next string, err error) {
				certs, next, err = p.r.reg.ListCertificatesByCA(ctx, caID, p.r.page, cursor)
				return len(certs), next, err
			}, func(j int) error {
				p.rep.Checked++
				return p.certificate(ctx, caID, certs[j])
			})
			if err != nil {
				return err
			}
		}
		if i+1 < len(ids) {
			if err := p.position(ctx, ids[i+1]+"/"); err != nil {
				return err
			}
		}
	}
	return nil
}

// certificate checks one certificate of an auto-registration CA.
func (p *pass) certificate(ctx context.Context, caID string, c fleet.Certificate) error {
	switch c.Status {
	case fleet.CertRevoked:
		return nil // the registry's record of a revocation: never removed
	case fleet.CertPendingActivation:
		if c.CreatedAt.IsZero() || p.r.now().Sub(c.CreatedAt) < p.r.threshold {
			return nil // JITR is onboarding it
		}
		f := p.find(DriftPendingCertificate, "", c.ID)
		if p.o.DryRun || p.r.redriver == nil {
			return nil
		}
		ev := fleet.CertificateRegisteredEvent{
			CertificateID: c.ID, CACertificateID: caID, Timestamp: p.r.now().UnixMilli(),
			CertificateStatus:     fleet.CertPendingActivation,
			RegistrationTimestamp: fleet.FlexString(fmt.Sprint(c.CreatedAt.UnixMilli())),
		}
		if err := p.again(ctx, func() error { return p.r.redriver.Handle(ctx, ev) }); err != nil {
			p.failed(ctx, f, err)
			return nil
		}
		var after fleet.Certificate
		if err := p.retry(ctx, func() (err error) { after, err = p.r.reg.DescribeCertificate(ctx, c.ID); return }); err == nil && after.Status != fleet.CertPendingActivation {
			p.repaired(f)
		} else if err == nil {
			// Left pending by jitr (it refused the event without a verdict on
			// the certificate): reported, not repaired.
			p.rep.Findings[f].Error = "left PENDING_ACTIVATION by jitr"
		}
		return nil
	}
	if err := p.retry(ctx, func() error { _, err := p.r.inv.ByCertificate(ctx, c.ID); return err }); err == nil {
		return nil // an item holds it: the inventory phase checks its state
	} else if !errors.Is(err, fleet.ErrNotFound) {
		p.skipped(ctx, c.ID, err)
		return nil
	}
	// No item names it: the thing is its common name.
	var full fleet.Certificate
	err := p.retry(ctx, func() (err error) { full, err = p.r.reg.DescribeCertificate(ctx, c.ID); return })
	if errors.Is(err, fleet.ErrNotFound) {
		return nil
	}
	if err != nil {
		p.skipped(ctx, c.ID, err)
		return nil
	}
	thing, err := commonName(full.PEM)
	if err != nil {
		p.r.log.WarnContext(ctx, "certificate of an auto-registration CA without a thing name; left alone",
			slog.String("certificateId", c.ID), slog.String("error", err.Error()))
		return nil
	}
	// A retiring certificate in its grace is the item's too (the index
	// keys the current certificate only).
	var d fleet.Device
	err = p.retry(ctx, func() (err error) { d, err = p.r.inv.Get(ctx, thing); return })
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		p.skipped(ctx, c.ID, err)
		return nil
	}
	if _, graced := d.InGrace(c.ID, p.r.now()); err == nil && graced && d.Status == fleet.StatusActive {
		return nil
	}
	// The index is eventually consistent: the convergence reads the item
	// itself, under the lease, and removes the certificate only if the item
	// does not hold it.
	f := p.find(DriftOrphanCertificate, thing, c.ID)
	if p.o.DryRun {
		return nil
	}
	if err := p.convergeRetrying(ctx, thing, c.ID); err != nil {
		p.failed(ctx, f, err)
		return nil
	}
	var after fleet.Certificate
	err = p.retry(ctx, func() (err error) { after, err = p.r.reg.DescribeCertificate(ctx, c.ID); return })
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		p.repaired(f)
	case err == nil && after.Status == fleet.CertRevoked:
		p.repaired(f)
	case err == nil:
		var d fleet.Device
		if gerr := p.retry(ctx, func() (err error) { d, err = p.r.inv.Get(ctx, thing); return }); gerr == nil && d.CertificateID == c.ID {
			p.repaired(f) // not an orphan after all: the item holds it
		}
	}
	return nil
}

// commonName returns a certificate's subject common name, checked as a thing
// name.
func commonName(pemText string) (string, error) {
	x, err := fleet.ParseCertificatePEM(pemText)
	if err != nil {
		return "", err
	}
	if err := fleet.ValidateThingName(x.Subject.CommonName); err != nil {
		return "", err
	}
	return x.Subject.CommonName, nil
}

// encodeCursor and decodeCursor carry a dry run's position in an opaque,
// URL-safe token.
func encodeCursor(c fleet.ReconcileCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.Phase + "\n" + c.Cursor))
}

func decodeCursor(s string) (fleet.ReconcileCursor, error) {
	if s == "" {
		return fleet.ReconcileCursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return fleet.ReconcileCursor{}, fmt.Errorf("cursor: %w: %w", fleet.ErrInvalid, err)
	}
	phase, cursor, ok := strings.Cut(string(b), "\n")
	if !ok || !slices.Contains(phases, phase) {
		return fleet.ReconcileCursor{}, fmt.Errorf("cursor: unknown phase: %w", fleet.ErrInvalid)
	}
	return fleet.ReconcileCursor{Phase: phase, Cursor: cursor}, nil
}
