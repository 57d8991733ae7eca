package contracttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// leaseFixture is one device's lease on a fresh lease table. Times are
// whole milliseconds from base: the table stores epoch milliseconds.
type leaseFixture struct {
	t     *testing.T
	ls    contract.Leases
	thing string
	base  time.Time
}

const leaseTerm = time.Minute

func (f *leaseFixture) at(d time.Duration) time.Time { return f.base.Add(d) }

// acquire takes the lease for owner at base+at until base+at+leaseTerm and
// fails the test on an error.
func (f *leaseFixture) acquire(owner string, at time.Duration) fleet.Lease {
	f.t.Helper()
	l, err := f.ls.Acquire(context.Background(), f.thing, owner, f.at(at), f.at(at+leaseTerm))
	wantErr(f.t, fmt.Sprintf("Acquire(%s) at +%v", owner, at), err, nil)
	return l
}

// release releases l with ledger and fails the test on an error.
func (f *leaseFixture) release(l fleet.Lease, ledger fleet.Ledger) {
	f.t.Helper()
	wantErr(f.t, fmt.Sprintf("Release(%s, fence %d)", l.Owner, l.Fence), f.ls.Release(context.Background(), l, ledger), nil)
}

func (f *leaseFixture) get() fleet.Lease {
	f.t.Helper()
	l, err := f.ls.Get(context.Background(), f.thing)
	wantErr(f.t, "Get", err, nil)
	return l
}

