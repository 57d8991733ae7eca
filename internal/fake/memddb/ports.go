package memddb

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// InventoryKey is the key schema of the device inventory.
var InventoryKey = KeySchema{HashKey: ddbitem.InventoryHashKey}

// InventoryIndexes is the option that gives an inventory table its global
// secondary indexes, as the deployment does: ddbitem.InventoryCertificateIndex
// on CertificateId (Inventory.ByCertificate) and
// ddbitem.InventoryRevocationIndex on RevokedDay (Inventory.RevokedOn) and
// ddbitem.InventoryRetirementIndex on RetireDay (Inventory.RetiringOn).
var InventoryIndexes Option = func(g *GlobalTable) {
	WithIndex(ddbitem.InventoryCertificateIndex, ddbitem.AttrCertificateID)(g)
	WithIndex(ddbitem.InventoryRevocationIndex, ddbitem.AttrRevokedDay)(g)
	WithIndex(ddbitem.InventoryRetirementIndex, ddbitem.AttrRetireDay)(g)
}

// DataKey is the key schema of the data table.
var DataKey = KeySchema{HashKey: ddbitem.DataHashKey, RangeKey: ddbitem.DataRangeKey}

// Inventory is the device inventory port on one replica.
type Inventory struct{ t *Table }

// NewInventory returns the inventory port of a replica whose key schema is
// InventoryKey.
func NewInventory(t *Table) *Inventory { return &Inventory{t: t} }

// Table returns the replica the port works on.
func (inv *Inventory) Table() *Table { return inv.t }

// Get implements contract.Inventory.
func (inv *Inventory) Get(ctx context.Context, thingName string) (fleet.Device, error) {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fleet.Device{}, fmt.Errorf("get device: %w", err)
	}
	item, err := inv.t.GetItem(ctx, ddbitem.DeviceKey(thingName))
	if err != nil {
		return fleet.Device{}, fmt.Errorf("get device %s: %w", thingName, err)
	}
	if item == nil {
		return fleet.Device{}, fmt.Errorf("get device %s: %w", thingName, fleet.ErrNotFound)
	}
	d, err := ddbitem.UnmarshalDevice(item)
	if err != nil {
		return fleet.Device{}, fmt.Errorf("get device %s: %w", thingName, err)
	}
	return d, nil
}

func stringAttr(item map[string]types.AttributeValue, name string) string {
	if s, ok := item[name].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

func numberAttr(item map[string]types.AttributeValue, name string) string {
	if n, ok := item[name].(*types.AttributeValueMemberN); ok {
		return n.Value
	}
	return ""
}

// Create implements contract.Inventory: attribute_not_exists(ThingName) OR
// (CertificateId = :cert AND Status = ACTIVE).
func (inv *Inventory) Create(ctx context.Context, d fleet.Device) error {
	if err := fleet.ValidateThingName(d.ThingName); err != nil {
		return fmt.Errorf("create device: %w", err)
	}
	item, err := ddbitem.MarshalDevice(d)
	if err != nil {
		return fmt.Errorf("create device: %w", err)
	}
	err = inv.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old == nil {
			return nil
		}
		if stringAttr(old, ddbitem.AttrCertificateID) == d.CertificateID && stringAttr(old, ddbitem.AttrStatus) == string(fleet.StatusActive) {
			return nil
		}
		return fmt.Errorf("ConditionalCheckFailedException: device exists with certificate %s, status %s: %w",
			stringAttr(old, ddbitem.AttrCertificateID), stringAttr(old, ddbitem.AttrStatus), fleet.ErrConditionFailed)
	})
	if err != nil {
		return fmt.Errorf("create device %s: %w", d.ThingName, err)
	}
	return nil
}

