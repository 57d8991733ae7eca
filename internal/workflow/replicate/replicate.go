// Package replicate converges one region's IoT registry to the device
// inventory. It is the Lambda invoked through EventBridge (DynamoDB stream →
// Pipe → custom bus → rule) with one inventory stream record as the event's
// detail. Each replica's stream carries local and replicated writes.
//
// The record is a trigger, not the truth: the handler reads the current item
// from this region's replica and converges the registry to it, so duplicate,
// retried and out-of-order deliveries are harmless, and nothing is read from
// the origin region (the certificate PEM travels with the item).
package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// Registry is what replicate needs of its region's IoT registry.
type Registry = converge.Registry

// Inventory is what replicate needs of its region's inventory replica.
type Inventory = converge.Inventory

// Leases is the region's device lease table.
type Leases = converge.Leases

// Function is the function name in logs and metric dimensions.
const Function = "replicate"

// ReasonBadEvent is the rejection reason of an event that cannot be decoded.
const ReasonBadEvent = "bad_event"

// Config holds a Handler's dependencies.
type Config struct {
	Registry   Registry
	Inventory  Inventory
	Leases     Leases
	Region     string
	PolicyName string
	// Lease tunes the device leases (duration, wait, sleep, run ids); its
	// other fields are taken from this Config.
	Lease   converge.Config
	Now     func() time.Time // time.Now when nil
	Log     *slog.Logger     // discarded when nil
	Metrics obs.Metrics      // dropped when nil
	Tracer  obs.Tracer       // none when nil
	// Runner carries the saga settings; Log, Metrics, Tracer and Now are
	// filled from the fields above when unset.
	Runner saga.Runner
}

// Handler handles inventory stream records.
type Handler struct {
	engine  *converge.Engine
	region  string
	log     *slog.Logger
	metrics obs.Metrics
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	h := &Handler{region: cfg.Region, log: cfg.Log, metrics: cfg.Metrics}
	if h.log == nil {
		h.log = obs.Discard()
	}
	if h.metrics == nil {
		h.metrics = obs.Nop{}
	}
	ec := cfg.Lease
	ec.Registry, ec.Inventory, ec.Leases, ec.Region, ec.PolicyName = cfg.Registry, cfg.Inventory, cfg.Leases, cfg.Region, cfg.PolicyName
	ec.Now, ec.Log, ec.Metrics, ec.Tracer, ec.Runner = cfg.Now, h.log, h.metrics, cfg.Tracer, cfg.Runner
	var err error
	if h.engine, err = converge.New(ec); err != nil {
		return nil, fmt.Errorf("replicate: %w", err)
	}
	return h, nil
}

// Trigger is what the handler takes from a stream record: which thing to
// converge, and the certificate the record's old image names (for a
// removal, whose current item is gone).
type Trigger struct {
	ThingName string
	EventName string // INSERT, MODIFY, REMOVE
	// OldCertificateID is the certificate of the old image, "" without one.
	OldCertificateID string
}

// ParseEvent decodes an EventBridge event whose detail is one DynamoDB stream
// record of the inventory. The error wraps fleet.ErrInvalid.
func ParseEvent(payload []byte) (Trigger, error) {
	var ev events.EventBridgeEvent
	if err := json.Unmarshal(payload, &ev); err != nil {
		return Trigger{}, fmt.Errorf("decode EventBridge event: %w: %w", fleet.ErrInvalid, err)
	}
	if len(ev.Detail) == 0 || string(ev.Detail) == "null" {
		return Trigger{}, fmt.Errorf("EventBridge event %q has no detail: %w", ev.ID, fleet.ErrInvalid)
	}
	var rec events.DynamoDBEventRecord
	if err := json.Unmarshal(ev.Detail, &rec); err != nil {
		return Trigger{}, fmt.Errorf("decode stream record of event %q: %w: %w", ev.ID, fleet.ErrInvalid, err)
	}
	return TriggerFromRecord(rec)
}

