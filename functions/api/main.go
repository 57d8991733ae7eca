// Command api is the fleet HTTP API Lambda (API Gateway HTTP API, payload
// v2): internal/api's handler over the home region's inventory and data
// table replicas and every region's IoT registry.
//
// Environment: INVENTORY_TABLE, DATA_TABLE, REGIONS (comma list, every region
// of the fleet), DEVICE_POLICY_NAME, TRACING (true: X-Ray on SDK clients),
// AWS_REGION (set by Lambda: the home region).
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/api"
	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/awsddb"
	"github.com/mriot/mriot/internal/awsiot"
	"github.com/mriot/mriot/internal/obs"
	"github.com/mriot/mriot/internal/wiring"
)

// settings is the function's configuration from its environment.
type settings struct {
	InventoryTable   string
	DataTable        string
	Regions          []string
	DevicePolicyName string
}

func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.InventoryTable, err = env.MustString("INVENTORY_TABLE"); err != nil {
		return s, err
	}
	if s.DataTable, err = env.MustString("DATA_TABLE"); err != nil {
		return s, err
	}
	if s.Regions, err = env.MustList("REGIONS"); err != nil {
		return s, err
	}
	if s.DevicePolicyName, err = env.MustString("DEVICE_POLICY_NAME"); err != nil {
		return s, err
	}
	return s, nil
}

// build makes the handler: SDK clients for the home region's tables and one
// IoT client per region, all from cfg.
func build(cfg aws.Config, s settings, log *slog.Logger) (*api.Handler, error) {
	ddb := dynamodb.NewFromConfig(cfg)
	regs := make(map[string]api.RegionRegistry, len(s.Regions))
	for _, region := range s.Regions {
		regs[region] = awsiot.New(iot.NewFromConfig(awsconf.ForRegion(cfg, region)))
	}
	h, err := api.New(api.Config{
		Inventory:        awsddb.NewInventory(ddb, s.InventoryTable),
		Telemetry:        awsddb.NewTelemetry(ddb, s.DataTable),
		Registries:       regs,
		Regions:          s.Regions,
		DevicePolicyName: s.DevicePolicyName,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("api handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "api: configuration", err)
	cfg, err := awsconf.Load(context.Background())
	wiring.ExitOn(log, "api: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "api: build handler", err)
	lambda.Start(lambdaHandler(h))
}
