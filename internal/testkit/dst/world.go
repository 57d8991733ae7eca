package dst

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/ingest"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/reconcile"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

// The device PKI of every simulation, fixed so that certificate ids (and so
// every order that depends on them) are the same in every run: an
// intermediate CA and device certificates dst-000…, valid 2025-2035.
var (
	//go:embed testdata/ca.pem
	caPEM string
	//go:embed testdata/devices.pem
	devicesPEM string
)

const (
	account = "123456789012"
	policy  = "mriot-device"
)

// Faults are the rates of injected failures per call.
type Faults struct {
	Throttle    float64 // a retryable throttling error
	Unavailable float64 // a retryable 5xx
	Terminal    float64 // a terminal InvalidRequest/ValidationException
	// Crash is the probability that a run dies right after one of its
	// calls (the call is chosen uniformly among its first 40).
	Crash float64
}

// Config is one simulation.
type Config struct {
	Seed    uint64
	Regions int
	Devices int
	// Active is how long devices connect and the operator acts (virtual).
	Active time.Duration
	Faults Faults
	// Outages: how many region outages happen while active.
	Outages int
	// LeaseDuration of the engine (the sim's runs have no deadline).
	LeaseDuration time.Duration
	// ReconcileEvery is the reconciler's schedule in every region.
	ReconcileEvery time.Duration
	// Bound is how long after a revocation reached a region's replica (in
	// that region's up time) its certificate may still be ACTIVE there.
	Bound time.Duration
	// Drift is how many changes someone makes behind the system's back.
	Drift int
	// Mutations break the system on purpose (tests of the simulation).
	Mutations Mutations
	// Rotation runs the certificate rotation scenario (rotation.go): zero
	// leaves it out.
	Rotation Rotation
}

// Defaults returns the configuration of the seed: a few regions and
// devices, fault rates and outages drawn from the seed.
func Defaults(seed uint64) Config {
	c := Config{Seed: seed, Regions: 3, Devices: 9, Active: 20 * time.Minute,
		LeaseDuration: converge.DefaultLeaseDuration, ReconcileEvery: 2 * time.Minute, Bound: 10 * time.Minute}
	r := newSched(seed ^ 0xfeed).rng
	c.Regions = 2 + r.IntN(3)
	c.Devices = 6 + r.IntN(10)
	// Rates of failures that outlived the SDK's retryer, per call.
	scale := []float64{0, 0.005, 0.01, 0.02}[r.IntN(4)]
	c.Faults = Faults{Throttle: scale, Unavailable: scale, Terminal: scale / 3, Crash: scale * 5}
	c.Outages = r.IntN(3)
	c.Drift = r.IntN(4)
	return c
}

// region is one region of the simulation.
type region struct {
	name string
	reg  *memiot.Registry
	inv  *memddb.Inventory
	// what the functions are given: inv and leases, or their mutations
	invPort    inventoryPort
	leasesPort leasesPort
	regPort    watched
	invT       *memddb.Table
	leases     *memddb.Leases
	leaseT     *memddb.Table
	tel        *memddb.Telemetry
	dataT      *memddb.Table
	rep        *replicate.Handler
	rec        *reconcile.Reconciler
	ing        *ingest.Handler
	down       bool
	waiting    []func() // what waits for the region to come back
	// streamSeq is the last inventory stream record handed to the Pipe.
	streamSeq int64
	// replications scheduled into this region's replicas.
	invApplies, dataApplies int
	reconciling             bool
}

// inventoryPort and leasesPort are what every function of the simulation
// uses: the fakes, or the fakes behind a mutation.
type inventoryPort interface {
	reconcile.Inventory
	api.Inventory
}

type leasesPort interface {
	reconcile.Leases
}

// device is a simulated device.
type device struct {
	name   string
	pem    string
	id     string
	doom   fleet.Status // what the operator will make of it ("" : nothing)
	doomed bool         // the operator acted
	sent   int
	// The rotation scenario: the device's CA, and its certificates.
	ca  string
	rot *rotating
}

