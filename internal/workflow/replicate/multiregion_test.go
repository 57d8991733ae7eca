package replicate

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/fake/memiot"
	"github.com/mriot/mriot/internal/workflow/jitr"
)

// region is one region of a multi-region stack: registry, inventory replica,
// jitr and replicate handlers; every record of the replica's stream is
// delivered to replicate through the EventBridge envelope, as in AWS.
type region struct {
	name   string
	reg    *memiot.Registry
	inv    *memddb.Inventory
	leases *memddb.Leases
	jitr   *jitr.Handler
	rep    *Handler

	mu   sync.Mutex
	errs []error
}

func newStack(t *testing.T, names []string, lag time.Duration) (*memddb.GlobalTable, []*region) {
	t.Helper()
	g := memddb.NewGlobalTable("inventory", memddb.InventoryKey, names, memddb.WithReplicationLag(lag))
	t.Cleanup(g.Close)
	var rs []*region
	for _, n := range names {
		reg, err := newRegistry(n)
		if err != nil {
			t.Fatal(err)
		}
		lt := memddb.NewGlobalTable("leases-"+n, memddb.LeasesKey, []string{n})
		t.Cleanup(lt.Close)
		r := &region{name: n, reg: reg, inv: memddb.NewInventory(g.Replica(n)), leases: memddb.NewLeases(lt.Replica(n))}
		if r.jitr, err = jitr.New(jitr.Config{Registry: reg, Inventory: r.inv, Leases: r.leases, Region: n, PolicyName: policy}); err != nil {
			t.Fatal(err)
		}
		if r.rep, err = New(Config{Registry: reg, Inventory: r.inv, Leases: r.leases, Region: n, PolicyName: policy}); err != nil {
			t.Fatal(err)
		}
		unsubscribe := g.Replica(n).Subscribe(func(rec events.DynamoDBEventRecord) {
			if _, err := r.rep.Invoke(context.Background(), bridge(rec)); err != nil {
				r.mu.Lock()
				r.errs = append(r.errs, err)
				r.mu.Unlock()
			}
		})
		t.Cleanup(unsubscribe)
		rs = append(rs, r)
	}
	return g, rs
}

// TestTwoRegionsOnboardTheSameDeviceAtOnce: the device connects to two
// regions at the same moment; both run JITR concurrently, the inventory
// replicates both ways and replicate runs on every stream record. Both
// regions end with one ACTIVE device, and one inventory item.
func TestTwoRegionsOnboardTheSameDeviceAtOnce(t *testing.T) {
	fixtures(t)
	for i := range 10 {
		t.Run(fmt.Sprintf("run-%d", i), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			name := fmt.Sprintf("dual-%d", i)
			leaf, err := fx.ca.IssueDevice(name, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			g, rs := newStack(t, []string{"eu-west-1", "us-east-1"}, time.Duration(i)*time.Millisecond)
			var wg sync.WaitGroup
			jerrs := make([]error, len(rs))
			for k, r := range rs {
				c, _, err := r.reg.AutoRegister(ctx, leaf.CertPEM())
				if err != nil {
					t.Fatal(err)
				}
				ev := fmt.Appendf(nil, `{"certificateId":%q,"caCertificateId":%q,"timestamp":1,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":%q,"certificateRegistrationTimestamp":null}`,
					c.ID, c.CACertificateID, account)
				wg.Go(func() {
					_, jerrs[k] = r.jitr.Invoke(ctx, ev)
				})
			}
			wg.Wait()
			if err := g.WaitIdle(ctx); err != nil {
				t.Fatal(err)
			}
			id := fleet.CertificateID(leaf.Cert)
			var items []fleet.Device
			for k, r := range rs {
				if jerrs[k] != nil {
					t.Errorf("%s: jitr: %v", r.name, jerrs[k])
				}
				r.mu.Lock()
				for _, err := range r.errs {
					t.Errorf("%s: replicate: %v", r.name, err)
				}
				r.mu.Unlock()
				c, err := r.reg.DescribeCertificate(ctx, id)
				if err != nil || c.Status != fleet.CertActive {
					t.Errorf("%s: certificate %s %v, want ACTIVE", r.name, c.Status, err)
					continue
				}
				if got := r.reg.ThingsForPrincipal(c.ARN); len(got) != 1 || got[0] != name {
					t.Errorf("%s: things of the certificate %v", r.name, got)
				}
				if got, _ := r.reg.ListAttachedPolicies(ctx, c.ARN); len(got) != 1 || got[0] != policy {
					t.Errorf("%s: policies %v", r.name, got)
				}
				if n := len(r.reg.ThingList()); n != 1 {
					t.Errorf("%s: %d things", r.name, n)
				}
				d, err := r.inv.Get(ctx, name)
				if err != nil {
					t.Errorf("%s: inventory: %v", r.name, err)
					continue
				}
				if d.Status != fleet.StatusActive || d.CertificateID != id || d.Version != 1 {
					t.Errorf("%s: inventory %+v", r.name, d)
				}
				items = append(items, d)
			}
			if len(items) == 2 && !reflect.DeepEqual(items[0], items[1]) {
				t.Errorf("replicas differ:\n%+v\n%+v", items[0], items[1])
			}
		})
	}
}

