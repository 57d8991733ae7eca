package memiot

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// AWSDefaultQuotas are AWS IoT Core's default control-plane rates, in
// transactions per second per account and region: fleet.IoTQuotas, where
// their sources are named (the production code that spends a share of them
// must not link this fake). The map is shared: copy it before changing it.
var AWSDefaultQuotas = fleet.IoTQuotas

// Throttled is the error AWS IoT returns when op is over its rate
// (ThrottlingException). It wraps fleet.ErrThrottled.
func Throttled(op string) error {
	return fmt.Errorf("%s: ThrottlingException: Rate exceeded: %w", op, fleet.ErrThrottled)
}

// Unavailable is a transient service failure of op
// (ServiceUnavailableException). It wraps fleet.ErrUnavailable.
func Unavailable(op string) error {
	return fmt.Errorf("%s: ServiceUnavailableException: service is temporarily unavailable: %w", op, fleet.ErrUnavailable)
}

// Invalid is a terminal refusal of op (InvalidRequestException). It wraps
// fleet.ErrInvalid.
func Invalid(op string) error {
	return fmt.Errorf("%s: InvalidRequestException: the request is not valid: %w", op, fleet.ErrInvalid)
}

// Option configures a Registry.
type Option func(*faults)

// WithHook calls hook before every API call with the AWS operation name: the
// port's CreateThing, DescribeThing, UpdateThing, DeleteThing,
// AttachThingPrincipal, DetachThingPrincipal, ListThingPrincipals,
// AttachPolicy, DetachPolicy, ListAttachedPolicies, RegisterCertificate,
// DescribeCertificate, DescribeCACertificate, UpdateCertificate,
// DeleteCertificate, ListThings, ListCACertificates, ListCertificatesByCA,
// and the set-up calls RegisterCACertificate, UpdateCACertificate
// (SetCAStatus), CreatePolicy and GetPolicy. A non-nil error is returned as
// the call's error and the state is not changed. The inspections
// (CACertificateList, CertificateByID, CertificateRegisteredAt,
// CertificateList, ThingList, PoliciesForPrincipal, ThingsForPrincipal,
// Snapshot) and AutoRegister are no API calls: no hook, latency or quota
// applies to them.
func WithHook(hook func(ctx context.Context, op string) error) Option {
	return func(f *faults) { f.hook = hook }
}

// WithAfter calls after once an API call has succeeded, outside the
// registry's lock (so it may block, or end the goroutine with runtime.Goexit
// to simulate a crash right after that call).
func WithAfter(after func(ctx context.Context, op string)) Option {
	return func(f *faults) { f.after = after }
}

// WithLatency delays every API call by d (the call still honours its context).
func WithLatency(d time.Duration) Option {
	return func(f *faults) { f.latency = d }
}

// WithQuotas limits each named operation to rate calls per second with a
// burst of rate (at least 1); calls over it fail with Throttled(op).
// Operations not in the map are unlimited.
func WithQuotas(quotas map[string]float64) Option {
	return func(f *faults) { f.setQuotas(quotas) }
}

// WithClock sets the clock of the quotas and of certificate validity checks.
func WithClock(now func() time.Time) Option {
	return func(f *faults) { f.now = now }
}

// faults holds the run-time adjustable hooks, latency and quotas.
type faults struct {
	mu      sync.Mutex
	hook    func(ctx context.Context, op string) error
	after   func(ctx context.Context, op string)
	latency time.Duration
	now     func() time.Time
	buckets map[string]*bucket
	// throttled counts the calls each quota refused.
	throttled map[string]int
}

type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func (f *faults) setQuotas(quotas map[string]float64) {
	f.buckets = make(map[string]*bucket, len(quotas))
	for op, rate := range quotas {
		if rate <= 0 {
			continue
		}
		f.buckets[op] = &bucket{rate: rate, tokens: burst(rate)}
	}
}

func burst(rate float64) float64 { return max(rate, 1) }

// before runs the latency, the quota and the hook of op. A non-nil error is
// the call's result.
func (f *faults) before(ctx context.Context, op string) error {
	f.mu.Lock()
	latency, hook := f.latency, f.hook
	f.mu.Unlock()
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, ctx.Err())
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w: %w", op, fleet.ErrUnavailable, err)
	}
	if !f.take(op) {
		return Throttled(op)
	}
	if hook != nil {
		if err := hook(ctx, op); err != nil {
			return err
		}
	}
	return nil
}

// take takes a token of op's bucket; false when the bucket is empty.
func (f *faults) take(op string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.buckets[op]
	if b == nil {
		return true
	}
	now := f.now()
	if !b.last.IsZero() {
		b.tokens = min(burst(b.rate), b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		if f.throttled == nil {
			f.throttled = map[string]int{}
		}
		f.throttled[op]++
		return false
	}
	b.tokens--
	return true
}

func (f *faults) afterHook(ctx context.Context, op string) {
	f.mu.Lock()
	after := f.after
	f.mu.Unlock()
	if after != nil {
		after(ctx, op)
	}
}

// Throttled returns how many calls of each operation its quota refused
// (ThrottlingException) since the registry was made.
func (r *Registry) Throttled() map[string]int {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return maps.Clone(r.f.throttled)
}

// SetHook replaces the hook (nil removes it); see WithHook.
func (r *Registry) SetHook(hook func(ctx context.Context, op string) error) {
	r.f.mu.Lock()
	r.f.hook = hook
	r.f.mu.Unlock()
}

// SetAfter replaces the after-call hook (nil removes it); see WithAfter.
func (r *Registry) SetAfter(after func(ctx context.Context, op string)) {
	r.f.mu.Lock()
	r.f.after = after
	r.f.mu.Unlock()
}

// SetLatency sets the per-call latency; see WithLatency.
func (r *Registry) SetLatency(d time.Duration) {
	r.f.mu.Lock()
	r.f.latency = d
	r.f.mu.Unlock()
}

// SetQuotas replaces the quotas (nil removes them); see WithQuotas.
func (r *Registry) SetQuotas(quotas map[string]float64) {
	r.f.mu.Lock()
	r.f.setQuotas(quotas)
	r.f.mu.Unlock()
}
