package converge_test

// The convergence regressions: each test is an interleaving that AWS allows
// (EventBridge delivers asynchronously, concurrently and out of order; IoT
// re-fires the registered event at every reconnect; a Lambda run may die at
// any point), written with the controller's pause, fail and crash rules.

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mriot/mriot/internal/core/fleet"
)

const (
	origin = "eu-west-1"
	here   = "us-west-2"
)

// settle gives a run that may wait on another (a lease held elsewhere) a
// moment to do so before the test lets the other go on: 300 ms of the
// synctest bubble's clock, the same interleaving at every run.
func settle(ch <-chan error) (error, bool) {
	select {
	case err := <-ch:
		return err, true
	case <-time.After(300 * time.Millisecond):
		return nil, false
	}
}

// staleActivation runs the interleaving of scenarios 1 and 2: a replicate run
// for ACTIVE v1 has read the item and is about to change the registry when
// v2 (status) lands in this region and its own replicate run comes in.
func staleActivation(t *testing.T, status fleet.Status) (*world, device) {
	w := newWorld(t, origin, here)
	d := w.device("dev-1")
	ctx := context.Background()
	v1 := d.item(fleet.StatusActive, origin, 1)
	w.put(origin, v1)
	rep := w.regions[here].rep

	pause := w.ctl.add(&rule{run: "v1", match: mutatingIoT, pause: true})
	r1 := async(tagged(ctx, "v1"), w.lambdaFn(invoke(rep, record(here, "INSERT", d.name, &v1))))
	waitReached(t, "the v1 run", pause)

	v2 := d.item(status, origin, 2)
	w.put(origin, v2)
	r2 := async(tagged(ctx, "v2"), w.lambdaFn(invoke(rep, record(here, "MODIFY", d.name, &v2))))
	err2, done2 := settle(r2)
	close(pause.release)
	if err := wait(t, "the v1 run", r1); err != nil {
		t.Logf("v1 run: %v", err)
	}
	if !done2 {
		err2 = wait(t, "the v2 run", r2)
	}
	if err2 != nil {
		t.Errorf("v2 run: %v", err2)
	}
	return w, d
}

// TestRevocationIsNotLostToAStaleActivation is scenario 1: the v2 (REVOKED)
// run must not take "unknown here" for done while a v1 run is about to
// register the certificate ACTIVE; the region ends REVOKED.
func TestRevocationIsNotLostToAStaleActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, d := staleActivation(t, fleet.StatusRevoked)
		if v := w.view(here, d); v.status != fleet.CertRevoked {
			t.Errorf("%s: certificate is %q after the revocation, want REVOKED (%+v)", here, v.status, v)
		}
	})
}

// TestDecommissionIsNotUndoneByAStaleActivation is scenario 2: the same with
// DECOMMISSIONED v2; the thing, the attachments and an ACTIVE certificate
// must not come back.
func TestDecommissionIsNotUndoneByAStaleActivation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, d := staleActivation(t, fleet.StatusDecommissioned)
		v := w.view(here, d)
		if v.thing || v.status == fleet.CertActive || v.principal || v.policy {
			t.Errorf("%s after the decommission: %+v, want no thing, no attachment, no ACTIVE certificate", here, v)
		}
	})
}

