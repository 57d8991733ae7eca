package local_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestRevokeAndDecommissionEverywhere drives the fleet API: a revoked device
// is REVOKED in every region and refused; a decommissioned device loses its
// thing and every attachment in every region, its certificate stays REVOKED
// there (the tombstone), and when it comes back it is refused, not onboarded
// again.
func TestRevokeAndDecommissionEverywhere(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}})
	ctx := context.Background()
	rev := onboard(t, st, "to-revoke")
	dec := onboard(t, st, "to-decommission")

	if code := apiPost(t, st, "/devices/to-revoke/revoke"); code != http.StatusAccepted {
		t.Fatalf("revoke: %d", code)
	}
	d, err := st.Regions()[0].Inventory.Get(ctx, "to-revoke")
	if err != nil || d.Status != fleet.StatusRevoked || d.Version != 2 {
		t.Fatalf("inventory after revoke: %+v %v", d, err)
	}
	tier.Eventually(t, 20*time.Second, "certificate REVOKED in every region", func() error {
		for _, r := range st.Regions() {
			if c, ok := r.Registry.CertificateByID(d.CertificateID); !ok || c.Status != fleet.CertRevoked {
				return fmt.Errorf("%s: certificate %q (registered %v)", r.Name, c.Status, ok)
			}
		}
		return nil
	})
	if out, err := mosquittoPub(t, st.GlobalAddr(), rev, rev.name, "i/"+rev.name+"/m", `{"message":1}`); err == nil || strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("a revoked device connected:\n%s", out)
	}

	if code := apiPost(t, st, "/devices/to-decommission/decommission"); code != http.StatusAccepted {
		t.Fatalf("decommission: %d", code)
	}
	dd, err := st.Regions()[0].Inventory.Get(ctx, "to-decommission")
	if err != nil || dd.Status != fleet.StatusDecommissioned {
		t.Fatalf("inventory after decommission: %+v %v", dd, err)
	}
	tier.Eventually(t, 20*time.Second, "thing gone and certificate REVOKED and detached in every region", func() error {
		for _, r := range st.Regions() {
			c, ok := r.Registry.CertificateByID(dd.CertificateID)
			if !ok || c.Status != fleet.CertRevoked {
				return fmt.Errorf("%s: certificate %q (registered %v)", r.Name, c.Status, ok)
			}
			if pols, things := r.Registry.PoliciesForPrincipal(c.ARN), r.Registry.ThingsForPrincipal(c.ARN); len(pols) != 0 || len(things) != 0 {
				return fmt.Errorf("%s: certificate still attached to policies %v, things %v", r.Name, pols, things)
			}
			if _, err := r.Registry.DescribeThing(ctx, "to-decommission"); err == nil {
				return fmt.Errorf("%s: the thing is still there", r.Name)
			}
		}
		return nil
	})
	// The device comes back: its certificate is REVOKED, so it is refused.
	if out, err := mosquittoPub(t, st.GlobalAddr(), dec, dec.name, "i/"+dec.name+"/m", `{"message":1}`); err == nil || strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("a decommissioned device connected:\n%s", out)
	}
	nearest := st.Regions()[0]
	tier.Eventually(t, 20*time.Second, "the returning certificate is REVOKED", func() error {
		if c, ok := nearest.Registry.CertificateByID(dd.CertificateID); !ok || c.Status != fleet.CertRevoked {
			return fmt.Errorf("certificate %q (registered %v)", c.Status, ok)
		}
		return nil
	})
	if _, err := nearest.Registry.DescribeThing(ctx, "to-decommission"); err == nil {
		t.Error("the returning device got its thing back")
	}
	if err := st.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if dl := st.DeadLetters(); len(dl) != 0 {
		t.Errorf("dead letters: %+v", dl)
	}
}