// message is a telemetry message a region accepted (PUBACK).
type message struct {
	device, id string
	ts         int64
}

// dead is an event that exhausted its attempts.
type dead struct {
	region, fn string
	payload    []byte
	err        string
}

// Sim is one simulation.
type Sim struct {
	*sched
	cfg       Config
	metrics   *obs.Recorder
	inventory *memddb.GlobalTable
	data      *memddb.GlobalTable
	regions   []*region
	devices   []*device
	caID      string
	active    bool // devices and the operator still act
	faults    bool
	ids       int64
	dlq       []dead
	accepted  []message
	mon       *monitor
	// Overhang is the longest time (in the region's up time) a certificate
	// stayed ACTIVE in a region after the device's revocation reached it.
	Overhang time.Duration
}

// New builds the simulation of cfg.
func New(cfg Config) (*Sim, error) {
	s := &Sim{sched: newSched(cfg.Seed), cfg: cfg, metrics: obs.NewRecorder(), active: true, faults: true}
	s.mon = newMonitor(s)
	s.afterStep = s.observe
	s.crashRate = cfg.Faults.Crash
	ca, err := fleet.ParseCertificatePEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("simulation CA: %w", err)
	}
	s.caID = fleet.CertificateID(ca)
	names := make([]string, cfg.Regions)
	for i := range names {
		names[i] = []string{"eu-west-1", "us-west-2", "ap-southeast-2", "us-east-1", "eu-central-1"}[i]
	}
	s.inventory = memddb.NewGlobalTable("inventory", memddb.InventoryKey, names, memddb.WithStreamView(memddb.ViewNewImage),
		memddb.WithClock(s.clock), memddb.WithManualReplication(), memddb.InventoryIndexes)
	s.data = memddb.NewGlobalTable("data", memddb.DataKey, names, memddb.WithClock(s.clock), memddb.WithManualReplication())
	for _, n := range names {
		r, err := s.newRegion(n)
		if err != nil {
			return nil, err
		}
		s.regions = append(s.regions, r)
	}
	pems := strings.SplitAfter(devicesPEM, "-----END CERTIFICATE-----\n")
	for i := 0; i < cfg.Devices && i < len(pems); i++ {
		x, err := fleet.ParseCertificatePEM(pems[i])
		if err != nil {
			return nil, fmt.Errorf("simulation device %d: %w", i, err)
		}
		d := &device{name: x.Subject.CommonName, pem: pems[i], id: fleet.CertificateID(x), ca: s.caID}
		switch s.rng.IntN(3) {
		case 0:
			d.doom = fleet.StatusRevoked
		case 1:
			d.doom = fleet.StatusDecommissioned
		}
		s.devices = append(s.devices, d)
	}
	if cfg.Rotation.Grace > 0 {
		if err := s.newRotation(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Sim) clock() time.Time { return s.now }

func (s *Sim) newID() string {
	s.ids++
	return fmt.Sprintf("run%06d", s.ids)
}

func (s *Sim) newRegion(name string) (*region, error) {
	ctx := context.Background()
	r := &region{name: name}
	r.reg = memiot.New(name, account, memiot.WithClock(s.clock))
	if _, err := r.reg.RegisterCACertificate(ctx, caPEM, true); err != nil {
		return nil, err
	}
	if err := r.reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		return nil, err
	}
	r.reg.SetHook(s.hook(r, "iot"))
	r.reg.SetAfter(s.afterCall(r, "iot"))
	r.invT = s.inventory.Replica(name)
	r.invT.SetHook(s.hook(r, "inventory"))
	r.invT.SetAfter(s.afterCall(r, "inventory"))
	r.inv = memddb.NewInventory(r.invT)
	lt := memddb.NewGlobalTable("leases-"+name, memddb.LeasesKey, []string{name}, memddb.WithClock(s.clock), memddb.WithManualReplication())
	r.leaseT = lt.Replica(name)
	r.leaseT.SetHook(s.hook(r, "leases"))
	r.leaseT.SetAfter(s.afterCall(r, "leases"))
	r.leases = memddb.NewLeases(r.leaseT)
	r.invPort, r.leasesPort = r.inv, r.leases
	if s.cfg.Mutations.NoRevocationRecords {
		r.invPort = noRecords{r.inv}
	}
	if s.cfg.Mutations.NoRetirement {
		r.invPort = noRetirement{r.invPort}
	}
	if s.cfg.Mutations.NoLeases {
		r.leasesPort = anyLease{r.leases}
	}
	r.leasesPort = watchedLeases{leasesPort: r.leasesPort, s: s, r: r}
	r.regPort = watched{Registry: r.reg, s: s, r: r}
	r.dataT = s.data.Replica(name)
	r.dataT.SetHook(s.hook(r, "data"))
	r.dataT.SetAfter(s.afterCall(r, "data"))
	r.tel = memddb.NewTelemetry(r.dataT)
	var err error
	if r.rep, err = replicate.New(replicate.Config{Registry: r.regPort, Inventory: r.invPort, Leases: r.leasesPort, Region: name, PolicyName: policy,
		Now: s.clock, Metrics: s.metrics, Runner: s.runner(), Lease: s.lease()}); err != nil {
		return nil, err
	}
	if r.ing, err = ingest.New(ingest.Config{Telemetry: r.tel, Region: name, Now: s.clock, Metrics: s.metrics, Runner: s.runner()}); err != nil {
		return nil, err
	}
	if r.rec, err = reconcile.New(reconcile.Config{Registry: r.regPort, Inventory: r.invPort, Leases: r.leasesPort, Region: name, PolicyName: policy,
		Redriver: redriver{s: s, r: r}, Quotas: memiot.AWSDefaultQuotas, QuotaShare: 1, PendingThreshold: 10 * time.Minute,
		PageSize: 4, Lease: s.lease(), Now: s.clock, Metrics: s.metrics,
		Log: slog.New(&traceHandler{s: s.sched, prefix: name + "/reconcile"})}); err != nil {
		return nil, err
	}
	return r, nil
}

