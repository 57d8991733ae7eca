package awsddb

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/ddbitem"
	"github.com/mriot/mriot/internal/fleet"
)

// fakeClient answers every call with err when set, or with out* values; it
// records the last input of each call.
type fakeClient struct {
	err     error
	get     *dynamodb.GetItemInput
	put     *dynamodb.PutItemInput
	del     *dynamodb.DeleteItemInput
	query   *dynamodb.QueryInput
	scan    *dynamodb.ScanInput
	getOut  *dynamodb.GetItemOutput
	scanOut *dynamodb.ScanOutput
}

func (f *fakeClient) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	f.get = in
	if f.err != nil {
		return nil, f.err
	}
	if f.getOut != nil {
		return f.getOut, nil
	}
	return &dynamodb.GetItemOutput{}, nil
}
func (f *fakeClient) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	f.put = in
	return &dynamodb.PutItemOutput{}, f.err
}
func (f *fakeClient) DeleteItem(_ context.Context, in *dynamodb.DeleteItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	f.del = in
	return &dynamodb.DeleteItemOutput{}, f.err
}
func (f *fakeClient) Query(_ context.Context, in *dynamodb.QueryInput, _ ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	f.query = in
	if f.err != nil {
		return nil, f.err
	}
	return &dynamodb.QueryOutput{}, nil
}
func (f *fakeClient) Scan(_ context.Context, in *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	f.scan = in
	if f.err != nil {
		return nil, f.err
	}
	if f.scanOut != nil {
		return f.scanOut, nil
	}
	return &dynamodb.ScanOutput{}, nil
}

var _ Client = (*fakeClient)(nil)

func sdkError(op string, exc error) error {
	return &smithy.OperationError{ServiceID: "DynamoDB", OperationName: op, Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400}}, Err: exc,
	}}
}

var ops = map[string]func(context.Context, Client) error{
	"Get": func(ctx context.Context, c Client) error {
		_, err := NewInventory(c, "inv").Get(ctx, "t1")
		return err
	},
	"Create": func(ctx context.Context, c Client) error {
		return NewInventory(c, "inv").Create(ctx, fleet.Device{ThingName: "t1", CertificateID: "c", Version: 1})
	},
	"Delete": func(ctx context.Context, c Client) error { return NewInventory(c, "inv").Delete(ctx, "t1") },
	"DeleteVersion": func(ctx context.Context, c Client) error {
		return NewInventory(c, "inv").DeleteVersion(ctx, "t1", 1)
	},
	"List": func(ctx context.Context, c Client) error {
		_, _, err := NewInventory(c, "inv").List(ctx, 5, "")
		return err
	},
	"Query": func(ctx context.Context, c Client) error {
		_, err := NewTelemetry(c, "data").Query(ctx, "t1", 5)
		return err
	},
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name string
		exc  error
		want error
	}{
		{"ConditionalCheckFailed", &types.ConditionalCheckFailedException{Message: aws.String("no")}, fleet.ErrConditionFailed},
		{"ProvisionedThroughputExceeded", &types.ProvisionedThroughputExceededException{Message: aws.String("slow")}, fleet.ErrThrottled},
		{"RequestLimitExceeded", &types.RequestLimitExceeded{Message: aws.String("slow")}, fleet.ErrThrottled},
		{"Throttling", &types.ThrottlingException{Message: aws.String("slow")}, fleet.ErrThrottled},
		{"throttled after max attempts", &retry.MaxAttemptsError{Attempt: 5, Err: &types.ThrottlingException{}}, fleet.ErrThrottled},
		{"InternalServerError", &types.InternalServerError{Message: aws.String("oops")}, fleet.ErrUnavailable},
		{"generic 5xx", &smithy.GenericAPIError{Code: "ServiceUnavailable", Fault: smithy.FaultServer}, fleet.ErrUnavailable},
		{"ResourceNotFound (table)", &types.ResourceNotFoundException{Message: aws.String("Requested resource not found")}, fleet.ErrInvalid},
		{"ValidationException", &smithy.GenericAPIError{Code: "ValidationException", Message: "bad"}, fleet.ErrInvalid},
		{"connection reset", &smithyhttp.RequestSendError{Err: errors.New("read: connection reset by peer")}, fleet.ErrUnavailable},
		{"deadline", context.DeadlineExceeded, fleet.ErrUnavailable},
	}
	all := []error{fleet.ErrNotFound, fleet.ErrAlreadyExists, fleet.ErrDeleteConflict, fleet.ErrConditionFailed,
		fleet.ErrInvalid, fleet.ErrThrottled, fleet.ErrUnavailable}
	for _, tt := range tests {
		for op, call := range ops {
			t.Run(tt.name+"/"+op, func(t *testing.T) {
				sdkErr := sdkError(op, tt.exc)
				err := call(context.Background(), &fakeClient{err: sdkErr})
				if !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want it to wrap %v", err, tt.want)
				}
				if !errors.Is(err, sdkErr) {
					t.Errorf("err = %v does not keep the SDK error", err)
				}
				for _, other := range all {
					if other != tt.want && errors.Is(err, other) {
						t.Errorf("err = %v also wraps %v", err, other)
					}
				}
				var rnf *types.ResourceNotFoundException
				if errors.As(tt.exc, &rnf) {
					for _, want := range []string{"table", "does not exist"} {
						if !strings.Contains(err.Error(), want) {
							t.Errorf("missing-table error %q lacks %q", err, want)
						}
					}
				}
			})
		}
	}
}

