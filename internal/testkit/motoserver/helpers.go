package motoserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	iottypes "github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
)

// CreateTables creates the device inventory (hash key ThingName, stream
// NEW_IMAGE, global secondary indexes CertificateIndex on CertificateId and
// RevocationIndex on RevokedDay and RetirementIndex on RetireDay, all KEYS_ONLY) and the data table (PK/SK, stream NEW_AND_OLD_IMAGES, TTL on
// ExpiresAt) in cfg's region, as the deployment does.
func CreateTables(t testing.TB, cfg aws.Config, inventoryName, dataName string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(cfg)
	s := ddbtypes.ScalarAttributeTypeS
	err := createTable(ctx, db, &dynamodb.CreateTableInput{
		TableName:   aws.String(inventoryName),
		BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String(ddbitem.InventoryHashKey), AttributeType: s},
			{AttributeName: aws.String(ddbitem.AttrCertificateID), AttributeType: s},
			{AttributeName: aws.String(ddbitem.AttrRevokedDay), AttributeType: s},
			{AttributeName: aws.String(ddbitem.AttrRetireDay), AttributeType: s},
		},
		KeySchema: []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.InventoryHashKey), KeyType: ddbtypes.KeyTypeHash}},
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{{
			IndexName:  aws.String(ddbitem.InventoryCertificateIndex),
			KeySchema:  []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.AttrCertificateID), KeyType: ddbtypes.KeyTypeHash}},
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeKeysOnly},
		}, {
			IndexName:  aws.String(ddbitem.InventoryRevocationIndex),
			KeySchema:  []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.AttrRevokedDay), KeyType: ddbtypes.KeyTypeHash}},
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeKeysOnly},
		}, {
			IndexName:  aws.String(ddbitem.InventoryRetirementIndex),
			KeySchema:  []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.AttrRetireDay), KeyType: ddbtypes.KeyTypeHash}},
			Projection: &ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeKeysOnly},
		}},
		StreamSpecification: &ddbtypes.StreamSpecification{
			StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewImage,
		},
	})
	if err != nil {
		t.Fatalf("create inventory table %s: %v", inventoryName, err)
	}
	err = createTable(ctx, db, &dynamodb.CreateTableInput{
		TableName:   aws.String(dataName),
		BillingMode: ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String(ddbitem.DataHashKey), AttributeType: s},
			{AttributeName: aws.String(ddbitem.DataRangeKey), AttributeType: s},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String(ddbitem.DataHashKey), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String(ddbitem.DataRangeKey), KeyType: ddbtypes.KeyTypeRange},
		},
		StreamSpecification: &ddbtypes.StreamSpecification{
			StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages,
		},
	})
	if err != nil {
		t.Fatalf("create data table %s: %v", dataName, err)
	}
	_, err = db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(dataName),
		TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{
			AttributeName: aws.String(ddbitem.AttrExpiresAt), Enabled: aws.Bool(true),
		},
	})
	if err != nil {
		t.Fatalf("enable TTL on %s: %v", dataName, err)
	}
	waitActive(ctx, t, db, inventoryName, dataName)
}

// CreateClaimsTable creates the JITR claims table (hash key CertificateId,
// TTL on ExpiresAt, no stream) in cfg's region, as the deployment does.
func CreateClaimsTable(t testing.TB, cfg aws.Config, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(cfg)
	err := createTable(ctx, db, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String(ddbitem.ClaimsHashKey), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.ClaimsHashKey), KeyType: ddbtypes.KeyTypeHash}},
	})
	if err != nil {
		t.Fatalf("create claims table %s: %v", name, err)
	}
	_, err = db.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(name),
		TimeToLiveSpecification: &ddbtypes.TimeToLiveSpecification{
			AttributeName: aws.String(ddbitem.AttrExpiresAt), Enabled: aws.Bool(true),
		},
	})
	if err != nil {
		t.Fatalf("enable TTL on %s: %v", name, err)
	}
	waitActive(ctx, t, db, name)
}

// CreateLeasesTable creates a region's device lease table (hash key
// ThingName, on demand, no TTL and no stream) in cfg's region, as the
// deployment does.
func CreateLeasesTable(t testing.TB, cfg aws.Config, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(cfg)
	err := createTable(ctx, db, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          ddbtypes.BillingModePayPerRequest,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String(ddbitem.LeasesHashKey), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String(ddbitem.LeasesHashKey), KeyType: ddbtypes.KeyTypeHash}},
	})
	if err != nil {
		t.Fatalf("create leases table %s: %v", name, err)
	}
	waitActive(ctx, t, db, name)
}

// CreatePolicy creates an IoT policy with the given document in cfg's region.
func CreatePolicy(t testing.TB, cfg aws.Config, name, document string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := iot.NewFromConfig(cfg).CreatePolicy(ctx, &iot.CreatePolicyInput{
		PolicyName: aws.String(name), PolicyDocument: aws.String(document),
	})
	if err != nil {
		t.Fatalf("create policy %s: %v", name, err)
	}
}

// RegisterCA registers caPEM as an ACTIVE CA certificate in cfg's region,
// in SNI_ONLY mode with auto-registration allowed, and returns its id.
func RegisterCA(t testing.TB, cfg aws.Config, caPEM string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := iot.NewFromConfig(cfg).RegisterCACertificate(ctx, &iot.RegisterCACertificateInput{
		CaCertificate:         aws.String(caPEM),
		CertificateMode:       iottypes.CertificateModeSniOnly,
		SetAsActive:           true,
		AllowAutoRegistration: true,
	})
	if err != nil {
		t.Fatalf("register CA certificate: %v", err)
	}
	return aws.ToString(out.CertificateId)
}

// createTable creates a table whose name is this test's own. The SDK
// retries a CreateTable whose answer was lost (a reset or a timeout from a
// loaded moto_server) though moto made the table: the retry's
// ResourceInUseException then means the table is there, made by this call.
func createTable(ctx context.Context, db *dynamodb.Client, in *dynamodb.CreateTableInput) error {
	_, err := db.CreateTable(ctx, in)
	if _, inUse := errors.AsType[*ddbtypes.ResourceInUseException](err); inUse {
		return nil
	}
	return err
}

// waitActive waits until each named table is ACTIVE.
func waitActive(ctx context.Context, t testing.TB, db *dynamodb.Client, names ...string) {
	t.Helper()
	w := dynamodb.NewTableExistsWaiter(db, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 500*time.Millisecond
	})
	for _, name := range names {
		if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, 20*time.Second); err != nil {
			t.Fatalf("table %s not active: %v", name, err)
		}
	}
}

// createActive creates the table in describes, in cfg's region, and waits
// until it is active (what names it in a failure).
func createActive(t testing.TB, cfg aws.Config, what string, in *dynamodb.CreateTableInput) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(cfg)
	if err := createTable(ctx, db, in); err != nil {
		t.Fatalf("create %s table %s: %v", what, aws.ToString(in.TableName), err)
	}
	waitActive(ctx, t, db, aws.ToString(in.TableName))
}
