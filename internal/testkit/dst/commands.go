package dst

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/commands"
)

// The command scenario: devices that connect, drop and reconnect in random
// regions, an operator that sends them commands, and in every region the
// real commands function (internal/workflow/commands) on the in-memory
// commands, presence and inventory tables, replicated with random lags.
// Stream records and rule events are delivered late, out of order and
// sometimes twice; calls fail retryably; runs crash after any call,
// between claim and publish included. The broker routes a publish to the
// device's live connection in the region, if it has subscribed yet.
//
// Invariants, checked as it runs and at the end:
//
//   - C1 once per connection: no connection receives a command twice,
//     except when the first copy arrived within its first
//     commands.DefaultSubscribeGrace (the window where the function cannot
//     tell whether a publish reached it; the device recognises the id);
//   - C2 liveness: after the activity, every device connects a last time
//     and stays; every command that has not expired CommandBound after that
//     connection began is delivered to it (or was acknowledged before) and
//     is ACKED in every replica at the end;
//   - C3 ACKED is absorbing: once a replica shows a command ACKED, it
//     always does.

// CommandConfig is one command simulation.
type CommandConfig struct {
	Seed     uint64
	Regions  int
	Devices  int
	Commands int
	// Active is how long devices come and go and the operator sends.
	Active time.Duration
	// Crash is the probability that a run dies after one of its calls.
	Crash float64
	// Fault is the rate of retryable failures per table call or publish.
	Fault float64
	// Dup is the probability that a stream record or rule event is
	// delivered twice.
	Dup float64
	// Mutation breaks the design on purpose (tests of the simulation).
	Mutation CommandMutation
}

// CommandMutation names a broken variant of the design.
type CommandMutation string

// The broken variants.
const (
	// MutationNoClaim: a claim always succeeds, as if there were no
	// delivery record: every duplicate record publishes again.
	MutationNoClaim CommandMutation = "no-claim"
	// MutationNoConnectDelivery: the function ignores the presence stream:
	// a device offline when its command was sent never gets it.
	MutationNoConnectDelivery CommandMutation = "no-connect-delivery"
)

// CommandBound is C2's bound: from the last connection's start to the
// delivery of a command waiting for it (presence lag, replication lag,
// stream poll, retries of the faults of the activity).
const CommandBound = 30 * time.Second

// CommandDefaults is the configuration of a seed.
func CommandDefaults(seed uint64) CommandConfig {
	return CommandConfig{Seed: seed, Regions: 2 + int(seed%2), Devices: 3, Commands: 10, Active: 10 * time.Minute,
		Crash: 0.4, Fault: 0.03, Dup: 0.3}
}

type cmdRegion struct {
	name                    string
	cmdT, presT             *memddb.Table
	store                   *memddb.Commands
	h                       *commands.Handler
	cmdSeq, presSeq         int64
	cmdApplies, presApplies int
}

type cmdSession struct {
	id         string
	region     string
	start      time.Time
	subscribed bool
	live       bool
	got        map[string][]time.Time // command id -> receptions
}

type cmdDevice struct {
	name  string
	cur   *cmdSession
	all   []*cmdSession
	final *cmdSession
	gen   int64
	// lastWrite orders the presence function's writes of this device.
	lastWrite time.Time
}

type cmdSim struct {
	*sched
	cfg        CommandConfig
	regions    []*cmdRegion
	byName     map[string]*cmdRegion
	devices    []*cmdDevice
	created    []fleet.Command
	faults     bool
	ids        int64
	violations []string
	ackedSeen  map[string]bool // region/id shown ACKED once
	// worst is the longest C2 delivery after a last connection began.
	worst time.Duration
}

// CommandResult is what a command simulation found.
type CommandResult struct {
	Violations []string
	Trace      []string
	// Worst is the longest time from a device's last connection to the
	// delivery of a command that waited for it.
	Worst     time.Duration
	Delivered int
}

