package jitr

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/workflow/converge"
)

// TestDuplicateEvents: a device reconnecting while it is onboarded makes IoT
// publish the event again and again. Events for a certificate that a run in
// this process is handling, or onboarded moments ago, cost no registry call;
// events for a certificate that is ACTIVE already cost one read and change
// nothing.
func TestDuplicateEvents(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)

	// Hold the first run inside its first registry call while duplicates arrive.
	var calls atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	w.reg.SetHook(func(context.Context, string) error {
		calls.Add(1)
		once.Do(func() { close(entered); <-release })
		return nil
	})
	first := make(chan error, 1)
	go func() { first <- w.deliver(ctx) }()
	<-entered
	for range 5 {
		if err := w.deliver(ctx); err != nil {
			t.Fatalf("duplicate while in progress: %v", err)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("duplicates in progress made %d registry calls beyond the first run's one", got-1)
	}
	if got := w.metrics.Get("DuplicateEvent", obs.D("Function", Function), obs.D("Reason", "in_progress")); got != 5 {
		t.Errorf("DuplicateEvent{in_progress} = %v, want 5", got)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	before := w.state()
	// Moments later: dropped without a registry call.
	calls.Store(0)
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("an event just after onboarding made %d registry calls, want 0", got)
	}
	if got := w.metrics.Get("DuplicateEvent", obs.D("Function", Function), obs.D("Reason", "recently_onboarded")); got != 1 {
		t.Errorf("DuplicateEvent{recently_onboarded} = %v, want 1", got)
	}
	// Later (or in another process): one read tells the certificate is ACTIVE.
	w.h.now = func() time.Time { return t0.Add(doneTTL + time.Second) }
	calls.Store(0)
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("an event for an ACTIVE certificate made %d registry calls, want 1 (DescribeCertificate)", got)
	}
	if after := w.state().(state); !after.Registry.Equal(before.(state).Registry) || !reflect.DeepEqual(after.Inventory, before.(state).Inventory) {
		t.Errorf("a stale event changed the world: %s", before.(state).Diff(after))
	}
	if got := w.metrics.Get("DuplicateEvent", obs.D("Function", Function), obs.D("Reason", "already_active")); got != 1 {
		t.Errorf("DuplicateEvent{already_active} = %v, want 1", got)
	}
	if len(w.h.inFlight) != 0 {
		t.Errorf("claims left behind: %v", w.h.inFlight)
	}
}

