// Command commands is the commands Lambda of every region:
// internal/workflow/commands's handler, invoked by the commands table's
// stream (new commands), the presence table's stream (connections) and the
// ack rule SELECT topic(2) AS thingName, topic(4) AS commandId,
// timestamp() AS ts, result FROM 'i/+/ack/+'. It publishes with the IoT
// data plane of its own region.
//
// Environment: COMMANDS_TABLE, PRESENCE_TABLE, INVENTORY_TABLE,
// IOT_DATA_ENDPOINT (the account's ATS data endpoint in this region),
// AWS_REGION (set by Lambda), TRACING (true: X-Ray), LOG_LEVEL.
package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/awsiotdata"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/commands"
)

type settings struct {
	CommandsTable  string
	PresenceTable  string
	InventoryTable string
	DataEndpoint   string
	Region         string
	Tracing        bool
}

func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.CommandsTable, err = env.MustString("COMMANDS_TABLE"); err != nil {
		return s, err
	}
	if s.PresenceTable, err = env.MustString("PRESENCE_TABLE"); err != nil {
		return s, err
	}
	if s.InventoryTable, err = env.MustString("INVENTORY_TABLE"); err != nil {
		return s, err
	}
	if s.DataEndpoint, err = env.MustString("IOT_DATA_ENDPOINT"); err != nil {
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

func build(cfg aws.Config, s settings, log *slog.Logger) (*commands.Handler, error) {
	cfg = awsconf.ForRegion(cfg, s.Region)
	db := dynamodb.NewFromConfig(cfg)
	pub, err := awsiotdata.New(cfg, s.DataEndpoint)
	if err != nil {
		return nil, fmt.Errorf("commands publisher: %w", err)
	}
	h, err := commands.New(commands.Config{
		Store:     awsddb.NewCommands(db, s.CommandsTable),
		Presence:  awsddb.NewPresence(db, s.PresenceTable),
		Devices:   awsddb.NewInventory(db, s.InventoryTable),
		Publisher: pub,
		Region:    s.Region,
		Log:       log,
		Metrics:   wiring.Metrics(),
		Tracer:    wiring.Tracer(s.Tracing),
	})
	if err != nil {
		return nil, fmt.Errorf("commands handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "commands: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "commands: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "commands: build", err)
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(wiring.Flushed(h))
}
