package dst

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

// StormConfig is an onboarding storm on the virtual clock: Devices new
// devices connect within the first second through the global endpoint
// (all to the first region), in Regions regions whose registries enforce
// AWS IoT's default control-plane quotas on the virtual clock.
//
// What is modelled, and how:
//   - the real jitr and replicate handlers, one warm instance per function
//     and region, on memiot and memddb;
//   - every registry call takes CallLatency of virtual time; DynamoDB calls
//     take none;
//   - a call over its quota gets ThrottlingException, and the SDK's standard
//     retryer retries it (5 attempts, full-jitter backoff of up to 2^n s,
//     capped at 20 s); the adaptive mode's client-side rate limiter of the
//     Lambda functions is not modelled;
//   - jitr's reserved concurrency (10): events queue, first in first out;
//     a failed invocation is retried after 1 min, then 2 min, then
//     dead-lettered (Lambda asynchronous invocation);
//   - a refused device reconnects after a full-jitter backoff from 0.5 s,
//     doubling, capped at DeviceBackoffMax, and each connection while its
//     certificate is PENDING_ACTIVATION fires the registered event again;
//   - the inventory table's stream feeds each region's replicate after
//     PipeDelay; global-table replication takes ReplicationLag; a failed
//     replicate is retried by EventBridge with a doubling backoff from 1 s
//     (10 attempts).
type StormConfig struct {
	Seed             uint64
	Devices, Regions int
	DeviceBackoffMax time.Duration // default 5 s
	CallLatency      [2]time.Duration
	PipeDelay        [2]time.Duration
	ReplicationLag   [2]time.Duration
	// Limit bounds the virtual time of the storm (default 3 × the minimal
	// floor + 10 min): a device not ACTIVE everywhere then is lost.
	Limit time.Duration
	// Devs are the devices' certificates (made by StormDevices); nil: made
	// for this run.
	Devs *StormPKI
}

// StormResult is a storm's outcome on the virtual clock.
type StormResult struct {
	Devices, Regions int
	// Calls are the successful registry calls per region and API;
	// Throttled the calls answered ThrottlingException.
	Calls, Throttled []map[string]int
	// Floor is the largest region floor (the slowest API's calls over its
	// rate); MinimalFloor that of the minimal pattern (Devices at 10 TPS).
	Floor, MinimalFloor time.Duration
	// AllActive is when every device was ACTIVE in every region;
	// RegionActive when every device was ACTIVE in each region.
	AllActive    time.Duration
	RegionActive []time.Duration
	DeadLetters  int
	Lost         int
	Connects     int
	Steps        int
	// JITRRuns are jitr's invocations, JITRFailed those that failed (and
	// were retried or dead-lettered); Metrics the functions' counts.
	JITRRuns, JITRFailed int
	Metrics              map[string]float64
}

// Ratio is AllActive over Floor; MinimalRatio over MinimalFloor.
func (r StormResult) Ratio() float64        { return r.AllActive.Seconds() / r.Floor.Seconds() }
func (r StormResult) MinimalRatio() float64 { return r.AllActive.Seconds() / r.MinimalFloor.Seconds() }

// StormPKI is a CA and device certificates for storms.
type StormPKI struct {
	CAPEM   string
	PEMs    []string
	IDs     []string
	Names   []string
	inter   *pki.Authority
	from    time.Time
	through time.Time
}

// NewStormPKI makes a CA; Grow issues devices.
func NewStormPKI() (*StormPKI, error) {
	from, to := Epoch.AddDate(-1, 0, 0), Epoch.AddDate(5, 0, 0)
	root, err := pki.NewRootWith(pki.Options{CommonName: "mriot storm root", NotBefore: from, NotAfter: to, IsCA: true, MaxPathLen: 1})
	if err != nil {
		return nil, fmt.Errorf("storm root CA: %w", err)
	}
	ca, err := root.Issue(pki.Options{CommonName: "mriot storm devices", NotBefore: from, NotAfter: to, IsCA: true})
	if err != nil {
		return nil, fmt.Errorf("storm CA: %w", err)
	}
	inter := &pki.Authority{Cert: ca.Cert, Key: ca.Key}
	return &StormPKI{CAPEM: inter.CertPEM(), inter: inter, from: from, through: to}, nil
}

