// Command presence is the presence Lambda, invoked in every region by the
// presence rule SELECT * FROM '$aws/events/presence/+/+' (AWS IoT's
// lifecycle events) and by this region's presence table stream:
// internal/workflow/presence's handler over this region's replicas of the
// presence table and the device inventory.
//
// Environment: PRESENCE_TABLE, INVENTORY_TABLE, REGIONS (comma list, every
// region of the deployment), AWS_REGION (set by Lambda), TRACING (true:
// X-Ray), LOG_LEVEL.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/presence"
)

type settings struct {
	PresenceTable  string
	InventoryTable string
	Regions        []string
	Region         string
	Tracing        bool
}

func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.PresenceTable, err = env.MustString("PRESENCE_TABLE"); err != nil {
		return s, err
	}
	if s.InventoryTable, err = env.MustString("INVENTORY_TABLE"); err != nil {
		return s, err
	}
	if s.Regions, err = env.MustList("REGIONS"); err != nil {
		return s, err
	}
	if s.Region, err = env.MustString("AWS_REGION"); err != nil {
		return s, err
	}
	if !slices.Contains(s.Regions, s.Region) {
		return s, &awsconf.EnvError{Name: "REGIONS", Value: strings.Join(s.Regions, ","), Reason: "must list AWS_REGION " + s.Region}
	}
	if s.Tracing, err = env.Bool(awsconf.TracingEnv, false); err != nil {
		return s, err
	}
	return s, nil
}

func build(cfg aws.Config, s settings, log *slog.Logger) (*presence.Handler, error) {
	cfg = awsconf.ForRegion(cfg, s.Region)
	db := dynamodb.NewFromConfig(cfg)
	h, err := presence.New(presence.Config{
		Store:   awsddb.NewPresence(db, s.PresenceTable),
		Devices: awsddb.NewInventory(db, s.InventoryTable),
		Region:  s.Region,
		Regions: s.Regions,
		Log:     log,
		Metrics: wiring.Metrics(),
		Tracer:  wiring.Tracer(s.Tracing),
	})
	if err != nil {
		return nil, fmt.Errorf("presence handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "presence: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "presence: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "presence: build", err)
	// h implements lambda.Handler: the raw event JSON (a lifecycle event or
	// a stream batch) goes to h.Invoke, the same entry point the local
	// stack invokes.
	lambda.Start(wiring.Flushed(h))
}
