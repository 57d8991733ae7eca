// Package presence keeps, per device, the region and session it is
// connected to: the Lambda invoked in every region by the presence rule
// SELECT * FROM '$aws/events/presence/+/+' (AWS IoT's lifecycle events, as
// is) and by the presence table's stream in the same region.
//
// A lifecycle event becomes two conditional writes:
//
//  1. record-session: the event is applied to the device's session record
//     of this region (key <thing>#<region>) by fleet.ApplySession, ordered by
//     (versionNumber, connect before disconnect): a duplicate, or an event of
//     an older connection of this region, changes nothing (PresenceStale).
//     Only this region writes this record, so global-table replication
//     (last writer wins per item) never drops a region's event.
//  2. publish-presence: the device's presence item is rewritten as the fold
//     of its session records in every region (fleet.FoldPresence: the
//     newest session by start says where the device is, and whether it is
//     connected), only over a presence item of a smaller Generation.
//
// Two regions may publish at once from different views, and replication
// then keeps the later write, which may be the staler fold. So every record
// of the presence table's stream in a region (a session record arriving
// from another region, a presence item overwritten by replication) makes
// the function fold again from that replica's records: once every record
// has replicated, every region's last fold is the fold of all records, and
// every replica converges to it (docs/design.md, "Presence").
package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Store is what presence needs of its region's presence table replica
// (contract.Presence).
type Store interface {
	Record(ctx context.Context, ev fleet.SessionRecord) (fleet.SessionRecord, bool, error)
	Sessions(ctx context.Context, thing string, regions []string) ([]fleet.SessionRecord, error)
	Publish(ctx context.Context, p fleet.Presence) (bool, error)
}

// Devices tells a device from another MQTT client (the inventory replica).
type Devices interface {
	Get(ctx context.Context, thingName string) (fleet.Device, error)
}

// Function is the function name in logs and metric dimensions.
const Function = "presence"

// Step names.
const (
	StepRecord  = "record-session"
	StepPublish = "publish-presence"
)

// Metric names.
const (
	// MetricEvents counts the lifecycle events applied (dimension Type:
	// connected or disconnected).
	MetricEvents = "PresenceEvents"
	// MetricStale counts the events that changed nothing: duplicates and
	// events of an older connection, delivered late.
	MetricStale = "PresenceStale"
	// MetricPublished counts the presence items written.
	MetricPublished = "PresencePublished"
	// MetricIgnored counts the events of clients that are not devices.
	MetricIgnored = "PresenceIgnored"
)

// Config holds a Handler's dependencies.
type Config struct {
	Store Store
	// Devices, when set, drops the events of clients that are no device of
	// the inventory (operators' and test tools' MQTT clients).
	Devices Devices
	// Region is this function's region; Regions every region of the
	// deployment (the session records the fold reads). Region must be one.
	Region  string
	Regions []string
	Now     func() time.Time // time.Now when nil
	Log     *slog.Logger     // discarded when nil
	Metrics obs.Metrics      // dropped when nil
	Tracer  obs.Tracer       // none when nil
	Runner  saga.Runner
}

// Handler applies lifecycle events and folds presence items.
type Handler struct {
	store   Store
	devices Devices
	region  string
	regions []string
	now     func() time.Time
	log     *slog.Logger
	metrics obs.Metrics
	runner  saga.Runner
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("presence: no presence table")
	case cfg.Region == "":
		return nil, errors.New("presence: no region")
	case !slices.Contains(cfg.Regions, cfg.Region):
		return nil, fmt.Errorf("presence: region %s is not one of the regions %v", cfg.Region, cfg.Regions)
	case slices.Contains(cfg.Regions, ""):
		return nil, fmt.Errorf("presence: an empty region in %v", cfg.Regions)
	}
	h := &Handler{store: cfg.Store, devices: cfg.Devices, region: cfg.Region, regions: slices.Clone(cfg.Regions),
		now: cfg.Now, log: cfg.Log, metrics: cfg.Metrics}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = obs.Discard()
	}
	if h.metrics == nil {
		h.metrics = obs.Nop{}
	}
	h.runner = cfg.Runner.Fill(h.log, h.metrics, cfg.Tracer, h.now)
	return h, nil
}

// Invoke is the Lambda entry point (lambda.Handler): payload is either the
// presence rule's output (a lifecycle event) or a batch of the presence
// table's stream records (an events.DynamoDBEvent). A bad lifecycle event
// is logged, counted and dropped (nil error); a failed fold is returned so
// that the event source delivers the event or the batch again.
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	if isStreamBatch(payload) {
		var batch events.DynamoDBEvent
		if err := json.Unmarshal(payload, &batch); err != nil {
			h.reject(ctx, "bad_stream_batch", err, len(payload))
			return nil, nil
		}
		return nil, h.HandleStream(ctx, batch)
	}
	ev, err := fleet.ParseLifecycleEvent(payload)
	if err != nil {
		h.reject(ctx, "bad_event", err, len(payload))
		return nil, nil
	}
	return nil, h.Handle(ctx, ev)
}

func (h *Handler) reject(ctx context.Context, reason string, err error, n int) {
	h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", slog.String("function", Function),
		slog.String("reason", reason), slog.String("error", err.Error()), slog.Int("bytes", n))
	h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
}

// isStreamBatch tells a stream batch ({"Records": [...]}) from a lifecycle
// event, which has no Records.
func isStreamBatch(payload []byte) bool {
	var probe struct {
		Records json.RawMessage `json:"Records"`
	}
	if json.Unmarshal(payload, &probe) != nil {
		return false
	}
	return len(bytes.TrimSpace(probe.Records)) > 0
}

