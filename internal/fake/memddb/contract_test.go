package memddb_test

import (
	"testing"

	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/contracttest"
)

// The fakes implement the ports the contract suites test.
var (
	_ contract.Inventory = (*memddb.Inventory)(nil)
	_ contract.Telemetry = (*memddb.Telemetry)(nil)
	_ contract.Claims    = (*memddb.Claims)(nil)
	_ contract.Leases    = (*memddb.Leases)(nil)
)

var regions = []string{"us-west-2", "eu-west-1"}

func TestInventoryContract(t *testing.T) {
	contracttest.Inventory(t, func(t *testing.T) contract.Inventory {
		g := memddb.NewGlobalTable("DeviceInventory", memddb.InventoryKey, regions, memddb.InventoryIndexes)
		t.Cleanup(g.Close)
		return memddb.NewInventory(g.Replica("eu-west-1"))
	})
}

func TestTelemetryContract(t *testing.T) {
	contracttest.Telemetry(t, func(t *testing.T) contract.Telemetry {
		g := memddb.NewGlobalTable("Data", memddb.DataKey, regions)
		t.Cleanup(g.Close)
		return memddb.NewTelemetry(g.Replica("us-west-2"))
	})
}

func TestClaimsContract(t *testing.T) {
	contracttest.Claims(t, func(t *testing.T) contract.Claims {
		g := memddb.NewGlobalTable("JitrClaims", memddb.ClaimsKey, []string{"eu-west-1"})
		t.Cleanup(g.Close)
		return memddb.NewClaims(g.Replica("eu-west-1"))
	})
}

func TestLeasesContract(t *testing.T) {
	contracttest.Leases(t, func(t *testing.T) contract.Leases {
		g := memddb.NewGlobalTable("DeviceLeases", memddb.LeasesKey, []string{"eu-west-1"})
		t.Cleanup(g.Close)
		return memddb.NewLeases(g.Replica("eu-west-1"))
	})
}

var _ contract.Presence = (*memddb.Presence)(nil)

func TestPresenceContract(t *testing.T) {
	contracttest.Presence(t, func(t *testing.T) contract.Presence {
		g := memddb.NewGlobalTable("Presence", memddb.PresenceKey, regions, memddb.PresenceIndexes)
		t.Cleanup(g.Close)
		return memddb.NewPresence(g.Replica("eu-west-1"))
	})
}
