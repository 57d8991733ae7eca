package dst

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/workflow/presence"
)

// The presence scenario: devices that connect, disconnect, are taken over
// in one region (DUPLICATE_CLIENTID) and move between regions (a region
// going down: the device reconnects elsewhere at once, and the old region
// publishes its disconnect only when the keepalive expires, or never), the
// lifecycle events of each connection delivered to the real presence
// handler of their region duplicated, reordered and delayed (up to minutes),
// with transient table failures and their retries, over the presence global
// table replicated last writer wins, and each region's stream read by the
// same handler as the event source mapping does.
//
// Invariants, once delivery quiesces:
//
//	P1 every replica's presence item of a device is the same, and says what
//	   the newest events say: the fold (fleet.FoldPresence) of, in each
//	   region, the newest of its events by (versionNumber, connect before
//	   disconnect) (fleet.ApplySession);
//	P2 a disconnect of an old session never marks a newer session's device
//	   as offline: a device whose last session is still connected is shown
//	   connected, in that session, in every replica.

// PresenceConfig configures a presence simulation.
type PresenceConfig struct {
	Seed     uint64
	Regions  []string
	Devices  int
	Sessions int // per device
	// DuplicateRate is the probability that an event is delivered twice;
	// LateRate that a delivery is late (30s to 3 minutes).
	DuplicateRate, LateRate float64
	// FaultRate is the probability that a table call fails transiently
	// (the invocation is retried).
	FaultRate float64
	// Broken replaces a mechanism the invariants rely on, to prove they can
	// fail: "no-stream-fold" (the stream's records fold nothing) or
	// "timestamp-only" (one presence item per device, ordered by the
	// events' timestamps alone).
	Broken string
}

// PresenceDefaults is the configuration of a seed.
func PresenceDefaults(seed uint64) PresenceConfig {
	return PresenceConfig{Seed: seed, Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}, Devices: 3, Sessions: 5,
		DuplicateRate: 0.3, LateRate: 0.15, FaultRate: 0.05}
}

type presenceSim struct {
	*sched
	cfg      PresenceConfig
	table    *memddb.GlobalTable
	stores   map[string]*memddb.Presence
	handlers map[string]func(ctx context.Context, payload []byte) error
	streamAt map[string]int64
	reading  map[string]bool // a stream batch is being handled
	pending  int             // deliveries not yet handled successfully
	sent     []sentEvent
	last     map[string]lastSession // device -> its last session
	faults   bool
}

type sentEvent struct {
	region string
	ev     fleet.LifecycleEvent
}

type lastSession struct {
	session string
	open    bool // no disconnect was ever published for it
}

// RunPresence runs one presence simulation and returns the violated
// invariants (none: nil) and the trace.
func RunPresence(cfg PresenceConfig) (violations, trace []string, err error) {
	s := &presenceSim{sched: newSched(cfg.Seed), cfg: cfg, stores: map[string]*memddb.Presence{},
		handlers: map[string]func(context.Context, []byte) error{}, streamAt: map[string]int64{}, reading: map[string]bool{},
		last: map[string]lastSession{}}
	defer s.end()
	s.table = memddb.NewGlobalTable("presence", memddb.PresenceKey, cfg.Regions, memddb.PresenceIndexes,
		memddb.WithManualReplication(), memddb.WithClock(func() time.Time { return s.now }))
	defer s.table.Close()
	for _, r := range cfg.Regions {
		rep := s.table.Replica(r)
		rep.SetHook(s.presenceHook())
		s.stores[r] = memddb.NewPresence(rep)
		if err := s.newHandler(r); err != nil {
			return nil, nil, err
		}
	}
	s.generate()
	s.faults = cfg.FaultRate > 0
	for _, r := range cfg.Regions {
		s.replicate(r)
		s.readStream(r)
	}
	end := s.now.Add(2 * time.Hour)
	if err := s.run(end); err != nil {
		return nil, s.trace, err
	}
	s.faults = false
	if !s.quiet() {
		return nil, s.trace, fmt.Errorf("presence did not quiesce in %s: %d deliveries pending", end.Sub(Epoch), s.pending)
	}
	return s.check(), s.trace, nil
}

func (s *presenceSim) presenceHook() func(ctx context.Context, op string) error {
	return func(ctx context.Context, op string) error {
		if s.over {
			return errOver
		}
		if s.cur == nil {
			return nil
		}
		s.yield(s.between(time.Millisecond, 30*time.Millisecond), s.cur.name+" presence:"+op)
		if s.faults && s.chance(s.cfg.FaultRate) {
			return fmt.Errorf("%s: InternalServerError (simulated): %w", op, fleet.ErrUnavailable)
		}
		return nil
	}
}