// TestJitrRollbackKeepsWhatReplicateConverged is scenario 3: the device
// reached this region before replication finished; jitr and replicate
// converge it here at once, and jitr then fails terminally. Its rollback must
// not strip the thing and attachments the ACTIVE device needs.
func TestJitrRollbackKeepsWhatReplicateConverged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, origin, here)
		d := w.device("dev-3")
		ctx := context.Background()
		v1 := d.item(fleet.StatusActive, origin, 1)
		w.put(origin, v1)
		ev := w.registered(here, d)
		r := w.regions[here]

		fail := w.ctl.add(&rule{run: "jitr", match: afterOp("AttachPolicy"), pause: true, err: terminal("activate")})
		j := async(tagged(ctx, "jitr"), invoke(r.jitr, ev))
		waitReached(t, "jitr", fail)
		rep := async(tagged(ctx, "rep"), w.lambdaFn(invoke(r.rep, record(here, "INSERT", d.name, &v1))))
		errRep, doneRep := settle(rep)
		close(fail.release)
		if err := wait(t, "jitr", j); err == nil {
			t.Errorf("jitr succeeded; want its terminal failure")
		}
		if !doneRep {
			errRep = wait(t, "replicate", rep)
		}
		if errRep != nil {
			t.Errorf("replicate: %v", errRep)
		}
		if v := w.view(here, d); !v.live() {
			t.Errorf("%s: %+v, want the ACTIVE device live (thing, ACTIVE certificate, principal, policy)", here, v)
		}
	})
}

// TestRollbackElsewhereLeavesNoOrphanedActiveDevice is scenario 4: jitr in
// this region is converging on the item the origin wrote when the origin
// rolls back and deletes it; the REMOVE reaches this region's replicate
// first. No ACTIVE device may stay here without an inventory item.
func TestRollbackElsewhereLeavesNoOrphanedActiveDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, origin, here)
		d := w.device("dev-4")
		ctx := context.Background()
		ev := w.registered(here, d)
		v1 := d.item(fleet.StatusActive, origin, 1)
		w.put(origin, v1)
		r := w.regions[here]

		pause := w.ctl.add(&rule{run: "jitr", match: mutatingIoT, pause: true})
		j := async(tagged(ctx, "jitr"), w.lambdaFn(invoke(r.jitr, ev)))
		waitReached(t, "jitr", pause)
		// The origin's jitr rolls back: its undo deletes the item it wrote.
		if err := w.regions[origin].inv.DeleteVersion(ctx, d.name, 1); err != nil {
			t.Fatal(err)
		}
		w.flush()
		rep := async(tagged(ctx, "rep"), w.lambdaFn(invoke(r.rep, record(here, "REMOVE", d.name, nil))))
		errRep, doneRep := settle(rep)
		close(pause.release)
		if err := wait(t, "jitr", j); err != nil {
			t.Logf("jitr: %v", err)
		}
		if !doneRep {
			errRep = wait(t, "replicate", rep)
		}
		if errRep != nil {
			t.Errorf("replicate: %v", errRep)
		}
		// Either jitr onboarded the device again once the item was gone (it is
		// still connecting here with a valid certificate), and then the item
		// says so, or the region holds nothing of it.
		v := w.view(here, d)
		item, err := r.inv.Get(ctx, d.name)
		switch {
		case errors.Is(err, fleet.ErrNotFound):
			if v.thing || v.status == fleet.CertActive {
				t.Errorf("%s: %+v with no inventory item, want no thing and no ACTIVE certificate", here, v)
			}
		case err != nil:
			t.Fatal(err)
		case item.Status != fleet.StatusActive || item.CertificateID != d.id || !v.live():
			t.Errorf("%s: item %s v%d (certificate %s), registry %+v: want the ACTIVE item's device live", here, item.Status, item.Version, item.CertificateID, v)
		}
	})
}

