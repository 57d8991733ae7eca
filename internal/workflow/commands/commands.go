// Package commands delivers operator commands to devices in the region
// where each device is connected, and records their acknowledgements: the
// commands Lambda of every region.
//
// One function takes three event shapes, told apart by their content:
//
//   - a batch of the commands table's stream (events.DynamoDBEvent, NewImage
//     of Kind "command", INSERT): deliver the new command if the device is
//     connected in this region;
//   - a batch of the presence table's stream (events.DynamoDBEvent, NewImage
//     with Connected=true in this region and a SessionId the OldImage did not
//     have): deliver the device's open commands to that connection;
//   - the ack rule's event (SELECT topic(2) AS thingName, topic(4) AS
//     commandId, timestamp() AS ts, result FROM 'i/+/ack/+'): record the ack.
//
// One function because the three share the delivery (claim, publish,
// compensate), the table, the metrics and the IAM policy; separate functions
// would triple the resources for no isolation worth having (a failing
// shape does not stop the others: each has its own event source).
//
// Exactly one delivery per connection: before publishing, the run claims
// the delivery of (command, session) by putting an insert-only delivery
// record where none exists. Only the region the session is in ever writes
// that record, so the condition holds whatever the global table's
// replication does. A publish that fails is compensated (the record is
// deleted, so that the retry delivers); a run that dies between claim and
// publish leaves the record, and the command reaches the device at its next
// connection instead (at most once per connection, at least once per
// command until ACKED or EXPIRED, for a device that reconnects).
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Function is the function name in logs and metric dimensions.
const Function = "commands"

// DefaultSubscribeGrace is how long after its CONNACK a device may take to
// subscribe to e/<thing>/cmd/+ (the device contract).
const DefaultSubscribeGrace = 2 * time.Second

// Saga step names.
const (
	StepClaim    = "claim-delivery"
	StepPublish  = "publish"
	StepMarkSent = "mark-sent"
)

// Store is what the function needs of its region's commands table replica
// (contract.Commands).
type Store interface {
	Get(ctx context.Context, thing, id string) (fleet.Command, error)
	Open(ctx context.Context, thing string) ([]fleet.Command, error)
	Claim(ctx context.Context, thing, id, session, region string, at, expires time.Time) error
	Unclaim(ctx context.Context, thing, id, session string) error
	MarkSent(ctx context.Context, thing, id, session, region string, at time.Time) error
	Ack(ctx context.Context, thing, id string, at time.Time, result string) error
	Expire(ctx context.Context, thing, id string, now time.Time) error
}

// Presence says where a device is connected: its presence item
// (contract.Presence's Get; fleet.ErrNotFound when never seen).
type Presence interface {
	Get(ctx context.Context, thing string) (fleet.Presence, error)
}

// Devices reads a device's inventory item and revocation record, to
// deliver to ACTIVE devices only (fleet.Effective).
type Devices interface {
	Get(ctx context.Context, thingName string) (fleet.Device, error)
	Revocation(ctx context.Context, thingName string) (fleet.Revocation, error)
}

// Publisher is the IoT data plane's Publish in the function's own region.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, qos int) error
}

// Config holds a Handler's dependencies.
type Config struct {
	Store     Store
	Presence  Presence
	Devices   Devices
	Publisher Publisher
	Region    string
	// SubscribeGrace: a publish in this region later than this after a
	// connection began reached it (DefaultSubscribeGrace when zero).
	SubscribeGrace time.Duration
	Now            func() time.Time // time.Now when nil
	Log            *slog.Logger     // discarded when nil
	Metrics        obs.Metrics      // dropped when nil
	Tracer         obs.Tracer       // none when nil
	Runner         saga.Runner
}