// RunCommands runs one command simulation.
func RunCommands(cfg CommandConfig) (CommandResult, error) {
	s := &cmdSim{sched: newSched(cfg.Seed), cfg: cfg, byName: map[string]*cmdRegion{}, ackedSeen: map[string]bool{}}
	s.crashRate = cfg.Crash
	names := make([]string, cfg.Regions)
	for i := range names {
		names[i] = fmt.Sprintf("region-%d", i)
	}
	clock := func() time.Time { return s.now }
	cg := memddb.NewGlobalTable("commands", memddb.CommandsKey, names, memddb.WithClock(clock), memddb.WithManualReplication(),
		memddb.WithStreamView(memddb.ViewNewAndOldImages))
	pg := memddb.NewGlobalTable("presence", memddb.PresenceKey, names, memddb.WithClock(clock), memddb.WithManualReplication(),
		memddb.WithStreamView(memddb.ViewNewAndOldImages), memddb.PresenceIndexes)
	ig := memddb.NewGlobalTable("inventory", memddb.InventoryKey, names, memddb.WithClock(clock), memddb.WithManualReplication(),
		memddb.InventoryIndexes)
	defer cg.Close()
	defer pg.Close()
	defer ig.Close()
	for i := range cfg.Devices {
		d := &cmdDevice{name: fmt.Sprintf("cmd-dev-%d", i)}
		s.devices = append(s.devices, d)
	}
	for _, name := range names {
		r := &cmdRegion{name: name, cmdT: cg.Replica(name), presT: pg.Replica(name)}
		invT := ig.Replica(name)
		inv := memddb.NewInventory(invT)
		for _, d := range s.devices {
			if err := inv.Create(context.Background(), fleet.Device{ThingName: d.name, CertificateID: "cert-" + d.name,
				Status: fleet.StatusActive, OriginRegion: names[0], Version: 1}); err != nil {
				return CommandResult{}, err
			}
		}
		for _, t := range []*memddb.Table{r.cmdT, r.presT, invT} {
			t.SetHook(s.hook)
			t.SetAfter(s.afterCall)
		}
		r.store = memddb.NewCommands(r.cmdT)
		var store commands.Store = r.store
		if cfg.Mutation == MutationNoClaim {
			store = noClaim{r.store}
		}
		h, err := commands.New(commands.Config{Store: store, Presence: memddb.NewPresence(r.presT), Devices: inv,
			Publisher: cmdPublisher{s, r}, Region: name, Now: clock, Runner: saga.Runner{Now: clock}})
		if err != nil {
			return CommandResult{}, err
		}
		r.h = h
		s.regions = append(s.regions, r)
		s.byName[name] = r
	}
	s.afterStep = s.observe
	s.faults = true
	end := s.now.Add(cfg.Active)
	for _, d := range s.devices {
		s.after(s.between(0, 30*time.Second), "device "+d.name, func() { s.deviceLoop(d, end) })
	}
	for range cfg.Commands {
		s.after(s.between(0, cfg.Active), "operator", s.send)
	}
	s.at(end, "activity ends", func() {
		s.faults = false
		s.crashRate = 0
		for _, d := range s.devices {
			s.after(s.between(time.Second, 20*time.Second), "last connection "+d.name, func() {
				if d.cur != nil {
					s.disconnect(d)
				}
				d.final = s.connect(d, s.regions[s.rng.IntN(len(s.regions))].name)
			})
		}
	})
	err := s.run(time.Time{})
	if err == nil {
		s.check()
	}
	s.end()
	if err != nil {
		return CommandResult{Trace: s.trace}, err
	}
	delivered := 0
	for _, d := range s.devices {
		for _, ss := range d.all {
			delivered += len(ss.got)
		}
	}
	return CommandResult{Violations: s.violations, Trace: s.trace, Worst: s.worst, Delivered: delivered}, nil
}

// noClaim is MutationNoClaim's store.
type noClaim struct{ *memddb.Commands }

func (n noClaim) Claim(ctx context.Context, thing, id, session, region string, at, expires time.Time) error {
	err := n.Commands.Claim(ctx, thing, id, session, region, at, expires)
	if errors.Is(err, fleet.ErrAlreadyExists) {
		return nil
	}
	return err
}

func (s *cmdSim) violate(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log("VIOLATION %s", msg)
	s.violations = append(s.violations, msg)
}