// runner: compensations get all the (virtual) time they need; the real
// timer of their budget must never fire in a simulation.
func (s *Sim) runner() saga.Runner {
	return saga.Runner{UndoBudget: 24 * time.Hour, Reserve: time.Second}
}

func (s *Sim) lease() converge.Config {
	return converge.Config{Sleep: s.sleep, NewID: s.newID, LeaseDuration: s.cfg.LeaseDuration, Deadline: virtualDeadline,
		RotationGrace: s.cfg.Rotation.Grace}
}

type deadlineKey struct{}

// withDeadline gives a task its (virtual) deadline: a Lambda invocation
// ends at its function's timeout.
func withDeadline(ctx context.Context, dl time.Time) context.Context {
	return context.WithValue(ctx, deadlineKey{}, dl)
}

func virtualDeadline(ctx context.Context) (time.Time, bool) {
	dl, ok := ctx.Value(deadlineKey{}).(time.Time)
	return dl, ok
}

// timeouts are the functions' timeouts in template.yaml.
var timeouts = map[string]time.Duration{"jitr": 30 * time.Second, "replicate": 60 * time.Second, "ingest": 30 * time.Second}

// jitr is a fresh jitr handler, as a fresh Lambda instance has: no
// in-process memory of earlier events.
func (s *Sim) jitr(r *region) (*jitr.Handler, error) {
	return jitr.New(jitr.Config{Registry: r.regPort, Inventory: r.invPort, Leases: r.leasesPort, Region: r.name, PolicyName: policy,
		Now: s.clock, Metrics: s.metrics, Runner: s.runner(), Lease: s.lease()})
}

