// Command jitr is the just-in-time registration Lambda, invoked by the IoT
// rule on $aws/events/certificates/registered/#: internal/jitr's handler over
// this region's IoT registry and inventory replica.
//
// Environment: INVENTORY_TABLE, DEVICE_POLICY_NAME, AWS_REGION (set by
// Lambda), TRACING (true: X-Ray), LOG_LEVEL.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/awsddb"
	"github.com/mriot/mriot/internal/awsiot"
	"github.com/mriot/mriot/internal/jitr"
	"github.com/mriot/mriot/internal/obs"
)

type settings struct {
	InventoryTable   string
	DevicePolicyName string
	Region           string
	Tracing          bool
}

func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.InventoryTable, err = env.MustString("INVENTORY_TABLE"); err != nil {
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
	return s, nil
}

func build(cfg aws.Config, s settings, log *slog.Logger) (*jitr.Handler, error) {
	cfg = awsconf.ForRegion(cfg, s.Region)
	var tracer obs.Tracer = obs.NopTracer{}
	if s.Tracing {
		tracer = obs.XRay{}
	}
	h, err := jitr.New(jitr.Config{
		Registry:   awsiot.New(iot.NewFromConfig(cfg)),
		Inventory:  awsddb.NewInventory(dynamodb.NewFromConfig(cfg), s.InventoryTable),
		Region:     s.Region,
		PolicyName: s.DevicePolicyName,
		Log:        log,
		Metrics:    obs.NewEMF(os.Stdout, obs.Namespace),
		Tracer:     tracer,
	})
	if err != nil {
		return nil, fmt.Errorf("jitr handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	if err != nil {
		log.Error("jitr: configuration", "error", err.Error())
		os.Exit(1)
	}
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	if err != nil {
		log.Error("jitr: AWS configuration", "error", err.Error())
		os.Exit(1)
	}
	h, err := build(cfg, s, log)
	if err != nil {
		log.Error("jitr: build", "error", err.Error())
		os.Exit(1)
	}
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(h)
}
