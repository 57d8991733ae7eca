package local

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// retryingRegistry puts the AWS SDK's own retryer, in adaptive mode, in
// front of a region's in-memory registry, as the SDK client does in front of
// IoT in Lambda: throttling and transient failures are retried with backoff
// and client-side rate limiting before a workflow ever sees them. Only what
// outlives the retryer reaches the saga.
//
// Each Lambda execution environment builds its own SDK client once, so each
// has its own adaptive rate limiter, which learns only from the throttles
// its own calls met. The registry keeps one retryer per execution
// environment of the invocation in ctx (the Invoker's), and one more for
// calls made outside any invocation. One limiter shared by every run of a
// region would slow them all down after any one's throttles: at 2,000
// devices it starved the replicas (docs/performance.md).
type retryingRegistry struct {
	contract.Registry
	sleep func(ctx context.Context, d time.Duration) error

	mu       sync.Mutex
	retryers map[environment]aws.RetryerV2 // the zero environment: outside any invocation
}

var _ contract.Registry = (*retryingRegistry)(nil)

// sdkMaxAttempts matches internal/aws/awsconf's retryer in Lambda.
const sdkMaxAttempts = 5

func newRetryingRegistry(r contract.Registry) *retryingRegistry {
	return &retryingRegistry{Registry: r, sleep: sleepCtx, retryers: map[environment]aws.RetryerV2{}}
}

// retryer is the SDK retryer of the execution environment ctx runs in.
func (r *retryingRegistry) retryer(ctx context.Context) aws.RetryerV2 {
	env, _ := environmentOf(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.retryers[env]
	if !ok {
		rt = newSDKRetryer()
		r.retryers[env] = rt
	}
	return rt
}

// newSDKRetryer is the retryer internal/aws/awsconf gives an SDK client in
// Lambda, on the fakes' errors.
func newSDKRetryer() aws.RetryerV2 {
	transient := retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
		if fleet.IsTransient(err) {
			return aws.TrueTernary
		}
		return aws.UnknownTernary
	})
	throttle := retry.IsErrorThrottleFunc(func(err error) aws.Ternary {
		if errors.Is(err, fleet.ErrThrottled) {
			return aws.TrueTernary
		}
		return aws.UnknownTernary
	})
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = sdkMaxAttempts
			so.Retryables = append([]retry.IsErrorRetryable{transient}, so.Retryables...)
			// The local stack has no retry quota to exhaust: every retryable
			// error is retried up to MaxAttempts, as with a fresh Lambda.
			so.RateLimiter = noRateLimit{}
		})
		o.Throttles = append([]retry.IsErrorThrottle{throttle}, o.Throttles...)
	})
}

type noRateLimit struct{}

func (noRateLimit) GetToken(context.Context, uint) (func() error, error) {
	return func() error { return nil }, nil
}
func (noRateLimit) AddTokens(uint) error { return nil }

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do runs call under the retryer's policy.
func (r *retryingRegistry) do(ctx context.Context, call func() error) error {
	rt := r.retryer(ctx)
	var err error
	for attempt := 1; ; attempt++ {
		release, terr := rt.GetAttemptToken(ctx)
		if terr != nil {
			return fmt.Errorf("client-side rate limit: %w: %w", fleet.ErrThrottled, terr)
		}
		err = call()
		_ = release(err)
		if err == nil || !rt.IsErrorRetryable(err) || attempt >= rt.MaxAttempts() {
			return err
		}
		delay, derr := rt.RetryDelay(attempt, err)
		if derr != nil {
			return err
		}
		if serr := r.sleep(ctx, delay); serr != nil {
			return fmt.Errorf("%w (retry abandoned: %w)", err, serr)
		}
	}
}

func (r *retryingRegistry) DescribeCertificate(ctx context.Context, id string) (c fleet.Certificate, err error) {
	err = r.do(ctx, func() (e error) { c, e = r.Registry.DescribeCertificate(ctx, id); return })
	return
}

