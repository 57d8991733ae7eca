// Package local runs the whole mriot system on one machine: every region in
// one process, each with an IoT Core data endpoint (mutual-TLS MQTT), an IoT
// registry, the rules engine, its replicas of the global tables with their
// streams, the EventBridge pipe and bus, and the jitr, replicate and ingest
// functions invoked with the exact JSON AWS would deliver, through the same
// entry point lambda.Start uses. A global endpoint routes each connection to
// the nearest region that is up, as the latency DNS record does, and the
// fleet HTTP API serves the same handler as the API Lambda.
package local

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/emulator/broker"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/policy"
	"github.com/mriot/mriot/internal/emulator/router"
	"github.com/mriot/mriot/internal/emulator/rules"
	"github.com/mriot/mriot/internal/emulator/store"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/ingest"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/reconcile"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

// Names and ids of the local deployment, as one SAM deployment would make them.
const (
	AccountID        = "123456789012"
	DevicePolicyName = "mriot-device"
	InventoryTable   = "mriot-device-inventory"
	DataTable        = "mriot-data"
	ClaimsTable      = "mriot-jitr-claims"
	LeasesTable      = "mriot-device-leases"
	PresenceTable    = "mriot-presence"
	// JITRRuleSQL and DataRuleSQL are the two IoT rules of template.yaml.
	JITRRuleSQL = "SELECT * FROM '$aws/events/certificates/registered/#'"
	DataRuleSQL = "SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id FROM 'i/+/m'"
	// PipeSource and PipeDetailType are what the EventBridge Pipe puts on the
	// custom bus, and what the replicate rule matches.
	PipeSource     = "mriot.inventory"
	PipeDetailType = "DeviceInventoryChange"
	// JITRConcurrency is the jitr function's reserved concurrency in
	// template.yaml.
	JITRConcurrency = 10
)

// Config configures a local stack.
type Config struct {
	// Regions, the first being the primary (owner of the global tables).
	Regions []string
	// StateDir holds the PKI (created when missing), and with Persist the
	// state file.
	StateDir string
	// Persist keeps the stack's state in StateDir/state.db (StateFile) and
	// restores it at Start: the registries, the replicas of the global
	// tables, the claims and lease tables, the replications not yet
	// applied, the stream records not yet delivered and the functions'
	// queued events.
	Persist bool
	// Reset deletes the state file before Start (the PKI is kept).
	Reset bool
	// StateNoSync commits the state without fsync: it survives the process
	// being killed, not the machine losing power (store.Options.NoSync).
	StateNoSync bool
	// Host to listen on (default 127.0.0.1).
	Host string
	// MQTTPort is the global endpoint's port; region i listens on
	// MQTTPort+1+i. 0 picks free ports (tests).
	MQTTPort int
	// APIAddr is the HTTP API's address ("" disables it; port 0 picks one).
	// An address other machines can reach needs APIToken.
	APIAddr string
	// APIToken, when set, is required as "Authorization: Bearer <token>"
	// on every API route but GET /healthz.
	APIToken string
	// CAFiles are extra CA certificates registered in every region (SNI_ONLY,
	// auto-registration on), e.g. an intermediate CA made with openssl.
	CAFiles []string
	// ServerCertFile and ServerKeyFile replace the generated server
	// certificate; the certificate file may hold the chain.
	ServerCertFile, ServerKeyFile string
	// Latency from the clients to each region, for the global endpoint.
	Latency map[string]time.Duration
	// ReplicationLag of the global tables (default 200ms).
	ReplicationLag time.Duration
	// APILatency delays every registry call.
	APILatency time.Duration
	// Faults injects ServiceUnavailable errors: operation name -> rate in [0,1].
	Faults map[string]float64
	// Quotas limits registry operations per second per region (nil: none);
	// memiot.AWSDefaultQuotas are AWS's defaults.
	Quotas map[string]float64
	// Invocation retries: IoT rule actions invoke asynchronously (Lambda
	// retries twice), the replicate rule retries as an EventBridge target.
	AsyncAttempts, BusAttempts int
	RetryBackoff               time.Duration
	FunctionTimeout            time.Duration
	// Log receives the functions' and components' JSON logs.
	Log *slog.Logger
	// Metrics receives every EMF count (default: an in-memory Recorder).
	Metrics obs.Metrics
	// ReconcileInterval is how often every region's reconciler runs
	// (default 30s; negative: never, but on demand).
	ReconcileInterval time.Duration
	// PendingThreshold: the reconciler re-drives a certificate left
	// PENDING_ACTIVATION longer (default 10m).
	PendingThreshold time.Duration
	// Down lists the regions that start down (SetRegionDown).
	Down []string
	// RotationGrace is how long a rotated-out certificate stays valid
	// (ROTATION_GRACE; default 7 days); RetireKeep how long past its grace
	// it stays named in the item (default a day).
	RotationGrace, RetireKeep time.Duration
}

