package local_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/local"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
	"github.com/mriot/mriot/internal/testkit/tier"
)

// TestRevokeAndDecommissionWhileTheFleetOnboards is the operator's scenario
// of issue 7 on the whole local stack: three regions, registry latency and
// injected registry faults; a fleet onboards through the global endpoint
// with real MQTT clients while the operator revokes a third of the devices
// and decommissions another third through the API the moment their
// inventory items appear (in whichever region first). Once the fleet
// settles, every region agrees with the inventory (the API's per-region
// view) and a revoked or decommissioned device is refused by every regional
// endpoint.
func TestRevokeAndDecommissionWhileTheFleetOnboards(t *testing.T) {
	tier.Tool(t, "mosquitto_pub")
	if testing.Short() {
		t.Skip("the fleet takes tens of seconds to settle")
	}
	regions := []string{"eu-west-1", "us-west-2", "ap-southeast-2"}
	st := startStack(t, local.Config{
		Regions:    regions,
		APILatency: 15 * time.Millisecond,
		Faults:     map[string]float64{"CreateThing": 0.05, "AttachPolicy": 0.05, "DescribeCertificate": 0.05, "RegisterCertificate": 0.05},
		// A quick schedule, so that what the events miss is repaired while
		// the test waits.
		ReconcileInterval: 2 * time.Second,
	})
	const n = 12
	doom := func(i int) fleet.Status {
		return []fleet.Status{fleet.StatusActive, fleet.StatusRevoked, fleet.StatusDecommissioned}[i%3]
	}
	names := make([]string, n)
	want := map[string]fleet.Status{}
	for i := range names {
		names[i] = fmt.Sprintf("fleet-%02d", i)
		want[names[i]] = doom(i)
	}

	// The operator: the first INSERT of a doomed device's item in any
	// region's stream triggers its revoke or decommission.
	var mu sync.Mutex
	acted := map[string]int{}
	var wg sync.WaitGroup
	for _, r := range st.Regions() {
		unsubscribe := r.Inventory.Table().Subscribe(func(rec events.DynamoDBEventRecord) {
			name := rec.Change.Keys[ddbitem.AttrThingName].String()
			if rec.EventName != "INSERT" || want[name] == fleet.StatusActive || want[name] == "" {
				return
			}
			mu.Lock()
			first := acted[name] == 0
			if first {
				acted[name] = -1 // in progress
			}
			mu.Unlock()
			if !first {
				return
			}
			verb := "revoke"
			if want[name] == fleet.StatusDecommissioned {
				verb = "decommission"
			}
			wg.Go(func() {
				resp, err := http.Post("http://"+st.APIAddr()+"/devices/"+name+"/"+verb, "application/json", nil)
				if err != nil {
					t.Errorf("%s %s: %v", verb, name, err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				acted[name] = resp.StatusCode
				mu.Unlock()
			})
		})
		t.Cleanup(unsubscribe)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(st.RootCAPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := sim.Run(ctx, sim.Config{
		Endpoint: st.GlobalAddr(), RootPool: roots, Count: n, Messages: 1, MaxAttempts: 20,
		Backoff: sim.Backoff{Initial: 200 * time.Millisecond, Max: time.Second},
		Mint: func(i int) (sim.Device, error) {
			certFile, keyFile, err := st.PKI().Device(names[i])
			return sim.Device{Name: names[i], CertFile: certFile, KeyFile: keyFile}, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("devices: %s", sum)
	wg.Wait()
	mu.Lock()
	for name, status := range want {
		if status != fleet.StatusActive && acted[name] != http.StatusAccepted && acted[name] != http.StatusOK {
			t.Errorf("the operator's action on %s: %d (its item never appeared, or the API refused)", name, acted[name])
		}
	}
	mu.Unlock()

	// Settle: the events drain, then the reconcilers' passes find nothing.
	settle(t, st, regions)

	for _, name := range names {
		var v deviceView
		if code := apiGet(t, st, "/devices/"+name, &v); code != http.StatusOK {
			t.Errorf("%s: GET %d", name, code)
			continue
		}
		if v.Status != string(want[name]) {
			t.Errorf("%s: %s in the inventory, want %s", name, v.Status, want[name])
		}
		for _, region := range regions {
			rv := v.Regions[region]
			switch want[name] {
			case fleet.StatusActive:
				if !(rv.Thing && rv.CertificateStatus == "ACTIVE" && rv.PrincipalAttached && rv.PolicyAttached) {
					t.Errorf("%s in %s: %+v, want live", name, region, rv)
				}
			case fleet.StatusRevoked:
				if rv.CertificateStatus != "REVOKED" {
					t.Errorf("%s in %s: certificate %q, want REVOKED", name, region, rv.CertificateStatus)
				}
			case fleet.StatusDecommissioned:
				if rv.CertificateStatus != "REVOKED" || rv.Thing || rv.PolicyAttached || rv.PrincipalAttached {
					t.Errorf("%s in %s: %+v, want no thing, no attachment, the certificate REVOKED", name, region, rv)
				}
			}
		}
	}
	// A revoked or decommissioned device is refused by every regional
	// endpoint, and an active one is served by every one.
	for i, name := range names[:3] {
		certFile, keyFile, err := st.PKI().Device(name)
		if err != nil {
			t.Fatal(err)
		}
		d := device{name: name, cert: certFile, key: keyFile, cafile: st.PKI().Path(pki.RootCertFile)}
		for _, r := range st.Regions() {
			out, err := mosquittoPub(t, r.Broker.Addr(), d, name, "i/"+name+"/m", `{"message":"after"}`)
			served := err == nil && strings.Contains(out, "received PUBACK")
			if served != (want[name] == fleet.StatusActive) {
				t.Errorf("device %d (%s, %s) through %s: served %v:\n%s", i, name, want[name], r.Name, served, out)
			}
		}
	}
	for _, d := range st.DeadLetters() {
		t.Logf("dead letter (the reconciler repaired what it left): %s in %s: %s", d.Function, d.Region, d.Err)
	}
}

// settle waits for the events to drain, then runs every region's
// reconciler until a pass finds nothing (at most a few rounds).
func settle(t *testing.T, st *local.Stack, regions []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for round := 1; ; round++ {
		if err := st.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, region := range regions {
			rep, err := st.Reconcile(ctx, region)
			if err != nil {
				t.Fatalf("reconcile %s: %v", region, err)
			}
			t.Logf("round %d, %s: checked %d, skipped %d, %d findings", round, region, rep.Checked, rep.Skipped, len(rep.Findings))
			for _, f := range rep.Findings {
				t.Logf("round %d, %s: %s %s repaired=%v %s", round, region, f.Kind, f.ThingName, f.Repaired, f.Error)
			}
			found += len(rep.Findings) + rep.Skipped
		}
		if found == 0 {
			return
		}
		if round == 5 {
			t.Fatalf("drift still found after %d rounds of reconciliation", round)
		}
		time.Sleep(time.Second)
	}
}