// redriver re-drives a pending certificate through a fresh jitr handler (the
// reconcile Lambda builds its own jitr handler).
type redriver struct {
	s *Sim
	r *region
}

func (d redriver) Handle(ctx context.Context, ev fleet.CertificateRegisteredEvent) error {
	h, err := d.s.jitr(d.r)
	if err != nil {
		return err
	}
	return h.Handle(ctx, ev)
}

// hook is every fake's before-call hook: the scheduling point. The call
// waits its latency (anything may happen meanwhile), then may fail.
func (s *Sim) hook(r *region, service string) func(ctx context.Context, op string) error {
	return func(ctx context.Context, op string) error {
		if s.over {
			return errOver
		}
		if s.cur == nil {
			return nil // the simulation itself looking (setup, checks)
		}
		s.yield(s.between(time.Millisecond, 40*time.Millisecond), s.cur.name+" "+service+":"+op)
		if !s.faults {
			return nil
		}
		f := s.cfg.Faults
		switch x := s.rng.Float64(); {
		case x < f.Throttle:
			s.log("fault %s %s:%s throttled", s.cur.name, service, op)
			return fmt.Errorf("%s: ThrottlingException (simulated): %w", op, fleet.ErrThrottled)
		case x < f.Throttle+f.Unavailable:
			s.log("fault %s %s:%s unavailable", s.cur.name, service, op)
			return fmt.Errorf("%s: ServiceUnavailable (simulated): %w", op, fleet.ErrUnavailable)
		case x < f.Throttle+f.Unavailable+f.Terminal:
			s.log("fault %s %s:%s terminal", s.cur.name, service, op)
			return fmt.Errorf("%s: InvalidRequestException (simulated): %w", op, fleet.ErrInvalid)
		}
		return nil
	}
}

// afterCall is every fake's after-call hook: the run may die right after a
// successful call, and the monitor looks at what changed.
func (s *Sim) afterCall(r *region, service string) func(ctx context.Context, op string) {
	return func(ctx context.Context, op string) {
		if s.over || s.cur == nil {
			return
		}
		if service == "iot" {
			s.mon.registryChanged(r, op, false)
		}
		t := s.cur
		t.calls++
		if s.faults && t.calls == t.crashAt {
			s.log("crash %s after %s:%s", t.name, service, op)
			s.crash()
		}
	}
}

// lambda invokes fn of region r asynchronously, as Lambda does for the IoT
// rule's and EventBridge's invocations: a failed attempt is retried after a
// minute, then two; a crashed one after its timeout too; the third failure
// goes to the on-failure destination. Nothing runs in a region that is down.
func (s *Sim) lambda(r *region, fn string, payload []byte, attempt int) {
	if r.down {
		r.waiting = append(r.waiting, func() { s.lambda(r, fn, payload, attempt) })
		return
	}
	name := fmt.Sprintf("%s/%s#%d", r.name, fn, s.nextRun())
	dl := s.now.Add(timeouts[fn])
	s.spawn(name, func(ctx context.Context) error {
		h, err := s.handler(r, fn)
		if err != nil {
			return err
		}
		_, err = h.Invoke(withDeadline(ctx, dl), payload)
		return err
	}, func(err error, crashed bool) {
		if err == nil && !crashed {
			return
		}
		if attempt >= 3 {
			msg := "crashed"
			if err != nil {
				msg = err.Error()
			}
			s.log("dead letter %s %s", r.name, fn)
			s.dlq = append(s.dlq, dead{region: r.name, fn: fn, payload: payload, err: msg})
			return
		}
		delay := time.Duration(attempt) * time.Minute
		if crashed {
			delay += timeouts[fn] // the function's timeout ran out first
		}
		s.after(delay, "retry "+name, func() { s.lambda(r, fn, payload, attempt+1) })
	})
}

func (s *Sim) nextRun() int64 { s.ids++; return s.ids }