// Region is one region of the local stack.
type Region struct {
	Name      string
	Registry  *memiot.Registry
	Inventory *memddb.Inventory
	Telemetry *memddb.Telemetry
	// Claims is the region's jitr claims table (regional, as in
	// template.yaml), shared by the region's jitr handler.
	Claims *memddb.Claims
	// Leases is the region's device lease table (regional, as in
	// template.yaml): one writer per device in the region, and the region's
	// ledger of each device.
	Leases *memddb.Leases
	// Presence is the region's replica of the presence global table; its
	// stream (Presence.Table().Subscribe) is the one a Lambda event source
	// mapping reads in template.yaml.
	Presence *memddb.Presence
	// Commands is the region's replica of the commands global table.
	Commands *memddb.Commands
	// Reconciler repairs the region's drift (every ReconcileInterval, and on
	// demand); reconciling serializes its runs.
	Reconciler  *reconcile.Reconciler
	reconciling sync.Mutex
	Broker      *broker.Broker
	outage      outageState

	jitr, replicate, ingest  *Invoker
	presence                 *Invoker
	commands, commandStreams *Invoker
	unsubscribeCommands      func()
	rules                    []boundRule
	unsubscribe              func()
	unsubscribePresence      func()
	log                      *slog.Logger
	metrics                  obs.Metrics
}

type boundRule struct {
	name   string
	rule   *rules.Rule
	target *Invoker
}

// Stack is a running local deployment.
type Stack struct {
	cfg       Config
	log       *slog.Logger
	metrics   obs.Metrics
	regions   []*Region
	byName    map[string]*Region
	inventory *memddb.GlobalTable
	data      *memddb.GlobalTable
	presence  *memddb.GlobalTable
	commands  *memddb.GlobalTable
	router    *router.Router
	apiSrv    *http.Server
	apiLn     net.Listener
	pki       pki.Store
	rootPEM   []byte
	serverTLS tls.Certificate
	store     *store.Store
	state     StateInfo

	mu          sync.Mutex
	deadLetters []DeadLetter
	stop        chan struct{}
	stopped     sync.WaitGroup
}

