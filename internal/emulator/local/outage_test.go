package local_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// liveIn reports, as an error, why the device's certificate is not ACTIVE
// and attached to its thing and the device policy in r's registry.
func liveIn(ctx context.Context, r *local.Region, name, certID string) error {
	c, ok := r.Registry.CertificateByID(certID)
	if !ok || c.Status != fleet.CertActive {
		return fmt.Errorf("%s: certificate of %s %q (registered %v)", r.Name, name, c.Status, ok)
	}
	if ps, err := r.Registry.ListThingPrincipals(ctx, name); err != nil || !strings.Contains(strings.Join(ps, " "), c.ARN) {
		return fmt.Errorf("%s: %s's principals %v, %v", r.Name, name, ps, err)
	}
	if pol, err := r.Registry.ListAttachedPolicies(ctx, c.ARN); err != nil || len(pol) == 0 || pol[0] != local.DevicePolicyName {
		return fmt.Errorf("%s: %s's policies %v, %v", r.Name, name, pol, err)
	}
	return nil
}

// TestRegionOutage is the scenario a multi-region fleet exists for: the
// primary region fails; a new device onboards through the global endpoint
// in the next region and publishes; a device is revoked; the failed region
// receives none of it meanwhile and runs nothing; it comes back, catches up
// (the new device ACTIVE there and connecting to its own endpoint, the
// revoked one REVOKED, the telemetry in its replica).
func TestRegionOutage(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	st := startStack(t, local.Config{Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}})
	ctx := context.Background()
	failed, next := st.Regions()[0], st.Regions()[1]
	rev := onboard(t, st, "revoked-while-down")
	revItem, err := failed.Inventory.Get(ctx, rev.name)
	if err != nil {
		t.Fatal(err)
	}

	if code := apiPost(t, st, "/regions/"+failed.Name+"/down"); code != http.StatusOK {
		t.Fatalf("down: %d", code)
	}
	if !failed.Down() {
		t.Fatal("the region does not say it is down")
	}
	certFile, keyFile, err := st.PKI().Device("newcomer")
	if err != nil {
		t.Fatal(err)
	}
	nc := device{name: "newcomer", cert: certFile, key: keyFile, cafile: st.PKI().Path(pki.RootCertFile)}
	if out, err := mosquittoPub(t, st.GlobalAddr(), nc, nc.name, "i/newcomer/m", `{"message":"first"}`); err == nil {
		t.Fatalf("the first connection of a new device was accepted:\n%s", out)
	}
	// The API reads the next region's replica while the primary is down.
	tier.Eventually(t, 20*time.Second, "newcomer onboarded in "+next.Name, func() error {
		var v deviceView
		if code := apiGet(t, st, "/devices/newcomer", &v); code != http.StatusOK || v.Status != string(fleet.StatusActive) {
			return fmt.Errorf("HTTP %d: %+v", code, v)
		}
		if v.Regions[failed.Name].Error == "" {
			return fmt.Errorf("the view of %s, which is down, has no error: %+v", failed.Name, v.Regions[failed.Name])
		}
		for _, r := range st.Regions()[1:] {
			if rv := v.Regions[r.Name]; rv.CertificateStatus != string(fleet.CertActive) || !rv.PolicyAttached || !rv.PrincipalAttached {
				return fmt.Errorf("%s: %+v", r.Name, rv)
			}
		}
		return nil
	})
	ncItem, err := next.Inventory.Get(ctx, nc.name)
	if err != nil || ncItem.OriginRegion != next.Name {
		t.Fatalf("newcomer's item in %s: %+v, %v; want it onboarded there", next.Name, ncItem, err)
	}
	if out, err := mosquittoPub(t, st.GlobalAddr(), nc, nc.name, "i/newcomer/m", `{"message":"during the outage"}`); err != nil || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("publish through the global endpoint during the outage: %v\n%s", err, out)
	}
	if code := apiPost(t, st, "/devices/"+rev.name+"/revoke"); code != http.StatusAccepted {
		t.Fatalf("revoke during the outage: %d", code)
	}
	tier.Eventually(t, 20*time.Second, "revoked in the regions that are up", func() error {
		for _, r := range st.Regions()[1:] {
			if c, _ := r.Registry.CertificateByID(revItem.CertificateID); c.Status != fleet.CertRevoked {
				return fmt.Errorf("%s: %q", r.Name, c.Status)
			}
		}
		return nil
	})
	if code := apiPost(t, st, "/regions/"+failed.Name+"/reconcile"); code != http.StatusServiceUnavailable {
		t.Errorf("reconcile of a region that is down: %d, want 503", code)
	}

	// Everything that can happen has happened: nothing reached the region
	// that is down, and it ran nothing.
	idle, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := st.WaitIdle(idle); err != nil {
		t.Fatalf("WaitIdle with a region down: %v", err)
	}
	if _, err := failed.Inventory.Get(ctx, nc.name); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("the inventory replica of %s, which is down, got the newcomer: %v", failed.Name, err)
	}
	if _, ok := failed.Registry.CertificateByID(ncItem.CertificateID); ok {
		t.Errorf("the registry of %s, which is down, got the newcomer's certificate", failed.Name)
	}
	if c, _ := failed.Registry.CertificateByID(revItem.CertificateID); c.Status != fleet.CertActive {
		t.Errorf("the registry of %s, which is down, changed the revoked device's certificate to %q", failed.Name, c.Status)
	}
	if msgs, _ := failed.Telemetry.Query(ctx, nc.name, 10); len(msgs) != 0 {
		t.Errorf("the data replica of %s, which is down, got %d messages", failed.Name, len(msgs))
	}

	upAt := time.Now()
	if code := apiPost(t, st, "/regions/"+failed.Name+"/up"); code != http.StatusOK {
		t.Fatalf("up: %d", code)
	}
	tier.Eventually(t, 20*time.Second, failed.Name+" caught up", func() error {
		if err := liveIn(ctx, failed, nc.name, ncItem.CertificateID); err != nil {
			return err
		}
		if c, _ := failed.Registry.CertificateByID(revItem.CertificateID); c.Status != fleet.CertRevoked {
			return fmt.Errorf("%s: the revoked device's certificate is %q", failed.Name, c.Status)
		}
		return nil
	})
	t.Logf("%s caught up %.1fs after it came back", failed.Name, time.Since(upAt).Seconds())
	before := failed.Broker.Stats().Connected.Load()
	if out, err := mosquittoPub(t, failed.Broker.Addr(), nc, nc.name, "i/newcomer/m", `{"message":"home again"}`); err != nil || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("the newcomer on %s's own endpoint: %v\n%s", failed.Name, err, out)
	}
	if got := failed.Broker.Stats().Connected.Load(); got != before+1 {
		t.Errorf("%s's endpoint accepted %d connections, want 1", failed.Name, got-before)
	}
	if out, err := mosquittoPub(t, failed.Broker.Addr(), rev, rev.name, "i/"+rev.name+"/m", `{"message":1}`); err == nil || strings.Contains(out, "received CONNACK (0)") {
		t.Fatalf("the device revoked during the outage connected to %s:\n%s", failed.Name, out)
	}
	if err := st.WaitIdle(idle); err != nil {
		t.Fatal(err)
	}
	if msgs, _ := failed.Telemetry.Query(ctx, nc.name, 10); len(msgs) != 2 {
		t.Errorf("the data replica of %s holds %d of the newcomer's messages, want 2 (one sent during the outage)", failed.Name, len(msgs))
	}
	waitLive(t, st, nc.name)
	if dl := st.DeadLetters(); len(dl) != 0 {
		t.Errorf("dead letters: %+v", dl)
	}
}

