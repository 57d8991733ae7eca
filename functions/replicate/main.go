// Command replicate is the replication Lambda, invoked through EventBridge
// (inventory stream → Pipe → custom bus → rule) with one stream record per
// event: internal/workflow/replicate's handler over this region's IoT registry,
// inventory replica and device lease table.
//
// Environment: INVENTORY_TABLE, LEASES_TABLE (the region's device lease
// table), DEVICE_POLICY_NAME, AWS_REGION (set by Lambda), TRACING (true:
// X-Ray), LOG_LEVEL (see internal/aws/wiring).
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/converge"
	"github.com/mriot/mriot/internal/workflow/replicate"
)

// readSettings reads replicate's environment; the error names the variable.
func readSettings(env awsconf.Env) (wiring.RegistrySettings, error) {
	return wiring.ReadRegistrySettings(env)
}

// build makes the SDK clients once for the cold start and the handler over
// them.
func build(cfg aws.Config, s wiring.RegistrySettings, log *slog.Logger) (*replicate.Handler, error) {
	d := wiring.NewRegistryDeps(cfg, s)
	h, err := replicate.New(replicate.Config{
		Registry:   d.Registry,
		Inventory:  d.Inventory,
		Leases:     d.Leases,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
		Lease:      converge.Config{RotationGrace: s.RotationGrace},
	})
	if err != nil {
		return nil, fmt.Errorf("replicate handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "replicate: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "replicate: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "replicate: build", err)
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(wiring.Flushed(h))
}
