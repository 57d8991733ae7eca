package contracttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/tier"
)

func device(name, cert string, status fleet.Status, version int64) fleet.Device {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return fleet.Device{
		ThingName: name, CertificateID: cert, CertificatePEM: "-----BEGIN CERTIFICATE-----\n" + cert + "\n-----END CERTIFICATE-----\n",
		CACertificateID: "ca-" + cert, NotAfter: now.Add(365 * 24 * time.Hour), Status: status,
		OriginRegion: "eu-west-1", Version: version, UpdatedAt: now,
	}
}

func sameDevice(a, b fleet.Device) bool {
	return a.ThingName == b.ThingName && a.CertificateID == b.CertificateID && a.CertificatePEM == b.CertificatePEM &&
		a.CACertificateID == b.CACertificateID && a.NotAfter.Equal(b.NotAfter) && a.Status == b.Status &&
		a.OriginRegion == b.OriginRegion && a.Version == b.Version && a.UpdatedAt.Equal(b.UpdatedAt)
}

func mustGet(t *testing.T, inv contract.Inventory, name string) fleet.Device {
	t.Helper()
	d, err := inv.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get %s: %v", name, err)
	}
	return d
}

// TestInventory runs the contract.Inventory contract against fresh inventories.
func Inventory(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	t.Run("Get absent is ErrNotFound", func(t *testing.T) {
		inv := newInv(t)
		_, err := inv.Get(ctx, "absent-"+randomSuffix(t))
		wantErr(t, "Get", err, fleet.ErrNotFound)
	})
	t.Run("Create", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		tests := []struct {
			name     string
			existing *fleet.Device
			create   func(name string) fleet.Device
			wantErr  error
		}{
			{"absent", nil, func(n string) fleet.Device { return device(n, "c1", fleet.StatusActive, 1) }, nil},
			{"same certificate, ACTIVE (concurrent onboarding elsewhere)",
				new(device("", "c1", fleet.StatusActive, 1)),
				func(n string) fleet.Device {
					d := device(n, "c1", fleet.StatusActive, 1)
					d.OriginRegion = "us-west-2"
					return d
				}, nil},
			{"other certificate", new(device("", "c1", fleet.StatusActive, 1)),
				func(n string) fleet.Device { return device(n, "c2", fleet.StatusActive, 1) }, fleet.ErrConditionFailed},
			{"same certificate, REVOKED", new(device("", "c1", fleet.StatusRevoked, 2)),
				func(n string) fleet.Device { return device(n, "c1", fleet.StatusActive, 1) }, fleet.ErrConditionFailed},
			{"same certificate, DECOMMISSIONED tombstone", new(device("", "c1", fleet.StatusDecommissioned, 3)),
				func(n string) fleet.Device { return device(n, "c1", fleet.StatusActive, 1) }, fleet.ErrConditionFailed},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("create-%s-%d", sfx, i)
				if tt.existing != nil {
					ex := *tt.existing
					ex.ThingName = name
					wantErr(t, "arrange Create", inv.Create(ctx, ex), nil)
					tt.existing = &ex
				}
				d := tt.create(name)
				wantErr(t, "Create", inv.Create(ctx, d), tt.wantErr)
				got := mustGet(t, inv, name)
				want := d
				if tt.wantErr != nil {
					want = *tt.existing
				}
				if !sameDevice(got, want) {
					t.Errorf("stored %+v, want %+v", got, want)
				}
			})
		}
		t.Run("invalid thing name is ErrInvalid", func(t *testing.T) {
			wantErr(t, "Create", inv.Create(ctx, device("bad name", "c", fleet.StatusActive, 1)), fleet.ErrInvalid)
		})
	})
	t.Run("Update", func(t *testing.T) {
		inv := newInv(t)
		name := "update-" + randomSuffix(t)
		orig := device(name, "c1", fleet.StatusActive, 1)
		wantErr(t, "Create", inv.Create(ctx, orig), nil)

		stale := orig
		stale.Status, stale.Version = fleet.StatusDecommissioned, 5
		wantErr(t, "Update with a stale version", inv.Update(ctx, stale, 4), fleet.ErrConditionFailed)
		if got := mustGet(t, inv, name); !sameDevice(got, orig) {
			t.Errorf("after refused update %+v, want %+v", got, orig)
		}

		next := orig
		next.Status, next.Version = fleet.StatusRevoked, 2
		wantErr(t, "Update", inv.Update(ctx, next, 1), nil)
		if got := mustGet(t, inv, name); !sameDevice(got, next) {
			t.Errorf("after update %+v, want %+v", got, next)
		}
		wantErr(t, "Update replayed", inv.Update(ctx, next, 1), fleet.ErrConditionFailed)

		absent := device("absent-"+randomSuffix(t), "c", fleet.StatusActive, 2)
		wantErr(t, "Update absent", inv.Update(ctx, absent, 1), fleet.ErrNotFound)
		_, err := inv.Get(ctx, absent.ThingName)
		wantErr(t, "Get after refused update", err, fleet.ErrNotFound)
	})
	t.Run("Delete", func(t *testing.T) {
		inv := newInv(t)
		name := "delete-" + randomSuffix(t)
		wantErr(t, "Create", inv.Create(ctx, device(name, "c1", fleet.StatusActive, 1)), nil)
		wantErr(t, "Delete", inv.Delete(ctx, name), nil)
		_, err := inv.Get(ctx, name)
		wantErr(t, "Get after delete", err, fleet.ErrNotFound)
		wantErr(t, "Delete absent", inv.Delete(ctx, name), nil)
		wantErr(t, "Create after delete", inv.Create(ctx, device(name, "c2", fleet.StatusActive, 1)), nil)
	})
	t.Run("DeleteVersion", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		tests := []struct {
			name     string
			existing *fleet.Device
			version  int64
			wantErr  error
		}{
			{"same version deletes", new(device("", "c1", fleet.StatusActive, 1)), 1, nil},
			{"other version refuses and keeps the item", new(device("", "c1", fleet.StatusRevoked, 2)), 1, fleet.ErrConditionFailed},
			{"absent is a success", nil, 1, nil},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("delete-version-%s-%d", sfx, i)
				if tt.existing != nil {
					ex := *tt.existing
					ex.ThingName = name
					wantErr(t, "arrange Create", inv.Create(ctx, ex), nil)
					tt.existing = &ex
				}
				wantErr(t, "DeleteVersion", inv.DeleteVersion(ctx, name, tt.version), tt.wantErr)
				if tt.wantErr != nil {
					if got := mustGet(t, inv, name); !sameDevice(got, *tt.existing) {
						t.Errorf("after refused delete %+v, want %+v", got, *tt.existing)
					}
					return
				}
				_, err := inv.Get(ctx, name)
				wantErr(t, "Get after DeleteVersion", err, fleet.ErrNotFound)
			})
		}
		t.Run("invalid thing name is ErrInvalid", func(t *testing.T) {
			wantErr(t, "DeleteVersion", inv.DeleteVersion(ctx, "bad name", 1), fleet.ErrInvalid)
		})
	})
	t.Run("ByCertificate", func(t *testing.T) { testByCertificate(t, newInv) })
	t.Run("List pages through every device once", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		want := map[string]bool{}
		for i := range 7 {
			name := fmt.Sprintf("list-%s-%d", sfx, i)
			wantErr(t, "Create", inv.Create(ctx, device(name, "c", fleet.StatusActive, 1)), nil)
			want[name] = true
		}
		for _, limit := range []int{1, 3, 7, 100} {
			seen := map[string]int{}
			cursor, pages := "", 0
			for {
				devs, next, err := inv.List(ctx, limit, cursor)
				wantErr(t, "List", err, nil)
				if len(devs) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(devs))
				}
				for _, d := range devs {
					seen[d.ThingName]++
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
	})
	t.Run("Revocation records", func(t *testing.T) { testRevocations(t, newInv) })
	t.Run("RevokedOn", func(t *testing.T) { testRevokedOn(t, newInv) })
	t.Run("Retiring round trip", func(t *testing.T) { testRetiring(t, newInv) })
	t.Run("RetiringOn", func(t *testing.T) { testRetiringOn(t, newInv) })
}

