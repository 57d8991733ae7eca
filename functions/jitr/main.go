// Command jitr is the just-in-time registration Lambda, invoked by the IoT
// rule on $aws/events/certificates/registered/#: internal/jitr's handler over
// this region's IoT registry and inventory replica.
//
// Environment: INVENTORY_TABLE, DEVICE_POLICY_NAME, AWS_REGION (set by
// Lambda), TRACING (true: X-Ray), LOG_LEVEL (see internal/wiring).
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/jitr"
	"github.com/mriot/mriot/internal/obs"
	"github.com/mriot/mriot/internal/wiring"
)

func build(cfg aws.Config, s wiring.RegistrySettings, log *slog.Logger) (*jitr.Handler, error) {
	d := wiring.NewRegistryDeps(cfg, s)
	h, err := jitr.New(jitr.Config{
		Registry:   d.Registry,
		Inventory:  d.Inventory,
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    d.Metrics,
		Tracer:     d.Tracer,
	})
	if err != nil {
		return nil, fmt.Errorf("jitr handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := wiring.ReadRegistrySettings(awsconf.Env{})
	wiring.ExitOn(log, "jitr: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "jitr: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "jitr: build", err)
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(h)
}
