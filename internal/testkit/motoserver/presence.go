package motoserver

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
)

// CreatePresenceTable creates a presence table as template.yaml declares it
// (key ThingName, the sparse ConnectedIndex by OnlineShard and ThingName,
// projection ALL) in cfg's region and waits until it is active.
func CreatePresenceTable(t testing.TB, cfg aws.Config, name string) {
	t.Helper()
	s := ddbtypes.ScalarAttributeTypeS
	createActive(t, cfg, "presence", &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String(ddbitem.PresenceHashKey), AttributeType: s},
			{AttributeName: aws.String(ddbitem.AttrOnlineShard), AttributeType: s},
		},
		KeySchema: []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.PresenceHashKey), KeyType: ddbtypes.KeyTypeHash}},
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{{
			IndexName: aws.String(ddbitem.PresenceConnectedIndex),
			KeySchema: []ddbtypes.KeySchemaElement{
				{AttributeName: aws.String(ddbitem.AttrOnlineShard), KeyType: ddbtypes.KeyTypeHash},
				{AttributeName: aws.String(ddbitem.PresenceHashKey), KeyType: ddbtypes.KeyTypeRange},
			},
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll},
		}},
	})
}
