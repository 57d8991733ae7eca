// Command ingest is the telemetry Lambda, invoked by the data rule
// SELECT message, topic(2) AS device, timestamp() AS ts, newuuid() AS id
// FROM 'i/+/m': internal/workflow/ingest's handler over this region's data table
// replica.
//
// Environment: DATA_TABLE, AWS_REGION (set by Lambda), MAX_MESSAGE_BYTES
// (default 8192), DATA_RETENTION_DAYS (default 30), TRACING (true: X-Ray),
// LOG_LEVEL.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/wiring"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/ingest"
)

type settings struct {
	DataTable       string
	Region          string
	MaxMessageBytes int
	RetentionDays   int
	Tracing         bool
}

func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	if s.DataTable, err = env.MustString("DATA_TABLE"); err != nil {
		return s, err
	}
	if s.Region, err = env.MustString("AWS_REGION"); err != nil {
		return s, err
	}
	if s.MaxMessageBytes, err = env.Int("MAX_MESSAGE_BYTES", ingest.DefaultMaxMessageBytes); err != nil {
		return s, err
	}
	if s.MaxMessageBytes < 1 {
		return s, &awsconf.EnvError{Name: "MAX_MESSAGE_BYTES", Value: fmt.Sprint(s.MaxMessageBytes), Reason: "must be at least 1"}
	}
	if s.RetentionDays, err = env.Int("DATA_RETENTION_DAYS", int(ingest.DefaultRetention/(24*time.Hour))); err != nil {
		return s, err
	}
	if s.RetentionDays < 1 {
		return s, &awsconf.EnvError{Name: "DATA_RETENTION_DAYS", Value: fmt.Sprint(s.RetentionDays), Reason: "must be at least 1"}
	}
	if s.Tracing, err = env.Bool(awsconf.TracingEnv, false); err != nil {
		return s, err
	}
	return s, nil
}

func build(cfg aws.Config, s settings, log *slog.Logger) (*ingest.Handler, error) {
	cfg = awsconf.ForRegion(cfg, s.Region)
	h, err := ingest.New(ingest.Config{
		Telemetry:       awsddb.NewTelemetry(dynamodb.NewFromConfig(cfg), s.DataTable),
		Region:          s.Region,
		MaxMessageBytes: s.MaxMessageBytes,
		Retention:       time.Duration(s.RetentionDays) * 24 * time.Hour,
		Log:             log,
		Metrics:         wiring.Metrics(),
		Tracer:          wiring.Tracer(s.Tracing),
	})
	if err != nil {
		return nil, fmt.Errorf("ingest handler: %w", err)
	}
	return h, nil
}

func main() {
	log := obs.LoggerFromEnv()
	s, err := readSettings(awsconf.Env{})
	wiring.ExitOn(log, "ingest: configuration", err)
	cfg, err := awsconf.Load(context.Background(), awsconf.WithTracing(s.Tracing))
	wiring.ExitOn(log, "ingest: AWS configuration", err)
	h, err := build(cfg, s, log)
	wiring.ExitOn(log, "ingest: build", err)
	// h implements lambda.Handler: the raw event JSON goes to h.Invoke, the
	// same entry point the local stack invokes.
	lambda.Start(wiring.Flushed(h))
}
