package deploytest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/motoserver"
	"github.com/mriot/mriot/internal/testkit/rie"
)

// TestPresenceUnderRIE runs the presence bootstrap under the RIE against
// moto with the lifecycle event fixtures: the connect makes test_001
// connected in the function's region, its disconnect (same connection,
// later) makes it offline, and the connect delivered again late changes
// nothing.
func TestPresenceUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	// A region no other RIE test uses (moto's IoT policies are shared
	// across its accounts), added to REGIONS.
	const region = "sa-east-1"
	cfg := world(t, s, region)
	env, err := rie.LoadEnv(filepath.Join(root(t), "events", "env.json"), "PresenceFunction")
	if err != nil {
		t.Fatal(err)
	}
	motoserver.CreatePresenceTable(t, cfg, env["PRESENCE_TABLE"])
	db := dynamodb.NewFromConfig(cfg)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	if err := awsddb.NewInventory(db, env["INVENTORY_TABLE"]).Create(ctx, fleet.Device{ThingName: "test_001", CertificateID: "c1",
		CertificatePEM: "pem", CACertificateID: "ca", NotAfter: now.Add(time.Hour), Status: fleet.StatusActive,
		OriginRegion: region, Version: 1, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	pres := awsddb.NewPresence(db, env["PRESENCE_TABLE"])
	em := startFunction(t, "presence", region, s, map[string]string{"REGIONS": env["REGIONS"] + "," + region})

	invokeFixture(t, em, "presence-connected.json")
	p, err := pres.Get(ctx, "test_001")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Connected || p.Region != region || p.Since.UnixMilli() != 1767225600123 || p.SessionID == "" {
		t.Fatalf("after the connect: %+v, want connected in %s since the event's timestamp", p, region)
	}
	invokeFixture(t, em, "presence-disconnected.json")
	invokeFixture(t, em, "presence-connected.json") // a duplicate, late
	p, err = pres.Get(ctx, "test_001")
	if err != nil {
		t.Fatal(err)
	}
	if p.Connected || p.Region != region || p.LastSeen.UnixMilli() != 1767225900456 || !p.Since.IsZero() {
		t.Fatalf("after the disconnect and a late duplicate connect: %+v, want offline, last seen at the disconnect", p)
	}
}