// TestStartWithRegionsDown: Config.Down (mriot local --down) starts with
// those regions down; an unknown one is refused.
func TestStartWithRegionsDown(t *testing.T) {
	regions := []string{"eu-west-1", "us-west-2"}
	cases := []struct {
		name      string
		down      []string
		startErr  string
		devices   int // status of GET /devices
		reconcile map[string]int
		wantDown  map[string]bool
		demo      string // in the demo's output
	}{
		{name: "none", devices: 200, reconcile: map[string]int{"eu-west-1": 200, "us-west-2": 200}, wantDown: map[string]bool{}},
		{name: "the primary", down: []string{"eu-west-1"}, devices: 200,
			reconcile: map[string]int{"eu-west-1": 503, "us-west-2": 200}, wantDown: map[string]bool{"eu-west-1": true}},
		{name: "every region", down: []string{"us-west-2", "eu-west-1"}, devices: 503,
			reconcile: map[string]int{"eu-west-1": 503, "us-west-2": 503}, wantDown: map[string]bool{"eu-west-1": true, "us-west-2": true},
			demo: "demo: skipped: every region is down"},
		{name: "unknown region", down: []string{"mars-1"}, startErr: `down region "mars-1" is not one of the regions`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := local.Config{Regions: regions, Down: tc.down, StateDir: t.TempDir(), APIAddr: "127.0.0.1:0", ReconcileInterval: -1}
			if tc.startErr != "" {
				st, err := local.Start(context.Background(), cfg)
				if err == nil {
					st.Close()
					t.Fatal("started")
				}
				if !strings.Contains(err.Error(), tc.startErr) {
					t.Fatalf("error %q does not say %q", err, tc.startErr)
				}
				return
			}
			st := startStack(t, cfg)
			for _, r := range st.Regions() {
				if r.Down() != tc.wantDown[r.Name] || r.Broker.Down() != tc.wantDown[r.Name] {
					t.Errorf("%s: Down() %v, endpoint down %v, want %v", r.Name, r.Down(), r.Broker.Down(), tc.wantDown[r.Name])
				}
			}
			if code := apiGet(t, st, "/devices", nil); code != tc.devices {
				t.Errorf("GET /devices: %d, want %d", code, tc.devices)
			}
			for region, want := range tc.reconcile {
				if code := apiPost(t, st, "/regions/"+region+"/reconcile"); code != want {
					t.Errorf("reconcile %s: %d, want %d", region, code, want)
				}
			}
			if tc.demo != "" {
				var out strings.Builder
				if err := st.Demo(context.Background(), &out, []string{"demo-001"}); err != nil || !strings.Contains(out.String(), tc.demo) {
					t.Errorf("demo: %v\n%s", err, out.String())
				}
			}
		})
	}
}