func (s *Sim) handler(r *region, fn string) (interface {
	Invoke(context.Context, []byte) ([]byte, error)
}, error) {
	switch fn {
	case "jitr":
		return s.jitr(r)
	case "replicate":
		return r.rep, nil
	case "ingest":
		return r.ing, nil
	}
	return nil, fmt.Errorf("no function %s", fn)
}

// Run runs the simulation: activity, then quiescence, then the checks. It
// returns the violations found (none: the system held its promises).
func (s *Sim) Run() ([]string, error) {
	defer s.end()
	s.start()
	if err := s.run(Epoch.Add(s.cfg.Active)); err != nil {
		return nil, err
	}
	s.active = false
	s.log("quiescence")
	for _, r := range s.regions {
		if r.down {
			s.up(r)
		}
	}
	if err := s.drain(); err != nil {
		return nil, err
	}
	s.faults = false
	s.crashRate = 0
	// Leases of crashed runs expire. The operator redrives the telemetry
	// that ingest dead-lettered; what jitr and replicate dead-lettered is
	// left to the reconciler.
	s.now = s.now.Add(s.cfg.LeaseDuration + time.Second)
	dlq := s.dlq
	s.dlq = nil
	for _, d := range dlq {
		if d.fn != "ingest" {
			s.log("dead letter %s %s left to the reconciler", d.region, d.fn)
			continue
		}
		s.log("redrive %s %s", d.region, d.fn)
		s.lambda(s.region(d.region), d.fn, d.payload, 1)
	}
	if err := s.drain(); err != nil {
		return nil, err
	}
	// Reconcile every region until a pass finds nothing (at most three).
	for round := 1; !s.cfg.Mutations.NoReconciler; round++ {
		found := 0
		for _, r := range s.regions {
			rep, err := s.reconcileOnce(r)
			if err != nil {
				return nil, err
			}
			found += len(rep.Findings)
		}
		if err := s.drain(); err != nil {
			return nil, err
		}
		if found == 0 {
			break
		}
		if round == 3 {
			return append(s.check(), fmt.Sprintf("drift stays unrepaired after %d reconcile rounds", round)), nil
		}
	}
	return s.check(), nil
}

// drain runs until nothing is left to do, observing streams and
// replication after every step.
func (s *Sim) drain() error { return s.run(time.Time{}) }

func (s *Sim) region(name string) *region {
	for _, r := range s.regions {
		if r.name == name {
			return r
		}
	}
	return nil
}

// start schedules the activity: devices connecting, the operator, outages,
// the reconciler's schedule, and the observer of streams and replication.
func (s *Sim) start() {
	for _, d := range s.devices {
		s.after(s.between(0, s.cfg.Active/2), "first connect "+d.name, func() { s.connect(d) })
		if d.doom != "" && s.chance(0.5) {
			// Some at a random moment, the others the moment their item
			// appears (see observe).
			s.after(s.between(0, s.cfg.Active), "operator "+d.name, func() { s.operate(d) })
		}
	}
	for i := 0; i < s.cfg.Outages; i++ {
		r := s.regions[s.rng.IntN(len(s.regions))]
		at := s.between(0, s.cfg.Active)
		s.after(at, "outage "+r.name, func() {
			if r.down || !s.active {
				return
			}
			s.log("region %s down", r.name)
			r.down = true
			s.mon.downs[r.name] = append(s.mon.downs[r.name], interval{from: s.now})
			s.after(s.between(30*time.Second, 8*time.Minute), "recovery "+r.name, func() { s.up(r) })
		})
	}
	if !s.cfg.Mutations.NoReconciler {
		for _, r := range s.regions {
			s.scheduleReconcile(r)
		}
	}
	for i := 0; i < s.cfg.Drift; i++ {
		s.after(s.between(0, s.cfg.Active), "console", s.console)
	}
	if s.cfg.Rotation.Grace > 0 {
		s.startRotation()
	}
}