// TestCACertificateIsReadOnce: the CA's PEM is immutable for its id (the id
// is the hash of the DER), so one process reads it once.
func TestCACertificateIsReadOnce(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	var caReads atomic.Int64
	w.reg.SetHook(func(_ context.Context, op string) error {
		if op == "DescribeCACertificate" {
			caReads.Add(1)
		}
		return nil
	})
	for i := range 3 {
		dev, err := fx.ca.IssueDevice(fmt.Sprintf("ca-cache-%d", i), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := w.reg.AutoRegister(ctx, dev.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.h.Invoke(ctx, registeredEvent(c.ID, c.CACertificateID)); err != nil {
			t.Fatal(err)
		}
		if got, _ := w.reg.DescribeCertificate(ctx, c.ID); got.Status != fleet.CertActive {
			t.Fatalf("device %d: certificate %s", i, got.Status)
		}
	}
	if got := caReads.Load(); got != 1 {
		t.Errorf("DescribeCACertificate called %d times for 3 devices of one CA, want 1", got)
	}
}

// TestNewRegistrationIsNotADuplicate: a decommissioned device's certificate
// is deleted; when the device comes back, IoT registers it again under the
// same id, with a new registration timestamp. That event is handled at once.
func TestNewRegistrationIsNotADuplicate(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	event := func(registered int64) []byte {
		b, _ := json.Marshal(map[string]any{"certificateId": w.cert.ID, "caCertificateId": w.cert.CACertificateID,
			"timestamp": t0.UnixMilli(), "certificateStatus": "PENDING_ACTIVATION", "certificateRegistrationTimestamp": registered})
		return b
	}
	if _, err := w.h.Invoke(ctx, event(1000)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	w.reg.SetHook(func(context.Context, string) error { calls.Add(1); return nil })
	if _, err := w.h.Invoke(ctx, event(1000)); err != nil || calls.Load() != 0 {
		t.Fatalf("same registration: err %v, %d registry calls, want none", err, calls.Load())
	}
	if _, err := w.h.Invoke(ctx, event(2000)); err != nil || calls.Load() == 0 {
		t.Fatalf("new registration: err %v, %d registry calls, want it handled", err, calls.Load())
	}
}

// TestStaleEventDoesNotReactivateADeactivatedCertificate: IoT publishes the
// registered event only for a PENDING_ACTIVATION certificate. An event that
// arrives after an operator set the onboarded certificate INACTIVE (a retry, or
// one that waited in the asynchronous queue) is stale and must not activate it
// again.
func TestStaleEventDoesNotReactivateADeactivatedCertificate(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.reg.UpdateCertificate(ctx, w.cert.ID, fleet.CertInactive); err != nil {
		t.Fatal(err)
	}
	before := w.state()
	w.h.now = func() time.Time { return t0.Add(doneTTL + time.Second) } // past the in-process window
	if err := w.deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if after := w.state().(state); !after.Registry.Equal(before.(state).Registry) || !reflect.DeepEqual(after.Inventory, before.(state).Inventory) {
		t.Errorf("a stale event changed the world: %s", before.(state).Diff(after))
	}
}

// TestRaceForTheThingKeepsTheOtherRunsThing: while this run sees the thing
// absent, another run (replicate, here) creates it first. AWS answers this
// run's CreateThing with ResourceAlreadyExists (other createdBy attribute),
// so a later terminal failure rolls back without deleting the other run's
// thing.
func TestRaceForTheThingKeepsTheOtherRunsThing(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	var raced bool
	w.reg.SetHook(func(ctx context.Context, op string) error {
		switch {
		case op == "CreateThing" && !raced:
			raced = true
			// Another run's create-thing gets there first (a run whose
			// lease this one took over after it expired).
			if _, err := w.reg.CreateThing(ctx, "dev-1", map[string]string{converge.ManagedByAttribute: converge.ManagedBy,
				converge.CreatedByAttribute: "converge/eu-west-1/other"}); err != nil {
				t.Errorf("the other run's create-thing: %v", err)
			}
		case op == "AttachPolicy":
			return fmt.Errorf("attach policy: %w", fleet.ErrInvalid)
		}
		return nil
	})
	if err := w.deliver(ctx); err == nil {
		t.Fatal("a terminal failure was not reported")
	}
	th, err := w.reg.DescribeThing(ctx, "dev-1")
	if err != nil {
		t.Fatalf("the other run's thing was deleted by this run's rollback: %v", err)
	}
	if th.Attributes[converge.CreatedByAttribute] != "converge/eu-west-1/other" {
		t.Errorf("thing attributes %v", th.Attributes)
	}
}

// TestRegisteredEventsAreDroppedLonger: events that carry the onboarded
// registration's timestamp are dropped for doneTTLRegistered, in this
// process and, through the claims table, in another instance; an event
// without one gets the short window (it could be a new registration), and a
// new registration is handled at once (TestNewRegistrationIsNotADuplicate).
func TestRegisteredEventsAreDroppedLonger(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	event := func(registered any) []byte {
		b, _ := json.Marshal(map[string]any{"certificateId": w.cert.ID, "caCertificateId": w.cert.CACertificateID,
			"timestamp": t0.UnixMilli(), "certificateStatus": "PENDING_ACTIVATION", "certificateRegistrationTimestamp": registered})
		return b
	}
	_, claims := newClaimsTable(t)
	first := w.instance(t, claims, t0)
	if _, err := first.Invoke(ctx, event(1000)); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	w.reg.SetHook(func(context.Context, string) error { calls.Add(1); return nil })
	cases := []struct {
		name       string
		h          *Handler
		at         time.Duration
		registered any
		wantCalls  int64
	}{
		{"same process, an hour later", first, time.Hour, 1000, 0},
		{"another instance, an hour later", w.instance(t, claims, t0), time.Hour + time.Minute, 1000, 0},
		{"no registration, past the short window", first, time.Hour + 2*time.Minute, nil, 1},
		{"same registration, past the long window", w.instance(t, claims, t0.Add(doneTTLRegistered+time.Second)), doneTTLRegistered + time.Second, 1000, 1},
	}
	for _, tc := range cases { // in time order
		tc.h.now = func() time.Time { return t0.Add(tc.at) }
		calls.Store(0)
		if _, err := tc.h.Invoke(ctx, event(tc.registered)); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := calls.Load(); got != tc.wantCalls {
			t.Errorf("%s: %d registry calls, want %d", tc.name, got, tc.wantCalls)
		}
	}
}