func (c *Config) defaults() error {
	if len(c.Regions) == 0 {
		c.Regions = []string{"eu-west-1", "us-west-2"}
	}
	seen := map[string]bool{}
	for _, r := range c.Regions {
		if r == "" || seen[r] {
			return fmt.Errorf("%w: regions %v: empty or repeated region", ErrConfig, c.Regions)
		}
		seen[r] = true
	}
	if c.StateDir == "" {
		c.StateDir = ".mriot"
	}
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.ReplicationLag == 0 {
		c.ReplicationLag = 200 * time.Millisecond
	}
	if c.AsyncAttempts == 0 {
		c.AsyncAttempts = 3 // Lambda asynchronous invocation: the first try and two retries
	}
	if c.BusAttempts == 0 {
		c.BusAttempts = 10
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 250 * time.Millisecond
	}
	if c.FunctionTimeout == 0 {
		c.FunctionTimeout = 30 * time.Second
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 30 * time.Second
	}
	if c.PendingThreshold == 0 {
		c.PendingThreshold = 10 * time.Minute
	}
	if c.Log == nil {
		c.Log = obs.Discard()
	}
	if c.Metrics == nil {
		c.Metrics = obs.NewRecorder()
	}
	for r := range c.Latency {
		if !seen[r] {
			return fmt.Errorf("%w: latency for %s, which is not one of the regions %v", ErrConfig, r, c.Regions)
		}
	}
	for op, rate := range c.Faults {
		if rate < 0 || rate > 1 {
			return fmt.Errorf("%w: fault rate for %s is %v, want a number in [0,1]", ErrConfig, op, rate)
		}
	}
	if err := c.checkDown(seen); err != nil {
		return err
	}
	return c.validate()
}

// Start builds and starts the stack; everything listens when it returns.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	// One JSON object per line without repeated keys (dedupKeys).
	cfg.Log = slog.New(dedupKeys(cfg.Log.Handler()))
	s := &Stack{cfg: cfg, log: cfg.Log, metrics: cfg.Metrics, byName: map[string]*Region{}, pki: pki.Store{Dir: cfg.StateDir},
		stop: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	caPEMs, err := s.loadPKI()
	if err != nil {
		return nil, err
	}
	if err := s.openState(); err != nil {
		return nil, err
	}
	s.inventory = memddb.NewGlobalTable(InventoryTable, memddb.InventoryKey, cfg.Regions,
		memddb.WithReplicationLag(cfg.ReplicationLag), memddb.WithStreamView(memddb.ViewNewImage), memddb.WithAccount(AccountID),
		memddb.InventoryIndexes, memddb.WithDurableStream())
	s.data = memddb.NewGlobalTable(DataTable, memddb.DataKey, cfg.Regions,
		memddb.WithReplicationLag(cfg.ReplicationLag), memddb.WithStreamView(memddb.ViewNewAndOldImages), memddb.WithAccount(AccountID),
		memddb.WithDeferredDurability())
	s.presence = newPresenceTable(cfg)
	s.commands = newCommandsTable(cfg)
	if err := s.restoreTables(s.inventory, s.data, s.presence, s.commands); err != nil {
		return nil, err
	}
	s.countDevices()

	for i, name := range cfg.Regions {
		r, err := s.newRegion(ctx, name, caPEMs)
		if err != nil {
			return nil, err
		}
		s.regions = append(s.regions, r)
		s.byName[name] = r
		addr := net.JoinHostPort(cfg.Host, "0")
		if cfg.MQTTPort > 0 {
			addr = net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.MQTTPort+1+i))
		}
		b, err := broker.New(broker.Config{
			Region: name, AccountID: AccountID, Addr: addr, ServerCert: s.serverTLS,
			Registry: r.Registry, Publish: r.onPublish, Logger: s.log,
		})
		if err != nil {
			return nil, fmt.Errorf("region %s endpoint: %w", name, err)
		}
		r.Broker = b
		if err := b.Start(ctx); err != nil {
			return nil, fmt.Errorf("region %s endpoint on %s: %w", name, addr, err)
		}
	}
	if err := s.startRouter(ctx); err != nil {
		return nil, err
	}
	if err := s.startAPI(); err != nil {
		return nil, err
	}
	for _, r := range cfg.Down {
		if err := s.SetRegionDown(ctx, r, true); err != nil {
			return nil, err
		}
	}
	if cfg.ReconcileInterval > 0 {
		s.stopped.Add(1)
		go s.reconcileLoop(cfg.ReconcileInterval)
	}
	ok = true
	return s, nil
}