// console is someone changing a region's registry behind the system's back,
// as with the AWS console: the drift the reconciler exists for.
func (s *Sim) console() {
	ctx := context.Background()
	r := s.regions[s.rng.IntN(len(s.regions))]
	d := s.devices[s.rng.IntN(len(s.devices))]
	c, ok := r.reg.CertificateByID(d.id)
	switch s.rng.IntN(5) {
	case 0:
		if ok {
			s.log("console %s: detach the policy of %s", r.name, d.name)
			_ = r.reg.DetachPolicy(ctx, policy, c.ARN)
		}
	case 1:
		if prs, err := r.reg.ListThingPrincipals(ctx, d.name); err == nil {
			s.log("console %s: delete the thing %s", r.name, d.name)
			for _, p := range prs {
				_ = r.reg.DetachThingPrincipal(ctx, d.name, p)
			}
			_ = r.reg.DeleteThing(ctx, d.name)
		}
	case 2:
		if ok && c.Status == fleet.CertActive {
			s.log("console %s: deactivate the certificate of %s", r.name, d.name)
			_ = r.reg.UpdateCertificate(ctx, d.id, fleet.CertInactive)
		}
	case 3:
		name := fmt.Sprintf("stray-%03d", s.rng.IntN(1000))
		s.log("console %s: a stray mriot thing %s", r.name, name)
		_, _ = r.reg.CreateThing(ctx, name, map[string]string{converge.ManagedByAttribute: converge.ManagedBy, converge.CreatedByAttribute: "jitr/stray"})
	case 4:
		if ok && c.Status == fleet.CertPendingActivation {
			s.log("console %s: activate the pending certificate of %s", r.name, d.name)
			_ = r.reg.UpdateCertificate(ctx, d.id, fleet.CertActive)
		}
	}
	s.mon.registryChanged(r, "UpdateCertificate", true)
}

func (s *Sim) up(r *region) {
	if !r.down {
		return
	}
	s.log("region %s up", r.name)
	r.down = false
	if d := s.mon.downs[r.name]; len(d) > 0 {
		d[len(d)-1].to = s.now
	}
	waiting := r.waiting
	r.waiting = nil
	for _, fn := range waiting {
		s.after(s.between(0, 2*time.Second), "resume in "+r.name, fn)
	}
}

func (s *Sim) scheduleReconcile(r *region) {
	s.after(s.cfg.ReconcileEvery, "reconcile "+r.name, func() {
		if !s.active {
			return
		}
		if !r.down && !r.reconciling {
			r.reconciling = true
			s.spawn(fmt.Sprintf("%s/reconcile#%d", r.name, s.nextRun()), func(ctx context.Context) error {
				rep, err := r.rec.Run(ctx, reconcile.Options{})
				s.logReport(r, rep)
				return err
			}, func(error, bool) { r.reconciling = false })
		}
		s.scheduleReconcile(r)
	})
}

// reconcileOnce runs a whole pass in r (at quiescence) and returns its report.
func (s *Sim) reconcileOnce(r *region) (reconcile.Report, error) {
	var rep reconcile.Report
	var rerr error
	s.spawn(fmt.Sprintf("%s/reconcile#%d", r.name, s.nextRun()), func(ctx context.Context) error {
		rep, rerr = r.rec.Run(ctx, reconcile.Options{})
		return rerr
	}, nil)
	if err := s.drain(); err != nil {
		return rep, err
	}
	if rerr != nil {
		return rep, fmt.Errorf("final reconcile of %s: %w", r.name, rerr)
	}
	s.logReport(r, rep)
	return rep, nil
}

