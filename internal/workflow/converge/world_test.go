package converge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

const (
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

// clock is the world's clock: every handler, lease and registry reads it, and
// a redelivery moves it on as Lambda's retry interval would.
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

// runKey tags a context with the name of the run it belongs to, so that a
// controller rule can pause or fail one run's calls and not another's.
type runKey struct{}

func tagged(ctx context.Context, run string) context.Context {
	return context.WithValue(ctx, runKey{}, run)
}

func runOf(ctx context.Context) string {
	s, _ := ctx.Value(runKey{}).(string)
	return s
}

// rule matches one call of one run: it can pause the call until released,
// and fail it with err.
type rule struct {
	run   string
	match func(service, op string, before []string) bool
	err   error
	pause bool
	// crash ends the run right after the matching call succeeded (the
	// process is gone: nothing after the call runs, no compensation).
	crash bool

	fired   bool
	reached chan struct{}
	release chan struct{}
}

// controller is the hook of every fake of a world: it records each run's
// calls and applies the first rule that matches.
type controller struct {
	mu    sync.Mutex
	calls map[string][]string // run -> "service:op" in order
	rules []*rule
}

func newController() *controller { return &controller{calls: map[string][]string{}} }

func (c *controller) add(r *rule) *rule {
	r.reached, r.release = make(chan struct{}), make(chan struct{})
	c.mu.Lock()
	c.rules = append(c.rules, r)
	c.mu.Unlock()
	return r
}

func (c *controller) hook(service string) func(ctx context.Context, op string) error {
	return func(ctx context.Context, op string) error {
		run := runOf(ctx)
		c.mu.Lock()
		before := c.calls[run]
		c.calls[run] = append(before, service+":"+op)
		var hit *rule
		for _, r := range c.rules {
			if !r.fired && !r.crash && r.run == run && r.match(service, op, before) {
				r.fired, hit = true, r
				break
			}
		}
		c.mu.Unlock()
		if hit == nil {
			return nil
		}
		if hit.pause {
			close(hit.reached)
			<-hit.release
		}
		return hit.err
	}
}

// after is the after-call hook of every fake of a world: it ends a run
// right after a call that a crash rule matches.
func (c *controller) after(service string) func(ctx context.Context, op string) {
	return func(ctx context.Context, op string) {
		run := runOf(ctx)
		c.mu.Lock()
		var hit *rule
		for _, r := range c.rules {
			if r.crash && !r.fired && r.run == run && r.match(service, op, nil) {
				r.fired, hit = true, r
				break
			}
		}
		c.mu.Unlock()
		if hit != nil {
			runtime.Goexit()
		}
	}
}

// mutatingIoT matches a run's first mutating registry call.
func mutatingIoT(service, op string, _ []string) bool {
	return service == "iot" && isMutating(op)
}

func isMutating(op string) bool {
	for _, p := range []string{"Create", "Register", "Update", "Delete", "Attach", "Detach"} {
		if strings.HasPrefix(op, p) {
			return true
		}
	}
	return false
}

// afterOp matches a run's first registry call that comes after a call of op.
func afterOp(op string) func(service, o string, before []string) bool {
	return func(service, _ string, before []string) bool {
		if service != "iot" {
			return false
		}
		return slices.Contains(before, "iot:"+op)
	}
}

func terminal(op string) error  { return memiot.Invalid(op) }
func throttled(op string) error { return memiot.Throttled(op) }
func matchOp(svc, op string) func(string, string, []string) bool {
	return func(s, o string, _ []string) bool { return s == svc && o == op }
}

// region is one region of the world: registry, inventory replica, jitr and
// replicate handlers.
type region struct {
	name   string
	reg    *memiot.Registry
	tbl    *memddb.Table
	inv    *memddb.Inventory
	leases *memddb.Leases
	jitr   *jitr.Handler
	rep    *replicate.Handler
}

type world struct {
	t       *testing.T
	g       *memddb.GlobalTable
	clock   *clock
	ctl     *controller
	regions map[string]*region
}

func newWorld(t *testing.T, names ...string) *world {
	t.Helper()
	fixtures(t)
	w := &world{t: t, clock: &clock{now: time.Now().UTC().Truncate(time.Second)}, ctl: newController(), regions: map[string]*region{}}
	w.g = memddb.NewGlobalTable("inventory", memddb.InventoryKey, names, memddb.WithStreamView(memddb.ViewNewImage), memddb.WithClock(w.clock.Now))
	t.Cleanup(w.g.Close)
	for _, n := range names {
		w.regions[n] = w.newRegion(n)
	}
	return w
}

func (w *world) newRegion(name string) *region {
	t := w.t
	ctx := context.Background()
	reg := memiot.New(name, account, memiot.WithClock(w.clock.Now))
	if _, err := reg.RegisterCACertificate(ctx, fx.ca.CertPEM(), true); err != nil {
		t.Fatal(err)
	}
	if err := reg.CreatePolicy(ctx, policy, `{"Version":"2012-10-17","Statement":[]}`); err != nil {
		t.Fatal(err)
	}
	reg.SetHook(w.ctl.hook("iot"))
	reg.SetAfter(w.ctl.after("iot"))
	tbl := w.g.Replica(name)
	tbl.SetHook(w.ctl.hook("ddb"))
	tbl.SetAfter(w.ctl.after("ddb"))
	lt := memddb.NewGlobalTable("leases-"+name, memddb.LeasesKey, []string{name}, memddb.WithClock(w.clock.Now))
	t.Cleanup(lt.Close)
	lt.Replica(name).SetHook(w.ctl.hook("leases"))
	r := &region{name: name, reg: reg, tbl: tbl, inv: memddb.NewInventory(tbl), leases: memddb.NewLeases(lt.Replica(name))}
	// A run waits briefly for a held lease, then its event is delivered
	// again (w.lambda), as in Lambda.
	lease := converge.Config{LeaseWait: 100 * time.Millisecond}
	var err error
	if r.jitr, err = jitr.New(jitr.Config{Registry: reg, Inventory: r.inv, Leases: r.leases, Region: name, PolicyName: policy,
		Now: w.clock.Now, Lease: lease}); err != nil {
		t.Fatal(err)
	}
	if r.rep, err = replicate.New(replicate.Config{Registry: reg, Inventory: r.inv, Leases: r.leases, Region: name, PolicyName: policy,
		Now: w.clock.Now, Lease: lease}); err != nil {
		t.Fatal(err)
	}
	return r
}

// device is a device of the world's CA: its certificate and inventory item.
type device struct {
	name string
	leaf *pki.Leaf
	id   string
}

func (w *world) device(name string) device {
	w.t.Helper()
	leaf, err := fx.ca.IssueDevice(name, 24*time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	return device{name: name, leaf: leaf, id: fleet.CertificateID(leaf.Cert)}
}

func (d device) item(status fleet.Status, origin string, version int64) fleet.Device {
	return fleet.Device{
		ThingName: d.name, CertificateID: d.id, CertificatePEM: d.leaf.CertPEM(),
		CACertificateID: fleet.CertificateID(fx.ca.Cert), NotAfter: d.leaf.Cert.NotAfter.UTC(),
		Status: status, OriginRegion: origin, Version: version, UpdatedAt: time.Now().UTC().Truncate(time.Second),
	}
}

// put writes the item in region's replica as the origin's writer would:
// create, or replace the stored version.
func (w *world) put(region string, d fleet.Device) {
	w.t.Helper()
	ctx := context.Background()
	inv := w.regions[region].inv
	cur, err := inv.Get(ctx, d.ThingName)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		err = inv.Create(ctx, d)
	case err == nil:
		err = inv.Update(ctx, d, cur.Version)
	}
	if err != nil {
		w.t.Fatalf("put %s v%d in %s: %v", d.ThingName, d.Version, region, err)
	}
	w.flush()
}

func (w *world) flush() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.g.Flush(ctx); err != nil {
		w.t.Fatal(err)
	}
}