// reconcileLoop runs every region's reconciler every interval, as the
// scheduled reconcile Lambda does in each region (a region that is down is
// skipped, as are runs of a region whose last one is still going).
func (s *Stack) reconcileLoop(interval time.Duration) {
	defer s.stopped.Done()
	// Closing the stack ends a pass in progress at once (the reconciler
	// stops at its context's end, and resumes there on the next start).
	base, stop := context.WithCancel(context.Background())
	defer stop()
	go func() {
		<-s.stop
		stop()
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for _, r := range s.regions {
			if base.Err() != nil {
				return
			}
			if r.Broker.Down() || !r.reconciling.TryLock() {
				continue
			}
			ctx, cancel := context.WithTimeout(base, interval)
			rep, err := r.Reconciler.Run(ctx, reconcile.Options{})
			cancel()
			r.reconciling.Unlock()
			if err != nil {
				r.log.Warn("reconcile failed", "function", reconcile.Function, "error", err.Error())
			} else if len(rep.Findings) > 0 {
				r.log.Info("drift repaired", "function", reconcile.Function, "findings", len(rep.Findings), "unrepaired", rep.Unrepaired())
			}
		}
	}
}

// Reconcile runs region's reconciler through a whole pass now (api.Admin).
func (s *Stack) Reconcile(ctx context.Context, region string) (reconcile.Report, error) {
	r := s.byName[region]
	if r == nil {
		return reconcile.Report{}, fmt.Errorf("region %s: %w", region, fleet.ErrNotFound)
	}
	if r.Down() {
		return reconcile.Report{}, errRegionDown(region)
	}
	r.reconciling.Lock()
	defer r.reconciling.Unlock()
	var all reconcile.Report
	for {
		rep, err := r.Reconciler.Run(ctx, reconcile.Options{})
		all.Region, all.Pass = rep.Region, rep.Pass
		all.Checked += rep.Checked
		all.Skipped += rep.Skipped
		all.Findings = append(all.Findings, rep.Findings...)
		if err != nil || rep.Complete {
			all.Complete = rep.Complete
			return all, err
		}
	}
}

// Drift reports what region's reconciler would change (api.Drift).
func (s *Stack) Drift(ctx context.Context, region, cursor string, maxChecks int) (reconcile.Report, error) {
	r := s.byName[region]
	if r == nil {
		return reconcile.Report{}, fmt.Errorf("region %s: %w", region, fleet.ErrNotFound)
	}
	if r.Down() {
		return reconcile.Report{}, errRegionDown(region)
	}
	return r.Reconciler.Run(ctx, reconcile.Options{DryRun: true, Cursor: cursor, MaxChecks: maxChecks})
}

// loadPKI creates or loads the PKI and returns the CA certificates to register.
func (s *Stack) loadPKI() ([]string, error) {
	inter, err := s.pki.Init()
	if err != nil {
		return nil, fmt.Errorf("pki in %s: %w", s.cfg.StateDir, err)
	}
	if s.rootPEM, err = s.pki.RootPEM(); err != nil {
		return nil, fmt.Errorf("read root CA: %w", err)
	}
	cas := []string{inter.CertPEM()}
	for _, f := range s.cfg.CAFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--ca %s: %w", f, err)
		}
		if _, err := fleet.ParseCertificatePEM(string(b)); err != nil {
			return nil, fmt.Errorf("--ca %s: %w", f, err)
		}
		cas = append(cas, string(b))
	}
	switch {
	case s.cfg.ServerCertFile != "" && s.cfg.ServerKeyFile != "":
		s.serverTLS, err = pki.LoadServerCertificate(s.cfg.ServerCertFile, s.cfg.ServerKeyFile)
	case s.cfg.ServerCertFile != "" || s.cfg.ServerKeyFile != "":
		err = errors.New("--server-cert and --server-key go together")
	default:
		s.serverTLS, err = s.pki.ServerCertificate()
	}
	if err != nil {
		return nil, err
	}
	return cas, nil
}