// Handle applies one checked lifecycle event of this region.
func (h *Handler) Handle(ctx context.Context, ev fleet.LifecycleEvent) error {
	thing := ev.ClientID
	if h.devices != nil {
		_, err := h.devices.Get(ctx, thing)
		if errors.Is(err, fleet.ErrNotFound) {
			h.log.LogAttrs(ctx, slog.LevelInfo, "not a device", slog.String("function", Function),
				slog.String("device", thing), slog.String("event_type", ev.EventType))
			h.metrics.Count(MetricIgnored, 1, obs.D("Function", Function))
			return nil
		}
		if err != nil {
			return fmt.Errorf("presence of %s: look up the device: %w", thing, err)
		}
	}
	rec := fleet.RecordOf(ev, h.region)
	var stored fleet.SessionRecord
	var published fleet.Presence
	steps := []saga.Step{{
		Name: StepRecord,
		Do: func(ctx context.Context) (bool, error) {
			s, changed, err := h.store.Record(ctx, rec)
			if err != nil {
				return false, fmt.Errorf("record %s event of %s: %w", ev.EventType, thing, err)
			}
			stored = s
			return changed, nil
		},
	}, {
		Name: StepPublish,
		Do: func(ctx context.Context) (bool, error) {
			p, ok, err := h.fold(ctx, thing, 0)
			published = p
			return ok, err
		},
	}}
	res, err := h.runner.Run(ctx, saga.Saga{Name: Function, ID: fmt.Sprintf("presence/%s/%s/%d/%s", thing, h.region, ev.VersionNumber, ev.EventType), Steps: steps})
	if err != nil {
		h.log.ErrorContext(ctx, "presence failed", slog.String("function", Function), slog.String("device", thing),
			slog.String("event_type", ev.EventType), slog.String("error", err.Error()), slog.Bool("retryable", saga.IsRetryable(err)))
		return err
	}
	attrs := []slog.Attr{slog.String("function", Function), slog.String("device", thing), slog.String("event_type", ev.EventType),
		slog.String("session", ev.SessionIdentifier), slog.Int64("version", ev.VersionNumber), slog.Int64("timestamp", ev.Timestamp)}
	if res.Step(StepRecord).State == saga.Unchanged {
		// A duplicate or an older connection's event: the record holds a
		// newer one. The fold still ran (a duplicate may be the redelivery
		// of an event whose fold failed).
		h.metrics.Count(MetricStale, 1, obs.D("Function", Function), obs.D("Type", ev.EventType))
		h.log.LogAttrs(ctx, slog.LevelInfo, "stale lifecycle event", append(attrs,
			slog.Int64("stored_version", stored.Version), slog.Bool("stored_connected", stored.Connected))...)
		return nil
	}
	h.metrics.Count(MetricEvents, 1, obs.D("Function", Function), obs.D("Type", ev.EventType))
	h.log.LogAttrs(ctx, slog.LevelInfo, "lifecycle event applied", append(attrs,
		slog.Bool("connected", published.Connected), slog.String("presence_region", published.Region))...)
	return nil
}

// HandleStream folds again every device a batch of stream records names
// (session records and presence items alike, written here or replicated).
func (h *Handler) HandleStream(ctx context.Context, batch events.DynamoDBEvent) error {
	type want struct{ gen int64 }
	things := map[string]want{}
	var order []string
	for _, rec := range batch.Records {
		key, ok := rec.Change.Keys[ddbitem.AttrThingName]
		if !ok || key.DataType() != events.DataTypeString {
			continue
		}
		thing, region := fleet.SplitPresenceKey(key.String())
		if fleet.ValidateThingName(thing) != nil {
			continue
		}
		w, seen := things[thing]
		if region == "" && rec.Change.NewImage != nil {
			// A presence item: no need to publish what is stored already.
			if g, ok := rec.Change.NewImage[ddbitem.AttrGeneration]; ok && g.DataType() == events.DataTypeNumber {
				if n, err := g.Int64(); err == nil && (!seen || n > w.gen) {
					w.gen = n
				}
			}
		}
		if !seen {
			order = append(order, thing)
		}
		things[thing] = w
	}
	var errs []error
	for _, thing := range order {
		if _, _, err := h.fold(ctx, thing, things[thing].gen); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		h.log.ErrorContext(ctx, "presence fold failed", slog.String("function", Function), slog.String("error", err.Error()))
		return err
	}
	return nil
}

// Fold publishes the fold of thing's session records in every region now.
func (h *Handler) Fold(ctx context.Context, thing string) (fleet.Presence, bool, error) {
	return h.fold(ctx, thing, 0)
}

// fold reads thing's session records in this replica, and publishes their
// fold unless its generation is not above known (a generation already
// stored).
func (h *Handler) fold(ctx context.Context, thing string, known int64) (fleet.Presence, bool, error) {
	recs, err := h.store.Sessions(ctx, thing, h.regions)
	if err != nil {
		return fleet.Presence{}, false, fmt.Errorf("fold presence of %s: %w", thing, err)
	}
	if len(recs) == 0 {
		return fleet.Presence{}, false, nil
	}
	p := fleet.FoldPresence(thing, recs, h.now())
	if p.Generation <= known {
		return p, false, nil
	}
	ok, err := h.store.Publish(ctx, p)
	if err != nil {
		return p, false, fmt.Errorf("publish presence of %s: %w", thing, err)
	}
	if ok {
		h.metrics.Count(MetricPublished, 1, obs.D("Function", Function))
	}
	return p, ok, nil
}
