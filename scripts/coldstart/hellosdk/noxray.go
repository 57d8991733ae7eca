//go:build noxray

package main

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
)

func instrument(*aws.Config) {}

func trace(context.Context, string) func() { return func() {} }
