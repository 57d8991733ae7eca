// Command setup is the Lambda behind the stack's Custom::MriotSetup resource
// (internal/workflow/setup). It answers CloudFormation in every case, before
// its deadline (setup.Answerer): a setup that cannot start answers FAILED
// with why instead of exiting, which would leave the stack waiting for the
// resource's ServiceTimeout.
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
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/setup"
)

type settings struct {
	Region string // AWS_REGION, set by Lambda
}

// readSettings reads setup's environment; the error names the variable.
func readSettings(env awsconf.Env) (settings, error) {
	var s settings
	var err error
	s.Region, err = env.MustString("AWS_REGION")
	return s, err
}

// build makes the SDK clients once for the cold start and the handler over
// them.
func build(cfg aws.Config, s settings, log *slog.Logger) *setup.Handler {
	cfg = awsconf.ForRegion(cfg, s.Region)
	return &setup.Handler{
		IoT:    iot.NewFromConfig(cfg),
		Tables: dynamodb.NewFromConfig(cfg),
		Region: s.Region,
		Log:    log,
	}
}

func main() {
	log := obs.LoggerFromEnv()
	answer := setup.Answerer{Log: log}
	s, err := readSettings(awsconf.Env{})
	var cfg aws.Config
	if err == nil {
		cfg, err = awsconf.Load(context.Background())
	}
	if err != nil {
		// Unlike the other functions, setup does not fail its cold start:
		// CloudFormation would wait for an answer. It answers FAILED.
		log.Error("setup: cannot start", "error", err.Error())
		lambda.Start(answer.Wrap(setup.Failing(fmt.Errorf("setup cannot start: %w", err))))
		return
	}
	lambda.Start(answer.Wrap(build(cfg, s, log).Handle))
}
