//go:build !noxray

package main

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-xray-sdk-go/instrumentation/awsv2"
	"github.com/aws/aws-xray-sdk-go/xray"
)

func instrument(cfg *aws.Config) { awsv2.AWSV2Instrumentor(&cfg.APIOptions) }

func trace(ctx context.Context, name string) func() {
	_, seg := xray.BeginSubsegment(ctx, name)
	return func() { seg.Close(nil) }
}
