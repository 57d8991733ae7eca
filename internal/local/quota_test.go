package local_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/ddbitem"
	"github.com/mriot/mriot/internal/fleet"
	"github.com/mriot/mriot/internal/local"
	"github.com/mriot/mriot/internal/memiot"
	"github.com/mriot/mriot/internal/sim"
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
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sum, err := sim.Run(ctx, sim.Config{
		Endpoint: st.GlobalAddr(), RootPool: roots, Count: n, Messages: 1,
		Backoff: sim.Backoff{Initial: 500 * time.Millisecond, Max: 5 * time.Second},
		Mint: func(i int) (sim.Device, error) {
			name := fmt.Sprintf("fleet-%04d", i)
			certFile, keyFile, err := st.PKI().Device(name)
			return sim.Device{Name: name, CertFile: certFile, KeyFile: keyFile}, err
		},
	})
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