// hook is every table call's scheduling point (and fault).
func (s *cmdSim) hook(ctx context.Context, op string) error {
	if s.over {
		return errOver
	}
	if s.cur == nil {
		return nil
	}
	s.yield(s.between(time.Millisecond, 30*time.Millisecond), s.cur.name+" ddb:"+op)
	if s.faults && s.chance(s.cfg.Fault) {
		s.log("fault %s ddb:%s unavailable", s.cur.name, op)
		return fmt.Errorf("%s: InternalServerError (simulated): %w", op, fleet.ErrUnavailable)
	}
	return nil
}

// afterCall: a run may die right after any successful call.
func (s *cmdSim) afterCall(ctx context.Context, op string) {
	if s.over || s.cur == nil {
		return
	}
	t := s.cur
	t.calls++
	if s.faults && t.calls == t.crashAt {
		s.log("crash %s after %s", t.name, op)
		s.crash()
	}
}

// cmdPublisher is the data plane's Publish in a region: the broker routes
// the message to the device's live connection there, if it subscribed.
type cmdPublisher struct {
	s *cmdSim
	r *cmdRegion
}

func (p cmdPublisher) Publish(ctx context.Context, topic string, payload []byte, qos int) error {
	s := p.s
	if s.over {
		return errOver
	}
	if s.faults && s.chance(s.cfg.Fault) {
		s.yield(s.between(time.Millisecond, 30*time.Millisecond), s.cur.name+" iotdata:Publish")
		return fmt.Errorf("publish: ServiceUnavailable (simulated): %w", fleet.ErrUnavailable)
	}
	rest, ok := strings.CutPrefix(topic, "e/")
	thing, id, ok2 := strings.Cut(rest, "/cmd/")
	if !ok || !ok2 {
		return fmt.Errorf("publish %s: %w", topic, fleet.ErrInvalid)
	}
	for _, d := range s.devices {
		if d.name == thing && d.cur != nil && d.cur.region == p.r.name && d.cur.subscribed {
			s.receive(d, d.cur, id)
		}
	}
	s.yield(s.between(time.Millisecond, 30*time.Millisecond), s.cur.name+" iotdata:Publish")
	s.afterCall(ctx, "Publish")
	return nil
}

// receive is a connection receiving a command: C1, then its ack.
func (s *cmdSim) receive(d *cmdDevice, ss *cmdSession, id string) {
	prev := ss.got[id]
	ss.got[id] = append(prev, s.now)
	s.log("device %s session %s in %s received %s", d.name, ss.id, ss.region, id)
	if len(prev) > 0 && !prev[0].Before(ss.start.Add(commands.DefaultSubscribeGrace)) {
		s.violate("C1: %s's connection %s in %s received command %s twice (first at +%s, again at +%s)",
			d.name, ss.id, ss.region, id, prev[0].Sub(ss.start), s.now.Sub(ss.start))
	}
	s.after(s.between(5*time.Millisecond, 2*time.Second), "ack "+id, func() {
		if !ss.live {
			return // the connection dropped before the ack went out
		}
		payload, _ := json.Marshal(map[string]any{"thingName": d.name, "commandId": id, "ts": s.now.UnixMilli(),
			"result": map[string]any{"ok": true}})
		s.deliver(s.byName[ss.region], "ack", payload, 3)
	})
}

// deliver hands payload to region r's function after a delay, sometimes
// twice (at least once delivery), retrying a failed or crashed run up to
// attempts times.
func (s *cmdSim) deliver(r *cmdRegion, what string, payload []byte, attempts int) {
	copies := 1
	if s.faults && s.chance(s.cfg.Dup) {
		copies = 2
	}
	for range copies {
		s.after(s.between(100*time.Millisecond, 3*time.Second), what+" to "+r.name, func() { s.invoke(r, what, payload, 1, attempts) })
	}
}

func (s *cmdSim) invoke(r *cmdRegion, what string, payload []byte, attempt, attempts int) {
	s.ids++
	name := fmt.Sprintf("%s/commands-%s#%d", r.name, what, s.ids)
	s.spawn(name, func(ctx context.Context) error {
		out, err := r.h.Invoke(ctx, payload)
		if err != nil {
			return err
		}
		var resp events.DynamoDBEventResponse
		if json.Unmarshal(out, &resp) == nil && len(resp.BatchItemFailures) > 0 {
			return fmt.Errorf("%d batch item failures", len(resp.BatchItemFailures))
		}
		return nil
	}, func(err error, crashed bool) {
		if err == nil && !crashed {
			return
		}
		if attempt >= attempts {
			s.log("dead letter %s %s", r.name, what)
			return
		}
		s.after(time.Duration(attempt)*10*time.Second, "retry "+name, func() { s.invoke(r, what, payload, attempt+1, attempts) })
	})
}

