package contract

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/fleet"
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

func mustGet(t *testing.T, inv Inventory, name string) fleet.Device {
	t.Helper()
	d, err := inv.Get(context.Background(), name)
	if err != nil {
		t.Fatalf("Get %s: %v", name, err)
	}
	return d
}

// TestInventory runs the Inventory contract against fresh inventories.
func TestInventory(t *testing.T, newInv func(t *testing.T) Inventory) {
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
				ptr(device("", "c1", fleet.StatusActive, 1)),
				func(n string) fleet.Device {
					d := device(n, "c1", fleet.StatusActive, 1)
					d.OriginRegion = "us-west-2"
					return d
				}, nil},
			{"other certificate", ptr(device("", "c1", fleet.StatusActive, 1)),
				func(n string) fleet.Device { return device(n, "c2", fleet.StatusActive, 1) }, fleet.ErrConditionFailed},
			{"same certificate, REVOKED", ptr(device("", "c1", fleet.StatusRevoked, 2)),
				func(n string) fleet.Device { return device(n, "c1", fleet.StatusActive, 1) }, fleet.ErrConditionFailed},
			{"same certificate, DECOMMISSIONED tombstone", ptr(device("", "c1", fleet.StatusDecommissioned, 3)),
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
			{"same version deletes", ptr(device("", "c1", fleet.StatusActive, 1)), 1, nil},
			{"other version refuses and keeps the item", ptr(device("", "c1", fleet.StatusRevoked, 2)), 1, fleet.ErrConditionFailed},
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
	t.Run("List pages through every device once", func(t *testing.T) {
		inv := newInv(t)
		sfx := randomSuffix(t)
		want := map[string]bool{}
		for i := 0; i < 7; i++ {
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
}

func ptr[T any](v T) *T { return &v }

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

// TestTelemetry runs the Telemetry contract against fresh data tables.
func TestTelemetry(t *testing.T, newTel func(t *testing.T) Telemetry) {
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