func (s *Stack) newRegion(ctx context.Context, name string, caPEMs []string) (_ *Region, err error) {
	cfg := s.cfg
	opts := []memiot.Option{}
	if cfg.APILatency > 0 {
		opts = append(opts, memiot.WithLatency(cfg.APILatency))
	}
	if len(cfg.Quotas) > 0 {
		opts = append(opts, memiot.WithQuotas(cfg.Quotas))
	}
	if len(cfg.Faults) > 0 {
		faults := cfg.Faults
		opts = append(opts, memiot.WithHook(func(_ context.Context, op string) error {
			if rate, ok := faults[op]; ok && rand.Float64() < rate {
				return memiot.Unavailable(op)
			}
			return nil
		}))
	}
	reg := memiot.New(name, AccountID, opts...)
	if err := s.restoreRegistry(reg); err != nil {
		return nil, err
	}
	if err := devicePolicy(ctx, reg, name); err != nil {
		return nil, err
	}
	for _, ca := range caPEMs {
		if _, err := reg.RegisterCACertificate(ctx, ca, true); err != nil && !errors.Is(err, fleet.ErrAlreadyExists) {
			return nil, fmt.Errorf("region %s register CA: %w", name, err)
		}
	}
	log := s.log.With("region", name)
	claims := memddb.NewGlobalTable(ClaimsTable, memddb.ClaimsKey, []string{name}, memddb.WithAccount(AccountID))
	leases := memddb.NewGlobalTable(LeasesTable, memddb.LeasesKey, []string{name}, memddb.WithAccount(AccountID))
	defer func() {
		if err != nil {
			// The region is not kept: Close would not reach its tables.
			claims.Close()
			leases.Close()
		}
	}()
	if err := s.restoreTables(claims, leases); err != nil {
		return nil, err
	}
	r := &Region{
		Name: name, Registry: reg,
		Inventory: memddb.NewInventory(s.inventory.Replica(name)),
		Telemetry: memddb.NewTelemetry(s.data.Replica(name)),
		Claims:    memddb.NewClaims(claims.Replica(name)),
		Leases:    memddb.NewLeases(leases.Replica(name)),
		Presence:  memddb.NewPresence(s.presence.Replica(name)),
		Commands:  memddb.NewCommands(s.commands.Replica(name)),
		log:       log, metrics: s.metrics,
	}
	// What the functions see: the registry behind the SDK's retryer, as in Lambda.
	sdkRegistry := newRetryingRegistry(reg)
	rotation := converge.Config{RotationGrace: cfg.RotationGrace, RetireKeep: cfg.RetireKeep}
	jh, err := jitr.New(jitr.Config{Registry: sdkRegistry, Inventory: r.Inventory, Leases: r.Leases, Region: name, PolicyName: DevicePolicyName,
		Log: log.With("function", jitr.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}, Claims: r.Claims, Lease: rotation})
	if err != nil {
		return nil, err
	}
	rh, err := replicate.New(replicate.Config{Registry: sdkRegistry, Inventory: r.Inventory, Leases: r.Leases, Region: name, PolicyName: DevicePolicyName,
		Log: log.With("function", replicate.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}, Lease: rotation})
	if err != nil {
		return nil, err
	}
	ih, err := ingest.New(ingest.Config{Telemetry: r.Telemetry, Region: name,
		Log: log.With("function", ingest.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}})
	if err != nil {
		return nil, err
	}
	newInvoker := func(fn string, h Function, attempts int) *Invoker {
		return &Invoker{Name: fn, Region: name, Fn: h, Timeout: cfg.FunctionTimeout, Attempts: attempts,
			Backoff: cfg.RetryBackoff, Log: log, Metrics: s.metrics, OnDeadLetter: s.addDeadLetter}
	}
	r.jitr = newInvoker(jitr.Function, jh, cfg.AsyncAttempts)
	// template.yaml reserves the jitr function's concurrency, so that an
	// onboarding storm queues instead of overrunning IoT's 10 TPS quotas.
	r.jitr.Concurrency = JITRConcurrency
	r.ingest = newInvoker(ingest.Function, ih, cfg.AsyncAttempts)
	r.replicate = newInvoker(replicate.Function, rh, cfg.BusAttempts)
	if r.Reconciler, err = reconcile.New(reconcile.Config{Registry: sdkRegistry, Inventory: r.Inventory, Leases: r.Leases,
		Redriver: jh, Region: name, PolicyName: DevicePolicyName, Quotas: cfg.Quotas, PendingThreshold: cfg.PendingThreshold,
		Log: log.With("function", reconcile.Function), Metrics: s.metrics, Tracer: obs.NopTracer{}, Lease: rotation}); err != nil {
		return nil, err
	}
	r.rules = []boundRule{
		{name: "jitr", rule: rules.MustParse(JITRRuleSQL), target: r.jitr},
		{name: "data", rule: rules.MustParse(DataRuleSQL), target: r.ingest},
	}
	if err := s.startPresence(r, newInvoker); err != nil {
		return nil, err
	}
	if err := s.startCommands(r, newInvoker); err != nil {
		return nil, err
	}
	// The EventBridge Pipe: this replica's inventory stream onto the custom
	// bus, whose rule targets this region's replicate function.
	r.unsubscribe = s.inventory.Replica(name).Subscribe(r.pipe)
	if err := s.resumeQueues(r); err != nil {
		return nil, err
	}
	return r, nil
}