func TestUpdateConditionFailure(t *testing.T) {
	old := map[string]types.AttributeValue{
		ddbitem.AttrThingName: &types.AttributeValueMemberS{Value: "t1"},
		ddbitem.AttrVersion:   &types.AttributeValueMemberN{Value: "3"},
	}
	tests := []struct {
		name string
		exc  error
		want error
	}{
		{"absent item", &types.ConditionalCheckFailedException{Message: aws.String("failed")}, fleet.ErrNotFound},
		{"other version", &types.ConditionalCheckFailedException{Message: aws.String("failed"), Item: old}, fleet.ErrConditionFailed},
		{"throttled", &types.ProvisionedThroughputExceededException{}, fleet.ErrThrottled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeClient{err: sdkError("PutItem", tt.exc)}
			err := NewInventory(f, "inv").Update(context.Background(), fleet.Device{ThingName: "t1", Version: 3}, 2)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if f.put.ReturnValuesOnConditionCheckFailure != types.ReturnValuesOnConditionCheckFailureAllOld {
				t.Errorf("Update does not ask for the old item on a failed condition")
			}
		})
	}
}

func TestTelemetryPutDuplicateIsAlreadyExists(t *testing.T) {
	f := &fakeClient{err: sdkError("PutItem", &types.ConditionalCheckFailedException{Message: aws.String("failed")})}
	err := NewTelemetry(f, "data").Put(context.Background(), fleet.Message{Device: "t1", Timestamp: 5, ID: "a"})
	if !errors.Is(err, fleet.ErrAlreadyExists) || errors.Is(err, fleet.ErrConditionFailed) {
		t.Fatalf("err = %v, want ErrAlreadyExists only", err)
	}
}

