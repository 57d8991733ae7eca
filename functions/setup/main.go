// Command setup is the Lambda behind the stack's Custom::MriotSetup resource
// (internal/workflow/setup).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/setup"
)

func main() {
	log := obs.LoggerFromEnv()
	cfg, err := awsconf.Load(context.Background())
	if err != nil {
		log.Error("setup: cannot start", "error", err)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h := &setup.Handler{
		IoT:    iot.NewFromConfig(cfg),
		Tables: dynamodb.NewFromConfig(cfg),
		Region: cfg.Region,
		Log:    log,
	}
	lambda.Start(cfn.LambdaWrap(h.Handle))
}
