package reconcile

import (
	"context"
	"sync"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

// limited is a registry behind token buckets: each operation with a quota
// gets share × quota calls per second (a burst of one), and a call waits for
// its token, so that the reconciler never spends more than its share of an
// API's quota and leaves the rest to onboarding.
type limited struct {
	Registry
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	interval time.Duration // between two calls
	next     time.Time     // earliest time of the next call
}

func newLimited(reg Registry, quotas map[string]float64, share float64, now func() time.Time, sleep func(context.Context, time.Duration) error) *limited {
	l := &limited{Registry: reg, now: now, sleep: sleep, buckets: map[string]*bucket{}}
	for op, rate := range quotas {
		if rate*share > 0 {
			l.buckets[op] = &bucket{interval: time.Duration(float64(time.Second) / (rate * share))}
		}
	}
	return l
}

// wait takes op's token, sleeping until it is due.
func (l *limited) wait(ctx context.Context, op string) error {
	l.mu.Lock()
	b := l.buckets[op]
	if b == nil {
		l.mu.Unlock()
		return nil
	}
	now := l.now()
	at := b.next
	if at.Before(now) {
		at = now
	}
	b.next = at.Add(b.interval)
	l.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		return l.sleep(ctx, d)
	}
	return nil
}

func (l *limited) DescribeCertificate(ctx context.Context, id string) (fleet.Certificate, error) {
	if err := l.wait(ctx, "DescribeCertificate"); err != nil {
		return fleet.Certificate{}, err
	}
	return l.Registry.DescribeCertificate(ctx, id)
}

func (l *limited) DescribeCACertificate(ctx context.Context, id string) (fleet.CACertificate, error) {
	if err := l.wait(ctx, "DescribeCACertificate"); err != nil {
		return fleet.CACertificate{}, err
	}
	return l.Registry.DescribeCACertificate(ctx, id)
}

func (l *limited) RegisterCertificate(ctx context.Context, pem string, status fleet.CertStatus) (fleet.Certificate, error) {
	if err := l.wait(ctx, "RegisterCertificate"); err != nil {
		return fleet.Certificate{}, err
	}
	return l.Registry.RegisterCertificate(ctx, pem, status)
}

func (l *limited) UpdateCertificate(ctx context.Context, id string, status fleet.CertStatus) error {
	if err := l.wait(ctx, "UpdateCertificate"); err != nil {
		return err
	}
	return l.Registry.UpdateCertificate(ctx, id, status)
}

func (l *limited) DeleteCertificate(ctx context.Context, id string) error {
	if err := l.wait(ctx, "DeleteCertificate"); err != nil {
		return err
	}
	return l.Registry.DeleteCertificate(ctx, id)
}

func (l *limited) DescribeThing(ctx context.Context, name string) (fleet.Thing, error) {
	if err := l.wait(ctx, "DescribeThing"); err != nil {
		return fleet.Thing{}, err
	}
	return l.Registry.DescribeThing(ctx, name)
}

func (l *limited) CreateThing(ctx context.Context, name string, attrs map[string]string) (fleet.Thing, error) {
	if err := l.wait(ctx, "CreateThing"); err != nil {
		return fleet.Thing{}, err
	}
	return l.Registry.CreateThing(ctx, name, attrs)
}

func (l *limited) DeleteThing(ctx context.Context, name string) error {
	if err := l.wait(ctx, "DeleteThing"); err != nil {
		return err
	}
	return l.Registry.DeleteThing(ctx, name)
}

func (l *limited) AttachThingPrincipal(ctx context.Context, thing, principal string) error {
	if err := l.wait(ctx, "AttachThingPrincipal"); err != nil {
		return err
	}
	return l.Registry.AttachThingPrincipal(ctx, thing, principal)
}

func (l *limited) DetachThingPrincipal(ctx context.Context, thing, principal string) error {
	if err := l.wait(ctx, "DetachThingPrincipal"); err != nil {
		return err
	}
	return l.Registry.DetachThingPrincipal(ctx, thing, principal)
}

func (l *limited) ListThingPrincipals(ctx context.Context, thing string) ([]string, error) {
	if err := l.wait(ctx, "ListThingPrincipals"); err != nil {
		return nil, err
	}
	return l.Registry.ListThingPrincipals(ctx, thing)
}

func (l *limited) AttachPolicy(ctx context.Context, policy, principal string) error {
	if err := l.wait(ctx, "AttachPolicy"); err != nil {
		return err
	}
	return l.Registry.AttachPolicy(ctx, policy, principal)
}

func (l *limited) DetachPolicy(ctx context.Context, policy, principal string) error {
	if err := l.wait(ctx, "DetachPolicy"); err != nil {
		return err
	}
	return l.Registry.DetachPolicy(ctx, policy, principal)
}

func (l *limited) ListAttachedPolicies(ctx context.Context, principal string) ([]string, error) {
	if err := l.wait(ctx, "ListAttachedPolicies"); err != nil {
		return nil, err
	}
	return l.Registry.ListAttachedPolicies(ctx, principal)
}

func (l *limited) ListThings(ctx context.Context, attrName, attrValue string, limit int, cursor string) ([]fleet.Thing, string, error) {
	if err := l.wait(ctx, "ListThings"); err != nil {
		return nil, "", err
	}
	return l.Registry.ListThings(ctx, attrName, attrValue, limit, cursor)
}

func (l *limited) ListCACertificates(ctx context.Context) ([]fleet.CACertificate, error) {
	if err := l.wait(ctx, "ListCACertificates"); err != nil {
		return nil, err
	}
	return l.Registry.ListCACertificates(ctx)
}

func (l *limited) ListCertificatesByCA(ctx context.Context, caID string, limit int, cursor string) ([]fleet.Certificate, string, error) {
	if err := l.wait(ctx, "ListCertificatesByCA"); err != nil {
		return nil, "", err
	}
	return l.Registry.ListCertificatesByCA(ctx, caID, limit, cursor)
}
