package memddb_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/fake/memddb"
	"github.com/mriot/mriot/internal/testkit/contracttest"
)

func TestCommandsContract(t *testing.T) {
	contracttest.Commands(t, func(t *testing.T) contract.Commands {
		g := memddb.NewGlobalTable("Commands", memddb.CommandsKey, regions)
		t.Cleanup(g.Close)
		return memddb.NewCommands(g.Replica("eu-west-1"))
	})
}

func TestCommandPresenceContract(t *testing.T) {
	contracttest.CommandPresence(t, func(t *testing.T) (contract.CommandPresence, func(string, bool, string, string)) {
		g := memddb.NewGlobalTable("Presence", memddb.PresenceKey, regions)
		t.Cleanup(g.Close)
		r := g.Replica("eu-west-1")
		return memddb.NewCommandPresence(r), func(thing string, connected bool, region, session string) {
			item := ddbitem.DeviceKey(thing)
			item[ddbitem.AttrConnected] = &types.AttributeValueMemberBOOL{Value: connected}
			item[ddbitem.AttrRegion] = &types.AttributeValueMemberS{Value: region}
			item[ddbitem.AttrSessionID] = &types.AttributeValueMemberS{Value: session}
			if err := r.PutItem(context.Background(), item, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
}
