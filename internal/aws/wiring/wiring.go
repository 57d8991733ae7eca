// Package wiring holds what the Lambda entry points share: reading the
// settings of the functions that converge a region's registry (jitr,
// replicate and reconcile), building their AWS adapters once at init, the
// tracer choice, and stopping a cold start that cannot be configured.
package wiring

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/awsiot"
	"github.com/mriot/mriot/internal/aws/xraytrace"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
)

// RegistrySettings are the environment of jitr, replicate and reconcile.
type RegistrySettings struct {
	InventoryTable string // INVENTORY_TABLE
	// LeasesTable is the region's device lease table (LEASES_TABLE): every
	// convergence takes the device's lease there.
	LeasesTable      string
	DevicePolicyName string // DEVICE_POLICY_NAME
	Region           string // AWS_REGION, set by Lambda
	Tracing          bool   // TRACING
	// ClaimsTable is jitr's regional claims table (CLAIMS_TABLE, optional:
	// "" leaves jitr with its in-process deduplication only).
	ClaimsTable string
	// RotationGrace is how long a rotated-out certificate stays valid
	// (ROTATION_GRACE, a Go duration such as "168h"; default 7 days).
	RotationGrace time.Duration
}

// RotationGraceEnv names the rotation grace's variable.
const RotationGraceEnv = "ROTATION_GRACE"

// ReadRegistrySettings reads RegistrySettings; the error names the variable.
func ReadRegistrySettings(env awsconf.Env) (RegistrySettings, error) {
	var s RegistrySettings
	var err error
	if s.InventoryTable, err = env.MustString("INVENTORY_TABLE"); err != nil {
		return s, err
	}
	if s.LeasesTable, err = env.MustString("LEASES_TABLE"); err != nil {
		return s, err
	}
	if s.DevicePolicyName, err = env.MustString("DEVICE_POLICY_NAME"); err != nil {
		return s, err
	}
	if s.Region, err = env.MustString("AWS_REGION"); err != nil {
		return s, err
	}
	if s.Tracing, err = env.Bool(awsconf.TracingEnv, false); err != nil {
		return s, err
	}
	s.ClaimsTable = env.String("CLAIMS_TABLE", "")
	if s.RotationGrace, err = env.Duration(RotationGraceEnv, fleet.DefaultRotationGrace); err != nil {
		return s, err
	}
	if s.RotationGrace <= 0 {
		return s, &awsconf.EnvError{Name: RotationGraceEnv, Value: s.RotationGrace.String(), Reason: "must be positive"}
	}
	return s, nil
}

// RegistryDeps are the adapters of a function that converges a region's
// registry: its IoT registry, its inventory replica and lease table, metrics
// and tracer, and jitr's claims table (nil without CLAIMS_TABLE).
type RegistryDeps struct {
	Registry  *awsiot.Adapter
	Inventory *awsddb.Inventory
	Leases    *awsddb.Leases
	// Claims is nil (an interface without a value) without CLAIMS_TABLE,
	// so it converts to a workflow's own smaller port as nil too.
	Claims  contract.Claims
	Metrics obs.Metrics
	Tracer  obs.Tracer
}

// NewRegistryDeps builds the SDK clients for s.Region from cfg.
func NewRegistryDeps(cfg aws.Config, s RegistrySettings) RegistryDeps {
	cfg = awsconf.ForRegion(cfg, s.Region)
	db := dynamodb.NewFromConfig(cfg)
	d := RegistryDeps{
		Registry:  awsiot.New(iot.NewFromConfig(cfg)),
		Inventory: awsddb.NewInventory(db, s.InventoryTable),
		Leases:    awsddb.NewLeases(db, s.LeasesTable),
		Metrics:   Metrics(),
		Tracer:    Tracer(s.Tracing),
	}
	if s.ClaimsTable != "" {
		d.Claims = awsddb.NewClaims(db, s.ClaimsTable)
	}
	return d
}

// metrics is the process's one batch of counts: every handler of the
// process counts into it, and Flushed writes it after each invocation.
var metrics = obs.NewBatch(obs.NewEMF(os.Stdout, obs.Namespace))

// Metrics are EMF lines on stdout, which Lambda sends to CloudWatch: the
// counts of an invocation in as few lines as CloudWatch allows, written when
// it ends (Flushed).
func Metrics() obs.Metrics { return metrics }

// Flushed is h writing the invocation's metrics when each invocation ends,
// whatever its outcome: what the function passes to lambda.Start.
func Flushed(h lambda.Handler) lambda.Handler { return flushed{h} }

type flushed struct{ h lambda.Handler }

func (f flushed) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	defer metrics.Flush()
	return f.h.Invoke(ctx, payload)
}

// Tracer is X-Ray subsegments when tracing is on, nothing otherwise.
func Tracer(tracing bool) obs.Tracer {
	if tracing {
		return xraytrace.Tracer{}
	}
	return obs.NopTracer{}
}

// ExitOn logs err and ends the process when err is not nil: a function that
// cannot be configured fails its cold start, visibly, instead of serving.
func ExitOn(log *slog.Logger, what string, err error) {
	if err == nil {
		return
	}
	log.Error(what, "error", err.Error())
	os.Exit(1)
}