// wantLease fails the test unless got equals want field by field (times at
// millisecond precision, nil and empty slices alike).
func wantLease(t *testing.T, what string, got, want fleet.Lease) {
	t.Helper()
	if !sameLease(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

func sameLease(a, b fleet.Lease) bool {
	return a.ThingName == b.ThingName && a.Owner == b.Owner && a.Fence == b.Fence && a.Until.Equal(b.Until) &&
		sameLedger(a.Ledger, b.Ledger)
}

func sameLedger(a, b fleet.Ledger) bool {
	return slices.Equal(a.Certificates, b.Certificates) && a.Converged == b.Converged &&
		slices.EqualFunc(a.Obligations, b.Obligations, func(x, y fleet.Obligation) bool {
			sx, sy := x.Since, y.Since
			x.Since, y.Since = time.Time{}, time.Time{}
			return x == y && sx.Equal(sy)
		})
}

// fullLedger has every ledger field set, and obligations with every field.
func fullLedger(base time.Time) fleet.Ledger {
	return fleet.Ledger{
		Certificates: []string{"cert-a", "cert-b"},
		Converged:    fleet.Converged{Version: 3, Status: fleet.StatusActive, CertificateID: "cert-b"},
		Obligations: []fleet.Obligation{
			{Kind: fleet.ObligationDeleteItem, Thing: "thing-x", Certificate: "cert-a", Principal: "arn:aws:iot:eu-west-1:123456789012:cert/cert-a",
				Policy: "device-policy", Version: 2, Region: "eu-west-1", CreatedBy: "mriot:jitr:1", Saga: "saga-1", Step: "write-item",
				Since: base.Add(-time.Hour), Error: "throttled"},
			{Kind: fleet.ObligationDetachPolicy, Principal: "arn:aws:iot:eu-west-1:123456789012:cert/cert-a", Policy: "device-policy",
				Saga: "saga-1", Step: "attach-policy", Since: base.Add(-30 * time.Minute)},
		},
	}
}

// TestLeases runs the contract.Leases contract against fresh lease tables.
func Leases(t *testing.T, newLeases func(t *testing.T) contract.Leases) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, f *leaseFixture)
	}{
		{"first acquire: fence 1, owner, until, empty ledger", func(t *testing.T, f *leaseFixture) {
			want := fleet.Lease{ThingName: f.thing, Owner: "run-a", Fence: 1, Until: f.at(leaseTerm)}
			wantLease(t, "Acquire", f.acquire("run-a", 0), want)
			wantLease(t, "Get", f.get(), want)
		}},
		{"acquire while held is a LeaseHeldError naming the holder", func(t *testing.T, f *leaseFixture) {
			held := f.acquire("run-a", 0)
			for _, tt := range []struct {
				owner string
				at    time.Duration
			}{
				{"run-b", time.Second},
				{"run-b", leaseTerm - time.Millisecond}, // the last millisecond of the lease
				{"run-a", time.Second},                  // a lease is not reentrant
			} {
				_, err := f.ls.Acquire(ctx, f.thing, tt.owner, f.at(tt.at), f.at(tt.at+leaseTerm))
				var lh *fleet.LeaseHeldError
				if !errors.As(err, &lh) {
					t.Fatalf("Acquire(%s) at +%v: err = %v, want a *fleet.LeaseHeldError", tt.owner, tt.at, err)
				}
				if lh.ThingName != f.thing || lh.Owner != "run-a" || !lh.Until.Equal(held.Until) {
					t.Errorf("Acquire(%s) at +%v: held by %s on %s until %v, want run-a on %s until %v",
						tt.owner, tt.at, lh.Owner, lh.ThingName, lh.Until, f.thing, held.Until)
				}
				wantErr(t, "Acquire while held", err, fleet.ErrBusy)
			}
			wantLease(t, "Get after refused acquisitions", f.get(), held)
		}},
		{"acquire at exactly the expiry, and after it, takes over with the ledger kept", func(t *testing.T, f *leaseFixture) {
			first := f.acquire("run-a", 0)
			f.release(first, fullLedger(f.base))
			second := f.acquire("run-a", time.Second)
			wantErr(t, "Note", f.ls.Note(ctx, second, "cert-c"), nil) // run-a then crashes
			ledger := fullLedger(f.base).WithCertificates("cert-c")

			expiry := time.Second + leaseTerm
			want := fleet.Lease{ThingName: f.thing, Owner: "run-b", Fence: 3, Until: f.at(expiry + leaseTerm), Ledger: ledger}
			wantLease(t, "Acquire at the expiry", f.acquire("run-b", expiry), want)

			later := expiry + leaseTerm + time.Second
			want = fleet.Lease{ThingName: f.thing, Owner: "run-c", Fence: 4, Until: f.at(later + leaseTerm), Ledger: ledger}
			wantLease(t, "Acquire after the expiry", f.acquire("run-c", later), want)
			wantLease(t, "Get", f.get(), want)
		}},
		{"release stores the ledger, frees the lease and keeps the fence", func(t *testing.T, f *leaseFixture) {
			l := f.acquire("run-a", 0)
			ledger := fullLedger(f.base)
			ledger.Certificates = []string{"cert-b", "cert-a"} // stored as a set, read back sorted
			f.release(l, ledger)
			want := fleet.Lease{ThingName: f.thing, Fence: 1, Ledger: fullLedger(f.base)}
			wantLease(t, "Get after release", f.get(), want)

			// Free at once, long before the released lease's Until.
			want.Owner, want.Fence, want.Until = "run-b", 2, f.at(time.Second+leaseTerm)
			wantLease(t, "re-Acquire after release", f.acquire("run-b", time.Second), want)
		}},
		{"renew extends the lease", func(t *testing.T, f *leaseFixture) {
			l := f.acquire("run-a", 0)
			got, err := f.ls.Renew(ctx, l, f.at(5*leaseTerm))
			wantErr(t, "Renew", err, nil)
			want := l
			want.Until = f.at(5 * leaseTerm)
			wantLease(t, "Renew", got, want)
			wantLease(t, "Get after renew", f.get(), want)
			_, err = f.ls.Acquire(ctx, f.thing, "run-b", f.at(2*leaseTerm), f.at(3*leaseTerm))
			wantErr(t, "Acquire before the renewed expiry", err, fleet.ErrBusy)

			// An expired lease that nobody took over is still the holder's.
			got, err = f.ls.Renew(ctx, got, f.at(7*leaseTerm))
			wantErr(t, "Renew after the expiry", err, nil)
			want.Until = f.at(7 * leaseTerm)
			wantLease(t, "Renew after the expiry", got, want)
		}},
		{"note adds certificate ids without duplicates", func(t *testing.T, f *leaseFixture) {
			l := f.acquire("run-a", 0)
			wantErr(t, "Note", f.ls.Note(ctx, l, "cert-c", "cert-a"), nil)
			wantErr(t, "Note again", f.ls.Note(ctx, l, "cert-a", "cert-b", "cert-b"), nil)
			wantErr(t, "Note nothing", f.ls.Note(ctx, l), nil)
			want := l
			want.Ledger.Certificates = []string{"cert-a", "cert-b", "cert-c"}
			wantLease(t, "Get after notes", f.get(), want)
		}},
		{"release with an empty ledger removes certificates and obligations", func(t *testing.T, f *leaseFixture) {
			f.release(f.acquire("run-a", 0), fullLedger(f.base))
			f.release(f.acquire("run-b", time.Second), fleet.Ledger{})
			wantLease(t, "Get", f.get(), fleet.Lease{ThingName: f.thing, Fence: 2})
			pending, _, err := f.ls.Pending(ctx, 100, "")
			wantErr(t, "Pending", err, nil)
			if len(pending) != 0 {
				t.Errorf("Pending lists %+v, want nothing", pending)
			}
		}},
		{"Get of a device without a lease is ErrNotFound", func(t *testing.T, f *leaseFixture) {
			_, err := f.ls.Get(ctx, f.thing)
			wantErr(t, "Get", err, fleet.ErrNotFound)
		}},
		{"invalid arguments are ErrInvalid", func(t *testing.T, f *leaseFixture) {
			checks := map[string]error{}
			_, checks["Acquire bad name"] = f.ls.Acquire(ctx, "bad name", "run-a", f.base, f.at(leaseTerm))
			_, checks["Acquire the cursor key"] = f.ls.Acquire(ctx, fleet.ReconcileCursorKey, "run-a", f.base, f.at(leaseTerm))
			_, checks["Acquire no owner"] = f.ls.Acquire(ctx, f.thing, "", f.base, f.at(leaseTerm))
			_, checks["Get bad name"] = f.ls.Get(ctx, "")
			_, checks["Get the cursor key"] = f.ls.Get(ctx, fleet.ReconcileCursorKey)
			_, _, checks["Pending limit 0"] = f.ls.Pending(ctx, 0, "")
			for what, err := range checks {
				wantErr(t, what, err, fleet.ErrInvalid)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newLeaseFixture(t, newLeases))
		})
	}
	t.Run("a stale holder changes nothing", func(t *testing.T) { testStaleHolder(t, newLeases) })
	t.Run("Pending pages through the leases with obligations", func(t *testing.T) { testPending(t, newLeases) })
	t.Run("reconcile cursor", func(t *testing.T) { testReconcileCursor(t, newLeases) })
}