// onPublish is the rules engine: every message a device publishes, and every
// registered-certificate event, is evaluated against the region's rules.
func (r *Region) onPublish(topic string, payload []byte) {
	if rest, ok := strings.CutPrefix(topic, policy.BasicIngestPrefix); ok {
		r.basicIngest(rest, payload)
		return
	}
	for _, br := range r.rules {
		out, fired, err := br.rule.Evaluate(rules.Message{Topic: topic, Payload: payload, Time: time.Now()})
		if !fired {
			continue
		}
		if err != nil {
			// The rule's error action: logged and counted, as the SQS error
			// action of template.yaml keeps it.
			r.metrics.Count("RuleErrors", 1, obs.D("Rule", br.name), obs.D("Region", r.Name))
			r.log.Warn("rule failed", "rule", br.name, "topic", topic, "error", err.Error())
			continue
		}
		br.target.InvokeAsync(out)
	}
}

// basicIngest is IoT's Basic Ingest: a message published on
// $aws/rules/<rule>/<topic> goes to that rule alone, evaluated on <topic>
// (the prefix is not part of the topic the rule sees, so topic(2) is the
// same either way), and to no subscriber. A rule that does not exist is a
// RuleNotFound error, logged and counted, as IoT logs it.
func (r *Region) basicIngest(rest string, payload []byte) {
	name, topic, _ := strings.Cut(rest, "/")
	for _, br := range r.rules {
		if RuleName(br.name) != name {
			continue
		}
		out, fired, err := br.rule.Evaluate(rules.Message{Topic: topic, Payload: payload, Time: time.Now()})
		switch {
		case !fired:
		case err != nil:
			r.metrics.Count("RuleErrors", 1, obs.D("Rule", br.name), obs.D("Region", r.Name))
			r.log.Warn("rule failed", "rule", br.name, "topic", topic, "basicIngest", true, "error", err.Error())
		default:
			br.target.InvokeAsync(out)
		}
		return
	}
	r.metrics.Count("RuleNotFound", 1, obs.D("Region", r.Name))
	r.log.Warn("basic ingest: no such rule; message dropped", "rule", name, "topic", topic)
}

// RuleName is the name template.yaml gives the rule short names ("data":
// mriot_data): the <rule> of a Basic Ingest topic.
func RuleName(short string) string { return "mriot_" + short }

