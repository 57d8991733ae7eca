// Command setup is the Lambda behind the stack's Custom::MriotSetup resource
// (internal/workflow/setup). It answers CloudFormation in every case, before
// its deadline (setup.Answerer): a setup that cannot start answers FAILED
// with why instead of exiting, which would leave the stack waiting for the
// resource's ServiceTimeout.
package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/setup"
)

func main() {
	log := obs.LoggerFromEnv()
	answer := setup.Answerer{Log: log}
	cfg, err := awsconf.Load(context.Background())
	if err != nil {
		log.Error("setup: cannot start", "error", err.Error())
		lambda.Start(answer.Wrap(setup.Failing(fmt.Errorf("setup cannot start: %w", err))))
		return
	}
	h := &setup.Handler{
		IoT:    iot.NewFromConfig(cfg),
		Tables: dynamodb.NewFromConfig(cfg),
		Region: cfg.Region,
		Log:    log,
	}
	lambda.Start(answer.Wrap(h.Handle))
}