func newLeaseFixture(t *testing.T, newLeases func(t *testing.T) contract.Leases) *leaseFixture {
	return &leaseFixture{
		t: t, ls: newLeases(t), thing: "lease-" + randomSuffix(t),
		base: time.Now().UTC().Truncate(time.Millisecond),
	}
}

// testStaleHolder: Renew, Note and Release of a holder that no longer holds
// the lease fail with ErrLeaseLost and leave the item as it is.
func testStaleHolder(t *testing.T, newLeases func(t *testing.T) contract.Leases) {
	ctx := context.Background()
	tests := []struct {
		name string
		// arrange returns the stale lease; the item must exist afterwards
		// unless absent is set.
		arrange func(f *leaseFixture) fleet.Lease
		absent  bool
	}{
		{"taken over after expiry", func(f *leaseFixture) fleet.Lease {
			stale := f.acquire("run-a", 0)
			f.acquire("run-b", leaseTerm)
			return stale
		}, false},
		{"taken over by the same owner", func(f *leaseFixture) fleet.Lease {
			stale := f.acquire("run-a", 0)
			f.acquire("run-a", leaseTerm)
			return stale
		}, false},
		{"wrong fence", func(f *leaseFixture) fleet.Lease {
			l := f.acquire("run-a", 0)
			l.Fence++
			return l
		}, false},
		{"wrong owner", func(f *leaseFixture) fleet.Lease {
			l := f.acquire("run-a", 0)
			l.Owner = "run-b"
			return l
		}, false},
		{"after release", func(f *leaseFixture) fleet.Lease {
			l := f.acquire("run-a", 0)
			f.release(l, fullLedger(f.base))
			return l
		}, false},
		{"no item", func(f *leaseFixture) fleet.Lease {
			return fleet.Lease{ThingName: f.thing, Owner: "run-a", Fence: 1, Until: f.at(leaseTerm)}
		}, true},
	}
	calls := []struct {
		name string
		call func(ls contract.Leases, l fleet.Lease, until time.Time) error
	}{
		{"Renew", func(ls contract.Leases, l fleet.Lease, until time.Time) error {
			_, err := ls.Renew(ctx, l, until)
			return err
		}},
		{"Note", func(ls contract.Leases, l fleet.Lease, _ time.Time) error { return ls.Note(ctx, l, "cert-new") }},
		{"Release", func(ls contract.Leases, l fleet.Lease, _ time.Time) error { return ls.Release(ctx, l, fleet.Ledger{}) }},
		{"Release with a ledger", func(ls contract.Leases, l fleet.Lease, _ time.Time) error {
			return ls.Release(ctx, l, fleet.Ledger{Certificates: []string{"cert-new"}})
		}},
	}
	for _, tt := range tests {
		for _, c := range calls {
			t.Run(tt.name+"/"+c.name, func(t *testing.T) {
				f := newLeaseFixture(t, newLeases)
				stale := tt.arrange(f)
				var before fleet.Lease
				if !tt.absent {
					before = f.get()
				}
				wantErr(t, c.name, c.call(f.ls, stale, f.at(10*leaseTerm)), fleet.ErrLeaseLost)
				if tt.absent {
					_, err := f.ls.Get(ctx, f.thing)
					wantErr(t, "Get after the refused write", err, fleet.ErrNotFound)
					return
				}
				wantLease(t, "Get after the refused write", f.get(), before)
			})
		}
	}
}

