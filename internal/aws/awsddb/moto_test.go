package awsddb_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/contracttest"
	"github.com/mriot/mriot/internal/testkit/motoserver"
)

// The adapters implement the ports the contract suites test.
var (
	_ contract.Inventory = (*awsddb.Inventory)(nil)
	_ contract.Telemetry = (*awsddb.Telemetry)(nil)
	_ contract.Claims    = (*awsddb.Claims)(nil)
	_ contract.Leases    = (*awsddb.Leases)(nil)
)

func TestMain(m *testing.M) { os.Exit(motoserver.Main(m)) }

var tableSeq atomic.Int64

// newMotoTables creates fresh inventory and data tables on moto and returns
// the client and their names.
func newMotoTables(t *testing.T) (*dynamodb.Client, string, string) {
	s := motoserver.Start(t)
	cfg := s.Config("us-west-2")
	n := tableSeq.Add(1)
	inv, data := fmt.Sprintf("inventory-%d", n), fmt.Sprintf("data-%d", n)
	motoserver.CreateTables(t, cfg, inv, data)
	return dynamodb.NewFromConfig(cfg), inv, data
}

func TestInventoryContractOnMoto(t *testing.T) {
	contracttest.Inventory(t, func(t *testing.T) contract.Inventory {
		client, inv, _ := newMotoTables(t)
		return awsddb.NewInventory(client, inv)
	})
}

func TestTelemetryContractOnMoto(t *testing.T) {
	contracttest.Telemetry(t, func(t *testing.T) contract.Telemetry {
		client, _, data := newMotoTables(t)
		return awsddb.NewTelemetry(client, data)
	})
}

func TestClaimsContractOnMoto(t *testing.T) {
	contracttest.Claims(t, func(t *testing.T) contract.Claims {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("jitr-claims-%d", tableSeq.Add(1))
		motoserver.CreateClaimsTable(t, cfg, name)
		return awsddb.NewClaims(dynamodb.NewFromConfig(cfg), name)
	})
}

func TestLeasesContractOnMoto(t *testing.T) {
	contracttest.Leases(t, func(t *testing.T) contract.Leases {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("device-leases-%d", tableSeq.Add(1))
		motoserver.CreateLeasesTable(t, cfg, name)
		return awsddb.NewLeases(dynamodb.NewFromConfig(cfg), name)
	})
}

func TestMissingTableIsInvalidOnMoto(t *testing.T) {
	client, _, _ := newMotoTables(t)
	ctx := context.Background()
	inv := awsddb.NewInventory(client, "no-such-inventory")
	tel := awsddb.NewTelemetry(client, "no-such-data")
	claims := awsddb.NewClaims(client, "no-such-claims")
	leases := awsddb.NewLeases(client, "no-such-leases")
	lease := fleet.Lease{ThingName: "t1", Owner: "run-a", Fence: 1}
	now := time.Now()
	calls := map[string]func() error{
		"Get":           func() error { _, err := inv.Get(ctx, "t1"); return err },
		"Create":        func() error { return inv.Create(ctx, fleet.Device{ThingName: "t1", Version: 1}) },
		"Update":        func() error { return inv.Update(ctx, fleet.Device{ThingName: "t1", Version: 2}, 1) },
		"Delete":        func() error { return inv.Delete(ctx, "t1") },
		"DeleteVersion": func() error { return inv.DeleteVersion(ctx, "t1", 1) },
		"List":          func() error { _, _, err := inv.List(ctx, 10, ""); return err },
		"Put": func() error {
			return tel.Put(ctx, fleet.Message{Device: "t1", Timestamp: 1, ID: "a", Payload: []byte("{}")})
		},
		"Query": func() error { _, err := tel.Query(ctx, "t1", 10); return err },
		"Claim": func() error {
			_, err := claims.Claim(ctx, "c1", "", now, now.Add(time.Minute))
			return err
		},
		"Done":          func() error { return claims.Done(ctx, "c1", "", now.Add(time.Minute)) },
		"Release":       func() error { return claims.Release(ctx, "c1", "") },
		"ByCertificate": func() error { _, err := inv.ByCertificate(ctx, "c1"); return err },
		"Acquire": func() error {
			_, err := leases.Acquire(ctx, "t1", "run-a", now, now.Add(time.Minute))
			return err
		},
		"Renew":        func() error { _, err := leases.Renew(ctx, lease, now.Add(time.Minute)); return err },
		"Note":         func() error { return leases.Note(ctx, lease, "c1") },
		"ReleaseLease": func() error { return leases.Release(ctx, lease, fleet.Ledger{}) },
		"GetLease":     func() error { _, err := leases.Get(ctx, "t1"); return err },
		"Pending":      func() error { _, _, err := leases.Pending(ctx, 10, ""); return err },
		"LoadCursor":   func() error { _, err := leases.LoadCursor(ctx); return err },
		"SaveCursor":   func() error { _, err := leases.SaveCursor(ctx, fleet.ReconcileCursor{}); return err },
	}
	for name, call := range calls {
		err := call()
		if !errors.Is(err, fleet.ErrInvalid) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%s on a missing table: err = %v, want ErrInvalid saying the table does not exist", name, err)
		}
	}
}

func TestItemsMatchDdbitemOnMoto(t *testing.T) {
	// What the adapter writes reads back through ddbitem unchanged, and the
	// TTL attribute is a number of epoch seconds.
	client, _, data := newMotoTables(t)
	ctx := context.Background()
	tel := awsddb.NewTelemetry(client, data)
	m := fleet.Message{Device: "dev-1", Timestamp: 1700000000123, ID: "id-1", Region: "us-west-2",
		Payload: []byte(`{"t":1}`), ExpiresAt: time.Unix(1700600000, 0).UTC()}
	if err := tel.Put(ctx, m); err != nil {
		t.Fatal(err)
	}
	out, err := client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &data, Key: ddbitem.MessageKey("dev-1", fleet.SortKey(m.Timestamp, m.ID))})
	if err != nil || len(out.Item) == 0 {
		t.Fatalf("get raw item: %v (%d attributes)", err, len(out.Item))
	}
	want, err := ddbitem.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		if _, ok := out.Item[name]; !ok {
			t.Errorf("stored item lacks %s", name)
		}
	}
	got, err := ddbitem.UnmarshalMessage(out.Item)
	if err != nil {
		t.Fatal(err)
	}
	if got.SortKey != fleet.SortKey(m.Timestamp, m.ID) || !got.ExpiresAt.Equal(m.ExpiresAt) || string(got.Payload) != `{"t":1}` {
		t.Errorf("read back %+v, want %+v", got, m)
	}
}

var _ contract.Presence = (*awsddb.Presence)(nil)

func TestPresenceContractOnMoto(t *testing.T) {
	contracttest.Presence(t, func(t *testing.T) contract.Presence {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("presence-%d", tableSeq.Add(1))
		motoserver.CreatePresenceTable(t, cfg, name)
		return awsddb.NewPresence(dynamodb.NewFromConfig(cfg), name)
	})
}