// eventually retries check until it returns nil, for reads that are
// eventually consistent on AWS (a global secondary index); the fakes and
// moto answer consistently at the first try.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	tier.Eventually(t, 10*time.Second, what, check)
}

// eventuallyByCertificate waits until inv.ByCertificate(certID) answers want
// (the thing name; "" for ErrNotFound): the index is eventually consistent.
// eventuallyOnDay waits until a sparse day index (list) gives, for day,
// sorted things whose names end in sfx (this test's) equal to want.
func eventuallyOnDay(t *testing.T, name string, list func(ctx context.Context, day string) ([]string, error), day, sfx string, want []string) {
	t.Helper()
	eventually(t, name+"("+day+")", func() error {
		got, err := list(context.Background(), day)
		if err != nil {
			return err
		}
		if !slices.IsSorted(got) {
			return fmt.Errorf("got %v, not sorted", got)
		}
		var ours []string
		for _, g := range got {
			if strings.HasSuffix(g, sfx) {
				ours = append(ours, g)
			}
		}
		if !slices.Equal(ours, want) {
			return fmt.Errorf("got %v, want %v", ours, want)
		}
		return nil
	})
}

func eventuallyByCertificate(t *testing.T, inv contract.Inventory, certID, want string) {
	t.Helper()
	eventually(t, "ByCertificate("+certID+")", func() error {
		got, err := inv.ByCertificate(context.Background(), certID)
		switch {
		case want == "" && !errors.Is(err, fleet.ErrNotFound):
			return fmt.Errorf("got %q, %v, want ErrNotFound", got, err)
		case want != "" && (err != nil || got != want):
			return fmt.Errorf("got %q, %v, want %q", got, err, want)
		}
		return nil
	})
}