// Update implements contract.Inventory: attribute_exists(ThingName) AND
// Version = :expect.
func (inv *Inventory) Update(ctx context.Context, d fleet.Device, expectVersion int64) error {
	if err := fleet.ValidateThingName(d.ThingName); err != nil {
		return fmt.Errorf("update device: %w", err)
	}
	item, err := ddbitem.MarshalDevice(d)
	if err != nil {
		return fmt.Errorf("update device: %w", err)
	}
	want := fmt.Sprint(expectVersion)
	err = inv.t.UpdateItem(ctx, ddbitem.DeviceKey(d.ThingName), func(old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
		if old == nil {
			return nil, fmt.Errorf("ConditionalCheckFailedException: no device: %w", fleet.ErrNotFound)
		}
		if got := numberAttr(old, ddbitem.AttrVersion); got != want {
			return nil, fmt.Errorf("ConditionalCheckFailedException: version is %s, expected %s: %w", got, want, fleet.ErrConditionFailed)
		}
		return item, nil
	})
	if err != nil {
		return fmt.Errorf("update device %s: %w", d.ThingName, err)
	}
	return nil
}

// Delete implements contract.Inventory.
func (inv *Inventory) Delete(ctx context.Context, thingName string) error {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	if err := inv.t.DeleteItem(ctx, ddbitem.DeviceKey(thingName), nil); err != nil {
		return fmt.Errorf("delete device %s: %w", thingName, err)
	}
	return nil
}

// DeleteVersion implements contract.Inventory: attribute_not_exists(ThingName)
// OR Version = :version.
func (inv *Inventory) DeleteVersion(ctx context.Context, thingName string, version int64) error {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fmt.Errorf("delete device: %w", err)
	}
	want := fmt.Sprint(version)
	err := inv.t.DeleteItem(ctx, ddbitem.DeviceKey(thingName), func(old map[string]types.AttributeValue) error {
		if old == nil {
			return nil
		}
		if got := numberAttr(old, ddbitem.AttrVersion); got != want {
			return fmt.Errorf("ConditionalCheckFailedException: version is %s, expected %s: %w", got, want, fleet.ErrConditionFailed)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete device %s at version %d: %w", thingName, version, err)
	}
	return nil
}

// List implements contract.Inventory. The cursor is the thing name of the
// last device of the previous page. A limit below 1 is ErrInvalid (DynamoDB's
// ValidationException).
func (inv *Inventory) List(ctx context.Context, limit int, cursor string) ([]fleet.Device, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list devices: limit %d: %w", limit, fleet.ErrInvalid)
	}
	var start map[string]types.AttributeValue
	if cursor != "" {
		// The cursor is a key: a thing name, or a revocation record's.
		thing, _ := ddbitem.IsRevocationKey(cursor)
		if err := fleet.ValidateThingName(thing); err != nil {
			return nil, "", fmt.Errorf("list devices: cursor: %w", err)
		}
		start = ddbitem.DeviceKey(cursor)
	}
	items, last, err := inv.t.Scan(ctx, start, limit)
	if err != nil {
		return nil, "", fmt.Errorf("list devices: %w", err)
	}
	out := make([]fleet.Device, 0, len(items))
	for _, item := range items {
		if _, rev := ddbitem.IsRevocationKey(stringAttr(item, ddbitem.AttrThingName)); rev {
			continue // a revocation record: Revocations lists them
		}
		d, err := ddbitem.UnmarshalDevice(item)
		if err != nil {
			return nil, "", fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	next := ""
	if last != nil {
		next = stringAttr(last, ddbitem.AttrThingName)
	}
	return out, next, nil
}

// ByCertificate implements contract.Inventory with a Query on the replica's
// CertificateIndex (the table must be made with InventoryIndexes). Unlike
// DynamoDB's, the in-memory index is never behind its table.
func (inv *Inventory) ByCertificate(ctx context.Context, certID string) (string, error) {
	if certID == "" {
		return "", fmt.Errorf("find device by certificate: no certificate id: %w", fleet.ErrInvalid)
	}
	keys, err := inv.t.QueryIndex(ctx, ddbitem.InventoryCertificateIndex, &types.AttributeValueMemberS{Value: certID})
	if err != nil {
		return "", fmt.Errorf("find device by certificate %s: %w", certID, err)
	}
	// Keys come in key order: the first is the smallest thing name.
	for _, k := range keys {
		if name := stringAttr(k, ddbitem.AttrThingName); name != "" {
			return name, nil
		}
	}
	return "", fmt.Errorf("find device by certificate %s: %w", certID, fleet.ErrNotFound)
}

// RevokedOn implements contract.Inventory: the things whose revocation
// record was written or upgraded on day (UTC, 2006-01-02), in key order,
// through the global secondary index RevocationIndex (the table must be
// made with InventoryIndexes).
func (inv *Inventory) RevokedOn(ctx context.Context, day string) ([]string, error) {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return nil, fmt.Errorf("list revocations of %q: %w: %w", day, fleet.ErrInvalid, err)
	}
	keys, err := inv.t.QueryIndex(ctx, ddbitem.InventoryRevocationIndex, &types.AttributeValueMemberS{Value: day})
	if err != nil {
		return nil, fmt.Errorf("list revocations of %s: %w", day, err)
	}
	var things []string
	for _, k := range keys {
		if thing, ok := ddbitem.IsRevocationKey(stringAttr(k, ddbitem.AttrThingName)); ok {
			things = append(things, thing)
		}
	}
	return things, nil
}

// RetiringOn implements contract.Inventory: the things whose earliest
// retiring certificate ends its grace on day (UTC, 2006-01-02), in key
// order, through the global secondary index RetirementIndex.
func (inv *Inventory) RetiringOn(ctx context.Context, day string) ([]string, error) {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return nil, fmt.Errorf("list retirements of %q: %w: %w", day, fleet.ErrInvalid, err)
	}
	keys, err := inv.t.QueryIndex(ctx, ddbitem.InventoryRetirementIndex, &types.AttributeValueMemberS{Value: day})
	if err != nil {
		return nil, fmt.Errorf("list retirements of %s: %w", day, err)
	}
	var things []string
	for _, k := range keys {
		things = append(things, stringAttr(k, ddbitem.AttrThingName))
	}
	return things, nil
}

