// Package awsddb is the DynamoDB adapter of the device inventory
// (contract.Inventory) and the data table (contract.Telemetry), over one
// region's replica of each global table, and of the regional JITR claims
// table (contract.Claims) and device lease table (contract.Leases). Items are built only with internal/aws/ddbitem, so the
// in-memory tables and this adapter write the same items. Errors are mapped
// onto the fleet sentinels.
package awsddb

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Client is the part of the DynamoDB SDK client the adapters use;
// *dynamodb.Client satisfies it.
type Client interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, optFns ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, optFns ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, optFns ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

var _ Client = (*dynamodb.Client)(nil)

type common struct {
	client Client
	table  string
}

// getItem reads key from c's table with a strongly consistent read and
// decodes it with unmarshal; what names the read in errors (ErrNotFound
// when there is no item).
func getItem[T any](ctx context.Context, c *common, key map[string]types.AttributeValue, unmarshal func(map[string]types.AttributeValue) (T, error), what string) (T, error) {
	var zero T
	out, err := c.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(c.table),
		Key:            key,
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return zero, c.wrap(err, "%s", what)
	}
	if len(out.Item) == 0 {
		return zero, fmt.Errorf("%s: %w", what, fleet.ErrNotFound)
	}
	v, err := unmarshal(out.Item)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// Inventory is the device inventory on one region's replica.
type Inventory struct{ common }

// NewInventory returns the inventory adapter over table.
func NewInventory(client Client, table string) *Inventory {
	return &Inventory{common{client: client, table: table}}
}

// Get reads the device with a strongly consistent read (ErrNotFound).
func (inv *Inventory) Get(ctx context.Context, thingName string) (fleet.Device, error) {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fleet.Device{}, fmt.Errorf("get device: %w", err)
	}
	return getItem(ctx, &inv.common, ddbitem.DeviceKey(thingName), ddbitem.UnmarshalDevice, "get device "+thingName)
}

// createCondition: no item, or the same certificate and ACTIVE (another
// region onboarding the same device at the same time).
func createCondition(certificateID string) expression.ConditionBuilder {
	return expression.AttributeNotExists(expression.Name(ddbitem.AttrThingName)).Or(
		expression.Name(ddbitem.AttrCertificateID).Equal(expression.Value(certificateID)).And(
			expression.Name(ddbitem.AttrStatus).Equal(expression.Value(string(fleet.StatusActive)))))
}

// Create writes d under createCondition (ErrConditionFailed).
func (inv *Inventory) Create(ctx context.Context, d fleet.Device) error {
	if err := fleet.ValidateThingName(d.ThingName); err != nil {
		return fmt.Errorf("create device: %w", err)
	}
	item, err := ddbitem.MarshalDevice(d)
	if err != nil {
		return fmt.Errorf("create device: %w", err)
	}
	expr, err := expression.NewBuilder().WithCondition(createCondition(d.CertificateID)).Build()
	if err != nil {
		return fmt.Errorf("create device %s: build condition: %w", d.ThingName, err)
	}
	_, err = inv.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(inv.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	return inv.wrap(err, "create device %s", d.ThingName)
}

// Update replaces the item with d if its Version is expectVersion
// (ErrConditionFailed), and ErrNotFound when there is no item: the failed
// condition returns the old item, absent for a missing device.
func (inv *Inventory) Update(ctx context.Context, d fleet.Device, expectVersion int64) error {
	if err := fleet.ValidateThingName(d.ThingName); err != nil {
		return fmt.Errorf("update device: %w", err)
	}
	item, err := ddbitem.MarshalDevice(d)
	if err != nil {
		return fmt.Errorf("update device: %w", err)
	}
	cond := expression.Name(ddbitem.AttrVersion).Equal(expression.Value(expectVersion))
	expr, err := expression.NewBuilder().WithCondition(cond).Build()
	if err != nil {
		return fmt.Errorf("update device %s: build condition: %w", d.ThingName, err)
	}
	_, err = inv.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(inv.table),
		Item:                                item,
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) && len(ccf.Item) == 0 {
		return fmt.Errorf("update device %s: %w: %w", d.ThingName, fleet.ErrNotFound, err)
	}
	return inv.wrap(err, "update device %s from version %d", d.ThingName, expectVersion)
}