// testByCertificate: the CertificateIndex lookup follows creates, updates
// that change the certificate, and deletes.
func testByCertificate(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	cert := func(s string) string { return "cert-" + s + "-" + sfx }
	tests := []struct {
		name    string
		arrange func(t *testing.T, name string)
		// lookups maps a certificate to the thing name ByCertificate
		// returns, "" for ErrNotFound.
		lookups func(name string) map[string]string
	}{
		{"found", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("found"), fleet.StatusActive, 1)), nil)
		}, func(name string) map[string]string { return map[string]string{cert("found"): name} }},
		{"not found", func(*testing.T, string) {},
			func(string) map[string]string { return map[string]string{cert("absent"): ""} }},
		{"several things: the smallest name", func(t *testing.T, name string) {
			wantErr(t, "Create b", inv.Create(ctx, device(name+"-b", cert("shared"), fleet.StatusActive, 1)), nil)
			wantErr(t, "Create a", inv.Create(ctx, device(name+"-a", cert("shared"), fleet.StatusActive, 1)), nil)
		}, func(name string) map[string]string { return map[string]string{cert("shared"): name + "-a"} }},
		{"item replaced with another certificate", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("old"), fleet.StatusActive, 1)), nil)
			wantErr(t, "Update", inv.Update(ctx, device(name, cert("new"), fleet.StatusActive, 2), 1), nil)
		}, func(name string) map[string]string { return map[string]string{cert("old"): "", cert("new"): name} }},
		{"item deleted", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("deleted"), fleet.StatusActive, 1)), nil)
			wantErr(t, "Delete", inv.Delete(ctx, name), nil)
		}, func(string) map[string]string { return map[string]string{cert("deleted"): ""} }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("bycert-%s-%d", sfx, i)
			tt.arrange(t, name)
			for c, want := range tt.lookups(name) {
				eventuallyByCertificate(t, inv, c, want)
			}
		})
	}
	t.Run("empty certificate id is ErrInvalid", func(t *testing.T) {
		_, err := inv.ByCertificate(ctx, "")
		wantErr(t, "ByCertificate", err, fleet.ErrInvalid)
	})
	t.Run("an item with an empty certificate id is refused (an index key cannot be empty)", func(t *testing.T) {
		name := "bycert-empty-" + sfx
		wantErr(t, "Create", inv.Create(ctx, device(name, "", fleet.StatusActive, 1)), fleet.ErrInvalid)
		_, err := inv.Get(ctx, name)
		wantErr(t, "Get after the refused create", err, fleet.ErrNotFound)
	})
}

// revocation is a revocation record of name for cert. UpdatedAt has
// nanoseconds and an offset: the item keeps it as an RFC 3339 string with
// both, so it reads back as the same instant at full precision.
func revocation(name, cert string, status fleet.Status) fleet.Revocation {
	at := time.Now().Truncate(time.Second).Add(123456789 * time.Nanosecond).In(time.FixedZone("UTC+2", 2*3600))
	return fleet.Revocation{
		ThingName: name, Status: status, CertificateID: cert,
		CertificatePEM:  "-----BEGIN CERTIFICATE-----\n" + cert + "\n-----END CERTIFICATE-----\n",
		CACertificateID: "ca-" + cert, UpdatedAt: at,
	}
}

func sameRevocation(a, b fleet.Revocation) bool {
	return a.ThingName == b.ThingName && a.Status == b.Status && a.CertificateID == b.CertificateID &&
		a.CertificatePEM == b.CertificatePEM && a.CACertificateID == b.CACertificateID && a.UpdatedAt.Equal(b.UpdatedAt)
}

// wantRevocation checks the thing's stored revocation record: want, or
// none (ErrNotFound) when want is nil.
func wantRevocation(t *testing.T, inv contract.Inventory, name string, want *fleet.Revocation) {
	t.Helper()
	got, err := inv.Revocation(context.Background(), name)
	if want == nil {
		wantErr(t, "Revocation "+name, err, fleet.ErrNotFound)
		return
	}
	wantErr(t, "Revocation "+name, err, nil)
	if !sameRevocation(got, *want) {
		t.Errorf("revocation of %s is %+v, want %+v", name, got, *want)
	}
}

