// Command api is the fleet HTTP API Lambda (API Gateway HTTP API, payload
// v2): internal/workflow/api's handler over the home region's inventory and data
// table replicas and every region's IoT registry, with every region's drift
// report (GET /regions/{region}/drift: a dry run of that region's
// reconciler, which only reads).
//
// Environment: INVENTORY_TABLE, DATA_TABLE, PRESENCE_TABLE, LEASES_TABLE (the name of the
// device lease table, the same in every region), REGIONS (comma list, every
// region of the fleet), DEVICE_POLICY_NAME, TRACING (true: X-Ray on SDK
// clients), AWS_REGION (set by Lambda: the home region), COMMANDS_TABLE
// (optional: the commands routes exist when it is set).
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/awsiot"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/api"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// settings is the function's configuration from its environment.
type settings struct {
	InventoryTable   string
	DataTable        string
	PresenceTable    string
	LeasesTable      string
	Regions          []string
	DevicePolicyName string
	CommandsTable    string
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
	if s.PresenceTable, err = env.MustString("PRESENCE_TABLE"); err != nil {
		return s, err
	}
	if s.LeasesTable, err = env.MustString("LEASES_TABLE"); err != nil {
		return s, err
	}
	if s.Regions, err = env.MustList("REGIONS"); err != nil {
		return s, err
	}
	if s.DevicePolicyName, err = env.MustString("DEVICE_POLICY_NAME"); err != nil {
		return s, err
	}
	s.CommandsTable = env.String("COMMANDS_TABLE", "")
	return s, nil
}

// build makes the handler: SDK clients for the home region's tables, and
// per region an IoT client, a DynamoDB client for the region's lease table
// and the region's reconciler for drift reports, all from cfg.
func build(cfg aws.Config, s settings, log *slog.Logger) (*api.Handler, error) {
	ddb := dynamodb.NewFromConfig(cfg)
	inv := awsddb.NewInventory(ddb, s.InventoryTable)
	regs := make(map[string]api.RegionRegistry, len(s.Regions))
	dr := make(drift, len(s.Regions))
	for _, region := range s.Regions {
		rcfg := awsconf.ForRegion(cfg, region)
		reg := awsiot.New(iot.NewFromConfig(rcfg))
		regs[region] = reg
		// A drift report is a dry run: it reads the region's registry and
		// its lease table (regional: a client for that region) and compares
		// them with the inventory read from the API's own replica (the same
		// global table: the home region's replica answers for every region).
		// No redriver: a dry run re-drives nothing. It spends no more of the
		// region's IoT quotas than the region's own reconciler.
		r, err := reconcile.New(reconcile.Config{
			Registry:   reg,
			Inventory:  inv,
			Leases:     awsddb.NewLeases(dynamodb.NewFromConfig(rcfg), s.LeasesTable),
			Region:     region,
			PolicyName: s.DevicePolicyName,
			Quotas:     fleet.IoTQuotas,
			Log:        log,
		})
		if err != nil {
			return nil, fmt.Errorf("drift report of %s: %w", region, err)
		}
		dr[region] = r
	}
	var cmds api.Commands
	if s.CommandsTable != "" {
		cmds = awsddb.NewCommands(ddb, s.CommandsTable)
	}
	h, err := api.New(api.Config{
		Commands:         cmds,
		Metrics:          wiring.Metrics(),
		Inventory:        inv,
		Telemetry:        awsddb.NewTelemetry(ddb, s.DataTable),
		Presence:         awsddb.NewPresence(ddb, s.PresenceTable),
		Registries:       regs,
		Regions:          s.Regions,
		DevicePolicyName: s.DevicePolicyName,
		Drift:            dr,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("api handler: %w", err)
	}
	return h, nil
}

// drift is the API's api.Drift: every region's reconciler, run dry.
type drift map[string]*reconcile.Reconciler

func (d drift) Drift(ctx context.Context, region, cursor string, maxChecks int) (reconcile.Report, error) {
	r, ok := d[region]
	if !ok {
		return reconcile.Report{}, fmt.Errorf("drift report of region %s: %w", region, fleet.ErrNotFound)
	}
	return r.Run(ctx, reconcile.Options{DryRun: true, Cursor: cursor, MaxChecks: maxChecks})
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "api: configuration", err)
	cfg, err := awsconf.Load(context.Background())
	wiring.ExitOn(log, "api: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "api: build handler", err)
	// Flushed writes the invocation's metrics (Queued) when it ends.
	lambda.Start(wiring.Flushed(lambda.NewHandler(lambdaHandler(h))))
}