func (s *presenceSim) newHandler(region string) error {
	store := s.stores[region]
	if s.cfg.Broken == "timestamp-only" {
		s.handlers[region] = func(ctx context.Context, payload []byte) error {
			return timestampOnly(ctx, store, region, payload)
		}
		return nil
	}
	h, err := presence.New(presence.Config{Store: store, Region: region, Regions: s.cfg.Regions,
		Now: func() time.Time { return s.now }, Log: obs.Discard()})
	if err != nil {
		return err
	}
	noFold := s.cfg.Broken == "no-stream-fold"
	s.handlers[region] = func(ctx context.Context, payload []byte) error {
		if noFold && isBatch(payload) {
			return nil
		}
		_, err := h.Invoke(ctx, payload)
		return err
	}
	return nil
}

func isBatch(payload []byte) bool {
	var b events.DynamoDBEvent
	return json.Unmarshal(payload, &b) == nil && len(b.Records) > 0
}

// timestampOnly is the naive design: one presence item per device, written
// when the event's timestamp is newer than the stored one's.
func timestampOnly(ctx context.Context, store *memddb.Presence, region string, payload []byte) error {
	ev, err := fleet.ParseLifecycleEvent(payload)
	if err != nil {
		return nil // a stream batch: nothing to do
	}
	at := time.UnixMilli(ev.Timestamp).UTC()
	cur, err := store.Get(ctx, ev.ClientID)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return err
	}
	if err == nil && !at.After(cur.EventAt) {
		return nil
	}
	p := fleet.Presence{ThingName: ev.ClientID, Connected: ev.EventType == fleet.EventConnected, Region: region,
		SessionID: ev.SessionIdentifier, LastSeen: at, EventAt: at, Version: ev.VersionNumber, Generation: cur.Generation + 1}
	if p.Connected {
		p.Since = at
	}
	_, err = store.Publish(ctx, p)
	return err
}

// generate makes every device's sessions and schedules the delivery of
// their lifecycle events.
func (s *presenceSim) generate() {
	versions := map[[2]string]int64{}
	for d := range s.cfg.Devices {
		thing := fmt.Sprintf("dev-%d", d)
		at := s.now.Add(s.between(0, 5*time.Second))
		region := s.cfg.Regions[s.rng.IntN(len(s.cfg.Regions))]
		for i := range s.cfg.Sessions {
			k := [2]string{thing, region}
			version := versions[k]
			versions[k]++
			session := fmt.Sprintf("%s-s%d", thing, i)
			s.emit(region, thing, fleet.EventConnected, session, version, at)
			last := i == s.cfg.Sessions-1
			next := at.Add(s.between(2*time.Second, 2*time.Minute))
			switch x := s.rng.Float64(); {
			case last && x < 0.5:
				// Still connected at the end.
				s.last[thing] = lastSession{session: session, open: true}
			case last:
				s.emit(region, thing, fleet.EventDisconnected, session, version, next)
				s.last[thing] = lastSession{session: session}
			case x < 0.2:
				// Taken over in the same region: the old connection's
				// disconnect follows the new one's connect.
				s.emit(region, thing, fleet.EventDisconnected, session, version, next.Add(s.between(time.Millisecond, 5*time.Millisecond)))
			case x < 0.6:
				// The region goes down: the device reconnects elsewhere at
				// once; the old region publishes the disconnect when the
				// keepalive expires, or never.
				if !s.chance(0.3) {
					s.emit(region, thing, fleet.EventDisconnected, session, version, next.Add(s.between(time.Second, 90*time.Second)))
				}
				region = s.other(region)
			default:
				s.emit(region, thing, fleet.EventDisconnected, session, version, next.Add(-time.Second))
				if s.chance(0.5) {
					region = s.other(region)
				}
				next = next.Add(s.between(time.Second, 30*time.Second))
			}
			at = next
		}
	}
}

func (s *presenceSim) other(region string) string {
	for {
		r := s.cfg.Regions[s.rng.IntN(len(s.cfg.Regions))]
		if r != region || len(s.cfg.Regions) == 1 {
			return r
		}
	}
}

// emit publishes one lifecycle event in region at `at`: one delivery, or
// two when duplicated, each with its own delay.
func (s *presenceSim) emit(region, thing, typ, session string, version int64, at time.Time) {
	ev := fleet.LifecycleEvent{ClientID: thing, Timestamp: at.UnixMilli(), EventType: typ, SessionIdentifier: session,
		PrincipalIdentifier: "cert-" + thing, VersionNumber: version}
	if typ == fleet.EventDisconnected {
		f := false
		ev.ClientInitiatedDisconnect, ev.DisconnectReason = &f, "CONNECTION_LOST"
	}
	s.sent = append(s.sent, sentEvent{region: region, ev: ev})
	payload, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	n := 1
	if s.chance(s.cfg.DuplicateRate) {
		n = 2
	}
	for range n {
		delay := s.between(10*time.Millisecond, 3*time.Second)
		if s.chance(s.cfg.LateRate) {
			delay = s.between(30*time.Second, 3*time.Minute)
		}
		s.pending++
		name := fmt.Sprintf("presence@%s %s %s v%d", region, thing, typ, version)
		s.at(at.Add(delay), "deliver "+name, func() { s.invoke(region, name, payload, 1) })
	}
}