// wantDevice checks the thing's device item: want, or none (ErrNotFound)
// when want is nil.
func wantDevice(t *testing.T, inv contract.Inventory, name string, want *fleet.Device) {
	t.Helper()
	got, err := inv.Get(context.Background(), name)
	if want == nil {
		wantErr(t, "Get "+name, err, fleet.ErrNotFound)
		return
	}
	wantErr(t, "Get "+name, err, nil)
	if !sameDevice(got, *want) {
		t.Errorf("device %s is %+v, want %+v", name, got, *want)
	}
}

// testRevocations: the revocation records beside the device items
// (fleet.Revocation). A record only ever becomes more restrictive, and
// List, ByCertificate and the device item's writes never meet one.
func testRevocations(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	t.Run("no record is ErrNotFound", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		withDevice := "norec-device-" + sfx
		wantErr(t, "Create", inv.Create(ctx, device(withDevice, "c1", fleet.StatusRevoked, 2)), nil)
		tests := []struct {
			name    string
			thing   string
			wantErr error
		}{
			{"no item at all", "norec-absent-" + sfx, fleet.ErrNotFound},
			{"a device item only", withDevice, fleet.ErrNotFound},
			{"invalid thing name", "bad name", fleet.ErrInvalid},
			{"a revocation key is no thing name", "norec-absent-" + sfx + fleet.RevocationSuffix, fleet.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := inv.Revocation(ctx, tt.thing)
				wantErr(t, "Revocation", err, tt.wantErr)
			})
		}
	})
	t.Run("Revoke", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		const (
			revoked = fleet.StatusRevoked
			decomm  = fleet.StatusDecommissioned
		)
		tests := []struct {
			name    string
			revokes []fleet.Status // successive Revoke calls, each a success
			keep    int            // the call whose record stays
		}{
			{"REVOKED is recorded", []fleet.Status{revoked}, 0},
			{"DECOMMISSIONED is recorded", []fleet.Status{decomm}, 0},
			{"REVOKED then DECOMMISSIONED upgrades", []fleet.Status{revoked, decomm}, 1},
			{"DECOMMISSIONED then REVOKED keeps DECOMMISSIONED", []fleet.Status{decomm, revoked}, 0},
			{"REVOKED twice keeps the first", []fleet.Status{revoked, revoked}, 0},
			{"DECOMMISSIONED twice keeps the first", []fleet.Status{decomm, decomm}, 0},
			{"REVOKED, DECOMMISSIONED, REVOKED keeps DECOMMISSIONED", []fleet.Status{revoked, decomm, revoked}, 1},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("revoke-%s-%d", sfx, i)
				var recs []fleet.Revocation
				for j, st := range tt.revokes {
					// Each call differs in every field but the name, so that
					// the stored record tells which call wrote it.
					r := revocation(name, fmt.Sprintf("cert-%d", j), st)
					r.UpdatedAt = r.UpdatedAt.Add(time.Duration(j) * time.Minute)
					wantErr(t, fmt.Sprintf("Revoke #%d (%s)", j+1, st), inv.Revoke(ctx, r), nil)
					recs = append(recs, r)
				}
				wantRevocation(t, inv, name, &recs[tt.keep])
				wantDevice(t, inv, name, nil) // a record is no device item
			})
		}
	})
	t.Run("Revoke refuses what is no revocation", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		tests := []struct {
			name     string
			existing fleet.Status // "" for no record
			r        func(name string) fleet.Revocation
		}{
			{"ACTIVE", "", func(n string) fleet.Revocation { return revocation(n, "c2", fleet.StatusActive) }},
			{"no status", "", func(n string) fleet.Revocation { return revocation(n, "c2", "") }},
			{"unknown status", "", func(n string) fleet.Revocation { return revocation(n, "c2", "GONE") }},
			{"ACTIVE over a REVOKED record", fleet.StatusRevoked,
				func(n string) fleet.Revocation { return revocation(n, "c2", fleet.StatusActive) }},
			{"invalid thing name", "", func(string) fleet.Revocation { return revocation("bad name", "c2", fleet.StatusRevoked) }},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				name := fmt.Sprintf("revoke-invalid-%s-%d", sfx, i)
				var existing *fleet.Revocation
				if tt.existing != "" {
					existing = new(revocation(name, "c1", tt.existing))
					wantErr(t, "arrange Revoke", inv.Revoke(ctx, *existing), nil)
				}
				wantErr(t, "Revoke", inv.Revoke(ctx, tt.r(name)), fleet.ErrInvalid)
				wantRevocation(t, inv, name, existing)
			})
		}
	})
	t.Run("List and Revocations", func(t *testing.T) { testRevocationListings(t, newInv) })
	t.Run("ByCertificate never finds a record", func(t *testing.T) { testRevocationByCertificate(t, newInv) })
	t.Run("a record does not disturb the device item", func(t *testing.T) { testRevocationBeside(t, newInv) })
}