func (r *retryingRegistry) DescribeCACertificate(ctx context.Context, id string) (c fleet.CACertificate, err error) {
	err = r.do(ctx, func() (e error) { c, e = r.Registry.DescribeCACertificate(ctx, id); return })
	return
}

func (r *retryingRegistry) RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (c fleet.Certificate, err error) {
	err = r.do(ctx, func() (e error) { c, e = r.Registry.RegisterCertificate(ctx, pem, status); return })
	return
}

func (r *retryingRegistry) UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error {
	return r.do(ctx, func() error { return r.Registry.UpdateCertificate(ctx, id, status) })
}

func (r *retryingRegistry) DeleteCertificate(ctx context.Context, id string) error {
	return r.do(ctx, func() error { return r.Registry.DeleteCertificate(ctx, id) })
}

func (r *retryingRegistry) DescribeThing(ctx context.Context, name string) (t fleet.Thing, err error) {
	err = r.do(ctx, func() (e error) { t, e = r.Registry.DescribeThing(ctx, name); return })
	return
}

func (r *retryingRegistry) CreateThing(ctx context.Context, name string, attrs map[string]string) (t fleet.Thing, err error) {
	err = r.do(ctx, func() (e error) { t, e = r.Registry.CreateThing(ctx, name, attrs); return })
	return
}

func (r *retryingRegistry) UpdateThingAttributes(ctx context.Context, name string, attrs map[string]string) error {
	return r.do(ctx, func() error { return r.Registry.UpdateThingAttributes(ctx, name, attrs) })
}

func (r *retryingRegistry) DeleteThing(ctx context.Context, name string) error {
	return r.do(ctx, func() error { return r.Registry.DeleteThing(ctx, name) })
}

func (r *retryingRegistry) AttachThingPrincipal(ctx context.Context, thing, principal string) error {
	return r.do(ctx, func() error { return r.Registry.AttachThingPrincipal(ctx, thing, principal) })
}

func (r *retryingRegistry) DetachThingPrincipal(ctx context.Context, thing, principal string) error {
	return r.do(ctx, func() error { return r.Registry.DetachThingPrincipal(ctx, thing, principal) })
}

func (r *retryingRegistry) ListThingPrincipals(ctx context.Context, thing string) (p []string, err error) {
	err = r.do(ctx, func() (e error) { p, e = r.Registry.ListThingPrincipals(ctx, thing); return })
	return
}

func (r *retryingRegistry) AttachPolicy(ctx context.Context, policy, principal string) error {
	return r.do(ctx, func() error { return r.Registry.AttachPolicy(ctx, policy, principal) })
}

func (r *retryingRegistry) DetachPolicy(ctx context.Context, policy, principal string) error {
	return r.do(ctx, func() error { return r.Registry.DetachPolicy(ctx, policy, principal) })
}

func (r *retryingRegistry) ListAttachedPolicies(ctx context.Context, principal string) (p []string, err error) {
	err = r.do(ctx, func() (e error) { p, e = r.Registry.ListAttachedPolicies(ctx, principal); return })
	return
}

func (r *retryingRegistry) ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) (th []fleet.Thing, next string, err error) {
	err = r.do(ctx, func() (e error) {
		th, next, e = r.Registry.ListThings(ctx, attrName, attrValue, limit, cursor)
		return
	})
	return
}

func (r *retryingRegistry) ListCACertificates(ctx context.Context) (cas []fleet.CACertificate, err error) {
	err = r.do(ctx, func() (e error) { cas, e = r.Registry.ListCACertificates(ctx); return })
	return
}

func (r *retryingRegistry) ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) (cs []fleet.Certificate, next string, err error) {
	err = r.do(ctx, func() (e error) {
		cs, next, e = r.Registry.ListCertificatesByCA(ctx, caID, limit, cursor)
		return
	})
	return
}