// invoke runs the region's handler on payload as a task, retried with
// backoff until it succeeds (Lambda's retries; the DLQ is not modelled).
func (s *presenceSim) invoke(region, name string, payload []byte, attempt int) {
	h := s.handlers[region]
	s.spawn(name, func(ctx context.Context) error { return h(ctx, payload) }, func(err error, _ bool) {
		if err == nil {
			s.pending--
			return
		}
		s.after(s.between(100*time.Millisecond, time.Second)*time.Duration(min(attempt, 8)), "retry "+name, func() {
			s.invoke(region, name, payload, attempt+1)
		})
	})
}

// replicate lands the replications queued for region's replica, after a
// lag, and comes back while anything is going on.
func (s *presenceSim) replicate(region string) {
	s.after(s.between(50*time.Millisecond, 2*time.Second), "replicate to "+region, func() {
		rep := s.table.Replica(region)
		for n := s.rng.IntN(4) + 1; n > 0 && rep.ApplyNext(); n-- {
		}
		if !s.quiet() {
			s.replicate(region)
		}
	})
}

// readStream hands region's new stream records to its handler, one batch
// at a time, as the event source mapping does; a failed batch is read
// again.
func (s *presenceSim) readStream(region string) {
	s.after(s.between(100*time.Millisecond, time.Second), "read stream of "+region, func() {
		if !s.reading[region] {
			recs, seq := s.table.Replica(region).StreamSince(s.streamAt[region])
			if len(recs) > 0 {
				payload, err := json.Marshal(events.DynamoDBEvent{Records: recs})
				if err != nil {
					panic(err)
				}
				s.reading[region] = true
				h := s.handlers[region]
				s.spawn("presence@"+region+" stream", func(ctx context.Context) error { return h(ctx, payload) }, func(err error, _ bool) {
					s.reading[region] = false
					if err == nil {
						s.streamAt[region] = seq
					}
				})
			}
		}
		if !s.quiet() {
			s.readStream(region)
		}
	})
}

// quiet: every delivery handled, every replication landed, every stream
// record handled.
func (s *presenceSim) quiet() bool {
	if s.pending > 0 {
		return false
	}
	for _, r := range s.cfg.Regions {
		rep := s.table.Replica(r)
		if s.reading[r] || rep.Queued() > 0 {
			return false
		}
		if recs, _ := rep.StreamSince(s.streamAt[r]); len(recs) > 0 {
			return false
		}
	}
	return true
}

// expected is what P1 says a device's presence is: the fold of each
// region's newest event.
func (s *presenceSim) expected(thing string) fleet.Presence {
	var recs []fleet.SessionRecord
	for _, region := range s.cfg.Regions {
		var evs []fleet.SessionRecord
		for _, e := range s.sent {
			if e.region == region && e.ev.ClientID == thing {
				evs = append(evs, fleet.RecordOf(e.ev, region))
			}
		}
		if len(evs) == 0 {
			continue
		}
		var cur *fleet.SessionRecord
		for _, ev := range evs {
			next, _ := fleet.ApplySession(cur, ev)
			cur = &next
		}
		recs = append(recs, *cur)
	}
	return fleet.FoldPresence(thing, recs, s.now)
}

func samePresenceView(a, b fleet.Presence) bool {
	a.Generation, b.Generation = 0, 0
	return fleet.SamePresence(a, b)
}

func (s *presenceSim) check() []string {
	var out []string
	ctx := context.Background()
	things := make([]string, 0, len(s.last))
	for t := range s.last {
		things = append(things, t)
	}
	slices.Sort(things)
	for _, thing := range things {
		want := s.expected(thing)
		var first *fleet.Presence
		for _, region := range s.cfg.Regions {
			got, err := s.stores[region].Get(ctx, thing)
			if err != nil {
				out = append(out, fmt.Sprintf("P1 %s in %s: %v", thing, region, err))
				continue
			}
			if s.cfg.Broken != "timestamp-only" && !samePresenceView(got, want) {
				out = append(out, fmt.Sprintf("P1 %s in %s: %+v, the newest events say %+v", thing, region, got, want))
			}
			if first == nil {
				first = &got
			} else if !fleet.SamePresence(got, *first) {
				out = append(out, fmt.Sprintf("P1 %s: %s has %+v, %s has %+v", thing, region, got, s.cfg.Regions[0], *first))
			}
			if last := s.last[thing]; last.open && (!got.Connected || got.SessionID != last.session) {
				out = append(out, fmt.Sprintf("P2 %s in %s: its last session %s is connected, the presence says connected=%v session %s",
					thing, region, last.session, got.Connected, got.SessionID))
			}
		}
	}
	return out
}
