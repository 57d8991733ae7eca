package awsddb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// fakeClient answers every call with err when set, or with out* values; it
// records the last input of each call.
type fakeClient struct {
	err     error
	get     *dynamodb.GetItemInput
	put     *dynamodb.PutItemInput
	del     *dynamodb.DeleteItemInput
	upd     *dynamodb.UpdateItemInput
	query   *dynamodb.QueryInput
	scan    *dynamodb.ScanInput
	getOut  *dynamodb.GetItemOutput
	scanOut *dynamodb.ScanOutput
	updOut  *dynamodb.UpdateItemOutput
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
func (f *fakeClient) UpdateItem(_ context.Context, in *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	f.upd = in
	if f.err != nil {
		return nil, f.err
	}
	if f.updOut != nil {
		return f.updOut, nil
	}
	return &dynamodb.UpdateItemOutput{}, nil
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
	"ByCertificate": func(ctx context.Context, c Client) error {
		_, err := NewInventory(c, "inv").ByCertificate(ctx, "cert-1")
		return err
	},
	"GetLease": func(ctx context.Context, c Client) error {
		_, err := NewLeases(c, "leases").Get(ctx, "t1")
		return err
	},
	"Pending": func(ctx context.Context, c Client) error {
		_, _, err := NewLeases(c, "leases").Pending(ctx, 5, "")
		return err
	},
	"LoadCursor": func(ctx context.Context, c Client) error {
		_, err := NewLeases(c, "leases").LoadCursor(ctx)
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
	rec, err := encodeCursor(ddbitem.RevocationKey("thing-1"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{good, rec, "", "e30", "!!!", "eyJ0IjoiIn0", "bnVsbA"} {
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
		// A thing name, or a revocation record's key.
		if thing, _ := ddbitem.IsRevocationKey(name); fleet.ValidateThingName(thing) != nil {
			t.Fatalf("DecodeCursor(%q) = %q, neither a thing name nor a revocation key", c, name)
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

func TestLeaseConditionFailures(t *testing.T) {
	ctx := context.Background()
	until := time.UnixMilli(1700000060123).UTC()
	holderItem := map[string]types.AttributeValue{
		ddbitem.AttrThingName:  &types.AttributeValueMemberS{Value: "t1"},
		ddbitem.AttrOwner:      &types.AttributeValueMemberS{Value: "run-a"},
		ddbitem.AttrFence:      &types.AttributeValueMemberN{Value: "4"},
		ddbitem.AttrLeaseUntil: ddbitem.MillisValue(until),
	}
	ccf := func(item map[string]types.AttributeValue) error {
		return sdkError("UpdateItem", &types.ConditionalCheckFailedException{Message: aws.String("failed"), Item: item})
	}
	l := fleet.Lease{ThingName: "t1", Owner: "run-b", Fence: 3}

	f := &fakeClient{err: ccf(holderItem)}
	_, err := NewLeases(f, "leases").Acquire(ctx, "t1", "run-b", until.Add(-time.Second), until.Add(time.Minute))
	var held *fleet.LeaseHeldError
	if !errors.As(err, &held) || held.Owner != "run-a" || !held.Until.Equal(until) || held.ThingName != "t1" {
		t.Fatalf("Acquire while held: err = %v, want a LeaseHeldError naming run-a until %v", err, until)
	}
	if !errors.Is(err, fleet.ErrBusy) || errors.Is(err, fleet.ErrConditionFailed) {
		t.Errorf("Acquire while held: err = %v, want ErrBusy only", err)
	}
	if f.upd.ReturnValuesOnConditionCheckFailure != types.ReturnValuesOnConditionCheckFailureAllOld {
		t.Error("Acquire does not ask for the holder's item on a failed condition")
	}

	writes := map[string]func(Client) error{
		"Renew":   func(c Client) error { _, err := NewLeases(c, "leases").Renew(ctx, l, until); return err },
		"Note":    func(c Client) error { return NewLeases(c, "leases").Note(ctx, l, "cert-1") },
		"Release": func(c Client) error { return NewLeases(c, "leases").Release(ctx, l, fleet.Ledger{}) },
	}
	for name, write := range writes {
		for _, item := range []map[string]types.AttributeValue{holderItem, nil} {
			err := write(&fakeClient{err: ccf(item)})
			if !errors.Is(err, fleet.ErrLeaseLost) || errors.Is(err, fleet.ErrConditionFailed) {
				t.Errorf("%s by a stale holder (old item %v): err = %v, want ErrLeaseLost only", name, item != nil, err)
			}
		}
		err := write(&fakeClient{err: sdkError("UpdateItem", &types.ThrottlingException{Message: aws.String("slow")})})
		if !errors.Is(err, fleet.ErrThrottled) || errors.Is(err, fleet.ErrLeaseLost) {
			t.Errorf("%s throttled: err = %v, want ErrThrottled", name, err)
		}
	}

	err = func() error {
		_, err := NewLeases(&fakeClient{err: sdkError("PutItem", &types.ConditionalCheckFailedException{Message: aws.String("failed")})}, "leases").
			SaveCursor(ctx, fleet.ReconcileCursor{Revision: 2})
		return err
	}()
	if !errors.Is(err, fleet.ErrConditionFailed) {
		t.Errorf("SaveCursor at a stale revision: err = %v, want ErrConditionFailed", err)
	}
}

func TestLeaseRequests(t *testing.T) {
	ctx := context.Background()
	now := time.UnixMilli(1700000000123)
	f := &fakeClient{updOut: &dynamodb.UpdateItemOutput{Attributes: map[string]types.AttributeValue{
		ddbitem.AttrThingName:  &types.AttributeValueMemberS{Value: "t1"},
		ddbitem.AttrOwner:      &types.AttributeValueMemberS{Value: "run-a"},
		ddbitem.AttrFence:      &types.AttributeValueMemberN{Value: "1"},
		ddbitem.AttrLeaseUntil: ddbitem.MillisValue(now.Add(time.Minute)),
	}}}
	ls := NewLeases(f, "lease-table")
	l, err := ls.Acquire(ctx, "t1", "run-a", now, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if l.Owner != "run-a" || l.Fence != 1 || !l.Until.Equal(now.Add(time.Minute)) {
		t.Errorf("Acquire = %+v, want the stored lease", l)
	}
	if aws.ToString(f.upd.TableName) != "lease-table" || f.upd.ReturnValues != types.ReturnValueAllNew {
		t.Errorf("Acquire updates %s returning %s, want lease-table and ALL_NEW", aws.ToString(f.upd.TableName), f.upd.ReturnValues)
	}
	cond := expressionText(f.upd.ConditionExpression, f.upd.ExpressionAttributeNames)
	for _, part := range []string{"attribute_not_exists (Owner)", "OR", "LeaseUntil <="} {
		if !strings.Contains(cond, part) {
			t.Errorf("Acquire condition %q lacks %q", cond, part)
		}
	}
	upd := expressionText(f.upd.UpdateExpression, f.upd.ExpressionAttributeNames)
	for _, part := range []string{"SET", "Owner =", "LeaseUntil =", "ADD Fence"} {
		if !strings.Contains(upd, part) {
			t.Errorf("Acquire update %q lacks %q", upd, part)
		}
	}
	var millis []string
	for _, v := range f.upd.ExpressionAttributeValues {
		if n, ok := v.(*types.AttributeValueMemberN); ok {
			millis = append(millis, n.Value)
		}
	}
	if !slices.Contains(millis, "1700000000123") || !slices.Contains(millis, "1700000060123") {
		t.Errorf("Acquire numbers %v, want now and until in epoch milliseconds", millis)
	}

	if err := ls.Note(ctx, l, "c2", "c1", "c2"); err != nil {
		t.Fatal(err)
	}
	if upd := expressionText(f.upd.UpdateExpression, f.upd.ExpressionAttributeNames); !strings.HasPrefix(upd, "ADD Certificates") {
		t.Errorf("Note update %q, want ADD Certificates", upd)
	}
	for _, v := range f.upd.ExpressionAttributeValues {
		if ss, ok := v.(*types.AttributeValueMemberSS); ok && !slices.Equal(ss.Value, []string{"c1", "c2"}) {
			t.Errorf("Note adds %v, want [c1 c2] without the duplicate", ss.Value)
		}
	}
	f.upd = nil
	if err := ls.Note(ctx, l); err != nil || f.upd != nil {
		t.Errorf("Note of nothing: %v, request sent %v", err, f.upd != nil)
	}

	if err := ls.Release(ctx, l, fleet.Ledger{Converged: fleet.Converged{Version: 2, Status: fleet.StatusActive, CertificateID: "c1"}}); err != nil {
		t.Fatal(err)
	}
	cond = expressionText(f.upd.ConditionExpression, f.upd.ExpressionAttributeNames)
	if !strings.Contains(cond, "Owner =") || !strings.Contains(cond, "AND") || !strings.Contains(cond, "Fence =") {
		t.Errorf("Release condition %q, want Owner = :owner AND Fence = :fence", cond)
	}
	upd = expressionText(f.upd.UpdateExpression, f.upd.ExpressionAttributeNames)
	for _, part := range []string{"REMOVE", "Owner", "LeaseUntil", "Certificates", "Obligations", "SET", "ConvergedVersion ="} {
		if !strings.Contains(upd, part) {
			t.Errorf("Release update %q lacks %q", upd, part)
		}
	}

	if _, _, err := ls.Pending(ctx, 3, fleet.ReconcileCursorKey); err != nil {
		t.Fatal(err)
	}
	if filter := expressionText(f.scan.FilterExpression, f.scan.ExpressionAttributeNames); filter != "attribute_exists (Obligations)" {
		t.Errorf("Pending filter %q, want attribute_exists (Obligations)", filter)
	}
	if s, ok := f.scan.ExclusiveStartKey[ddbitem.AttrThingName].(*types.AttributeValueMemberS); !ok || s.Value != fleet.ReconcileCursorKey {
		t.Errorf("Pending after the cursor item starts at %#v", f.scan.ExclusiveStartKey)
	}
	if aws.ToInt32(f.scan.Limit) != 3 || !aws.ToBool(f.scan.ConsistentRead) {
		t.Errorf("Pending limit %d consistent %v, want 3 and a consistent read", aws.ToInt32(f.scan.Limit), aws.ToBool(f.scan.ConsistentRead))
	}

	if _, err := ls.SaveCursor(ctx, fleet.ReconcileCursor{Pass: 1}); err != nil {
		t.Fatal(err)
	}
	if cond := expressionText(f.put.ConditionExpression, f.put.ExpressionAttributeNames); !strings.Contains(cond, "attribute_not_exists (Revision)") {
		t.Errorf("SaveCursor at revision 0: condition %q, want attribute_not_exists (Revision) OR Revision = :0", cond)
	}
	if n, ok := f.put.Item[ddbitem.AttrRevision].(*types.AttributeValueMemberN); !ok || n.Value != "1" {
		t.Errorf("SaveCursor at revision 0 writes revision %#v, want 1", f.put.Item[ddbitem.AttrRevision])
	}

	inv := NewInventory(f, "inv-table")
	if _, err := inv.ByCertificate(ctx, "cert-1"); !errors.Is(err, fleet.ErrNotFound) {
		t.Errorf("ByCertificate of an empty answer: %v, want ErrNotFound", err)
	}
	if aws.ToString(f.query.IndexName) != ddbitem.InventoryCertificateIndex || f.query.ConsistentRead != nil {
		t.Errorf("ByCertificate queries index %q consistent %v, want %s and no consistent read (a GSI has none)",
			aws.ToString(f.query.IndexName), f.query.ConsistentRead, ddbitem.InventoryCertificateIndex)
	}
}

func TestLeaseInvalidArgumentsNeverReachDynamoDB(t *testing.T) {
	ctx := context.Background()
	f := &fakeClient{}
	ls, inv := NewLeases(f, "leases"), NewInventory(f, "inv")
	now := time.Now()
	calls := map[string]func() error{
		"Acquire bad name": func() error { _, err := ls.Acquire(ctx, "bad name", "o", now, now); return err },
		"Acquire cursor":   func() error { _, err := ls.Acquire(ctx, fleet.ReconcileCursorKey, "o", now, now); return err },
		"Acquire no owner": func() error { _, err := ls.Acquire(ctx, "t1", "", now, now); return err },
		"Renew":            func() error { _, err := ls.Renew(ctx, fleet.Lease{ThingName: "t1"}, now); return err },
		"Note":             func() error { return ls.Note(ctx, fleet.Lease{ThingName: "a/b", Owner: "o"}, "c") },
		"Release":          func() error { return ls.Release(ctx, fleet.Lease{Owner: "o"}, fleet.Ledger{}) },
		"Get":              func() error { _, err := ls.Get(ctx, fleet.ReconcileCursorKey); return err },
		"Pending":          func() error { _, _, err := ls.Pending(ctx, 0, ""); return err },
		"ByCertificate":    func() error { _, err := inv.ByCertificate(ctx, ""); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if f.get != nil || f.put != nil || f.upd != nil || f.scan != nil || f.query != nil {
		t.Error("an invalid request reached DynamoDB")
	}
}

// wireServer answers DynamoDB requests in order with canned responses: a
// status and a JSON body each. It counts the requests.
type wireServer struct {
	responses []wireResponse
	requests  atomic.Int32
}

type wireResponse struct {
	status int
	body   string
}

func (w *wireServer) ServeHTTP(rw http.ResponseWriter, _ *http.Request) {
	i := int(w.requests.Add(1)) - 1
	r := wireResponse{500, `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"no more canned responses"}`}
	if i < len(w.responses) {
		r = w.responses[i]
	}
	rw.Header().Set("Content-Type", "application/x-amz-json-1.0")
	rw.WriteHeader(r.status)
	_, _ = io.WriteString(rw, r.body)
}

// lostAnswer is a 5xx after which the SDK retries: the test treats the
// request as applied and its answer as lost.
var lostAnswer = wireResponse{500, `{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"lost"}`}

func conditionFailed(item string) wireResponse {
	return wireResponse{400, `{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":` + item + `}`}
}

// wireClient is a real SDK client on srv, retrying at once.
func wireClient(srv *httptest.Server) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		Region:       "us-west-2",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			o.RateLimiter = ratelimit.None
		}),
	})
}

// TestRetriedWritesRecognizeTheirOwnResult: a conditional write whose first
// attempt was applied but answered with a 5xx is retried by the SDK, and the
// retry's condition fails on the write's own result. Acquire, Release and
// SaveCursor recognize it only on a retried call.
func TestRetriedWritesRecognizeTheirOwnResult(t *testing.T) {
	ctx := context.Background()
	until := time.UnixMilli(1700000060123)
	heldBy := func(owner string, fence int) string {
		return fmt.Sprintf(`{"ThingName":{"S":"t1"},"Owner":{"S":%q},"Fence":{"N":"%d"},"LeaseUntil":{"N":"%d"}}`, owner, fence, until.UnixMilli())
	}
	freeAt := func(fence int) string {
		return fmt.Sprintf(`{"ThingName":{"S":"t1"},"Fence":{"N":"%d"},"ConvergedVersion":{"N":"0"},"ConvergedStatus":{"S":""},"ConvergedCertificateId":{"S":""}}`, fence)
	}
	saved := fleet.ReconcileCursor{Phase: "leases", Cursor: "t1", Pass: 2, PassStarted: time.UnixMilli(1700000000000), Revision: 4}
	savedJSON := `{"ThingName":{"S":"#reconcile"},"Phase":{"S":"leases"},"Cursor":{"S":"t1"},"Pass":{"N":"2"},"PassStarted":{"N":"1700000000000"},"Revision":{"N":"4"}}`
	lease := fleet.Lease{ThingName: "t1", Owner: "run-a", Fence: 3}
	tests := []struct {
		name      string
		responses []wireResponse
		call      func(*Leases) error
		want      error // nil: success
	}{
		{"Acquire retried onto its own lease", []wireResponse{lostAnswer, conditionFailed(heldBy("run-a", 3))}, func(ls *Leases) error {
			l, err := ls.Acquire(ctx, "t1", "run-a", until.Add(-time.Minute), until)
			if err == nil && (l.Owner != "run-a" || l.Fence != 3 || !l.Until.Equal(until)) {
				return fmt.Errorf("lease %+v, want run-a's at fence 3", l)
			}
			return err
		}, nil},
		{"Acquire retried onto another holder", []wireResponse{lostAnswer, conditionFailed(heldBy("run-b", 3))}, func(ls *Leases) error {
			_, err := ls.Acquire(ctx, "t1", "run-a", until.Add(-time.Minute), until)
			return err
		}, fleet.ErrBusy},
		{"Acquire not retried onto the same owner and until: not reentrant", []wireResponse{conditionFailed(heldBy("run-a", 3))}, func(ls *Leases) error {
			_, err := ls.Acquire(ctx, "t1", "run-a", until.Add(-time.Minute), until)
			return err
		}, fleet.ErrBusy},
		{"Release retried onto its own release", []wireResponse{lostAnswer, conditionFailed(freeAt(3))}, func(ls *Leases) error {
			return ls.Release(ctx, lease, fleet.Ledger{})
		}, nil},
		{"Release retried onto a later acquisition's release", []wireResponse{lostAnswer, conditionFailed(freeAt(4))}, func(ls *Leases) error {
			return ls.Release(ctx, lease, fleet.Ledger{})
		}, fleet.ErrLeaseLost},
		{"Release retried onto a holder", []wireResponse{lostAnswer, conditionFailed(heldBy("run-a", 3))}, func(ls *Leases) error {
			return ls.Release(ctx, lease, fleet.Ledger{})
		}, fleet.ErrLeaseLost},
		{"Release not retried onto a free item at its fence", []wireResponse{conditionFailed(freeAt(3))}, func(ls *Leases) error {
			return ls.Release(ctx, lease, fleet.Ledger{})
		}, fleet.ErrLeaseLost},
		{"SaveCursor retried onto its own save", []wireResponse{lostAnswer, conditionFailed(savedJSON)}, func(ls *Leases) error {
			got, err := ls.SaveCursor(ctx, withRevision(saved, 3))
			if err == nil && got != saved {
				return fmt.Errorf("saved %+v, want %+v", got, saved)
			}
			return err
		}, nil},
		{"SaveCursor retried onto another save", []wireResponse{lostAnswer, conditionFailed(strings.Replace(savedJSON, `"t1"`, `"t9"`, 1))}, func(ls *Leases) error {
			_, err := ls.SaveCursor(ctx, withRevision(saved, 3))
			return err
		}, fleet.ErrConditionFailed},
		{"SaveCursor not retried onto the same item", []wireResponse{conditionFailed(savedJSON)}, func(ls *Leases) error {
			_, err := ls.SaveCursor(ctx, withRevision(saved, 3))
			return err
		}, fleet.ErrConditionFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &wireServer{responses: tt.responses}
			srv := httptest.NewServer(w)
			defer srv.Close()
			err := tt.call(NewLeases(wireClient(srv), "leases"))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("err = %v, want success", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := int(w.requests.Load()); got != len(tt.responses) {
				t.Errorf("%d requests, want %d", got, len(tt.responses))
			}
		})
	}
}

func withRevision(c fleet.ReconcileCursor, rev int64) fleet.ReconcileCursor {
	c.Revision = rev
	return c
}