// registered is the event IoT Core publishes for d's certificate in region.
func (w *world) registered(region string, d device) []byte {
	w.t.Helper()
	c, _, err := w.regions[region].reg.AutoRegister(context.Background(), d.leaf.CertPEM())
	if err != nil {
		w.t.Fatal(err)
	}
	return fmt.Appendf(nil, `{"certificateId":%q,"caCertificateId":%q,"timestamp":1,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":%q,"certificateRegistrationTimestamp":null}`,
		c.ID, c.CACertificateID, account)
}

// record is the EventBridge event the Pipe puts on the bus for a stream
// record of d (nil: a REMOVE of name, without an old image).
func record(region, event, name string, d *fleet.Device) []byte {
	rec := events.DynamoDBEventRecord{
		EventID: "ev", EventName: event, EventVersion: "1.1", EventSource: "aws:dynamodb", AWSRegion: region,
		Change: events.DynamoDBStreamRecord{
			Keys:           map[string]events.DynamoDBAttributeValue{ddbitem.AttrThingName: events.NewStringAttribute(name)},
			StreamViewType: "NEW_IMAGE",
		},
	}
	if d != nil {
		item, err := ddbitem.MarshalDevice(*d)
		if err == nil {
			rec.Change.NewImage, _ = ddbitem.ToStreamImage(item)
		}
	}
	detail, _ := json.Marshal(rec)
	b, _ := json.Marshal(events.EventBridgeEvent{
		Version: "0", ID: "e", DetailType: "DeviceInventoryChange", Source: "mriot.inventory",
		AccountID: account, Time: time.Now(), Region: region, Resources: []string{}, Detail: detail,
	})
	return b
}

