package jitr

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/core/obs"
	"github.com/mriot/mriot/internal/fake/memddb"
)

// newClaimsTable is a region's claims table, in memory.
func newClaimsTable(t *testing.T) (*memddb.Table, *memddb.Claims) {
	t.Helper()
	g := memddb.NewGlobalTable("jitr-claims", memddb.ClaimsKey, []string{region})
	t.Cleanup(g.Close)
	tbl := g.Replica(region)
	return tbl, memddb.NewClaims(tbl)
}

// instance is another Lambda instance of w's region: a handler with its own
// in-process memory over the same registry and inventory, sharing claims.
func (w *world) instance(t *testing.T, claims Claims, now time.Time) *Handler {
	t.Helper()
	h, err := New(Config{Registry: w.reg, Inventory: w.inv, Leases: w.leases, Region: region, PolicyName: policy,
		Now: func() time.Time { return now }, Metrics: w.metrics, Claims: claims})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (w *world) duplicates(reason string) float64 {
	return w.metrics.Get("DuplicateEvent", obs.D("Function", Function), obs.D("Reason", reason))
}

// TestClaimsAcrossInstances: an event that a run in another instance is
// handling, or onboarded moments ago, costs no registry call.
func TestClaimsAcrossInstances(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	_, claims := newClaimsTable(t)
	first, second := w.instance(t, claims, t0), w.instance(t, claims, t0)

	// Hold the first instance's run inside its first registry call.
	var calls atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	var held atomic.Bool
	w.reg.SetHook(func(context.Context, string) error {
		calls.Add(1)
		if held.CompareAndSwap(false, true) { // only the first call waits
			close(entered)
			<-release
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { _, err := first.Invoke(ctx, w.payload); done <- err }()
	<-entered
	if _, err := second.Invoke(ctx, w.payload); err != nil {
		t.Fatalf("duplicate in another instance: %v", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("a duplicate in another instance made %d registry calls beyond the first run's one", got-1)
	}
	if got := w.duplicates("claimed_elsewhere"); got != 1 {
		t.Errorf("DuplicateEvent{claimed_elsewhere} = %v, want 1", got)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c, _ := w.reg.DescribeCertificate(ctx, w.cert.ID); c.Status != fleet.CertActive {
		t.Fatalf("certificate %s, want ACTIVE", c.Status)
	}

	// A third, fresh instance moments later: dropped without a registry call.
	calls.Store(0)
	if _, err := w.instance(t, claims, t0.Add(time.Second)).Invoke(ctx, w.payload); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("an event after another instance onboarded the device made %d registry calls, want 0", got)
	}
	if got := w.duplicates("onboarded_elsewhere"); got != 1 {
		t.Errorf("DuplicateEvent{onboarded_elsewhere} = %v, want 1", got)
	}

	// Once the done mark expired, one instance reads the ACTIVE certificate
	// (one call) and marks it done again: the next instance makes none.
	later := t0.Add(doneTTL + time.Second)
	calls.Store(0)
	if _, err := w.instance(t, claims, later).Invoke(ctx, w.payload); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("an event after the done mark expired made %d registry calls, want 1 (DescribeCertificate)", got)
	}
	calls.Store(0)
	if _, err := w.instance(t, claims, later.Add(time.Second)).Invoke(ctx, w.payload); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("an event after the ACTIVE fast path made %d registry calls, want 0", got)
	}
	if got := w.duplicates("onboarded_elsewhere"); got != 2 {
		t.Errorf("DuplicateEvent{onboarded_elsewhere} = %v, want 2", got)
	}
}

// TestClaimReleasedWhenNotOnboarded: a run that does not onboard (a terminal
// failure rolled back, a retryable stop, a refusal) releases its claim, so
// that the next event, in any instance, is handled at once rather than
// dropped until the lease expires.
func TestClaimReleasedWhenNotOnboarded(t *testing.T) {
	fixtures(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		prepare func(*world) error
		hook    func(ctx context.Context, op string) error // the first run's registry hook
		wantErr bool
	}{
		{name: "terminal failure rolled back", wantErr: true, hook: func(_ context.Context, op string) error {
			if op == "AttachPolicy" {
				return fmt.Errorf("attach policy: %w", fleet.ErrInvalid)
			}
			return nil
		}},
		{name: "retryable stop", wantErr: true, hook: func(_ context.Context, op string) error {
			if op == "DescribeCertificate" {
				return fmt.Errorf("describe certificate: %w", fleet.ErrThrottled)
			}
			return nil
		}},
		{name: "refusal (an older certificate than the current one)", prepare: newerOnboarded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := newWorld(fx.dev.CertPEM())
			if err != nil {
				t.Fatal(err)
			}
			defer w.close()
			if tt.prepare != nil {
				if err := tt.prepare(w); err != nil {
					t.Fatal(err)
				}
			}
			_, claims := newClaimsTable(t)
			w.reg.SetHook(tt.hook)
			_, err = w.instance(t, claims, t0).Invoke(ctx, w.payload)
			if (err != nil) != tt.wantErr {
				t.Fatalf("first run: err = %v, wantErr %v", err, tt.wantErr)
			}
			var calls atomic.Int64
			w.reg.SetHook(func(context.Context, string) error { calls.Add(1); return nil })
			if _, err := w.instance(t, claims, t0.Add(time.Second)).Invoke(ctx, w.payload); err != nil && !tt.wantErr {
				t.Fatalf("next event: %v", err)
			}
			if calls.Load() == 0 {
				t.Errorf("the next event was dropped: the claim of a run that did not onboard was not released")
			}
			if got := w.duplicates("claimed_elsewhere") + w.duplicates("onboarded_elsewhere"); got != 0 {
				t.Errorf("%v events dropped as duplicates", got)
			}
		})
	}
}

// TestClaimsTableFailureDoesNotStopOnboarding: the claims table is an
// optimisation; when DynamoDB fails, the device is onboarded all the same.
func TestClaimsTableFailureDoesNotStopOnboarding(t *testing.T) {
	ctx := context.Background()
	w := deviceWorld(t)
	tbl, claims := newClaimsTable(t)
	var ops atomic.Int64
	tbl.SetHook(func(context.Context, string) error {
		ops.Add(1)
		return fmt.Errorf("claims table: %w", fleet.ErrUnavailable)
	})
	if _, err := w.instance(t, claims, t0).Invoke(ctx, w.payload); err != nil {
		t.Fatalf("a failing claims table stopped onboarding: %v", err)
	}
	if c, _ := w.reg.DescribeCertificate(ctx, w.cert.ID); c.Status != fleet.CertActive {
		t.Errorf("certificate %s, want ACTIVE", c.Status)
	}
	if got := w.metrics.Get("DeviceOnboarded", obs.D("Function", Function)); got != 1 {
		t.Errorf("DeviceOnboarded = %v, want 1", got)
	}
	if ops.Load() == 0 {
		t.Error("the claims table was never asked")
	}
}