// testRevocationListings: in a table holding devices, devices with records
// and records without devices, List pages through the devices and
// Revocations through the records, each once whatever the page size.
func testRevocationListings(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	devices := map[string]fleet.Device{}
	records := map[string]fleet.Revocation{}
	for i := range 8 {
		name := fmt.Sprintf("revlist-%s-%d", sfx, i)
		if i < 5 { // 0-4 have a device item
			d := device(name, "cert-"+name, fleet.StatusActive, 1)
			wantErr(t, "Create", inv.Create(ctx, d), nil)
			devices[name] = d
		}
		if i%2 == 1 || i >= 5 { // 1, 3 and 5-7 have a record
			st := fleet.StatusRevoked
			if i%3 == 0 {
				st = fleet.StatusDecommissioned
			}
			r := revocation(name, "cert-"+name, st)
			wantErr(t, "Revoke", inv.Revoke(ctx, r), nil)
			records[name] = r
		}
	}
	for _, limit := range []int{1, 2, 3, 100} {
		t.Run(fmt.Sprintf("List, page size %d", limit), func(t *testing.T) {
			// The limit counts the items read, records included: a page may
			// hold fewer devices, even none, with a next cursor that is a
			// record's key. DynamoDB also returns a LastEvaluatedKey when it
			// stops at the limit on the table's last item, so the last page
			// may be empty; moto (and memddb) return none there.
			// pageThrough accepts both.
			pages := pageThrough(t, "List", func(c string) ([]fleet.Device, string, error) { return inv.List(ctx, limit, c) })
			wantPageSizes(t, "List", pages, limit, len(devices))
			seen := map[string]int{}
			for _, p := range pages {
				for _, d := range p {
					seen[d.ThingName]++
					if want, ok := devices[d.ThingName]; ok && !sameDevice(d, want) {
						t.Errorf("listed %+v, want %+v", d, want)
					}
					if fleet.ValidateThingName(d.ThingName) != nil {
						t.Errorf("List returned %q, a revocation record's key", d.ThingName)
					}
				}
			}
			for name := range devices {
				if seen[name] != 1 {
					t.Errorf("device %s listed %d times, want once", name, seen[name])
				}
			}
			for name := range records {
				if _, ok := devices[name]; !ok && seen[name] > 0 {
					t.Errorf("List returned %s, which has a record and no device item", name)
				}
			}
		})
		t.Run(fmt.Sprintf("Revocations, page size %d", limit), func(t *testing.T) {
			pages := pageThrough(t, "Revocations", func(c string) ([]fleet.Revocation, string, error) {
				return inv.Revocations(ctx, limit, c)
			})
			wantPageSizes(t, "Revocations", pages, limit, len(records))
			seen := map[string]int{}
			for _, p := range pages {
				for _, r := range p {
					seen[r.ThingName]++
					want, ok := records[r.ThingName]
					switch {
					case ok && !sameRevocation(r, want):
						t.Errorf("listed %+v, want %+v", r, want)
					case !ok && devices[r.ThingName].ThingName != "":
						t.Errorf("Revocations returned %s, which has a device item and no record", r.ThingName)
					}
				}
			}
			for name := range records {
				if seen[name] != 1 {
					t.Errorf("record of %s listed %d times, want once", name, seen[name])
				}
			}
		})
	}
	t.Run("Revocations limit 0 is ErrInvalid", func(t *testing.T) {
		_, _, err := inv.Revocations(ctx, 0, "")
		wantErr(t, "Revocations", err, fleet.ErrInvalid)
	})
}