// lambda invokes fn as Lambda's asynchronous invocation does: a retryable
// failure is delivered again after the retry interval (the world's clock
// moves on a minute), up to three attempts in all. It returns the last error.
// The scenarios run in synctest bubbles: the pause before a redelivery is of
// the bubble's clock, so the other runs go on until they block, every time.
func (w *world) lambda(ctx context.Context, fn func(context.Context) error) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = fn(ctx); err == nil || !saga.IsRetryable(err) {
			return err
		}
		w.clock.Advance(time.Minute)
		time.Sleep(5 * time.Millisecond)
	}
	return err
}

func invoke(h interface {
	Invoke(context.Context, []byte) ([]byte, error)
}, payload []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := h.Invoke(ctx, payload)
		return err
	}
}

// errCrashed is the result of a run that a crash rule ended.
var errCrashed = errors.New("the run crashed")

// async starts fn as its own run and returns a channel with its error.
func async(ctx context.Context, fn func(context.Context) error) <-chan error {
	ch := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				ch <- errCrashed
			}
		}()
		err := fn(ctx)
		returned = true
		ch <- err
	}()
	return ch
}

func wait(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not finish", what)
		return nil
	}
}

func waitReached(t *testing.T, what string, r *rule) {
	t.Helper()
	select {
	case <-r.reached:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never reached its pause point", what)
	}
}

// view is what a region's registry holds of a device.
type view struct {
	thing      bool
	status     fleet.CertStatus // "" when not registered
	principal  bool
	policy     bool
	thingCount int
}

func (w *world) view(region string, d device) view {
	reg := w.regions[region].reg
	var v view
	v.thingCount = len(reg.ThingList())
	for _, th := range reg.ThingList() {
		if th.Name == d.name {
			v.thing = true
		}
	}
	c, ok := reg.CertificateByID(d.id)
	if !ok {
		return v
	}
	v.status = c.Status
	v.principal = len(reg.ThingsForPrincipal(c.ARN)) > 0
	v.policy = len(reg.PoliciesForPrincipal(c.ARN)) > 0
	return v
}

func (v view) live() bool {
	return v.thing && v.status == fleet.CertActive && v.principal && v.policy
}

// lambdaFn is w.lambda as a run function.
func (w *world) lambdaFn(fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error { return w.lambda(ctx, fn) }
}