// Delete removes the device; an absent one is a success.
func (inv *Inventory) Delete(ctx context.Context, thingName string) error {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	_, err := inv.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(inv.table),
		Key:       ddbitem.DeviceKey(thingName),
	})
	return inv.wrap(err, "delete device %s", thingName)
}

// DeleteVersion removes the device if its Version is version
// (ErrConditionFailed otherwise, and the item is left as it is); an absent
// one is a success: attribute_not_exists(ThingName) OR Version = :v.
func (inv *Inventory) DeleteVersion(ctx context.Context, thingName string, version int64) error {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	cond := expression.AttributeNotExists(expression.Name(ddbitem.AttrThingName)).Or(
		expression.Name(ddbitem.AttrVersion).Equal(expression.Value(version)))
	expr, err := expression.NewBuilder().WithCondition(cond).Build()
	if err != nil {
		return fmt.Errorf("delete device %s: build condition: %w", thingName, err)
	}
	_, err = inv.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(inv.table),
		Key:                       ddbitem.DeviceKey(thingName),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	return inv.wrap(err, "delete device %s at version %d", thingName, version)
}

// cursor is the JSON inside an opaque List cursor: the key DynamoDB's Scan
// stopped at.
type cursor struct {
	ThingName string `json:"t"`
}

func encodeCursor(last map[string]types.AttributeValue) (string, error) {
	s, ok := last[ddbitem.AttrThingName].(*types.AttributeValueMemberS)
	if !ok || s.Value == "" {
		return "", fmt.Errorf("last evaluated key without %s: %w", ddbitem.AttrThingName, fleet.ErrInvalid)
	}
	b, err := json.Marshal(cursor{ThingName: s.Value})
	if err != nil {
		return "", fmt.Errorf("encode cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// DecodeCursor returns the inventory key inside a List cursor: a thing
// name, or a revocation record's key (the thing name and
// fleet.RevocationSuffix: the Scan may stop at a record). A cursor that
// List did not make is ErrInvalid.
func DecodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", fmt.Errorf("cursor %q is not base64: %w: %w", c, fleet.ErrInvalid, err)
	}
	var cur cursor
	if err := json.Unmarshal(b, &cur); err != nil {
		return "", fmt.Errorf("cursor %q: %w: %w", c, fleet.ErrInvalid, err)
	}
	if err := validateKey(cur.ThingName); err != nil {
		return "", fmt.Errorf("cursor %q: %w", c, err)
	}
	return cur.ThingName, nil
}

// validateKey checks an inventory key: a valid thing name, bare or with
// fleet.RevocationSuffix (ErrInvalid).
func validateKey(key string) error {
	thing, _ := ddbitem.IsRevocationKey(key)
	return fleet.ValidateThingName(thing)
}

// isRevocationItem reports whether an inventory item is a revocation record
// (its key ends in fleet.RevocationSuffix).
func isRevocationItem(item map[string]types.AttributeValue) bool {
	s, ok := item[ddbitem.AttrThingName].(*types.AttributeValueMemberS)
	if !ok {
		return false
	}
	_, rev := ddbitem.IsRevocationKey(s.Value)
	return rev
}

// List scans up to limit items after the cursor and returns the devices
// among them: revocation records are skipped, so a page may hold fewer
// devices than limit (even none) before the end. The next cursor is opaque
// (base64 of JSON holding the last key, which may be a revocation
// record's), "" at the end.
func (inv *Inventory) List(ctx context.Context, limit int, cur string) ([]fleet.Device, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list devices: limit %d: must be at least 1: %w", limit, fleet.ErrInvalid)
	}
	in := &dynamodb.ScanInput{
		TableName:      aws.String(inv.table),
		Limit:          aws.Int32(int32(min(limit, 1<<30))),
		ConsistentRead: aws.Bool(true),
	}
	if cur != "" {
		name, err := DecodeCursor(cur)
		if err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
		in.ExclusiveStartKey = ddbitem.DeviceKey(name)
	}
	out, err := inv.client.Scan(ctx, in)
	if err != nil {
		return nil, "", inv.wrap(err, "list devices")
	}
	devs := make([]fleet.Device, 0, len(out.Items))
	for _, item := range out.Items {
		if isRevocationItem(item) {
			continue // Revocations lists them
		}
		d, err := ddbitem.UnmarshalDevice(item)
		if err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
		devs = append(devs, d)
	}
	next := ""
	if len(out.LastEvaluatedKey) > 0 {
		if next, err = encodeCursor(out.LastEvaluatedKey); err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
	}
	return devs, next, nil
}