// testPending: the leases with obligations, each listed once whatever the
// page size, and never the cursor item.
func testPending(t *testing.T, newLeases func(t *testing.T) contract.Leases) {
	ctx := context.Background()
	f := newLeaseFixture(t, newLeases)
	sfx := randomSuffix(t)
	want := map[string]fleet.Lease{}
	for i := range 7 {
		f.thing = fmt.Sprintf("pending-%s-%d", sfx, i)
		l := f.acquire("run-a", 0)
		switch i % 3 {
		case 0: // obligations left
			f.release(l, fullLedger(f.base))
			want[f.thing] = f.get()
		case 1: // released clean
			f.release(l, fleet.Ledger{Certificates: []string{"cert-a"}})
		case 2: // still held, never released
		}
	}
	if _, err := f.ls.SaveCursor(ctx, fleet.ReconcileCursor{Phase: "leases", Pass: 1, PassStarted: f.base}); err != nil {
		t.Fatalf("SaveCursor: %v", err)
	}
	for _, limit := range []int{1, 3, 100} {
		seen := map[string]int{}
		cursor, pages := "", 0
		for {
			// The limit counts the items read, so a page may be empty with a
			// next cursor, and the last page may be empty too: DynamoDB
			// returns a LastEvaluatedKey whenever it stops at the limit, even
			// on the table's last item. moto (and memddb) return none there;
			// the loop accepts both.
			leases, next, err := f.ls.Pending(ctx, limit, cursor)
			wantErr(t, fmt.Sprintf("Pending(%d, %q)", limit, cursor), err, nil)
			if len(leases) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(leases))
			}
			for _, l := range leases {
				seen[l.ThingName]++
				w, ok := want[l.ThingName]
				switch {
				case l.ThingName == fleet.ReconcileCursorKey:
					t.Errorf("limit %d: Pending returned the cursor item", limit)
				case !ok:
					t.Errorf("limit %d: Pending returned %s, which has no obligations", limit, l.ThingName)
				default:
					wantLease(t, "pending lease", l, w)
				}
			}
			if pages++; pages > 100 {
				t.Fatalf("limit %d: more than 100 pages", limit)
			}
			if next == "" {
				break
			}
			cursor = next
		}
		for name := range want {
			if seen[name] != 1 {
				t.Errorf("limit %d: %s listed %d times, want once", limit, name, seen[name])
			}
		}
	}
}