// observe looks after every step at the streams and the replication
// queues, and checks C3.
func (s *cmdSim) observe() {
	for _, r := range s.regions {
		recs, seq := r.cmdT.StreamSince(r.cmdSeq)
		r.cmdSeq = seq
		for _, rec := range recs {
			kind := rec.Change.NewImage[ddbitem.AttrKind]
			if rec.EventName == "INSERT" && kind.DataType() == events.DataTypeString && kind.String() == ddbitem.KindCommand {
				s.stream(r, "commands-stream", rec)
			}
		}
		recs, seq = r.presT.StreamSince(r.presSeq)
		r.presSeq = seq
		for _, rec := range recs {
			c := rec.Change.NewImage[ddbitem.AttrConnected]
			if c.DataType() == events.DataTypeBoolean && c.Boolean() && s.cfg.Mutation != MutationNoConnectDelivery {
				s.stream(r, "presence-stream", rec)
			}
		}
		for q := r.cmdT.Queued(); r.cmdApplies < q; r.cmdApplies++ {
			s.replicate(r.cmdT, &r.cmdApplies)
		}
		for q := r.presT.Queued(); r.presApplies < q; r.presApplies++ {
			s.replicate(r.presT, &r.presApplies)
		}
	}
	s.checkAcked()
}

func (s *cmdSim) stream(r *cmdRegion, what string, rec events.DynamoDBEventRecord) {
	payload, _ := json.Marshal(events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{rec}})
	s.deliver(r, what, payload, 20)
}

func (s *cmdSim) replicate(t *memddb.Table, applies *int) {
	s.after(s.between(50*time.Millisecond, 5*time.Second), "replicate into "+t.Region(), func() {
		t.ApplyNext()
		*applies--
	})
}

// checkAcked is C3 over every replica.
func (s *cmdSim) checkAcked() {
	for _, r := range s.regions {
		for _, d := range s.devices {
			items, err := r.cmdT.Query(context.Background(), &types.AttributeValueMemberS{Value: d.name}, false, 0)
			if err != nil {
				continue
			}
			cmds, err := ddbitem.MergePartition(items)
			if err != nil {
				s.violate("commands table of %s in %s: %v", d.name, r.name, err)
				continue
			}
			for _, c := range cmds {
				key := r.name + "/" + c.ID
				switch {
				case c.Status == fleet.CommandAcked:
					s.ackedSeen[key] = true
				case s.ackedSeen[key]:
					s.violate("C3: command %s of %s was ACKED in %s and is %s now", c.ID, d.name, r.name, c.Status)
					s.ackedSeen[key] = false
				}
			}
		}
	}
}

// send is the operator: a command to a random device, written in the
// first region's replica as the API does.
func (s *cmdSim) send() {
	d := s.devices[s.rng.IntN(len(s.devices))]
	ttl := s.between(time.Minute, 20*time.Minute)
	c := fleet.Command{ThingName: d.name, ID: fmt.Sprintf("%013d-%016x", s.now.UnixMilli(), s.rng.Uint64()),
		Payload: json.RawMessage(`{"op":"x"}`), Status: fleet.CommandQueued, CreatedAt: s.now.Truncate(time.Millisecond),
		ExpiresAt: s.now.Add(ttl).Truncate(time.Millisecond), Version: 1}
	if err := s.regions[0].store.Create(context.Background(), c); err != nil {
		s.violate("create command: %v", err)
		return
	}
	s.created = append(s.created, c)
	s.log("operator sends %s to %s (ttl %s)", c.ID, d.name, ttl)
}