// testRevocationByCertificate: a record keeps the revoked certificate's id
// outside the CertificateIndex, so ByCertificate finds the device item that
// holds the certificate, or nothing, never the record.
func testRevocationByCertificate(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	cert := func(s string) string { return "revcert-" + s + "-" + sfx }
	tests := []struct {
		name    string
		arrange func(t *testing.T, name string)
		// lookups maps a certificate to the thing name ByCertificate
		// returns, "" for ErrNotFound.
		lookups func(name string) map[string]string
	}{
		// The device item's name sorts before its record's key, so the
		// smallest name would hide a record here; the cases without a device
		// item that holds the certificate under this name tell.
		{"revoked device: the device item", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("revoked"), fleet.StatusRevoked, 1)), nil)
			wantErr(t, "Revoke", inv.Revoke(ctx, revocation(name, cert("revoked"), fleet.StatusRevoked)), nil)
		}, func(name string) map[string]string { return map[string]string{cert("revoked"): name} }},
		{"a record without a device item: none", func(t *testing.T, name string) {
			wantErr(t, "Revoke", inv.Revoke(ctx, revocation(name, cert("orphan"), fleet.StatusDecommissioned)), nil)
		}, func(string) map[string]string { return map[string]string{cert("orphan"): ""} }},
		{"device item moved to another certificate", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("old"), fleet.StatusActive, 1)), nil)
			wantErr(t, "Revoke", inv.Revoke(ctx, revocation(name, cert("old"), fleet.StatusRevoked)), nil)
			wantErr(t, "Update", inv.Update(ctx, device(name, cert("new"), fleet.StatusActive, 2), 1), nil)
		}, func(name string) map[string]string { return map[string]string{cert("old"): "", cert("new"): name} }},
		{"certificate on another device whose name sorts after the record's key", func(t *testing.T, name string) {
			// '#' sorts before '-': name#revocation < name-z.
			wantErr(t, "Revoke", inv.Revoke(ctx, revocation(name, cert("moved"), fleet.StatusRevoked)), nil)
			wantErr(t, "Create", inv.Create(ctx, device(name+"-z", cert("moved"), fleet.StatusActive, 1)), nil)
		}, func(name string) map[string]string { return map[string]string{cert("moved"): name + "-z"} }},
		{"device item deleted after the revocation", func(t *testing.T, name string) {
			wantErr(t, "Create", inv.Create(ctx, device(name, cert("gone"), fleet.StatusRevoked, 1)), nil)
			wantErr(t, "Revoke", inv.Revoke(ctx, revocation(name, cert("gone"), fleet.StatusDecommissioned)), nil)
			wantErr(t, "Delete", inv.Delete(ctx, name), nil)
		}, func(string) map[string]string { return map[string]string{cert("gone"): ""} }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("revbycert-%s-%d", sfx, i)
			tt.arrange(t, name)
			for c, want := range tt.lookups(name) {
				eventuallyByCertificate(t, inv, c, want)
				// Never a record's key, not even for a moment (eventually
				// retries until the first right answer).
				if got, err := inv.ByCertificate(ctx, c); err == nil && fleet.ValidateThingName(got) != nil {
					t.Errorf("ByCertificate(%s) returned %q, a revocation record's key", c, got)
				}
			}
		})
	}
}

// testRevocationBeside: the device item's reads and conditional writes see
// the device item only; a record under the same thing name neither counts
// as an item nor changes, whatever happens to the device item.
func testRevocationBeside(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	name := "revbeside-" + randomSuffix(t)
	rec := revocation(name, "c1", fleet.StatusRevoked)
	decomm := revocation(name, "c1", fleet.StatusDecommissioned)
	decomm.UpdatedAt = decomm.UpdatedAt.Add(time.Minute)
	v1 := device(name, "c1", fleet.StatusActive, 1)
	v2 := device(name, "c1", fleet.StatusRevoked, 2)
	other := device(name, "c2", fleet.StatusActive, 1)
	steps := []struct {
		what       string
		do         func() error
		wantErr    error
		wantDevice *fleet.Device // nil: no device item
		wantRecord *fleet.Revocation
	}{
		{"Revoke without a device item", func() error { return inv.Revoke(ctx, rec) }, nil, nil, &rec},
		{"Update finds no device item", func() error { return inv.Update(ctx, v2, 1) }, fleet.ErrNotFound, nil, &rec},
		{"DeleteVersion finds no device item (a success)", func() error { return inv.DeleteVersion(ctx, name, 1) }, nil, nil, &rec},
		{"Create: the record is no item", func() error { return inv.Create(ctx, v1) }, nil, &v1, &rec},
		{"Create with another certificate meets the device item", func() error { return inv.Create(ctx, other) },
			fleet.ErrConditionFailed, &v1, &rec},
		{"Update", func() error { return inv.Update(ctx, v2, 1) }, nil, &v2, &rec},
		{"Revoke again leaves the device item", func() error { return inv.Revoke(ctx, decomm) }, nil, &v2, &decomm},
		{"DeleteVersion with a stale version", func() error { return inv.DeleteVersion(ctx, name, 1) },
			fleet.ErrConditionFailed, &v2, &decomm},
		{"DeleteVersion", func() error { return inv.DeleteVersion(ctx, name, 2) }, nil, nil, &decomm},
		{"Create again", func() error { return inv.Create(ctx, v1) }, nil, &v1, &decomm},
		{"Delete leaves the record", func() error { return inv.Delete(ctx, name) }, nil, nil, &decomm},
	}
	for _, st := range steps {
		wantErr(t, st.what, st.do(), st.wantErr)
		wantDevice(t, inv, name, st.wantDevice)
		wantRevocation(t, inv, name, st.wantRecord)
	}
}

