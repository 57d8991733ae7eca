// Package ingest stores device telemetry: the Lambda invoked by the data rule
// SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id
// FROM 'i/+/m'. One message becomes one item of the data table, keyed by
// device and "<zero-padded ts>#<id>", so that two messages in the same
// millisecond never overwrite each other and a redelivered event (same ts and
// id) never creates a second item.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/core/saga"
)

// Telemetry is what ingest needs of its region's data table replica.
type Telemetry interface {
	Put(ctx context.Context, m fleet.Message) error
}

// Function is the function name in logs and metric dimensions.
const Function = "ingest"

// StepPut is the name of the saga's only step.
const StepPut = "put-message"

// Defaults of the configuration.
const (
	DefaultMaxMessageBytes = 8192
	DefaultRetention       = 30 * 24 * time.Hour
)

// Config holds a Handler's dependencies.
type Config struct {
	Telemetry Telemetry
	Region    string
	// MaxMessageBytes bounds the message's JSON text (DefaultMaxMessageBytes
	// when zero).
	MaxMessageBytes int
	// Retention sets the TTL attribute: now + Retention (DefaultRetention
	// when zero).
	Retention time.Duration
	Now       func() time.Time // time.Now when nil
	Log       *slog.Logger     // discarded when nil
	Metrics   obs.Metrics      // dropped when nil
	Tracer    obs.Tracer       // none when nil
	Runner    saga.Runner
}

// Handler stores telemetry events.
type Handler struct {
	tel       Telemetry
	region    string
	max       int
	retention time.Duration
	now       func() time.Time
	log       *slog.Logger
	metrics   obs.Metrics
	runner    saga.Runner
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Telemetry == nil:
		return nil, errors.New("ingest: no telemetry table")
	case cfg.Region == "":
		return nil, errors.New("ingest: no region")
	case cfg.MaxMessageBytes < 0:
		return nil, fmt.Errorf("ingest: max message bytes %d is negative", cfg.MaxMessageBytes)
	case cfg.Retention < 0:
		return nil, fmt.Errorf("ingest: retention %s is negative", cfg.Retention)
	}
	h := &Handler{tel: cfg.Telemetry, region: cfg.Region, max: cfg.MaxMessageBytes, retention: cfg.Retention,
		now: cfg.Now, log: cfg.Log, metrics: cfg.Metrics, runner: cfg.Runner}
	if h.max == 0 {
		h.max = DefaultMaxMessageBytes
	}
	if h.retention == 0 {
		h.retention = DefaultRetention
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
	return h, nil
}

// Invoke is the Lambda entry point (lambda.Handler): payload is the rule's
// output. Bad input is logged, counted and dropped (nil error).
func (h *Handler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	ev, err := fleet.ParseTelemetryEvent(payload, h.max)
	if err != nil {
		reason := "bad_event"
		switch {
		case ev.Device != "" && fleet.ValidateThingName(ev.Device) != nil:
			reason = "bad_device"
		case len(ev.Message) > h.max:
			reason = "too_large"
		}
		h.log.LogAttrs(ctx, slog.LevelWarn, "event rejected", slog.String("function", Function),
			slog.String("reason", reason), slog.String("error", err.Error()), slog.Int("bytes", len(payload)))
		h.metrics.Count("Rejected", 1, obs.D("Function", Function), obs.D("Reason", reason))
		return nil, nil
	}
	return nil, h.Handle(ctx, ev)
}

// Handle stores one checked event. A duplicate (the same device, ts and id)
// is a success. A failure is returned: retryable ones so that Lambda delivers
// the event again, terminal ones so that it reaches the on-failure
// destination.
func (h *Handler) Handle(ctx context.Context, ev fleet.TelemetryEvent) error {
	m := fleet.Message{
		Device:    ev.Device,
		SortKey:   fleet.SortKey(ev.TS, ev.ID),
		Timestamp: ev.TS,
		ID:        ev.ID,
		Region:    h.region,
		Payload:   []byte(ev.Message),
		ExpiresAt: h.now().Add(h.retention).UTC().Truncate(time.Second),
	}
	step := saga.Step{
		Name: StepPut,
		Do: func(ctx context.Context) (bool, error) {
			err := h.tel.Put(ctx, m)
			if errors.Is(err, fleet.ErrAlreadyExists) {
				return false, nil // a redelivery: stored already
			}
			if err != nil {
				return false, fmt.Errorf("put message %s of %s: %w", m.SortKey, m.Device, err)
			}
			return true, nil
		},
	}
	res, err := h.runner.Run(ctx, saga.Saga{Name: Function, ID: "ingest/" + ev.Device + "/" + ev.ID, Steps: []saga.Step{step}})
	if err != nil {
		h.log.ErrorContext(ctx, "ingest failed", slog.String("device", ev.Device), slog.String("id", ev.ID),
			slog.String("error", err.Error()), slog.Bool("retryable", saga.IsRetryable(err)))
		return err
	}
	if res.Step(StepPut).State == saga.Unchanged {
		h.metrics.Count("Duplicate", 1, obs.D("Function", Function))
		return nil
	}
	h.metrics.Count("Stored", 1, obs.D("Function", Function))
	return nil
}