// deviceLoop: offline a while, connected a while in a random region, until
// the activity ends.
func (s *cmdSim) deviceLoop(d *cmdDevice, end time.Time) {
	if !s.now.Before(end) {
		return
	}
	region := s.regions[s.rng.IntN(len(s.regions))].name
	ss := s.connect(d, region)
	s.after(s.between(time.Second, 90*time.Second), "drop "+d.name, func() {
		if d.cur != ss {
			return // the last connection replaced it
		}
		s.disconnect(d)
		offline := s.between(0, 60*time.Second)
		if s.chance(0.3) {
			offline = s.between(0, time.Second) // a quick reconnection
		}
		s.after(offline, "reconnect "+d.name, func() { s.deviceLoop(d, end) })
	})
}

// connect opens a connection; the device subscribes a little later; the
// presence function writes the presence item in that region after a lag.
func (s *cmdSim) connect(d *cmdDevice, region string) *cmdSession {
	s.ids++
	ss := &cmdSession{id: fmt.Sprintf("sess-%d", s.ids), region: region, start: s.now, live: true, got: map[string][]time.Time{}}
	d.cur = ss
	d.all = append(d.all, ss)
	s.log("device %s connects to %s as %s", d.name, region, ss.id)
	s.after(s.between(10*time.Millisecond, 500*time.Millisecond), "subscribe "+ss.id, func() {
		if ss.live {
			ss.subscribed = true
		}
	})
	s.writePresence(d, fleet.Presence{ThingName: d.name, Connected: true, Region: region, SessionID: ss.id, Since: ss.start})
	return ss
}

func (s *cmdSim) disconnect(d *cmdDevice) {
	ss := d.cur
	ss.live = false
	d.cur = nil
	s.log("device %s drops %s", d.name, ss.id)
	s.writePresence(d, fleet.Presence{ThingName: d.name, Connected: false, Region: ss.region, SessionID: ss.id})
}

// writePresence is the presence function's write, in the event's region,
// after a lag, in the order of the device's events.
func (s *cmdSim) writePresence(d *cmdDevice, p fleet.Presence) {
	at := s.now.Add(s.between(50*time.Millisecond, 3*time.Second))
	if !at.After(d.lastWrite) {
		at = d.lastWrite.Add(time.Millisecond)
	}
	d.lastWrite = at
	s.at(at, "presence "+d.name, func() {
		d.gen++
		p.Generation, p.Version, p.LastSeen, p.EventAt, p.UpdatedAt = d.gen, d.gen, s.now, s.now, s.now
		item, err := ddbitem.MarshalPresence(p)
		if err == nil {
			err = s.byName[p.Region].presT.PutItem(context.Background(), item, nil)
		}
		if err != nil {
			s.violate("presence write: %v", err)
		}
	})
}

// check is C2 at the end.
func (s *cmdSim) check() {
	for _, c := range s.created {
		var d *cmdDevice
		for _, x := range s.devices {
			if x.name == c.ThingName {
				d = x
			}
		}
		fs := d.final
		if fs == nil || !c.ExpiresAt.After(fs.start.Add(CommandBound+time.Minute)) {
			continue // expired before its device's last connection could get it
		}
		ackedBefore := false
		for _, ss := range d.all {
			if ss != fs && len(ss.got[c.ID]) > 0 {
				ackedBefore = true // maybe: its ack may have been lost
			}
		}
		got := fs.got[c.ID]
		if len(got) > 0 {
			from := fs.start
			if c.CreatedAt.After(from) {
				from = c.CreatedAt
			}
			if lat := got[0].Sub(from); lat > s.worst {
				s.worst = lat
			}
			if lat := got[0].Sub(from); lat > CommandBound {
				s.violate("C2: command %s reached %s's last connection %s after it began (bound %s)", c.ID, d.name, lat, CommandBound)
			}
		} else if !ackedBefore {
			s.violate("C2: command %s (expires at +%s) never reached %s, connected since +%s", c.ID,
				c.ExpiresAt.Sub(Epoch), d.name, fs.start.Sub(Epoch))
			continue
		}
		for _, r := range s.regions {
			got, err := r.store.Get(context.Background(), c.ThingName, c.ID)
			if err != nil || got.Status != fleet.CommandAcked {
				s.violate("C2: command %s of %s is %s in %s at the end, want ACKED (%v)", c.ID, c.ThingName, got.Status, r.name, err)
			}
		}
	}
}
