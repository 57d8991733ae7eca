// Package awsconf builds the AWS SDK configuration every Lambda and the CLI
// use: the SDK's adaptive retryer, the region from the environment, the
// endpoint override from AWS_ENDPOINT_URL (the SDK's own feature) and, when
// tracing is on, X-Ray instrumentation of every SDK client.
package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-xray-sdk-go/instrumentation/awsv2"
)

// DefaultMaxAttempts is the SDK retryer's default number of attempts per call.
const DefaultMaxAttempts = 5

// TracingEnv names the environment variable that turns X-Ray instrumentation
// of SDK clients on ("true").
const TracingEnv = "TRACING"

type options struct {
	maxAttempts int
	tracing     *bool
	region      string
	load        []func(*config.LoadOptions) error
}

// Option changes how Load builds the configuration.
type Option func(*options)

// WithMaxAttempts sets the retryer's maximum attempts per call (>= 1).
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = n } }

// WithTracing turns X-Ray instrumentation on or off, whatever TRACING says.
func WithTracing(on bool) Option { return func(o *options) { o.tracing = &on } }

// WithRegion sets the region instead of the environment's AWS_REGION.
func WithRegion(region string) Option { return func(o *options) { o.region = region } }

// WithLoadOptions passes further options to config.LoadDefaultConfig.
func WithLoadOptions(fns ...func(*config.LoadOptions) error) Option {
	return func(o *options) { o.load = append(o.load, fns...) }
}

// Load returns the SDK configuration: config.LoadDefaultConfig with the
// adaptive-mode retryer (DefaultMaxAttempts unless WithMaxAttempts), and X-Ray
// instrumentation when TRACING=true or WithTracing(true). The endpoint
// override comes from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE>, read by
// the SDK itself.
func Load(ctx context.Context, opts ...Option) (aws.Config, error) {
	o := options{maxAttempts: DefaultMaxAttempts}
	for _, opt := range opts {
		opt(&o)
	}
	if o.maxAttempts < 1 {
		return aws.Config{}, fmt.Errorf("load AWS config: max attempts %d: must be at least 1", o.maxAttempts)
	}
	tracing := false
	if o.tracing != nil {
		tracing = *o.tracing
	} else {
		on, err := Env{}.Bool(TracingEnv, false)
		if err != nil {
			return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
		}
		tracing = on
	}
	maxAttempts := o.maxAttempts
	load := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer { return NewRetryer(maxAttempts) }),
	}
	if o.region != "" {
		load = append(load, config.WithRegion(o.region))
	}
	load = append(load, o.load...)
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	if tracing {
		awsv2.AWSV2Instrumentor(&cfg.APIOptions)
	}
	return cfg, nil
}

// NewRetryer returns the SDK's adaptive-mode retryer (client-side rate
// limiting on throttling) with maxAttempts attempts per call.
func NewRetryer(maxAttempts int) aws.Retryer {
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = maxAttempts
		})
	})
}

// ForRegion returns a copy of cfg for another region (cross-region clients).
// Everything else, credentials, retryer, endpoint override and
// instrumentation, is shared.
func ForRegion(cfg aws.Config, region string) aws.Config {
	c := cfg.Copy()
	c.Region = region
	return c
}