// testReconcileCursor: LoadCursor and SaveCursor with the revision check.
func testReconcileCursor(t *testing.T, newLeases func(t *testing.T) contract.Leases) {
	ctx := context.Background()
	ls := newLeases(t)
	base := time.Now().UTC().Truncate(time.Millisecond)
	got, err := ls.LoadCursor(ctx)
	wantErr(t, "LoadCursor of none", err, nil)
	if got != (fleet.ReconcileCursor{}) {
		t.Fatalf("LoadCursor of none = %+v, want the zero cursor", got)
	}
	first := fleet.ReconcileCursor{Phase: "inventory", Cursor: "eyJ0IjoidGhpbmctNyJ9", Pass: 1, PassStarted: base}
	second := fleet.ReconcileCursor{Phase: "leases", Cursor: "thing-3", Pass: 1, PassStarted: base, Revision: 1}
	third := fleet.ReconcileCursor{Pass: 2, PassStarted: base.Add(time.Hour), Revision: 2} // a new pass, not started
	steps := []struct {
		name    string
		save    fleet.ReconcileCursor
		wantErr error
		stored  fleet.ReconcileCursor // after the step
	}{
		{"first save: revision 0 to 1", first, nil, withRevision(first, 1)},
		{"stale revision 0", withRevision(second, 0), fleet.ErrConditionFailed, withRevision(first, 1)},
		{"revision ahead of the stored one", withRevision(second, 5), fleet.ErrConditionFailed, withRevision(first, 1)},
		{"revision 1 to 2", second, nil, withRevision(second, 2)},
		{"replayed revision 1", second, fleet.ErrConditionFailed, withRevision(second, 2)},
		{"empty phase and cursor round-trip", third, nil, withRevision(third, 3)},
	}
	for _, st := range steps {
		saved, err := ls.SaveCursor(ctx, st.save)
		wantErr(t, "SaveCursor: "+st.name, err, st.wantErr)
		if st.wantErr == nil && !sameCursor(saved, st.stored) {
			t.Errorf("SaveCursor: %s: returned %+v, want %+v", st.name, saved, st.stored)
		}
		got, err := ls.LoadCursor(ctx)
		wantErr(t, "LoadCursor after "+st.name, err, nil)
		if !sameCursor(got, st.stored) {
			t.Errorf("LoadCursor after %s = %+v, want %+v", st.name, got, st.stored)
		}
	}
}

func withRevision(c fleet.ReconcileCursor, rev int64) fleet.ReconcileCursor {
	c.Revision = rev
	return c
}

func sameCursor(a, b fleet.ReconcileCursor) bool {
	return a.Phase == b.Phase && a.Cursor == b.Cursor && a.Pass == b.Pass && a.PassStarted.Equal(b.PassStarted) && a.Revision == b.Revision
}