func message(device string, ts int64, id, payload string) fleet.Message {
	return fleet.Message{
		Device: device, SortKey: fleet.SortKey(ts, id), Timestamp: ts, ID: id, Region: "us-west-2",
		Payload: []byte(payload), ExpiresAt: time.Unix(ts/1000+7*24*3600, 0).UTC(),
	}
}

func sameMessage(a, b fleet.Message) bool {
	return a.Device == b.Device && a.SortKey == b.SortKey && a.Timestamp == b.Timestamp && a.ID == b.ID &&
		a.Region == b.Region && bytes.Equal(a.Payload, b.Payload) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func sortKeys(ms []fleet.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.SortKey
	}
	return out
}

// TestTelemetry runs the contract.Telemetry contract against fresh data tables.
func Telemetry(t *testing.T, newTel func(t *testing.T) contract.Telemetry) {
	ctx := context.Background()
	t.Run("Put then Query returns the message as sent", func(t *testing.T) {
		tel := newTel(t)
		dev := "tel-" + randomSuffix(t)
		m := message(dev, 1700000000123, "id-1", `{"temp": 21.5, "unicode": "é"}`)
		wantErr(t, "Put", tel.Put(ctx, m), nil)
		got, err := tel.Query(ctx, dev, 10)
		wantErr(t, "Query", err, nil)
		if len(got) != 1 || !sameMessage(got[0], m) {
			t.Fatalf("queried %+v, want [%+v]", got, m)
		}
	})
	t.Run("Query is newest first with limit", func(t *testing.T) {
		tel := newTel(t)
		dev := "tel-" + randomSuffix(t)
		other := "tel-other-" + randomSuffix(t)
		for _, ts := range []int64{1700000000300, 1700000000100, 1700000000500, 1700000000200, 1700000000400} {
			wantErr(t, "Put", tel.Put(ctx, message(dev, ts, fmt.Sprint("m", ts), `{}`)), nil)
		}
		wantErr(t, "Put other", tel.Put(ctx, message(other, 1700000000999, "x", `{}`)), nil)
		tests := []struct {
			limit int
			want  []int64
		}{
			{1, []int64{500}},
			{3, []int64{500, 400, 300}},
			{10, []int64{500, 400, 300, 200, 100}},
		}
		for _, tt := range tests {
			got, err := tel.Query(ctx, dev, tt.limit)
			wantErr(t, "Query", err, nil)
			var want []string
			for _, ms := range tt.want {
				ts := 1700000000000 + ms
				want = append(want, fleet.SortKey(ts, fmt.Sprint("m", ts)))
			}
			if !slices.Equal(sortKeys(got), want) {
				t.Errorf("limit %d: %v, want %v", tt.limit, sortKeys(got), want)
			}
		}
	})
	t.Run("Page walks every message once, newest first", func(t *testing.T) {
		tel := newTel(t)
		dev := "tel-" + randomSuffix(t)
		other := "tel-other-" + randomSuffix(t)
		var want []string
		for i := range 7 {
			ts := int64(1700000000000 + 100*(7-i))
			m := message(dev, ts, fmt.Sprint("p", i), `{}`)
			wantErr(t, "Put", tel.Put(ctx, m), nil)
			want = append(want, m.SortKey)
		}
		// Two messages in one millisecond are both on some page.
		twin := message(dev, 1700000000300, "p9", `{}`)
		wantErr(t, "Put twin", tel.Put(ctx, twin), nil)
		want = append(want, twin.SortKey)
		slices.Sort(want)
		slices.Reverse(want)
		wantErr(t, "Put other", tel.Put(ctx, message(other, 1700000000050, "x", `{}`)), nil)
		for _, limit := range []int{1, 3, 4, 8, 20} {
			var got []string
			cursor, pages := "", 0
			for {
				page, next, err := tel.Page(ctx, dev, limit, cursor)
				wantErr(t, "Page", err, nil)
				pages++
				if len(page) > limit || (next != "" && len(page) != limit) {
					t.Fatalf("limit %d: page of %d with next %q", limit, len(page), next)
				}
				got = append(got, sortKeys(page)...)
				if next == "" {
					break
				}
				if pages > len(want)+1 {
					t.Fatalf("limit %d: %d pages and still a next cursor", limit, pages)
				}
				cursor = next
			}
			if !slices.Equal(got, want) {
				t.Errorf("limit %d: %v, want %v", limit, got, want)
			}
			// A next cursor only when an older message is left: no empty
			// last page.
			if wantPages := (len(want) + limit - 1) / limit; pages != wantPages {
				t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
			}
		}
		for _, bad := range []string{"%%%", "not base64 !", "QUJD=="} {
			if _, _, err := tel.Page(ctx, dev, 3, bad); !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("cursor %q: %v, want ErrInvalid", bad, err)
			}
		}
		if _, _, err := tel.Page(ctx, dev, 0, ""); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("limit 0: %v, want ErrInvalid", err)
		}
		if page, next, err := tel.Page(ctx, "tel-none-"+randomSuffix(t), 3, ""); err != nil || len(page) != 0 || next != "" {
			t.Errorf("a device without messages: %v %q %v", page, next, err)
		}
	})
	t.Run("same-millisecond messages are both kept", func(t *testing.T) {
		tel := newTel(t)
		dev := "tel-" + randomSuffix(t)
		a := message(dev, 1700000000000, "aaa", `{"n":1}`)
		b := message(dev, 1700000000000, "bbb", `{"n":2}`)
		wantErr(t, "Put a", tel.Put(ctx, a), nil)
		wantErr(t, "Put b", tel.Put(ctx, b), nil)
		got, err := tel.Query(ctx, dev, 10)
		wantErr(t, "Query", err, nil)
		if len(got) != 2 || !sameMessage(got[0], b) || !sameMessage(got[1], a) {
			t.Errorf("queried %v, want [%s %s]", sortKeys(got), b.SortKey, a.SortKey)
		}
	})
	t.Run("duplicate Put is ErrAlreadyExists and the original stays", func(t *testing.T) {
		tel := newTel(t)
		dev := "tel-" + randomSuffix(t)
		orig := message(dev, 1700000000000, "dup", `{"v":"original"}`)
		wantErr(t, "Put", tel.Put(ctx, orig), nil)
		dup := orig
		dup.Payload, dup.Region = []byte(`{"v":"replay"}`), "eu-west-1"
		wantErr(t, "Put duplicate", tel.Put(ctx, dup), fleet.ErrAlreadyExists)
		got, err := tel.Query(ctx, dev, 10)
		wantErr(t, "Query", err, nil)
		if len(got) != 1 || !sameMessage(got[0], orig) {
			t.Errorf("queried %+v, want only the original %+v", got, orig)
		}
	})
	t.Run("Query of a device without messages is empty", func(t *testing.T) {
		tel := newTel(t)
		got, err := tel.Query(ctx, "silent-"+randomSuffix(t), 10)
		wantErr(t, "Query", err, nil)
		if len(got) != 0 {
			t.Errorf("queried %v, want none", got)
		}
	})
}