// TestRevocationReachesEveryRegion: a device onboarded in one region is
// revoked through the inventory; every region, the origin included, ends with
// the certificate REVOKED, and decommissioning then removes the thing and
// every attachment everywhere, the certificate staying REVOKED.
func TestRevocationReachesEveryRegion(t *testing.T) {
	fixtures(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g, rs := newStack(t, []string{"eu-west-1", "us-east-1", "ap-southeast-1"}, time.Millisecond)
	leaf, err := fx.ca.IssueDevice("rev-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := rs[0].reg.AutoRegister(ctx, leaf.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	ev := fmt.Sprintf(`{"certificateId":%q,"caCertificateId":%q,"timestamp":1,"certificateStatus":"PENDING_ACTIVATION","awsAccountId":%q}`, c.ID, c.CACertificateID, account)
	if _, err := rs[0].jitr.Invoke(ctx, []byte(ev)); err != nil {
		t.Fatal(err)
	}
	if err := g.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if got, _ := r.reg.DescribeCertificate(ctx, c.ID); got.Status != fleet.CertActive {
			t.Fatalf("%s: certificate %s after onboarding, want ACTIVE", r.name, got.Status)
		}
	}
	change := func(st fleet.Status) {
		d, err := rs[1].inv.Get(ctx, "rev-1")
		if err != nil {
			t.Fatal(err)
		}
		prev := d.Version
		d.Status, d.Version = st, d.Version+1
		if err := rs[1].inv.Update(ctx, d, prev); err != nil {
			t.Fatal(err)
		}
		if err := g.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	change(fleet.StatusRevoked)
	for _, r := range rs {
		if got, _ := r.reg.DescribeCertificate(ctx, c.ID); got.Status != fleet.CertRevoked {
			t.Errorf("%s: certificate %s after revocation, want REVOKED", r.name, got.Status)
		}
	}
	change(fleet.StatusDecommissioned)
	for _, r := range rs {
		// The certificate stays REVOKED, detached: the registry's tombstone,
		// which a returning device can never use again.
		got, err := r.reg.DescribeCertificate(ctx, c.ID)
		if err != nil || got.Status != fleet.CertRevoked {
			t.Errorf("%s: certificate %s %v after decommissioning, want REVOKED", r.name, got.Status, err)
		}
		if pols, _ := r.reg.ListAttachedPolicies(ctx, got.ARN); len(pols) != 0 {
			t.Errorf("%s: policies %v still attached after decommissioning", r.name, pols)
		}
		if n := len(r.reg.ThingList()); n != 0 {
			t.Errorf("%s: %d things after decommissioning", r.name, n)
		}
		r.mu.Lock()
		for _, err := range r.errs {
			t.Errorf("%s: replicate: %v", r.name, err)
		}
		r.mu.Unlock()
	}
}
