// Command hello is the bare aws-lambda-go function the cold-start benchmark
// (scripts/coldstart) measures every bootstrap against: a handler and
// lambda.Start, nothing else.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	lambda.Start(func(context.Context, json.RawMessage) (string, error) { return "hello", nil })
}