// testRevokedOn: the RevocationIndex lists a record under the UTC day of
// its UpdatedAt, moves it with an upgrade, and never lists a device item.
func testRevokedOn(t *testing.T, newInv func(t *testing.T) contract.Inventory) {
	ctx := context.Background()
	inv := newInv(t)
	sfx := randomSuffix(t)
	a, b, c := "revday-a-"+sfx, "revday-b-"+sfx, "revday-c-"+sfx
	// Days no other test writes; 23:30 in UTC+2 is 21:30 UTC, the same day.
	day1 := time.Date(2001, 2, 3, 23, 30, 0, 0, time.FixedZone("UTC+2", 2*3600))
	day2 := day1.Add(24 * time.Hour)
	on := func(r fleet.Revocation, at time.Time) fleet.Revocation { r.UpdatedAt = at; return r }
	wantErr(t, "Revoke", inv.Revoke(ctx, on(revocation(a, "c-"+a, fleet.StatusRevoked), day1)), nil)
	wantErr(t, "Revoke", inv.Revoke(ctx, on(revocation(b, "c-"+b, fleet.StatusDecommissioned), day2)), nil)
	wantErr(t, "Create", inv.Create(ctx, device(c, "c-"+c, fleet.StatusRevoked, 1)), nil)
	revokedOn := func(day time.Time, want ...string) {
		t.Helper()
		d := day.UTC().Format(time.DateOnly)
		eventuallyOnDay(t, "RevokedOn", inv.RevokedOn, d, sfx, want)
	}
	revokedOn(day1, a)
	revokedOn(day2, b)
	// The upgrade to DECOMMISSIONED on day 2 moves a's record there.
	wantErr(t, "Revoke", inv.Revoke(ctx, on(revocation(a, "c-"+a, fleet.StatusDecommissioned), day2)), nil)
	revokedOn(day1)
	revokedOn(day2, a, b)
	// A downgrade is refused (the record is kept): a stays on day 2.
	wantErr(t, "Revoke", inv.Revoke(ctx, on(revocation(a, "c-"+a, fleet.StatusRevoked), day2.Add(24*time.Hour))), nil)
	revokedOn(day2.Add(24 * time.Hour))
	revokedOn(day2, a, b)
	for _, bad := range []string{"", "2001-02-30", "today", "2001-02-03T00:00:00Z"} {
		_, err := inv.RevokedOn(ctx, bad)
		wantErr(t, "RevokedOn("+bad+")", err, fleet.ErrInvalid)
	}
}