// Revocation implements contract.Inventory: the thing's revocation record
// (fleet.ErrNotFound when it has none).
func (inv *Inventory) Revocation(ctx context.Context, thingName string) (fleet.Revocation, error) {
	if err := fleet.ValidateThingName(thingName); err != nil {
		return fleet.Revocation{}, fmt.Errorf("get revocation: %w", err)
	}
	item, err := inv.t.GetItem(ctx, ddbitem.RevocationKey(thingName))
	if err != nil {
		return fleet.Revocation{}, fmt.Errorf("get revocation of %s: %w", thingName, err)
	}
	if item == nil {
		return fleet.Revocation{}, fmt.Errorf("get revocation of %s: %w", thingName, fleet.ErrNotFound)
	}
	r, err := ddbitem.UnmarshalRevocation(item)
	if err != nil {
		return fleet.Revocation{}, fmt.Errorf("get revocation of %s: %w", thingName, err)
	}
	return r, nil
}

// Revoke implements contract.Inventory: the record is put only where there
// is none, or a REVOKED one that becomes DECOMMISSIONED
// (attribute_not_exists(ThingName) OR Status = REVOKED, the latter only for
// a DECOMMISSIONED record); a record at least as restrictive is kept, and
// that is a success.
func (inv *Inventory) Revoke(ctx context.Context, r fleet.Revocation) error {
	item, err := ddbitem.MarshalRevocation(r)
	if err != nil {
		return fmt.Errorf("record revocation: %w", err)
	}
	kept := false
	err = inv.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old == nil || r.Status == fleet.StatusDecommissioned && stringAttr(old, ddbitem.AttrStatus) == string(fleet.StatusRevoked) {
			return nil
		}
		kept = true
		return fmt.Errorf("ConditionalCheckFailedException: revocation of %s recorded already: %w", r.ThingName, fleet.ErrConditionFailed)
	})
	if err != nil && !kept {
		return fmt.Errorf("record revocation of %s: %w", r.ThingName, err)
	}
	return nil
}

