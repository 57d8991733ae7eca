// Command reconcile is a region's reconciler Lambda, invoked every two
// minutes by an EventBridge Scheduler schedule (its payload is ignored:
// events/reconcile-scheduled.json): internal/workflow/reconcile's handler over this
// region's IoT registry, behind a share of its quotas, inventory replica and
// device lease table, where it also keeps its position between invocations.
// A certificate left PENDING_ACTIVATION is re-driven through jitr's handler,
// built here over the same quota-limited registry.
//
// Environment: INVENTORY_TABLE, LEASES_TABLE, DEVICE_POLICY_NAME,
// CLAIMS_TABLE (optional: the re-drive's jitr shares the region's claims),
// RECONCILE_QUOTA_SHARE (the share of each IoT API's quota it may spend, in
// (0,1], default 0.2), RECONCILE_PENDING_THRESHOLD (Go duration: a
// certificate PENDING_ACTIVATION longer is re-driven, default 10m),
// AWS_REGION (set by Lambda), TRACING (true: X-Ray), LOG_LEVEL (see
// internal/aws/wiring).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/jitr"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// settings are the reconciler's environment: the registry functions' and
// its own.
type settings struct {
	wiring.RegistrySettings
	QuotaShare       float64       // RECONCILE_QUOTA_SHARE
	PendingThreshold time.Duration // RECONCILE_PENDING_THRESHOLD
}

// readSettings reads settings; the error names the variable.
func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.RegistrySettings, err = wiring.ReadRegistrySettings(env); err != nil {
		return s, err
	}
	s.QuotaShare = reconcile.DefaultQuotaShare
	if v := env.String("RECONCILE_QUOTA_SHARE", ""); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return s, &awsconf.EnvError{Name: "RECONCILE_QUOTA_SHARE", Value: v, Reason: "not a number", Err: err}
		}
		if !(f > 0 && f <= 1) {
			return s, &awsconf.EnvError{Name: "RECONCILE_QUOTA_SHARE", Value: v, Reason: "must be in (0,1]"}
		}
		s.QuotaShare = f
	}
	if s.PendingThreshold, err = env.Duration("RECONCILE_PENDING_THRESHOLD", reconcile.DefaultPendingThreshold); err != nil {
		return s, err
	}
	if s.PendingThreshold <= 0 {
		return s, &awsconf.EnvError{Name: "RECONCILE_PENDING_THRESHOLD", Value: s.PendingThreshold.String(), Reason: "must be positive"}
	}
	return s, nil
}

// build makes the handler of newReconciler's reconciler.
// build makes the SDK clients once for the cold start and the handler over
// them.
func build(cfg aws.Config, s settings, log *slog.Logger) (*reconcile.Handler, error) {
	r, _, err := newReconciler(wiring.NewRegistryDeps(cfg, s.RegistrySettings), s, log)
	if err != nil {
		return nil, err
	}
	return reconcile.NewHandler(r), nil
}

// newReconciler builds the reconciler, and jitr's handler over the
// reconciler's quota-limited registry as its redriver.
func newReconciler(d wiring.RegistryDeps, s settings, log *slog.Logger) (*reconcile.Reconciler, *redriver, error) {
	// The redriver needs the reconciler's registry, which exists once the
	// reconciler does: it is bound right after.
	rd := &redriver{}
	r, err := reconcile.New(reconcile.Config{
		Registry:         d.Registry,
		Inventory:        d.Inventory,
		Leases:           d.Leases,
		Redriver:         rd,
		Region:           s.Region,
		PolicyName:       s.DevicePolicyName,
		Quotas:           fleet.IoTQuotas,
		QuotaShare:       s.QuotaShare,
		PendingThreshold: s.PendingThreshold,
		Lease:            converge.Config{RotationGrace: s.RotationGrace},
		Log:              log,
		Metrics:          d.Metrics,
		Tracer:           d.Tracer,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reconciler: %w", err)
	}
	j, err := jitr.New(jitr.Config{
		Registry:   r.Registry(),
		Inventory:  d.Inventory,
		Leases:     d.Leases,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log.With("redriver", jitr.Function),
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
		Claims:     d.Claims,
		Lease:      converge.Config{RotationGrace: s.RotationGrace},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("redriver: %w", err)
	}
	rd.jitr = j
	return r, rd, nil
}

// redriver is the reconciler's reconcile.Redriver: jitr's handler, bound
// once built.
type redriver struct{ jitr *jitr.Handler }

func (d *redriver) Handle(ctx context.Context, ev fleet.CertificateRegisteredEvent) error {
	return d.jitr.Handle(ctx, ev)
}

// claims is the claims adapter as a jitr.Claims: nil (not a typed nil
// pointer) without CLAIMS_TABLE.
func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "reconcile: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "reconcile: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "reconcile: build", err)
	lambda.Start(wiring.Flushed(h))
}
