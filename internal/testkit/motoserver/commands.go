package motoserver

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
)

// CreateCommandsTable creates a commands table (PK ThingName, SK SK, stream
// NEW_AND_OLD_IMAGES) as template.yaml does.
func CreateCommandsTable(t testing.TB, cfg aws.Config, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(cfg)
	s := ddbtypes.ScalarAttributeTypeS
	err := createTable(ctx, db, &dynamodb.CreateTableInput{
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
	if err != nil {
		t.Fatalf("create commands table %s: %v", name, err)
	}
	waitActive(ctx, t, db, name)
}
