package motoserver

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
)

// CreateCommandsTable creates a commands table (PK ThingName, SK SK, stream
// NEW_AND_OLD_IMAGES) as template.yaml does.
func CreateCommandsTable(t testing.TB, cfg aws.Config, name string) {
	t.Helper()
	s := ddbtypes.ScalarAttributeTypeS
	createActive(t, cfg, "commands", &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String(ddbitem.CommandsHashKey), AttributeType: s},
			{AttributeName: aws.String(ddbitem.CommandsRangeKey), AttributeType: s},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String(ddbitem.CommandsHashKey), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String(ddbitem.CommandsRangeKey), KeyType: ddbtypes.KeyTypeRange},
		},
		StreamSpecification: &ddbtypes.StreamSpecification{
			StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages,
		},
	})
}