// Revocations implements contract.Inventory: a Scan page of limit items
// after cursor, keeping the revocation records (a page may be empty with a
// next cursor).
func (inv *Inventory) Revocations(ctx context.Context, limit int, cursor string) ([]fleet.Revocation, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list revocations: limit %d: %w", limit, fleet.ErrInvalid)
	}
	var start map[string]types.AttributeValue
	if cursor != "" {
		// The cursor is a key: a revocation record's, or a thing name.
		thing, _ := ddbitem.IsRevocationKey(cursor)
		if err := fleet.ValidateThingName(thing); err != nil {
			return nil, "", fmt.Errorf("list revocations: cursor: %w", err)
		}
		start = ddbitem.DeviceKey(cursor)
	}
	items, last, err := inv.t.Scan(ctx, start, limit)
	if err != nil {
		return nil, "", fmt.Errorf("list revocations: %w", err)
	}
	var out []fleet.Revocation
	for _, item := range items {
		if _, rev := ddbitem.IsRevocationKey(stringAttr(item, ddbitem.AttrThingName)); !rev {
			continue
		}
		r, err := ddbitem.UnmarshalRevocation(item)
		if err != nil {
			return nil, "", fmt.Errorf("list revocations: %w", err)
		}
		out = append(out, r)
	}
	next := ""
	if last != nil {
		next = stringAttr(last, ddbitem.AttrThingName)
	}
	return out, next, nil
}

// Telemetry is the data table port on one replica.
type Telemetry struct{ t *Table }

// NewTelemetry returns the telemetry port of a replica whose key schema is
// DataKey.
func NewTelemetry(t *Table) *Telemetry { return &Telemetry{t: t} }

// Table returns the replica the port works on.
func (tel *Telemetry) Table() *Table { return tel.t }

// Put implements contract.Telemetry: attribute_not_exists(PK). An empty
// m.SortKey is derived from the timestamp and id.
func (tel *Telemetry) Put(ctx context.Context, m fleet.Message) error {
	if err := fleet.ValidateThingName(m.Device); err != nil {
		return fmt.Errorf("put message: device: %w", err)
	}
	item, err := ddbitem.MarshalMessage(m)
	if err != nil {
		return fmt.Errorf("put message: %w", err)
	}
	sk := stringAttr(item, ddbitem.AttrSK)
	err = tel.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old != nil {
			return fmt.Errorf("ConditionalCheckFailedException: message exists: %w", fleet.ErrAlreadyExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put message %s/%s: %w", m.Device, sk, err)
	}
	return nil
}

// Page implements contract.Telemetry: one more message than asked tells
// whether an older one is left.
func (tel *Telemetry) Page(ctx context.Context, device string, limit int, cursor string) ([]fleet.Message, string, error) {
	if err := fleet.ValidateThingName(device); err != nil {
		return nil, "", fmt.Errorf("page messages: device: %w", err)
	}
	if limit < 1 {
		return nil, "", fmt.Errorf("page messages of %s: limit %d: %w", device, limit, fleet.ErrInvalid)
	}
	after, err := ddbitem.ParseMessageCursor(cursor)
	if err != nil {
		return nil, "", fmt.Errorf("page messages of %s: %w", device, err)
	}
	items, err := tel.t.Query(ctx, &types.AttributeValueMemberS{Value: device}, false, 0)
	if err != nil {
		return nil, "", fmt.Errorf("page messages of %s: %w", device, err)
	}
	out := make([]fleet.Message, 0, min(limit, len(items)))
	for _, item := range items {
		m, err := ddbitem.UnmarshalMessage(item)
		if err != nil {
			return nil, "", fmt.Errorf("page messages of %s: %w", device, err)
		}
		if after != "" && m.SortKey >= after {
			continue
		}
		if len(out) == limit {
			return out, ddbitem.MessageCursor(out[len(out)-1].SortKey), nil
		}
		out = append(out, m)
	}
	return out, "", nil
}

// Query implements contract.Telemetry. A limit below 1 is ErrInvalid.
func (tel *Telemetry) Query(ctx context.Context, device string, limit int) ([]fleet.Message, error) {
	if err := fleet.ValidateThingName(device); err != nil {
		return nil, fmt.Errorf("query messages: device: %w", err)
	}
	if limit < 1 {
		return nil, fmt.Errorf("query messages of %s: limit %d: %w", device, limit, fleet.ErrInvalid)
	}
	items, err := tel.t.Query(ctx, &types.AttributeValueMemberS{Value: device}, false, limit)
	if err != nil {
		return nil, fmt.Errorf("query messages of %s: %w", device, err)
	}
	out := make([]fleet.Message, 0, len(items))
	for _, item := range items {
		m, err := ddbitem.UnmarshalMessage(item)
		if err != nil {
			return nil, fmt.Errorf("query messages of %s: %w", device, err)
		}
		out = append(out, m)
	}
	return out, nil
}
