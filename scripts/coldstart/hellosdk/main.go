// Command hellosdk is the cold-start benchmark's second peer: the bare
// handler plus what every mriot function must link and build at init by the
// project's design card: the SDK configuration with X-Ray instrumentation,
// IoT and DynamoDB clients, and the X-Ray SDK. A bootstrap's init over this
// one is what mriot's own code costs. Built with -tags noxray it leaves the
// X-Ray SDK out, which measures what that SDK alone costs.
package main

import (
	"context"
	"encoding/json"
	"log"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"
)

func main() {
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	instrument(&cfg)
	reg := iot.NewFromConfig(cfg)
	db := dynamodb.NewFromConfig(cfg)
	lambda.Start(func(ctx context.Context, _ json.RawMessage) (string, error) {
		defer trace(ctx, "hello")()
		_, _ = reg, db
		return "hello", nil
	})
}