// TriggerFromRecord reads the thing name (and the old image's certificate)
// of an inventory stream record. The error wraps fleet.ErrInvalid.
func TriggerFromRecord(rec events.DynamoDBEventRecord) (Trigger, error) {
	key, ok := rec.Change.Keys[ddbitem.AttrThingName]
	if !ok || key.DataType() != events.DataTypeString {
		return Trigger{}, fmt.Errorf("stream record %q: no string key %s: %w", rec.EventID, ddbitem.AttrThingName, fleet.ErrInvalid)
	}
	// A revocation record (<thing>#revocation) triggers its device's
	// convergence like the device's own item.
	thing, _ := ddbitem.IsRevocationKey(key.String())
	t := Trigger{ThingName: thing, EventName: rec.EventName}
	if err := fleet.ValidateThingName(t.ThingName); err != nil {
		return Trigger{}, fmt.Errorf("stream record %q: key: %w", rec.EventID, err)
	}
	switch t.EventName {
	case "INSERT", "MODIFY", "REMOVE":
	default:
		return Trigger{}, fmt.Errorf("stream record %q: event name %q: %w", rec.EventID, rec.EventName, fleet.ErrInvalid)
	}
	if old, ok := rec.Change.OldImage[ddbitem.AttrCertificateID]; ok && old.DataType() == events.DataTypeString && thing == key.String() {
		t.OldCertificateID = old.String()
		if !isCertID(t.OldCertificateID) {
			return Trigger{}, fmt.Errorf("stream record %q: old certificate id %q: %w", rec.EventID, t.OldCertificateID, fleet.ErrInvalid)
		}
	}
	return t, nil
}

func isCertID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Invoke is the Lambda entry point (lambda.Handler). An event that cannot be
// decoded is logged, counted and dropped.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	t, err := ParseEvent(payload)
	if err != nil {
		h.reject(ctx, ReasonBadEvent, err)
		return nil, nil
	}
	return nil, h.Handle(ctx, t)
}

// Handle converges this region's registry to the current inventory item of
// t.ThingName, under the device's lease. It returns an error when Lambda
// should deliver the event again (a retryable failure, the lease held by
// another run), or when a terminal failure leaves the region unconverged (so
// that the event reaches the on-failure destination; the reconciler repairs
// what it left).
func (h *Handler) Handle(ctx context.Context, t Trigger) error {
	log := h.log.With(slog.String("thingName", t.ThingName), slog.String("eventName", t.EventName), slog.String("region", h.region))
	var hints []string
	if t.OldCertificateID != "" {
		hints = []string{t.OldCertificateID}
	}
	res, err := h.engine.Converge(ctx, t.ThingName, converge.Options{Function: Function, Hints: hints, SkipConverged: true})
	if err != nil {
		if res.Found && !res.Item.Status.Valid() {
			h.reject(ctx, "bad_item", err)
			return nil
		}
		log.ErrorContext(ctx, "replicate failed", slog.String("error", err.Error()), slog.String("class", saga.Class(err)),
			slog.Bool("redelivered", true))
		return err
	}
	to := "REMOVED"
	if res.Found {
		to = string(res.Item.Status)
		log = log.With(slog.Int64("version", res.Item.Version))
	}
	status := to
	if res.Action == converge.Unchanged {
		status = "UNCHANGED"
		log.DebugContext(ctx, "registry already converged", slog.String("to", to))
	} else {
		log.InfoContext(ctx, "registry converged", slog.String("to", to), slog.Int("rounds", res.Rounds),
			slog.Int("obligations", res.Obligations), slog.Bool("promoted", res.Promoted))
	}
	h.metrics.Count("Converged", 1, obs.D("Function", Function), obs.D("Status", status))
	return nil
}

func (h *Handler) reject(ctx context.Context, reason string, why error) {
	h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", slog.String("function", Function),
		slog.String("reason", reason), slog.String("error", why.Error()))
	h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
}
