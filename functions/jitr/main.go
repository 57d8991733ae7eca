// Command jitr is the just-in-time registration Lambda, invoked by the IoT
// rule on $aws/events/certificates/registered/#: internal/workflow/jitr's handler over
// this region's IoT registry, inventory replica and device lease table.
//
// Environment: INVENTORY_TABLE, LEASES_TABLE (the region's device lease
// table), DEVICE_POLICY_NAME, CLAIMS_TABLE (optional: the region's claims
// table shared by every instance), AWS_REGION (set by Lambda), TRACING (true:
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
	"github.com/mriot/mriot/internal/workflow/jitr"
)

// readSettings reads jitr's environment; the error names the variable.
func readSettings(env awsconf.Env) (wiring.RegistrySettings, error) {
	return wiring.ReadRegistrySettings(env)
}

// build makes the SDK clients once for the cold start and the handler over
// them.
func build(cfg aws.Config, s wiring.RegistrySettings, log *slog.Logger) (*jitr.Handler, error) {
	d := wiring.NewRegistryDeps(cfg, s)
	h, err := jitr.New(jitr.Config{
		Registry:   d.Registry,
		Inventory:  d.Inventory,
		Leases:     d.Leases,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
		Claims:     d.Claims,
		Lease:      converge.Config{RotationGrace: s.RotationGrace},
	})
	if err != nil {
		return nil, fmt.Errorf("jitr handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "jitr: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "jitr: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "jitr: build", err)
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(wiring.Flushed(h))
}