// Handler is the commands function.
type Handler struct {
	store    Store
	presence Presence
	devices  Devices
	pub      Publisher
	region   string
	grace    time.Duration
	now      func() time.Time
	log      *slog.Logger
	metrics  obs.Metrics
	runner   saga.Runner
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("commands: no commands table")
	case cfg.Presence == nil:
		return nil, errors.New("commands: no presence table")
	case cfg.Devices == nil:
		return nil, errors.New("commands: no inventory")
	case cfg.Publisher == nil:
		return nil, errors.New("commands: no publisher")
	case cfg.Region == "":
		return nil, errors.New("commands: no region")
	}
	h := &Handler{store: cfg.Store, presence: cfg.Presence, devices: cfg.Devices, pub: cfg.Publisher, region: cfg.Region,
		grace: cfg.SubscribeGrace, now: cfg.Now, log: cfg.Log, metrics: cfg.Metrics, runner: cfg.Runner}
	if h.grace <= 0 {
		h.grace = DefaultSubscribeGrace
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = obs.Discard()
	}
	if h.metrics == nil {
		h.metrics = obs.Nop{}
	}
	h.runner = h.runner.Fill(h.log, h.metrics, cfg.Tracer, h.now)
	// Every failure of a delivery is compensated (the claim is released)
	// before the error goes back for a retry: a retry must find no claim.
	h.runner.Classify = func(error) bool { return false }
	return h, nil
}

func (h *Handler) count(name string, reason string) {
	dims := []obs.Dim{obs.D("Function", Function)}
	if reason != "" {
		dims = append(dims, obs.D("Reason", reason))
	}
	h.metrics.Count(name, 1, dims...)
}

// Invoke is the Lambda entry point (lambda.Handler). A stream batch answers
// with the records to retry (ReportBatchItemFailures); an ack event answers
// nothing, and an error when it is worth retrying.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	var probe struct {
		Records json.RawMessage `json:"Records"`
	}
	if err := json.Unmarshal(payload, &probe); err == nil && len(probe.Records) > 0 {
		var ev events.DynamoDBEvent
		if err := json.Unmarshal(payload, &ev); err != nil {
			h.reject(ctx, "bad_stream_event", err, len(payload))
			return nil, nil
		}
		resp := h.HandleStream(ctx, ev)
		out, err := json.Marshal(resp)
		if err != nil {
			return nil, fmt.Errorf("encode batch response: %w", err)
		}
		return out, nil
	}
	ack, err := fleet.ParseAckEvent(payload)
	if err != nil {
		h.reject(ctx, "bad_event", err, len(payload))
		return nil, nil
	}
	return nil, h.HandleAck(ctx, ack)
}

func (h *Handler) reject(ctx context.Context, reason string, err error, n int) {
	h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", slog.String("function", Function),
		slog.String("reason", reason), slog.String("error", err.Error()), slog.Int("bytes", n))
	h.count("Rejected", reason)
}

// HandleStream handles a batch of either stream, record by record, and
// returns the records that failed retryably.
func (h *Handler) HandleStream(ctx context.Context, ev events.DynamoDBEvent) events.DynamoDBEventResponse {
	var resp events.DynamoDBEventResponse
	for _, rec := range ev.Records {
		if err := h.HandleRecord(ctx, rec); err != nil {
			h.log.ErrorContext(ctx, "stream record failed", slog.String("function", Function),
				slog.String("eventID", rec.EventID), slog.String("error", err.Error()))
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.DynamoDBBatchItemFailure{ItemIdentifier: rec.Change.SequenceNumber})
		}
	}
	return resp
}

// HandleRecord handles one stream record of the commands or the presence
// table; any other record is ignored. An error is worth retrying.
func (h *Handler) HandleRecord(ctx context.Context, rec events.DynamoDBEventRecord) error {
	img := rec.Change.NewImage
	if kind, ok := img[ddbitem.AttrKind]; ok && kind.DataType() == events.DataTypeString {
		if rec.EventName != string(events.DynamoDBOperationTypeInsert) || kind.String() != ddbitem.KindCommand {
			return nil // a status change, or a delivery or ack record
		}
		item, err := ddbitem.FromStreamImage(img)
		if err != nil {
			h.reject(ctx, "bad_command_record", err, 0)
			return nil
		}
		cmd, err := ddbitem.UnmarshalCommand(item)
		if err != nil {
			h.reject(ctx, "bad_command_record", err, 0)
			return nil
		}
		return h.CommandCreated(ctx, cmd)
	}
	if _, ok := img[ddbitem.AttrConnected]; ok {
		p, ok, err := ddbitem.PresenceFromStreamImage(img)
		if err != nil {
			h.reject(ctx, "bad_presence_record", err, 0)
			return nil
		}
		if !ok || !p.Connected || p.Region != h.region || p.SessionID == "" {
			return nil // a region's session record, or not a connect here
		}
		if old, ok, err := ddbitem.PresenceFromStreamImage(rec.Change.OldImage); err == nil && ok && old.Connected && old.SessionID == p.SessionID {
			return nil // the same connection: not a connect
		}
		return h.Connected(ctx, p.ThingName, p.SessionID)
	}
	return nil
}