// Grow issues device certificates until there are n.
func (p *StormPKI) Grow(n int) error {
	for i := len(p.PEMs); i < n; i++ {
		name := fmt.Sprintf("storm-%06d", i)
		leaf, err := p.inter.Issue(pki.Options{CommonName: name, NotBefore: p.from, NotAfter: p.through,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return fmt.Errorf("storm device %s: %w", name, err)
		}
		p.PEMs = append(p.PEMs, leaf.CertPEM())
		p.IDs = append(p.IDs, fleet.CertificateID(leaf.Cert))
		p.Names = append(p.Names, name)
	}
	return nil
}

// stormRegionNames are the regions of a storm, the first onboarding.
var stormRegionNames = []string{"eu-west-1", "us-west-2", "ap-southeast-2", "us-east-1", "eu-central-1", "ap-northeast-1"}

// MaxStormRegions is the most regions a storm runs in.
var MaxStormRegions = len(stormRegionNames)

type stormRegion struct {
	name    string
	reg     *memiot.Registry
	invT    *memddb.Table
	jitr    *jitr.Handler
	rep     *replicate.Handler
	buckets map[string]*stormBucket
	calls   map[string]int
	thr     map[string]int
	// jitr's queue and the invocations running.
	queue     []stormEvent
	running   int
	streamSeq int64
	applies   int
	// activeCount devices are ACTIVE here; all were first at activeAt.
	activeCount int
	activeAt    time.Duration
	caID        string
	// calls and throttles when every device was ACTIVE everywhere.
	callsAtAll, thrAtAll map[string]int
}

type stormEvent struct {
	payload []byte
	attempt int
}

type stormBucket struct {
	rate, tokens float64
	last         time.Time
}

type storm struct {
	*sched
	cfg     StormConfig
	devs    *StormPKI
	regions []*stormRegion
	byID    map[string]int
	bits    []uint64
	all     uint64
	done    int
	allAt   time.Duration
	dead    int
	conns   int
	active  bool
	ids     int64
	metrics *obs.Recorder
	runs    int
	failed  int
}

// jitrConcurrency is template.yaml's reserved concurrency of jitr.
const jitrConcurrency = 10

// sdkAttempts is the SDK retryer's attempts (internal/aws/awsconf).
const sdkAttempts = 5

// RunStorm runs one storm.
func RunStorm(cfg StormConfig) (StormResult, error) {
	if cfg.Devices < 1 || cfg.Regions < 1 || cfg.Regions > len(stormRegionNames) {
		return StormResult{}, fmt.Errorf("storm of %d devices in %d regions: want ≥ 1 device and 1 to %d regions", cfg.Devices, cfg.Regions, len(stormRegionNames))
	}
	if cfg.DeviceBackoffMax == 0 {
		cfg.DeviceBackoffMax = 5 * time.Second
	}
	if cfg.CallLatency == [2]time.Duration{} {
		cfg.CallLatency = [2]time.Duration{10 * time.Millisecond, 40 * time.Millisecond}
	}
	if cfg.PipeDelay == [2]time.Duration{} {
		cfg.PipeDelay = [2]time.Duration{100 * time.Millisecond, 700 * time.Millisecond}
	}
	if cfg.ReplicationLag == [2]time.Duration{} {
		cfg.ReplicationLag = [2]time.Duration{200 * time.Millisecond, 1200 * time.Millisecond}
	}
	quotas := memiot.AWSDefaultQuotas
	minimal := time.Duration(float64(cfg.Devices) / quotas["DescribeCertificate"] * float64(time.Second))
	if cfg.Limit == 0 {
		cfg.Limit = 3*minimal + 10*time.Minute
	}
	if cfg.Devs == nil {
		p, err := NewStormPKI()
		if err != nil {
			return StormResult{}, err
		}
		cfg.Devs = p
	}
	if err := cfg.Devs.Grow(cfg.Devices); err != nil {
		return StormResult{}, err
	}
	s := &storm{sched: newSched(cfg.Seed), cfg: cfg, devs: cfg.Devs, byID: make(map[string]int, cfg.Devices),
		bits: make([]uint64, cfg.Devices), all: 1<<cfg.Regions - 1, active: true, metrics: obs.NewRecorder()}
	s.maxSteps = math.MaxInt
	for i := range cfg.Devices {
		s.byID[cfg.Devs.IDs[i]] = i
	}
	names := stormRegionNames[:cfg.Regions]
	inventory := memddb.NewGlobalTable("inventory", memddb.InventoryKey, names, memddb.WithStreamView(memddb.ViewNewImage),
		memddb.WithClock(s.clock), memddb.WithManualReplication(), memddb.InventoryIndexes)
	for i, name := range names {
		r, err := s.newRegion(i, name, inventory, quotas)
		if err != nil {
			return StormResult{}, err
		}
		s.regions = append(s.regions, r)
	}
	s.afterStep = s.observe
	for i := range cfg.Devices {
		s.after(s.between(0, time.Second), "connect", func() { s.connect(i, 1) })
	}
	defer s.end()
	// Run until every device is ACTIVE everywhere (what is still queued
	// then is left: the calls counted are those that the result took), or
	// the limit.
	for s.done < cfg.Devices && s.now.Before(Epoch.Add(cfg.Limit)) && s.q.Len() > 0 {
		if err := s.run(minTime(s.now.Add(10*time.Second), Epoch.Add(cfg.Limit))); err != nil {
			return StormResult{}, fmt.Errorf("storm: %w", err)
		}
	}
	res := StormResult{Devices: cfg.Devices, Regions: cfg.Regions, MinimalFloor: minimal, AllActive: s.allAt,
		DeadLetters: s.dead, Connects: s.conns, Steps: s.steps, JITRRuns: s.runs, JITRFailed: s.failed, Metrics: s.metrics.Snapshot()}
	if s.done < cfg.Devices {
		res.AllActive = cfg.Limit
	}
	for _, r := range s.regions {
		calls, thr := r.callsAtAll, r.thrAtAll
		if calls == nil {
			calls, thr = r.calls, r.thr
		}
		res.Calls = append(res.Calls, maps.Clone(calls))
		res.Throttled = append(res.Throttled, maps.Clone(thr))
		res.Floor = max(res.Floor, floor(calls, quotas))
		res.RegionActive = append(res.RegionActive, r.activeAt)
	}
	for i := range cfg.Devices {
		if s.bits[i] != s.all {
			res.Lost++
		}
	}
	return res, nil
}

// floor is the slowest API's calls over its rate.
func floor(calls map[string]int, quotas map[string]float64) time.Duration {
	var f time.Duration
	for op, n := range calls {
		if rate := quotas[op]; rate > 0 {
			f = max(f, time.Duration(float64(n)/rate*float64(time.Second)))
		}
	}
	return f
}

func (s *storm) clock() time.Time { return s.now }

func (s *storm) newRegion(i int, name string, inventory *memddb.GlobalTable, quotas map[string]float64) (*stormRegion, error) {
	ctx := context.Background()
	r := &stormRegion{name: name, buckets: map[string]*stormBucket{}, calls: map[string]int{}, thr: map[string]int{}}
	for op, rate := range quotas {
		r.buckets[op] = &stormBucket{rate: rate, tokens: max(rate, 1)}
	}
	r.reg = memiot.New(name, account, memiot.WithClock(s.clock))
	if _, err := r.reg.RegisterCACertificate(ctx, s.devs.CAPEM, true); err != nil {
		return nil, fmt.Errorf("storm region %s: %w", name, err)
	}
	if err := r.reg.CreatePolicy(ctx, policy, policyDocument); err != nil {
		return nil, fmt.Errorf("storm region %s: %w", name, err)
	}
	r.caID = r.reg.CACertificateList()[0].ID
	r.reg.SetHook(s.quotaHook(r))
	r.reg.SetAfter(func(_ context.Context, op string) { r.calls[op]++ })
	r.reg.OnCertificateChange(func(id string, status fleet.CertStatus) { s.changed(i, id, status) })
	r.invT = inventory.Replica(name)
	inv := memddb.NewInventory(r.invT)
	leases := memddb.NewLeases(memddb.NewGlobalTable("leases-"+name, memddb.LeasesKey, []string{name}, memddb.WithClock(s.clock)).Replica(name))
	claims := memddb.NewClaims(memddb.NewGlobalTable("claims-"+name, memddb.ClaimsKey, []string{name}, memddb.WithClock(s.clock)).Replica(name))
	lease := converge.Config{Sleep: s.sleep, NewID: s.newID, LeaseDuration: converge.DefaultLeaseDuration, Deadline: virtualDeadline}
	var err error
	if r.jitr, err = jitr.New(jitr.Config{Registry: r.reg, Inventory: inv, Leases: leases, Claims: claims, Region: name, PolicyName: policy,
		Now: s.clock, Metrics: s.metrics, Runner: s.runner(), Lease: lease}); err != nil {
		return nil, fmt.Errorf("storm region %s: %w", name, err)
	}
	if r.rep, err = replicate.New(replicate.Config{Registry: r.reg, Inventory: inv, Leases: leases, Region: name, PolicyName: policy,
		Now: s.clock, Metrics: s.metrics, Runner: s.runner(), Lease: lease}); err != nil {
		return nil, fmt.Errorf("storm region %s: %w", name, err)
	}
	return r, nil
}

// runner: compensations get all the (virtual) time they need.
func (s *storm) runner() saga.Runner {
	return saga.Runner{UndoBudget: 24 * time.Hour, Reserve: time.Second}
}

func (s *storm) newID() string {
	s.ids++
	return fmt.Sprintf("run%08d", s.ids)
}

// quotaHook is the registry's before-call hook, in a task: the quota on the
// virtual clock behind the SDK's standard retryer, then the call's latency.
func (s *storm) quotaHook(r *stormRegion) func(ctx context.Context, op string) error {
	return func(ctx context.Context, op string) error {
		if s.over {
			return errOver
		}
		if s.cur == nil {
			return nil // setup and inspection
		}
		if b := r.buckets[op]; b != nil {
			for attempt := 1; !b.take(s.now); attempt++ {
				r.thr[op]++
				if attempt >= sdkAttempts {
					return memiot.Throttled(op)
				}
				ceiling := min(time.Duration(1<<attempt)*time.Second, 20*time.Second)
				s.yield(s.between(0, ceiling), "sdk retry "+op)
			}
		}
		s.yield(s.between(s.cfg.CallLatency[0], s.cfg.CallLatency[1]), op)
		return nil
	}
}

func (b *stormBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(max(b.rate, 1), b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// changed follows every certificate's status in every region.
func (s *storm) changed(region int, id string, status fleet.CertStatus) {
	i, ok := s.byID[id]
	if !ok {
		return
	}
	bit := uint64(1) << region
	before := s.bits[i]
	if status == fleet.CertActive {
		s.bits[i] |= bit
	} else {
		s.bits[i] &^= bit
	}
	if before&bit != 0 && s.bits[i]&bit == 0 {
		s.regions[region].activeCount--
	}
	r := s.regions[region]
	if before&bit == 0 && s.bits[i]&bit != 0 {
		if r.activeCount++; r.activeCount == s.cfg.Devices && r.activeAt == 0 {
			r.activeAt = s.now.Sub(Epoch)
		}
	}
	if before != s.all && s.bits[i] == s.all {
		if s.done++; s.done == s.cfg.Devices {
			s.allAt = s.now.Sub(Epoch)
			s.active = false // the devices are connected
			for _, r := range s.regions {
				r.callsAtAll, r.thrAtAll = maps.Clone(r.calls), maps.Clone(r.thr)
			}
		}
	}
}

// connect is a device's connection attempt through the global endpoint.
func (s *storm) connect(i, attempt int) {
	r := s.regions[0]
	s.conns++
	id := s.devs.IDs[i]
	c, ok := r.reg.CertificateByID(id)
	if !ok {
		var err error
		if c, _, err = r.reg.AutoRegister(context.Background(), s.devs.PEMs[i]); err != nil {
			return
		}
	}
	if c.Status == fleet.CertActive {
		return // connected; it stays
	}
	if c.Status == fleet.CertPendingActivation {
		// As IoT Core does: every event of one registration carries its
		// timestamp (the registry's creationDate).
		var registered any
		if at, ok := r.reg.CertificateRegisteredAt(c.ID); ok {
			registered = at.UnixMilli()
		}
		ev, _ := json.Marshal(map[string]any{"certificateId": c.ID, "caCertificateId": r.caID, "timestamp": s.now.UnixMilli(),
			"certificateStatus": "PENDING_ACTIVATION", "awsAccountId": account, "certificateRegistrationTimestamp": registered})
		s.after(s.between(5*time.Millisecond, 50*time.Millisecond), "rule jitr", func() { s.enqueue(r, stormEvent{payload: ev, attempt: 1}) })
	}
	if !s.active {
		return
	}
	ceiling := min(500*time.Millisecond<<min(attempt-1, 20), s.cfg.DeviceBackoffMax)
	s.after(s.between(0, ceiling), "reconnect", func() { s.connect(i, attempt+1) })
}

// enqueue puts an event in r's jitr queue and starts what the reserved
// concurrency allows.
func (s *storm) enqueue(r *stormRegion, ev stormEvent) {
	r.queue = append(r.queue, ev)
	s.dispatch(r)
}

func (s *storm) dispatch(r *stormRegion) {
	for r.running < jitrConcurrency && len(r.queue) > 0 {
		ev := r.queue[0]
		r.queue = r.queue[1:]
		r.running++
		s.runs++
		dl := s.now.Add(timeouts["jitr"])
		s.spawn("jitr", func(ctx context.Context) error {
			_, err := r.jitr.Invoke(withDeadline(ctx, dl), ev.payload)
			return err
		}, func(err error, _ bool) {
			r.running--
			if err != nil {
				s.failed++
				if ev.attempt >= 3 {
					s.dead++
				} else {
					delay := time.Duration(ev.attempt) * time.Minute
					s.after(delay, "jitr retry", func() { s.enqueue(r, stormEvent{payload: ev.payload, attempt: ev.attempt + 1}) })
				}
			}
			s.dispatch(r)
		})
	}
}

// observe, after every step, hands new inventory stream records to each
// region's replicate and schedules the global table's replications.
func (s *storm) observe() {
	for _, r := range s.regions {
		recs, seq := r.invT.StreamSince(r.streamSeq)
		r.streamSeq = seq
		for _, rec := range recs {
			s.pipe(r, rec)
		}
		for q := r.invT.Queued(); r.applies < q; r.applies++ {
			s.after(s.between(s.cfg.ReplicationLag[0], s.cfg.ReplicationLag[1]), "replicate into "+r.name, func() {
				r.invT.ApplyNext()
				r.applies--
			})
		}
	}
}

func (s *storm) pipe(r *stormRegion, rec events.DynamoDBEventRecord) {
	detail, _ := json.Marshal(rec)
	payload, _ := json.Marshal(events.EventBridgeEvent{Version: "0", ID: rec.EventID, DetailType: "DeviceInventoryChange",
		Source: "mriot.inventory", AccountID: account, Time: s.now, Region: r.name, Resources: []string{}, Detail: detail})
	s.after(s.between(s.cfg.PipeDelay[0], s.cfg.PipeDelay[1]), "pipe", func() { s.replicateRun(r, payload, 1) })
}

// replicateRun invokes replicate as the bus rule's target: retried with a
// doubling backoff from 1 s, 10 attempts.
func (s *storm) replicateRun(r *stormRegion, payload []byte, attempt int) {
	dl := s.now.Add(timeouts["replicate"])
	s.spawn("replicate", func(ctx context.Context) error {
		_, err := r.rep.Invoke(withDeadline(ctx, dl), payload)
		return err
	}, func(err error, _ bool) {
		if err == nil {
			return
		}
		if attempt >= 10 || errors.Is(err, errOver) {
			s.dead++
			return
		}
		s.after(time.Second<<min(attempt-1, 10), "replicate retry", func() { s.replicateRun(r, payload, attempt+1) })
	})
}
