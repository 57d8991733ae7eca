package contracttest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
)

// testRetiring: a rotated item (NotBefore, Retiring) reads back exactly;
// an item written before rotation existed reads back without them.
func testRetiring(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	name := "retiring-" + sfx
	d := device(name, "c2-"+sfx, fleet.StatusActive, 2)
	d.NotBefore = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := time.Now().UTC().Truncate(time.Second).Add(123456789 * time.Nanosecond)
	d.Retiring = []fleet.RetiringCertificate{
		{CertificateID: "c0-" + sfx, CertificatePEM: "pem0", CACertificateID: "ca0", RetireAt: at},
		{CertificateID: "c1-" + sfx, CertificatePEM: "pem1", CACertificateID: "ca1", RetireAt: at.Add(time.Hour)},
	}
	wantErr(t, "Create", inv.Create(ctx, d), nil)
	got := mustGet(t, inv, name)
	if !sameDevice(got, d) || !got.NotBefore.Equal(d.NotBefore) || len(got.Retiring) != 2 {
		t.Fatalf("read back %+v, want %+v", got, d)
	}
	for i, r := range got.Retiring {
		w := d.Retiring[i]
		if r.CertificateID != w.CertificateID || r.CertificatePEM != w.CertificatePEM || r.CACertificateID != w.CACertificateID || !r.RetireAt.Equal(w.RetireAt) {
			t.Errorf("retiring[%d] = %+v, want %+v", i, r, w)
		}
	}
	old := device("retiring-old-"+sfx, "c-old-"+sfx, fleet.StatusActive, 1)
	wantErr(t, "Create", inv.Create(ctx, old), nil)
	if got := mustGet(t, inv, old.ThingName); !got.NotBefore.IsZero() || got.Retiring != nil {
		t.Errorf("an item without rotation reads back with NotBefore %v, retiring %v", got.NotBefore, got.Retiring)
	}
}

// testRetiringOn: the RetirementIndex lists a device under the UTC day of
// its earliest RetireAt, follows an update, and drops it once nothing
// retires.
func testRetiringOn(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	a, b := "retday-a-"+sfx, "retday-b-"+sfx
	// Days no other test writes; 23:30 in UTC+2 is 21:30 UTC, the same day.
	day1 := time.Date(2001, 3, 4, 23, 30, 0, 0, time.FixedZone("UTC+2", 2*3600))
	day2 := day1.Add(24 * time.Hour)
	retiring := func(d fleet.Device, at ...time.Time) fleet.Device {
		for i, t := range at {
			d.Retiring = append(d.Retiring, fleet.RetiringCertificate{CertificateID: fmt.Sprint("r", i, "-", d.CertificateID), RetireAt: t})
		}
		return d
	}
	wantErr(t, "Create", inv.Create(ctx, retiring(device(a, "c-"+a, fleet.StatusActive, 1), day2, day1)), nil)
	wantErr(t, "Create", inv.Create(ctx, retiring(device(b, "c-"+b, fleet.StatusActive, 1), day2)), nil)
	on := func(day time.Time, want ...string) {
		t.Helper()
		d := day.UTC().Format(time.DateOnly)
		eventuallyOnDay(t, "RetiringOn", inv.RetiringOn, d, sfx, want)
	}
	on(day1, a)
	on(day2, b)
	// a's earliest retirement is dropped: it moves to day 2.
	wantErr(t, "Update", inv.Update(ctx, retiring(device(a, "c-"+a, fleet.StatusActive, 2), day2), 1), nil)
	on(day1)
	on(day2, a, b)
	// Nothing retires any more: out of the index.
	wantErr(t, "Update", inv.Update(ctx, device(b, "c-"+b, fleet.StatusActive, 2), 1), nil)
	on(day2, a)
	for _, bad := range []string{"", "2001-02-30", "today"} {
		_, err := inv.RetiringOn(ctx, bad)
		wantErr(t, "RetiringOn("+bad+")", err, fleet.ErrInvalid)
	}
}
