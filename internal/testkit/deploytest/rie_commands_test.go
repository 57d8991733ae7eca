package deploytest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/testkit/motoserver"
	"github.com/mriot/mriot/internal/testkit/rie"
)

// TestCommandsUnderRIE runs the commands bootstrap under the RIE against
// moto with the commands fixtures: the new command's INSERT for a device
// that is not connected publishes nothing and fails nothing; the ack makes
// it ACKED.
func TestCommandsUnderRIE(t *testing.T) {
	s := motoserver.Start(t)
	const region = "ap-northeast-1" // a region of its own in the shared moto (no other RIE test uses it)
	cfg := world(t, s, region)
	env, err := rie.LoadEnv(filepath.Join(root(t), "events", "env.json"), "CommandsFunction")
	if err != nil {
		t.Fatal(err)
	}
	motoserver.CreatePresenceTable(t, cfg, env["PRESENCE_TABLE"])
	motoserver.CreateCommandsTable(t, cfg, env["COMMANDS_TABLE"])
	db := dynamodb.NewFromConfig(cfg)
	ctx := context.Background()
	raw, err := os.ReadFile(filepath.Join(root(t), "events", "commands-stream-insert.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	item, err := ddbitem.FromStreamImage(ev.Records[0].Change.NewImage)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := ddbitem.UnmarshalCommand(item)
	if err != nil {
		t.Fatal(err)
	}
	store := awsddb.NewCommands(db, env["COMMANDS_TABLE"])
	if err := store.Create(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	em := startFunction(t, "commands", region, s, nil)

	if out := invokeFixture(t, em, "commands-stream-insert.json"); string(out) != `{"batchItemFailures":null}` {
		t.Fatalf("stream batch answered %s, want no failures", out)
	}
	invokeFixture(t, em, "commands-ack.json")
	got, err := store.Get(ctx, "test_001", cmd.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != fleet.CommandAcked || got.Result != `{"ok":true}` {
		t.Fatalf("after the ack fixture: %+v, want ACKED with its result", got)
	}
}
