package awsddb_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/awsddb"
	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/contract"
	"github.com/mriot/mriot/internal/testkit/contracttest"
	"github.com/mriot/mriot/internal/testkit/motoserver"
)

func TestCommandsContractOnMoto(t *testing.T) {
	contracttest.Commands(t, func(t *testing.T) contract.Commands {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("commands-%d", tableSeq.Add(1))
		motoserver.CreateCommandsTable(t, cfg, name)
		return awsddb.NewCommands(dynamodb.NewFromConfig(cfg), name)
	})
}

func TestCommandPresenceContractOnMoto(t *testing.T) {
	contracttest.CommandPresence(t, func(t *testing.T) (contract.CommandPresence, func(string, bool, string, string)) {
		s := motoserver.Start(t)
		cfg := s.Config("us-west-2")
		name := fmt.Sprintf("presence-%d", tableSeq.Add(1))
		motoserver.CreateLeasesTable(t, cfg, name) // the same key schema: ThingName
		db := dynamodb.NewFromConfig(cfg)
		return awsddb.NewCommandPresence(db, name), func(thing string, connected bool, region, session string) {
			item := ddbitem.DeviceKey(thing)
			item[ddbitem.AttrConnected] = &types.AttributeValueMemberBOOL{Value: connected}
			item[ddbitem.AttrRegion] = &types.AttributeValueMemberS{Value: region}
			item[ddbitem.AttrSessionID] = &types.AttributeValueMemberS{Value: session}
			if _, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(name), Item: item}); err != nil {
				t.Fatal(err)
			}
		}
	})
}