// expressionText resolves the #names of an expression, for assertions.
func expressionText(expr *string, names map[string]string) string {
	s := aws.ToString(expr)
	for k, v := range names {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

func TestRequests(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{}
	inv := NewInventory(f, "inv-table")
	tel := NewTelemetry(f, "data-table")

	d := fleet.Device{ThingName: "t1", CertificateID: "cert-1", Status: fleet.StatusActive, Version: 1}
	if err := inv.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	want, err := ddbitem.MarshalDevice(d)
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(f.put.TableName) != "inv-table" || len(f.put.Item) != len(want) {
		t.Errorf("Create put %d attributes into %s, want the %d of ddbitem into inv-table", len(f.put.Item), aws.ToString(f.put.TableName), len(want))
	}
	cond := expressionText(f.put.ConditionExpression, f.put.ExpressionAttributeNames)
	for _, part := range []string{"attribute_not_exists (ThingName)", "OR", "CertificateId =", "Status ="} {
		if !strings.Contains(cond, part) {
			t.Errorf("Create condition %q lacks %q", cond, part)
		}
	}
	var values []string
	for _, v := range f.put.ExpressionAttributeValues {
		if s, ok := v.(*types.AttributeValueMemberS); ok {
			values = append(values, s.Value)
		}
	}
	if strings.Join(values, ",") != "cert-1,ACTIVE" && strings.Join(values, ",") != "ACTIVE,cert-1" {
		t.Errorf("Create condition values %v, want cert-1 and ACTIVE", values)
	}

	if err := inv.Update(ctx, fleet.Device{ThingName: "t1", Version: 8}, 7); err != nil {
		t.Fatal(err)
	}
	if cond := expressionText(f.put.ConditionExpression, f.put.ExpressionAttributeNames); !strings.Contains(cond, "Version =") {
		t.Errorf("Update condition %q, want Version = :expect", cond)
	}
	for _, v := range f.put.ExpressionAttributeValues {
		if n, ok := v.(*types.AttributeValueMemberN); !ok || n.Value != "7" {
			t.Errorf("Update expects %#v, want N 7", v)
		}
	}

	if err := inv.DeleteVersion(ctx, "t1", 3); err != nil {
		t.Fatal(err)
	}
	if aws.ToString(f.del.TableName) != "inv-table" {
		t.Errorf("DeleteVersion table %s, want inv-table", aws.ToString(f.del.TableName))
	}
	cond = expressionText(f.del.ConditionExpression, f.del.ExpressionAttributeNames)
	for _, part := range []string{"attribute_not_exists (ThingName)", "OR", "Version ="} {
		if !strings.Contains(cond, part) {
			t.Errorf("DeleteVersion condition %q lacks %q", cond, part)
		}
	}
	for _, v := range f.del.ExpressionAttributeValues {
		if n, ok := v.(*types.AttributeValueMemberN); !ok || n.Value != "3" {
			t.Errorf("DeleteVersion expects %#v, want N 3", v)
		}
	}

	if err := tel.Put(ctx, fleet.Message{Device: "t1", Timestamp: 5, ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if cond := expressionText(f.put.ConditionExpression, f.put.ExpressionAttributeNames); cond != "attribute_not_exists (SK)" {
		t.Errorf("Put condition %q, want attribute_not_exists (SK)", cond)
	}

	if _, err := tel.Query(ctx, "t1", 3); err != nil {
		t.Fatal(err)
	}
	q := f.query
	if aws.ToBool(q.ScanIndexForward) || aws.ToInt32(q.Limit) != 3 || aws.ToString(q.TableName) != "data-table" {
		t.Errorf("Query input forward=%v limit=%d table=%s, want newest first, 3, data-table",
			aws.ToBool(q.ScanIndexForward), aws.ToInt32(q.Limit), aws.ToString(q.TableName))
	}
	if kc := expressionText(q.KeyConditionExpression, q.ExpressionAttributeNames); kc != "PK = :0" {
		t.Errorf("Query key condition %q, want PK = :0", kc)
	}

	if _, err := inv.Get(ctx, "t1"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("Get of an empty answer: %v, want ErrNotFound", err)
	}
	if !aws.ToBool(f.get.ConsistentRead) {
		t.Error("Get is not a consistent read")
	}
}

func TestListCursor(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{scanOut: &dynamodb.ScanOutput{
		Items: []map[string]types.AttributeValue{{
			ddbitem.AttrThingName: &types.AttributeValueMemberS{Value: "t2"},
			ddbitem.AttrVersion:   &types.AttributeValueMemberN{Value: "1"},
		}},
		LastEvaluatedKey: ddbitem.DeviceKey("t2"),
	}}
	inv := NewInventory(f, "inv")
	devs, next, err := inv.List(ctx, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].ThingName != "t2" || next == "" {
		t.Fatalf("List = %v, %q", devs, next)
	}
	if strings.Contains(next, "t2") {
		t.Errorf("cursor %q shows the thing name: not opaque", next)
	}
	if f.scan.ExclusiveStartKey != nil {
		t.Error("first page has a start key")
	}
	if _, _, err := inv.List(ctx, 1, next); err != nil {
		t.Fatal(err)
	}
	if s, ok := f.scan.ExclusiveStartKey[ddbitem.AttrThingName].(*types.AttributeValueMemberS); !ok || s.Value != "t2" {
		t.Errorf("second page starts at %#v, want t2", f.scan.ExclusiveStartKey)
	}

	for _, bad := range []string{"t2", "!!!", "e30", "eyJ0IjoiYmFkIG5hbWUifQ"} { // name, not base64, {}, {"t":"bad name"}
		if _, _, err := inv.List(ctx, 1, bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("List with cursor %q: err = %v, want ErrInvalid", bad, err)
		}
	}
	for _, limit := range []int{0, -1} {
		if _, _, err := inv.List(ctx, limit, ""); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("List limit %d: err = %v, want ErrInvalid", limit, err)
		}
	}
}

func TestInvalidNamesNeverReachDynamoDB(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{}
	inv, tel := NewInventory(f, "inv"), NewTelemetry(f, "data")
	calls := map[string]func() error{
		"Get":           func() error { _, err := inv.Get(ctx, "bad name"); return err },
		"Create":        func() error { return inv.Create(ctx, fleet.Device{ThingName: ""}) },
		"Update":        func() error { return inv.Update(ctx, fleet.Device{ThingName: "a/b"}, 1) },
		"Delete":        func() error { return inv.Delete(ctx, "bad name") },
		"DeleteVersion": func() error { return inv.DeleteVersion(ctx, "bad name", 1) },
		"Put":           func() error { return tel.Put(ctx, fleet.Message{Device: "bad name"}) },
		"Query":         func() error { _, err := tel.Query(ctx, "bad name", 1); return err },
		"Query0":        func() error { _, err := tel.Query(ctx, "ok", 0); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if f.get != nil || f.put != nil || f.del != nil || f.query != nil {
		t.Error("an invalid request reached DynamoDB")
	}
}

func FuzzDecodeCursor(f *testing.F) {
	good, err := encodeCursor(ddbitem.DeviceKey("thing-1"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, "", "e30", "!!!", "eyJ0IjoiIn0", "bnVsbA"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, c string) {
		name, err := DecodeCursor(c)
		if err != nil {
			if !errors.Is(err, fleet.ErrInvalid) {
				t.Fatalf("DecodeCursor(%q) error %v does not wrap ErrInvalid", c, err)
			}
			return
		}
		if err := fleet.ValidateThingName(name); err != nil {
			t.Fatalf("DecodeCursor(%q) = %q, an invalid thing name", c, name)
		}
		again, err := encodeCursor(ddbitem.DeviceKey(name))
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecodeCursor(again); err != nil || back != name {
			t.Fatalf("round trip of %q: %q, %v", name, back, err)
		}
	})
}