func (s *Sim) logReport(r *region, rep reconcile.Report) {
	s.log("reconcile %s pass %d: checked %d, skipped %d, complete %v", r.name, rep.Pass, rep.Checked, rep.Skipped, rep.Complete)
	for _, f := range rep.Findings {
		s.log("reconcile %s found %s %s %s repaired=%v %s", r.name, f.Kind, f.ThingName, short(f.Certificate), f.Repaired, f.Error)
	}
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// observe looks, after every step, at the streams and the replication
// queues: new stream records go through the Pipe to replicate; new
// replications get their lag.
func (s *Sim) observe() {
	for _, r := range s.regions {
		recs, seq := r.invT.StreamSince(r.streamSeq)
		r.streamSeq = seq
		for _, rec := range recs {
			s.pipe(r, rec)
		}
		for q := r.invT.Queued(); r.invApplies < q; r.invApplies++ {
			s.replicate(r, r.invT)
		}
		for q := r.dataT.Queued(); r.dataApplies < q; r.dataApplies++ {
			s.replicate(r, r.dataT)
		}
	}
}

// replicate applies the oldest replication queued into r's replica t after
// a lag; a region that is down receives nothing until it is back.
func (s *Sim) replicate(r *region, t *memddb.Table) {
	var apply func()
	apply = func() {
		if r.down {
			r.waiting = append(r.waiting, apply)
			return
		}
		t.ApplyNext()
		if t == r.invT {
			r.invApplies--
		} else {
			r.dataApplies--
		}
	}
	s.after(s.between(50*time.Millisecond, 5*time.Second), "replicate into "+r.name, apply)
}

// pipe hands an inventory stream record of r to replicate in r, through
// the EventBridge Pipe and bus: asynchronously, sometimes twice.
func (s *Sim) pipe(r *region, rec events.DynamoDBEventRecord) {
	s.mon.streamRecord(r, rec)
	detail, _ := json.Marshal(rec)
	payload, _ := json.Marshal(events.EventBridgeEvent{Version: "0", ID: rec.EventID, DetailType: "DeviceInventoryChange",
		Source: "mriot.inventory", AccountID: account, Time: s.now, Region: r.name, Resources: []string{}, Detail: detail})
	copies := 1
	if s.faults && s.chance(0.2) {
		copies = 2 // EventBridge delivers at least once
	}
	for range copies {
		s.after(s.between(10*time.Millisecond, 8*time.Second), "pipe "+r.name, func() { s.lambda(r, "replicate", payload, 1) })
	}
	// The operator acts on a doomed device the moment its item appears.
	if name := rec.Change.Keys[ddbitem.AttrThingName].String(); rec.EventName == "INSERT" {
		for _, d := range s.devices {
			if d.name == name && d.doom != "" && !d.doomed && s.active {
				s.after(s.between(0, 800*time.Millisecond), "operator "+d.name, func() { s.operate(d) })
			}
		}
	}
}

// upRegion picks a random region that is up (nil: none).
func (s *Sim) upRegion() *region {
	var up []*region
	for _, r := range s.regions {
		if !r.down {
			up = append(up, r)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[s.rng.IntN(len(up))]
}

// connect is one connection attempt of d through the global endpoint: to a
// region that is up, as IoT Core would answer it there.
func (s *Sim) connect(d *device) {
	if !s.active {
		return
	}
	next := s.between(200*time.Millisecond, 5*time.Second) // onboarding: the device keeps trying
	defer func() { s.after(next, "connect "+d.name, func() { s.connect(d) }) }()
	r := s.upRegion()
	if r == nil {
		return
	}
	pem, id, caID := d.pem, d.id, d.ca
	if d.rot != nil {
		pem, id, caID = s.presented(d)
	}
	c, ok := r.reg.CertificateByID(id)
	if !ok {
		var err error
		if c, _, err = r.reg.AutoRegister(context.Background(), pem); err != nil {
			s.log("connect %s in %s: %v", d.name, r.name, err)
			return
		}
	}
	switch c.Status {
	case fleet.CertPendingActivation:
		// IoT Core drops the connection and publishes the registered event.
		s.log("connect %s in %s: pending, registered event", d.name, r.name)
		ev, _ := json.Marshal(map[string]any{"certificateId": c.ID, "caCertificateId": caID, "timestamp": s.now.UnixMilli(),
			"certificateStatus": "PENDING_ACTIVATION", "awsAccountId": account, "certificateRegistrationTimestamp": nil})
		s.after(s.between(5*time.Millisecond, 500*time.Millisecond), "rule jitr "+r.name, func() { s.lambda(r, "jitr", ev, 1) })
	case fleet.CertActive:
		if !slices.Contains(r.reg.PoliciesForPrincipal(c.ARN), policyDocument) || !slices.Contains(r.reg.ThingsForPrincipal(c.ARN), d.name) {
			s.log("connect %s in %s: refused (not authorized)", d.name, r.name)
			return
		}
		s.mon.connected(r, d)
		s.publish(r, d)
		next = s.between(5*time.Second, 40*time.Second)
	default:
		s.log("connect %s in %s: refused (%s)", d.name, r.name, c.Status)
	}
}

// policyDocument is the device policy's document (PoliciesForPrincipal
// returns documents).
const policyDocument = `{"Version":"2012-10-17","Statement":[]}`

// publish is a QoS 1 message of a connected device: accepted by the
// region (PUBACK), then handed to the data rule and ingest.
func (s *Sim) publish(r *region, d *device) {
	d.sent++
	id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", s.rng.Uint32(), s.rng.IntN(1<<16), s.rng.IntN(1<<12), s.rng.IntN(1<<12), s.rng.Int64N(1<<48))
	m := message{device: d.name, id: id, ts: s.now.UnixMilli()}
	s.accepted = append(s.accepted, m)
	ev, _ := json.Marshal(map[string]any{"message": map[string]any{"n": d.sent}, "device": d.name, "ts": m.ts, "id": id})
	s.after(s.between(5*time.Millisecond, 200*time.Millisecond), "rule data "+r.name, func() { s.lambda(r, "ingest", ev, 1) })
}

// operate is the operator revoking or decommissioning d through the fleet
// API of a region that is up.
func (s *Sim) operate(d *device) {
	if d.doomed || !s.active {
		return
	}
	r := s.upRegion()
	if r == nil {
		s.after(time.Minute, "operator "+d.name, func() { s.operate(d) })
		return
	}
	verb := "revoke"
	if d.doom == fleet.StatusDecommissioned {
		verb = "decommission"
	}
	s.spawn(fmt.Sprintf("%s/api-%s-%s#%d", r.name, verb, d.name, s.nextRun()), func(ctx context.Context) error {
		h, err := s.apiHandler(r)
		if err != nil {
			return err
		}
		req := httptest.NewRequest(http.MethodPost, "/devices/"+d.name+"/"+verb, nil).WithContext(ctx)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		body, _ := io.ReadAll(w.Result().Body)
		switch w.Code {
		case http.StatusAccepted, http.StatusOK:
			d.doomed = true
			s.log("operator %s %s: %d", verb, d.name, w.Code)
			return nil
		case http.StatusNotFound:
			return nil // not onboarded yet: the operator tries again when its item appears
		}
		return fmt.Errorf("%s %s: %d %s", verb, d.name, w.Code, strings.TrimSpace(string(body)))
	}, func(err error, crashed bool) {
		if (err != nil || crashed) && !d.doomed {
			s.after(s.between(time.Second, 30*time.Second), "operator again "+d.name, func() { s.operate(d) })
		}
	})
}

// apiHandler is the fleet API of region r (the API Lambda of its stack):
// its inventory replica and every region's registry.
func (s *Sim) apiHandler(r *region) (http.Handler, error) {
	regs := map[string]api.RegionRegistry{}
	var names []string
	for _, x := range s.regions {
		regs[x.name] = x.reg
		names = append(names, x.name)
	}
	return api.New(api.Config{Inventory: r.invPort, Telemetry: r.tel, Registries: regs, Regions: names,
		DevicePolicyName: policy, Now: s.clock, Logger: slog.New(slog.DiscardHandler)})
}