// ByCertificate queries the inventory's global secondary index
// CertificateIndex (KEYS_ONLY) for certID and returns the smallest thing
// name among the items found (ErrNotFound when none). A global secondary
// index is read eventually consistently (it cannot be read otherwise): an
// item written a moment ago may be missing, and one replaced or deleted a
// moment ago may still be found, so a caller confirms with Get that the
// item holds certID. A revocation record keeps its certificate id under
// RevokedCertificateId, not CertificateId, so the index never holds one.
func (inv *Inventory) ByCertificate(ctx context.Context, certID string) (string, error) {
	if certID == "" {
		return "", fmt.Errorf("find device by certificate: no certificate id: %w", fleet.ErrInvalid)
	}
	key := expression.Key(ddbitem.AttrCertificateID).Equal(expression.Value(certID))
	expr, err := expression.NewBuilder().WithKeyCondition(key).Build()
	if err != nil {
		return "", fmt.Errorf("find device by certificate %s: build key condition: %w", certID, err)
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(inv.table),
		IndexName:                 aws.String(ddbitem.InventoryCertificateIndex),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	}
	// Normally one item; several (a certificate on two devices) are read to
	// the end, so that the answer is the same whatever the page size.
	best := ""
	for {
		out, err := inv.client.Query(ctx, in)
		if err != nil {
			return "", inv.wrap(err, "find device by certificate %s", certID)
		}
		for _, item := range out.Items {
			if s, ok := item[ddbitem.AttrThingName].(*types.AttributeValueMemberS); ok && s.Value != "" && (best == "" || s.Value < best) {
				best = s.Value
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if best == "" {
		return "", fmt.Errorf("find device by certificate %s: %w", certID, fleet.ErrNotFound)
	}
	return best, nil
}

// RevokedOn queries the sparse global secondary index RevocationIndex
// (KEYS_ONLY) for the revocation records written or upgraded on day (UTC,
// 2006-01-02), every page, and returns their things, sorted. The index is
// eventually consistent: a record written a moment ago may be missing.
func (inv *Inventory) RevokedOn(ctx context.Context, day string) ([]string, error) {
	return inv.onDay(ctx, "revocations", ddbitem.InventoryRevocationIndex, ddbitem.AttrRevokedDay, day, ddbitem.IsRevocationKey)
}

// RetiringOn queries the sparse global secondary index RetirementIndex
// (KEYS_ONLY) for the devices whose earliest retiring certificate ends its
// grace on day (UTC, 2006-01-02), every page, and returns them, sorted.
// The index is eventually consistent.
func (inv *Inventory) RetiringOn(ctx context.Context, day string) ([]string, error) {
	return inv.onDay(ctx, "retirements", ddbitem.InventoryRetirementIndex, ddbitem.AttrRetireDay, day,
		func(key string) (string, bool) { return key, true })
}

// onDay queries a sparse day index (KEYS_ONLY, hash key attr) for day,
// every page, and returns the things thing makes of the items' keys (the
// keys it refuses are skipped), sorted; what names the list in errors.
func (inv *Inventory) onDay(ctx context.Context, what, index, attr, day string, thing func(key string) (string, bool)) ([]string, error) {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return nil, fmt.Errorf("list %s of %q: %w: %w", what, day, fleet.ErrInvalid, err)
	}
	key := expression.Key(attr).Equal(expression.Value(day))
	expr, err := expression.NewBuilder().WithKeyCondition(key).Build()
	if err != nil {
		return nil, fmt.Errorf("list %s of %s: build key condition: %w", what, day, err)
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(inv.table),
		IndexName:                 aws.String(index),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	}
	var things []string
	for {
		out, err := inv.client.Query(ctx, in)
		if err != nil {
			return nil, inv.wrap(err, "list %s of %s", what, day)
		}
		for _, item := range out.Items {
			if s, ok := item[ddbitem.AttrThingName].(*types.AttributeValueMemberS); ok {
				if t, ok := thing(s.Value); ok {
					things = append(things, t)
				}
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	slices.Sort(things)
	return things, nil
}

// Revocation reads the thing's revocation record with a strongly
// consistent read (ErrNotFound when there is none).
func (inv *Inventory) Revocation(ctx context.Context, thingName string) (fleet.Revocation, error) {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fleet.Revocation{}, fmt.Errorf("get revocation: %w", err)
	}
	return getItem(ctx, &inv.common, ddbitem.RevocationKey(thingName), ddbitem.UnmarshalRevocation, "get revocation of "+thingName)
}

// revokeCondition is attribute_not_exists(ThingName) OR (Status = REVOKED
// AND :new = DECOMMISSIONED), the second term known before the call: a
// REVOKED record is put only where there is none, a DECOMMISSIONED one also
// over a REVOKED record.
func revokeCondition(status fleet.Status) expression.ConditionBuilder {
	cond := expression.AttributeNotExists(expression.Name(ddbitem.AttrThingName))
	if status == fleet.StatusDecommissioned {
		cond = cond.Or(expression.Name(ddbitem.AttrStatus).Equal(expression.Value(string(fleet.StatusRevoked))))
	}
	return cond
}

// Revoke puts the revocation record under revokeCondition. A failed
// condition is a success: the stored record is at least as restrictive as
// r (DECOMMISSIONED, or REVOKED when r is REVOKED), and it is kept as it
// is. A status other than REVOKED or DECOMMISSIONED is ErrInvalid.
func (inv *Inventory) Revoke(ctx context.Context, r fleet.Revocation) error {
	item, err := ddbitem.MarshalRevocation(r)
	if err != nil {
		return fmt.Errorf("record revocation: %w", err)
	}
	expr, err := expression.NewBuilder().WithCondition(revokeCondition(r.Status)).Build()
	if err != nil {
		return fmt.Errorf("record revocation of %s: build condition: %w", r.ThingName, err)
	}
	_, err = inv.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(inv.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return nil // a record at least as restrictive is kept
	}
	return inv.wrap(err, "record revocation of %s as %s", r.ThingName, r.Status)
}

// Revocations scans one page of up to limit items after cursor (the key of
// the last item the previous page read, "" for the start) and returns the
// revocation records among them, with the key of the page's last item as
// the next cursor ("" at the end). The limit counts the items read, so a
// page may be empty with a next cursor.
func (inv *Inventory) Revocations(ctx context.Context, limit int, cursor string) ([]fleet.Revocation, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list revocations: limit %d: must be at least 1: %w", limit, fleet.ErrInvalid)
	}
	in := &dynamodb.ScanInput{
		TableName:      aws.String(inv.table),
		Limit:          aws.Int32(int32(min(limit, 1<<30))),
		ConsistentRead: aws.Bool(true),
	}
	if cursor != "" {
		if err := validateKey(cursor); err != nil {
			return nil, "", fmt.Errorf("list revocations: cursor %q: %w", cursor, err)
		}
		in.ExclusiveStartKey = ddbitem.DeviceKey(cursor)
	}
	out, err := inv.client.Scan(ctx, in)
	if err != nil {
		return nil, "", inv.wrap(err, "list revocations")
	}
	var recs []fleet.Revocation
	for _, item := range out.Items {
		if !isRevocationItem(item) {
			continue // a device item: List lists them
		}
		r, err := ddbitem.UnmarshalRevocation(item)
		if err != nil {
			return nil, "", fmt.Errorf("list revocations: %w", err)
		}
		recs = append(recs, r)
	}
	next := ""
	if len(out.LastEvaluatedKey) > 0 {
		s, ok := out.LastEvaluatedKey[ddbitem.AttrThingName].(*types.AttributeValueMemberS)
		if !ok || s.Value == "" {
			return nil, "", fmt.Errorf("list revocations: last evaluated key without %s: %w", ddbitem.AttrThingName, fleet.ErrInvalid)
		}
		next = s.Value
	}
	return recs, next, nil
}

// Telemetry is the data table on one region's replica.
type Telemetry struct{ common }

// NewTelemetry returns the telemetry adapter over table.
func NewTelemetry(client Client, table string) *Telemetry {
	return &Telemetry{common{client: client, table: table}}
}

// Put stores m unless an item has its key (ErrAlreadyExists; the stored item
// is left as it is).
func (tel *Telemetry) Put(ctx context.Context, m fleet.Message) error {
	if err := fleet.ValidateThingName(m.Device); err != nil {
		return fmt.Errorf("put message: device: %w", err)
	}
	item, err := ddbitem.MarshalMessage(m)
	if err != nil {
		return fmt.Errorf("put message: %w", err)
	}
	sk := ""
	if s, ok := item[ddbitem.AttrSK].(*types.AttributeValueMemberS); ok {
		sk = s.Value
	}
	expr, err := expression.NewBuilder().WithCondition(expression.AttributeNotExists(expression.Name(ddbitem.AttrSK))).Build()
	if err != nil {
		return fmt.Errorf("put message %s/%s: build condition: %w", m.Device, sk, err)
	}
	_, err = tel.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(tel.table),
		Item:                      item,
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return fmt.Errorf("put message %s/%s: %w: %w", m.Device, sk, fleet.ErrAlreadyExists, err)
	}
	return tel.wrap(err, "put message %s/%s", m.Device, sk)
}

// Page returns up to limit messages of device older than cursor, newest
// first: a Query on PK = device AND SK < the cursor's sort key, for one
// more item than asked, so that a next cursor is given only when an older
// message is left (or when DynamoDB stopped at its 1 MB page, when one
// may be).
func (tel *Telemetry) Page(ctx context.Context, device string, limit int, cursor string) ([]fleet.Message, string, error) {
	if err := fleet.ValidateThingName(device); err != nil {
		return nil, "", fmt.Errorf("page messages: device: %w", err)
	}
	if limit < 1 || limit >= 1<<30 {
		return nil, "", fmt.Errorf("page messages of %s: limit %d: must be at least 1: %w", device, limit, fleet.ErrInvalid)
	}
	after, err := ddbitem.ParseMessageCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("page messages of %s: %w", device, err)
	}
	key := expression.Key(ddbitem.DataHashKey).Equal(expression.Value(device))
	if after != "" {
		key = key.And(expression.Key(ddbitem.DataRangeKey).LessThan(expression.Value(after)))
	}
	expr, err := expression.NewBuilder().WithKeyCondition(key).Build()
	if err != nil {
		return nil, "", fmt.Errorf("page messages of %s: build key condition: %w", device, err)
	}
	out, err := tel.client.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(tel.table),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ScanIndexForward:          aws.Bool(false),
		Limit:                     aws.Int32(int32(limit + 1)),
	})
	if err != nil {
		return nil, "", tel.wrap(err, "page messages of %s", device)
	}
	msgs := make([]fleet.Message, 0, min(limit, len(out.Items)))
	for _, item := range out.Items[:min(limit, len(out.Items))] {
		m, err := ddbitem.UnmarshalMessage(item)
		if err != nil {
			return nil, "", fmt.Errorf("page messages of %s: %w", device, err)
		}
		msgs = append(msgs, m)
	}
	next := ""
	if len(msgs) > 0 && (len(out.Items) > limit || len(out.LastEvaluatedKey) > 0 && len(out.Items) <= limit) {
		next = ddbitem.MessageCursor(msgs[len(msgs)-1].SortKey)
	}
	return msgs, next, nil
}