// pipe wraps one stream record as the EventBridge event the Pipe puts on
// the bus (detail = the record), and hands it to the bus rule's target.
func (r *Region) pipe(rec events.DynamoDBEventRecord) {
	detail, err := json.Marshal(rec)
	if err != nil {
		r.log.Error("pipe: encode stream record", "error", err.Error())
		return
	}
	ev := events.EventBridgeEvent{
		Version:    "0",
		ID:         rules.NewUUID(),
		DetailType: PipeDetailType,
		Source:     PipeSource,
		AccountID:  AccountID,
		Time:       time.Now().UTC(),
		Region:     r.Name,
		Resources:  []string{},
		Detail:     detail,
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		r.log.Error("pipe: encode event", "error", err.Error())
		return
	}
	r.replicate.InvokeAsync(payload)
}

func (s *Stack) startRouter(ctx context.Context) error {
	targets := make([]router.Target, len(s.regions))
	for i, r := range s.regions {
		targets[i] = router.Target{Region: r.Name, Addr: r.Broker.Addr(), Latency: s.cfg.Latency[r.Name], Accept: r.Broker.Accept}
	}
	addr := net.JoinHostPort(s.cfg.Host, "0")
	if s.cfg.MQTTPort > 0 {
		addr = net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.MQTTPort))
	}
	rt, err := router.New(router.Config{Addr: addr, Regions: targets, Logger: s.log})
	if err != nil {
		return fmt.Errorf("global endpoint: %w", err)
	}
	s.router = rt
	if err := rt.Start(ctx); err != nil {
		return fmt.Errorf("global endpoint on %s: %w", addr, err)
	}
	return nil
}

func (s *Stack) startAPI() error {
	if s.cfg.APIAddr == "" {
		return nil
	}
	regs := make(map[string]api.RegionRegistry, len(s.regions))
	for _, r := range s.regions {
		// Behind the SDK's retryer, as the API Lambda's IoT clients are;
		// unreachable while the region is down.
		regs[r.Name] = regionRegistry{r: r, next: newRetryingRegistry(r.Registry)}
	}
	// The primary region's replicas, or another's while it is down.
	h, err := api.New(api.Config{
		Inventory: apiInventory{s}, Telemetry: apiTelemetry{s}, Presence: apiPresence{s}, Registries: regs, Regions: s.cfg.Regions,
		DevicePolicyName: DevicePolicyName, Health: s.Health, Commands: apiCommands{s}, Metrics: s.metrics, Admin: s, Drift: s, Logger: s.log.With("component", "api"),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("HTTP API on %s: %w", s.cfg.APIAddr, err)
	}
	s.apiLn = ln
	s.apiSrv = &http.Server{Handler: requireToken(s.cfg.APIToken, h, s.log), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.apiSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP API stopped", "error", err.Error())
		}
	}()
	return nil
}

func (s *Stack) addDeadLetter(d DeadLetter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deadLetters = append(s.deadLetters, d)
}

// DeadLetters returns the events that exhausted their retries.
func (s *Stack) DeadLetters() []DeadLetter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deadLetters)
}

// Regions returns the regions in configured order.
func (s *Stack) Regions() []*Region { return s.regions }

// Region returns a region by name (nil if unknown).
func (s *Stack) Region(name string) *Region { return s.byName[name] }

// GlobalAddr is the global endpoint (iot.example.com).
func (s *Stack) GlobalAddr() string { return s.router.Addr() }

// APIAddr is the HTTP API's address ("" when disabled).
func (s *Stack) APIAddr() string {
	if s.apiLn == nil {
		return ""
	}
	return s.apiLn.Addr().String()
}

// RootCAPEM is the root CA devices trust (their --cafile).
func (s *Stack) RootCAPEM() []byte { return s.rootPEM }

// PKI is the stack's certificate store.
func (s *Stack) PKI() pki.Store { return s.pki }