// handlerFunc is a Function from a func.
type handlerFunc func(context.Context, []byte) ([]byte, error)

func (f handlerFunc) Invoke(ctx context.Context, p []byte) ([]byte, error) { return f(ctx, p) }

// TestInvokerHeldWhileDown: a paused invoker (its region is down) runs
// nothing and does not count what waits as pending; Resume runs it, in
// full; Close while paused sends it to the dead-letter list at once.
func TestInvokerHeldWhileDown(t *testing.T) {
	for _, tc := range []struct {
		name        string
		resume      bool
		wantRuns    int
		wantLetters int
	}{
		{name: "resume runs what waited", resume: true, wantRuns: 3},
		{name: "close while down dead-letters what waited", wantLetters: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			runs, letters := 0, 0
			iv := &local.Invoker{Name: "fn", Region: "eu-west-1", Fn: handlerFunc(func(context.Context, []byte) ([]byte, error) {
				mu.Lock()
				runs++
				mu.Unlock()
				return nil, nil
			}), OnDeadLetter: func(local.DeadLetter) { mu.Lock(); letters++; mu.Unlock() }}
			iv.Pause()
			for range 3 {
				iv.InvokeAsync([]byte("{}"))
			}
			tier.Eventually(t, 10*time.Second, "three invocations held", func() error {
				if iv.Held() != 3 || iv.Pending() != 0 {
					return fmt.Errorf("held %d, pending %d", iv.Held(), iv.Pending())
				}
				return nil
			})
			mu.Lock()
			if runs != 0 {
				t.Errorf("%d invocations ran while paused", runs)
			}
			mu.Unlock()
			if tc.resume {
				iv.Resume()
			}
			start := time.Now()
			iv.Close(time.Minute)
			if time.Since(start) > 30*time.Second {
				t.Errorf("Close waited %v", time.Since(start))
			}
			mu.Lock()
			defer mu.Unlock()
			if runs != tc.wantRuns || letters != tc.wantLetters {
				t.Errorf("%d runs and %d dead letters, want %d and %d", runs, letters, tc.wantRuns, tc.wantLetters)
			}
		})
	}
}