// Query returns up to limit messages of device, newest first.
func (tel *Telemetry) Query(ctx context.Context, device string, limit int) ([]fleet.Message, error) {
	if err := fleet.ValidateThingName(device); err != nil {
		return nil, fmt.Errorf("query messages: device: %w", err)
	}
	if limit < 1 {
		return nil, fmt.Errorf("query messages of %s: limit %d: must be at least 1: %w", device, limit, fleet.ErrInvalid)
	}
	key := expression.Key(ddbitem.DataHashKey).Equal(expression.Value(device))
	expr, err := expression.NewBuilder().WithKeyCondition(key).Build()
	if err != nil {
		return nil, fmt.Errorf("query messages of %s: build key condition: %w", device, err)
	}
	out, err := tel.client.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(tel.table),
		KeyConditionExpression:    expr.KeyCondition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
		ScanIndexForward:          aws.Bool(false),
		Limit:                     aws.Int32(int32(min(limit, 1<<30))),
	})
	if err != nil {
		return nil, tel.wrap(err, "query messages of %s", device)
	}
	msgs := make([]fleet.Message, 0, len(out.Items))
	for _, item := range out.Items {
		m, err := ddbitem.UnmarshalMessage(item)
		if err != nil {
			return nil, fmt.Errorf("query messages of %s: %w", device, err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}