// TestFailedCompensationIsFinished is scenario 5: jitr fails terminally at
// activation in each of Lambda's three attempts, and the first attempt's
// undo of the inventory write and of the policy attachment are throttled.
// The leftovers must not outlive the attempts.
func TestFailedCompensationIsFinished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, origin)
		d := w.device("dev-5")
		ctx := context.Background()
		ev := w.registered(origin, d)
		r := w.regions[origin]
		for _, run := range []string{"d1", "d2", "d3"} {
			w.ctl.add(&rule{run: run, match: func(s, op string, _ []string) bool { return s == "iot" && op == "UpdateCertificate" }, err: terminal("UpdateCertificate")})
		}
		w.ctl.add(&rule{run: "d1", match: matchOp("ddb", "DeleteItem"), err: throttled("DeleteItem")})
		w.ctl.add(&rule{run: "d1", match: matchOp("iot", "DetachPolicy"), err: throttled("DetachPolicy")})
		for _, run := range []string{"d1", "d2", "d3"} {
			if err := invoke(r.jitr, ev)(tagged(ctx, run)); err == nil {
				t.Errorf("%s: jitr succeeded; want the injected terminal failure", run)
			}
			w.clock.Advance(time.Minute)
		}
		if item, err := r.inv.Get(ctx, d.name); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("inventory item %s v%d from %s (%v) left by a failed onboarding, want none", item.Status, item.Version, item.OriginRegion, err)
		}
		if v := w.view(origin, d); v.thing || v.policy || v.principal || v.status != fleet.CertPendingActivation {
			t.Errorf("registry %+v, want the certificate PENDING_ACTIVATION and nothing else", v)
		}
	})
}

// TestConcurrentDeliveriesDoNotUndoEachOther is scenario 6: two deliveries
// of the same stream record run at once; the first fails terminally right
// after it registered the certificate. Its rollback must not take the device
// down under the other's feet: the region ends live without a retry of the
// failed delivery.
func TestConcurrentDeliveriesDoNotUndoEachOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, origin, here)
		d := w.device("dev-6")
		ctx := context.Background()
		v1 := d.item(fleet.StatusActive, origin, 1)
		w.put(origin, v1)
		r := w.regions[here]
		payload := record(here, "INSERT", d.name, &v1)

		fail := w.ctl.add(&rule{run: "d1", match: afterOp("RegisterCertificate"), pause: true, err: terminal("after-register")})
		d1 := async(tagged(ctx, "d1"), invoke(r.rep, payload))
		waitReached(t, "the first delivery", fail)
		d2 := async(tagged(ctx, "d2"), w.lambdaFn(invoke(r.rep, payload)))
		err2, done2 := settle(d2)
		close(fail.release)
		if err := wait(t, "the first delivery", d1); err == nil {
			t.Errorf("the first delivery succeeded; want its terminal failure")
		}
		if !done2 {
			err2 = wait(t, "the second delivery", d2)
		}
		if err2 != nil {
			t.Errorf("the second delivery: %v", err2)
		}
		if v := w.view(here, d); !v.live() {
			t.Errorf("%s: %+v, want the device live", here, v)
		}
	})
}

// TestRemoveWithoutOldImageLeavesNoOrphanCertificate is scenario 7: a
// replicate run dies right after registering the certificate (no thing yet),
// then the item is deleted; the REMOVE record carries no old image (the
// Pipe's NEW_IMAGE view). The certificate must not stay behind.
func TestRemoveWithoutOldImageLeavesNoOrphanCertificate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(t, origin, here)
		d := w.device("dev-7")
		ctx := context.Background()
		v1 := d.item(fleet.StatusActive, origin, 1)
		w.put(origin, v1)
		r := w.regions[here]

		w.ctl.add(&rule{run: "d1", match: matchOp("iot", "RegisterCertificate"), crash: true})
		if err := wait(t, "the crashing run", async(tagged(ctx, "d1"), invoke(r.rep, record(here, "INSERT", d.name, &v1)))); !errors.Is(err, errCrashed) {
			t.Fatalf("the first run: %v, want it to crash after RegisterCertificate", err)
		}
		if err := w.regions[origin].inv.Delete(ctx, d.name); err != nil {
			t.Fatal(err)
		}
		w.flush()
		if err := w.lambda(tagged(ctx, "d2"), invoke(r.rep, record(here, "REMOVE", d.name, nil))); err != nil {
			t.Errorf("REMOVE: %v", err)
		}
		if v := w.view(here, d); v.status != "" && v.status != fleet.CertRevoked {
			t.Errorf("%s: certificate %s left with no inventory item (%+v), want it removed", here, v.status, v)
		}
	})
}