// locate returns where thing is connected, and since when ("" when it is
// not).
func (h *Handler) locate(ctx context.Context, thing string) (region, session string, since time.Time, err error) {
	p, err := h.presence.Get(ctx, thing)
	if errors.Is(err, fleet.ErrNotFound) {
		return "", "", time.Time{}, nil
	}
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("locate %s: %w", thing, err)
	}
	if !p.Connected {
		return "", "", time.Time{}, nil
	}
	return p.Region, p.SessionID, p.Since, nil
}

// active reports whether the device may receive commands (ACTIVE, with no
// revocation record).
func (h *Handler) active(ctx context.Context, thing string) (bool, error) {
	d, err := h.devices.Get(ctx, thing)
	found := err == nil
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		return false, fmt.Errorf("read device %s: %w", thing, err)
	}
	rev, rerr := h.devices.Revocation(ctx, thing)
	if rerr != nil && !errors.Is(rerr, fleet.ErrNotFound) {
		return false, fmt.Errorf("read revocation of %s: %w", thing, rerr)
	}
	d, found = fleet.Effective(d, found, rev, rerr == nil)
	return found && d.Status == fleet.StatusActive, nil
}

// CommandCreated delivers a new command if its device is connected in this
// region now.
func (h *Handler) CommandCreated(ctx context.Context, cmd fleet.Command) error {
	region, session, since, err := h.locate(ctx, cmd.ThingName)
	if err != nil {
		return err
	}
	if region != h.region || session == "" {
		h.count("NotConnectedHere", "")
		return nil // its connect will deliver it, wherever it is
	}
	ok, err := h.active(ctx, cmd.ThingName)
	if err != nil || !ok {
		return err
	}
	// The stream's image may be stale (a redelivery): read the command.
	cur, err := h.store.Get(ctx, cmd.ThingName, cmd.ID)
	if errors.Is(err, fleet.ErrNotFound) {
		return nil // expired out of the table
	}
	if err != nil {
		return err
	}
	return h.Deliver(ctx, cur, session, since)
}

