package local_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/reconcile"
)

// TestMassOnboardingUnderAWSQuotas onboards 200 devices at once with AWS
// IoT's default control-plane rates enforced in every region (10 TPS for
// DescribeCertificate, RegisterCertificate and UpdateCertificate, 15 for
// AttachPolicy...): throttling is absorbed by the SDK retryer, the sagas'
// retryable stops and the devices' reconnects, and every device ends ACTIVE
// in every region with nothing in a dead-letter queue.
func TestMassOnboardingUnderAWSQuotas(t *testing.T) {
	if testing.Short() {
		t.Skip("mass onboarding takes tens of seconds")
	}
	const n = 200
	st := startStack(t, local.Config{Quotas: maps.Clone(memiot.AWSDefaultQuotas)})
	// Successful registry calls per region and API (throttled calls do not
	// reach the after hook): the quota floor of the run is the busiest
	// API's calls over its rate.
	calls := make([]map[string]int, len(st.Regions()))
	var callsMu sync.Mutex
	for i, r := range st.Regions() {
		calls[i] = map[string]int{}
		r.Registry.SetAfter(func(_ context.Context, op string) {
			callsMu.Lock()
			calls[i][op]++
			callsMu.Unlock()
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	sum, err := connectFleet(ctx, st, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("simulation: %s", sum)
	if sum.Onboarded != n || sum.Acked != n {
		t.Fatalf("onboarded %d, acknowledged %d of %d devices", sum.Onboarded, sum.Acked, n)
	}
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	// Every region is idle: its devices are replicated. The ratio of the
	// time taken to the quotas' floor is the result (docs/performance.md);
	// an absolute time on a shared machine is not.
	idle := time.Since(start)
	callsMu.Lock()
	for i, r := range st.Regions() {
		floor, busiest := quotaFloor(calls[i], memiot.AWSDefaultQuotas)
		t.Logf("%s: registry calls %v; quota floor %.1fs (%s); devices connected after %.2f × floor, region idle after %.2f × floor",
			r.Name, calls[i], floor.Seconds(), busiest, sum.Elapsed.Seconds()/floor.Seconds(), idle.Seconds()/floor.Seconds())
	}
	callsMu.Unlock()
	if dl := st.DeadLetters(); len(dl) != 0 {
		t.Fatalf("%d events in dead-letter queues, first: %+v", len(dl), dl[0])
	}
	for i := range n {
		name := fmt.Sprintf("fleet-%04d", i)
		d, err := st.Regions()[0].Inventory.Get(ctx, name)
		if err != nil || d.Status != fleet.StatusActive {
			t.Fatalf("%s in the inventory: %+v, %v", name, d, err)
		}
		// The region that onboarded the device marked it done in its claims
		// table, which its jitr shares (as every instance does in AWS).
		for _, r := range st.Regions() {
			if r.Name != d.OriginRegion {
				continue
			}
			item, err := r.Claims.Table().GetItem(ctx, ddbitem.ClaimKey(d.CertificateID))
			if err != nil || item == nil {
				t.Fatalf("%s: no claims item in %s: %v", name, r.Name, err)
			}
			if c, err := ddbitem.UnmarshalClaim(item); err != nil || c.State != ddbitem.ClaimStateDone {
				t.Fatalf("%s: claims item in %s: %+v, %v, want DONE", name, r.Name, c, err)
			}
		}
		for _, r := range st.Regions() {
			c, ok := r.Registry.CertificateByID(d.CertificateID)
			if !ok || c.Status != fleet.CertActive {
				t.Fatalf("%s in %s: certificate %+v", name, r.Name, c)
			}
			if _, err := r.Registry.DescribeThing(ctx, name); err != nil {
				t.Fatalf("%s in %s: %v", name, r.Name, err)
			}
		}
	}
}

// quotaFloor is the least time the calls can take under the quotas: the
// largest calls/rate over the rate-limited APIs, and that API's name.
func quotaFloor(calls map[string]int, quotas map[string]float64) (time.Duration, string) {
	var floor time.Duration
	var busiest string
	for op, n := range calls {
		rate := quotas[op]
		if rate <= 0 {
			continue
		}
		if d := time.Duration(float64(n) / rate * float64(time.Second)); d > floor {
			floor, busiest = d, op
		}
	}
	return floor, busiest
}

// BenchmarkReconcilePass measures one whole reconcile pass of a region that
// holds 50 devices, under AWS's default quotas of which the reconciler may
// spend its default share (reconcile.DefaultQuotaShare). The result is the
// ratio of the pass's time to its floor: the busiest API's calls over the
// reconciler's share of that API's rate.
//
//	go test -run '^$' -bench BenchmarkReconcilePass -benchtime 1x -count 3 ./internal/emulator/local
func BenchmarkReconcilePass(b *testing.B) {
	const n = 50
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := local.Start(ctx, local.Config{StateDir: dir, APIAddr: "127.0.0.1:0", Quotas: maps.Clone(memiot.AWSDefaultQuotas)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	sum, err := connectFleet(ctx, st, n)
	if err != nil || sum.Onboarded != n {
		b.Fatalf("onboarding: %v, %d of %d", err, sum.Onboarded, n)
	}
	if err := st.WaitIdle(ctx); err != nil {
		b.Fatal(err)
	}
	region := st.Regions()[len(st.Regions())-1]
	calls := map[string]int{}
	var mu sync.Mutex
	region.Registry.SetAfter(func(_ context.Context, op string) {
		mu.Lock()
		calls[op]++
		mu.Unlock()
	})
	share := map[string]float64{}
	for op, rate := range memiot.AWSDefaultQuotas {
		share[op] = rate * reconcile.DefaultQuotaShare
	}
	b.ResetTimer()
	var ratio float64
	for range b.N {
		mu.Lock()
		clear(calls)
		mu.Unlock()
		start := time.Now()
		rep, err := st.Reconcile(ctx, region.Name)
		took := time.Since(start)
		if err != nil || !rep.Complete || len(rep.Findings) != 0 || rep.Checked < n {
			b.Fatalf("pass: %v, complete %v, %d findings, %d checked", err, rep.Complete, len(rep.Findings), rep.Checked)
		}
		mu.Lock()
		floor, busiest := quotaFloor(calls, share)
		b.Logf("%s: %d checked in %s; calls %v; floor %.1fs (%s at %.0f%% of its quota); %.2f × floor",
			region.Name, rep.Checked, took.Round(10*time.Millisecond), calls, floor.Seconds(), busiest,
			100*reconcile.DefaultQuotaShare, took.Seconds()/floor.Seconds())
		mu.Unlock()
		ratio += took.Seconds() / floor.Seconds()
	}
	b.ReportMetric(ratio/float64(b.N), "x-floor")
	b.ReportMetric(0, "ns/op")
}

// connectFleet has n new devices (fleet-0000...) connect at once through the
// stack's global endpoint, each publishing one message once onboarded, with
// full-jitter back-off between 0.5 and 5 s while they are refused.
func connectFleet(ctx context.Context, st *local.Stack, n int) (sim.Summary, error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	return sim.Run(ctx, sim.Config{
		Endpoint: st.GlobalAddr(), RootPool: roots, Count: n, Messages: 1,
		Backoff: sim.Backoff{Initial: 500 * time.Millisecond, Max: 5 * time.Second},
		Mint: func(i int) (sim.Device, error) {
			name := fmt.Sprintf("fleet-%04d", i)
			certFile, keyFile, err := st.PKI().Device(name)
			return sim.Device{Name: name, CertFile: certFile, KeyFile: keyFile}, err
		},
	})
}