// Metrics is where the stack counts.
func (s *Stack) Metrics() obs.Metrics { return s.metrics }

// Health reports nil when every endpoint listens.
func (s *Stack) Health() error {
	if s.router == nil || s.router.Addr() == "" {
		return errors.New("global endpoint not listening")
	}
	for _, r := range s.regions {
		if r.Broker == nil || r.Broker.Addr() == "" {
			return fmt.Errorf("region %s endpoint not listening", r.Name)
		}
	}
	return nil
}

// SetRegionDown takes a region down, as an outage does, or brings it back
// (api.Admin); see outage.go.
func (s *Stack) SetRegionDown(_ context.Context, region string, down bool) error {
	r := s.byName[region]
	if r == nil {
		return fmt.Errorf("region %s: %w", region, fleet.ErrNotFound)
	}
	return s.setOutage(r, down)
}

// RegisterCA registers a CA in a region with auto-registration (api.Admin).
func (s *Stack) RegisterCA(ctx context.Context, region, pemText string) (string, error) {
	r := s.byName[region]
	if r == nil {
		return "", fmt.Errorf("region %s: %w", region, fleet.ErrNotFound)
	}
	if r.Down() {
		return "", errRegionDown(region)
	}
	ca, err := r.Registry.RegisterCACertificate(ctx, pemText, true)
	if err != nil {
		return "", fmt.Errorf("register CA in %s: %w", region, err)
	}
	return ca.ID, nil
}

var _ api.Admin = (*Stack)(nil)

// WaitIdle waits until replication, streams and every queued invocation are
// done, i.e. the system has converged, or ctx ends. What waits for a region
// that is down is not waited for.
func (s *Stack) WaitIdle(ctx context.Context) error {
	for {
		for _, g := range []*memddb.GlobalTable{s.inventory, s.data, s.presence, s.commands} {
			if err := g.WaitIdle(ctx); err != nil {
				return err
			}
		}
		busy := false
		for _, r := range s.regions {
			for _, iv := range r.invokers() {
				if iv.Pending() > 0 {
					busy = true
				}
			}
		}
		if !busy {
			// A last look: an invocation may have written while we checked.
			if s.inventory.WaitIdle(ctx) == nil && s.data.WaitIdle(ctx) == nil && s.presence.WaitIdle(ctx) == nil && s.commands.WaitIdle(ctx) == nil && !s.anyPending() {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Stack) anyPending() bool {
	for _, r := range s.regions {
		for _, iv := range r.invokers() {
			if iv.Pending() > 0 {
				return true
			}
		}
	}
	return false
}

// Close stops everything: endpoints first, then the functions (letting
// queued invocations finish for a moment), then the tables.
func (s *Stack) Close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.stopped.Wait()
	if s.router != nil {
		_ = s.router.Close()
	}
	if s.apiSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.apiSrv.Shutdown(ctx)
		cancel()
	}
	for _, r := range s.regions {
		if r.Broker != nil {
			_ = r.Broker.Close()
		}
	}
	for _, r := range s.regions {
		if r.unsubscribe != nil {
			r.unsubscribe()
		}
		if r.unsubscribePresence != nil {
			r.unsubscribePresence()
		}
		if r.unsubscribeCommands != nil {
			r.unsubscribeCommands()
		}
		for _, iv := range r.invokers() {
			iv.Close(2 * time.Second)
		}
	}
	if s.inventory != nil {
		s.inventory.Close()
	}
	if s.data != nil {
		s.data.Close()
	}
	if s.presence != nil {
		s.presence.Close()
	}
	if s.commands != nil {
		s.commands.Close()
	}
	for _, r := range s.regions {
		if r.Claims != nil {
			r.Claims.Table().Global().Close()
		}
		if r.Leases != nil {
			r.Leases.Table().Global().Close()
		}
	}
	s.closeState()
}