// Connected delivers thing's open commands to its new connection session
// in this region, unless the device has moved on since.
func (h *Handler) Connected(ctx context.Context, thing, session string) error {
	region, cur, since, err := h.locate(ctx, thing)
	if err != nil {
		return err
	}
	if region != h.region || cur != session {
		h.count("StaleConnect", "")
		return nil // an older connection: the newer one's record delivers
	}
	ok, err := h.active(ctx, thing)
	if err != nil || !ok {
		return err
	}
	open, err := h.store.Open(ctx, thing)
	if err != nil {
		return err
	}
	var errs []error
	for _, cmd := range open {
		if err := h.Deliver(ctx, cmd, session, since); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Deliver delivers cmd to session (connected in this region since
// `since`) at most once: claim, publish, mark SENT. An expired command is
// marked EXPIRED instead. A command published in this region to another
// session later than SubscribeGrace after `since` reached this connection
// already (the presence item lagged behind the broker, and the device had
// subscribed by then): it is not published again. One published within the
// grace may or may not have reached it, and is published again: the
// device tells the copies apart by the id in the topic. The error is worth
// retrying (the claim was released).
func (h *Handler) Deliver(ctx context.Context, cmd fleet.Command, session string, since time.Time) error {
	now := h.now()
	switch cmd.Effective(now) {
	case fleet.CommandAcked:
		return nil
	case fleet.CommandExpired:
		if cmd.Status.Final() {
			return nil
		}
		err := h.store.Expire(ctx, cmd.ThingName, cmd.ID, now)
		switch {
		case err == nil:
			h.count("Expired", "")
		case errors.Is(err, fleet.ErrConditionFailed), errors.Is(err, fleet.ErrNotFound):
		default:
			return err
		}
		return nil
	}
	if !since.IsZero() && cmd.ReachedSince(h.region, session, since.Add(h.grace)) {
		h.count("Duplicate", "reached")
		return nil
	}
	dup := false
	steps := []saga.Step{{
		Name: StepClaim,
		Do: func(ctx context.Context) (bool, error) {
			// The record's time is the claim's, just before the publish
			// (ReachedSince relies on it).
			err := h.store.Claim(ctx, cmd.ThingName, cmd.ID, session, h.region, h.now(), cmd.ExpiresAt)
			if errors.Is(err, fleet.ErrAlreadyExists) {
				dup = true
				return false, nil
			}
			return err == nil, err
		},
		Undo: func(ctx context.Context) error { return h.store.Unclaim(ctx, cmd.ThingName, cmd.ID, session) },
		Obligation: func() any {
			return map[string]string{"release": "delivery record", "thingName": cmd.ThingName, "commandId": cmd.ID, "sessionId": session}
		},
	}, {
		Name: StepPublish,
		Do: func(ctx context.Context) (bool, error) {
			if dup {
				return false, nil
			}
			if err := h.pub.Publish(ctx, fleet.CommandTopic(cmd.ThingName, cmd.ID), cmd.Payload, 1); err != nil {
				return false, fmt.Errorf("publish command %s to %s: %w", cmd.ID, cmd.ThingName, err)
			}
			return true, nil
		},
	}, {
		Name: StepMarkSent,
		Do: func(ctx context.Context) (bool, error) {
			if dup {
				return false, nil
			}
			// The delivery record is the truth (a read merges it): a failed
			// status update is logged, not a reason to deliver again.
			err := h.store.MarkSent(ctx, cmd.ThingName, cmd.ID, session, h.region, now)
			if err != nil && !errors.Is(err, fleet.ErrConditionFailed) && !errors.Is(err, fleet.ErrNotFound) {
				h.log.WarnContext(ctx, "mark sent failed", slog.String("function", Function),
					slog.String("device", cmd.ThingName), slog.String("commandId", cmd.ID), slog.String("error", err.Error()))
			}
			return err == nil, nil
		},
	}}
	res, err := h.runner.Run(ctx, saga.Saga{Name: Function, ID: "deliver/" + cmd.ThingName + "/" + cmd.ID + "/" + session, Steps: steps})
	if err != nil {
		h.count("DeliveryFailed", "")
		// A compensation that failed (the runner counts CompensationFailed
		// for Saga=commands) leaves the claim: this connection will not get
		// the command; the device's next connection will.
		h.log.ErrorContext(ctx, "delivery failed", slog.String("function", Function), slog.String("device", cmd.ThingName),
			slog.String("commandId", cmd.ID), slog.String("sessionId", session), slog.String("outcome", string(res.Outcome)),
			slog.String("error", err.Error()))
		return err
	}
	if dup {
		h.count("Duplicate", "")
		return nil
	}
	h.count("Sent", "")
	h.log.InfoContext(ctx, "command sent", slog.String("function", Function), slog.String("device", cmd.ThingName),
		slog.String("commandId", cmd.ID), slog.String("sessionId", session), slog.String("region", h.region))
	return nil
}

// HandleAck records a device's acknowledgement. An unknown or expired
// command is logged and dropped; the error is worth retrying.
func (h *Handler) HandleAck(ctx context.Context, ev fleet.AckEvent) error {
	err := h.store.Ack(ctx, ev.ThingName, ev.CommandID, time.UnixMilli(ev.TS).UTC(), ev.Result)
	switch {
	case err == nil:
		h.count("Acked", "")
		return nil
	case errors.Is(err, fleet.ErrNotFound):
		h.reject(ctx, "unknown_command", err, 0)
		return nil
	case errors.Is(err, fleet.ErrConditionFailed):
		h.reject(ctx, "expired_command", err, 0)
		return nil
	}
	h.log.ErrorContext(ctx, "ack failed", slog.String("function", Function), slog.String("device", ev.ThingName),
		slog.String("commandId", ev.CommandID), slog.String("error", err.Error()))
	return err
}
