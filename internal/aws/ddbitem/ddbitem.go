// Package ddbitem is the single definition of the DynamoDB item layouts of the
// device inventory, the data (telemetry) table and the JITR claims table. The
// in-memory tables (internal/fake/memddb) and the AWS adapter (internal/aws/awsddb)
// both marshal through it, so that an item written by one reads back
// identically through the other.
package ddbitem

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Device inventory: a table keyed by ThingName (hash key only). The attribute
// names are the dynamodbav tags of fleet.Device.
const (
	AttrThingName       = "ThingName"
	AttrCertificateID   = "CertificateId"
	AttrCertificatePEM  = "CertificatePem"
	AttrCACertificateID = "CaCertificateId"
	AttrNotAfter        = "NotAfter"
	AttrStatus          = "Status"
	AttrOriginRegion    = "OriginRegion"
	AttrVersion         = "Version"
	AttrUpdatedAt       = "UpdatedAt"
	AttrNotBefore       = "NotBefore"
	AttrRetiring        = "Retiring"

	// InventoryHashKey is the inventory's partition key.
	InventoryHashKey = AttrThingName

	// InventoryCertificateIndex is the inventory's global secondary index
	// keyed by AttrCertificateID (hash key only, projection KEYS_ONLY): the
	// device that holds a certificate, when a certificate is all an event
	// names. As for any key attribute, DynamoDB refuses an item whose
	// CertificateId is an empty string once the index exists.
	InventoryCertificateIndex = "CertificateIndex"

	// AttrRevokedDay is the UTC day (2006-01-02) of a revocation record's
	// UpdatedAt, on revocation records only.
	AttrRevokedDay = "RevokedDay"
	// InventoryRevocationIndex is the inventory's sparse global secondary
	// index keyed by AttrRevokedDay (hash key only, projection KEYS_ONLY):
	// the revocation records written or upgraded on one day. Each region's
	// reconciler reads the last two days' at every invocation (its sweep),
	// whatever the state of its long pass.
	InventoryRevocationIndex = "RevocationIndex"

	// AttrRetireDay is the UTC day (2006-01-02) of the earliest RetireAt of
	// a device item's retiring certificates, on items with some only.
	AttrRetireDay = "RetireDay"
	// InventoryRetirementIndex is the inventory's sparse global secondary
	// index keyed by AttrRetireDay (hash key only, projection KEYS_ONLY):
	// the devices whose earliest retiring certificate ends its grace on one
	// day. Each region's reconciler reads the days up to today at every
	// invocation (its retirement sweep).
	InventoryRetirementIndex = "RetirementIndex"
)

// RevokedDay is the AttrRevokedDay of a record updated at t.
func RevokedDay(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Data table: PK (the device) and SK (fleet.SortKey) plus the payload.
const (
	AttrPK        = "PK"
	AttrSK        = "SK"
	AttrDevice    = "Device"
	AttrRegion    = "Region"
	AttrMessage   = "Message"   // S: the message JSON text exactly as sent
	AttrTs        = "Ts"        // N: milliseconds since the epoch
	AttrID        = "Id"        // S: the rule's newuuid()
	AttrExpiresAt = "ExpiresAt" // N: epoch seconds, the table's TTL attribute

	// DataHashKey and DataRangeKey are the data table's key.
	DataHashKey  = AttrPK
	DataRangeKey = AttrSK
)

// MarshalDevice returns the inventory item of d.
func MarshalDevice(d fleet.Device) (map[string]types.AttributeValue, error) {
	item, err := attributevalue.MarshalMap(d)
	if err != nil {
		return nil, fmt.Errorf("marshal device %s: %w", d.ThingName, err)
	}
	if d.NotBefore.IsZero() {
		delete(item, AttrNotBefore)
	}
	if t := d.EarliestRetireAt(); !t.IsZero() {
		item[AttrRetireDay] = &types.AttributeValueMemberS{Value: RevokedDay(t)}
	}
	return item, nil
}

// UnmarshalDevice decodes an inventory item. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalDevice(item map[string]types.AttributeValue) (fleet.Device, error) {
	var d fleet.Device
	if err := attributevalue.UnmarshalMap(item, &d); err != nil {
		return fleet.Device{}, fmt.Errorf("unmarshal device item: %w: %w", fleet.ErrInvalid, err)
	}
	if d.ThingName == "" {
		return fleet.Device{}, fmt.Errorf("unmarshal device item: no %s: %w", AttrThingName, fleet.ErrInvalid)
	}
	return d, nil
}

// DeviceKey is the inventory key of a thing.
func DeviceKey(thingName string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrThingName: &types.AttributeValueMemberS{Value: thingName}}
}

// messageItem is the data-table layout. Message is a string attribute holding
// the JSON text; ExpiresAt is epoch seconds (DynamoDB TTL needs a number).
type messageItem struct {
	PK        string `dynamodbav:"PK"`
	SK        string `dynamodbav:"SK"`
	Device    string `dynamodbav:"Device"`
	Region    string `dynamodbav:"Region"`
	Message   string `dynamodbav:"Message"`
	Ts        int64  `dynamodbav:"Ts"`
	ID        string `dynamodbav:"Id"`
	ExpiresAt int64  `dynamodbav:"ExpiresAt"`
}

// MarshalMessage returns the data-table item of m. PK is m.Device; SK is
// m.SortKey, or fleet.SortKey(m.Timestamp, m.ID) when m.SortKey is empty.
// ExpiresAt is omitted when zero (the item never expires).
func MarshalMessage(m fleet.Message) (map[string]types.AttributeValue, error) {
	if m.Device == "" {
		return nil, fmt.Errorf("marshal message: no device: %w", fleet.ErrInvalid)
	}
	sk := m.SortKey
	if sk == "" {
		sk = fleet.SortKey(m.Timestamp, m.ID)
	}
	it := messageItem{
		PK: m.Device, SK: sk, Device: m.Device, Region: m.Region,
		Message: string(m.Payload), Ts: m.Timestamp, ID: m.ID,
	}
	if !m.ExpiresAt.IsZero() {
		it.ExpiresAt = m.ExpiresAt.Unix()
	}
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return nil, fmt.Errorf("marshal message %s/%s: %w", m.Device, sk, err)
	}
	if m.ExpiresAt.IsZero() {
		delete(item, AttrExpiresAt)
	}
	return item, nil
}

// UnmarshalMessage decodes a data-table item. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalMessage(item map[string]types.AttributeValue) (fleet.Message, error) {
	var it messageItem
	if err := attributevalue.UnmarshalMap(item, &it); err != nil {
		return fleet.Message{}, fmt.Errorf("unmarshal message item: %w: %w", fleet.ErrInvalid, err)
	}
	if it.PK == "" || it.SK == "" {
		return fleet.Message{}, fmt.Errorf("unmarshal message item: no %s/%s: %w", AttrPK, AttrSK, fleet.ErrInvalid)
	}
	device := it.Device
	if device == "" {
		device = it.PK
	}
	m := fleet.Message{
		Device: device, SortKey: it.SK, Timestamp: it.Ts, ID: it.ID,
		Region: it.Region, Payload: []byte(it.Message),
	}
	if _, ok := item[AttrExpiresAt]; ok {
		m.ExpiresAt = time.Unix(it.ExpiresAt, 0).UTC()
	}
	return m, nil
}

// MessageKey is the data-table key of a message.
func MessageKey(device, sortKey string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		AttrPK: &types.AttributeValueMemberS{Value: device},
		AttrSK: &types.AttributeValueMemberS{Value: sortKey},
	}
}

// Revocation records share the inventory: key ThingName = <thing>#revocation,
// attributes Status, RevokedCertificateId (not CertificateId: the
// certificate index holds device items only), CertificatePem,
// CaCertificateId, UpdatedAt.
const (
	AttrRevokedCertificateID = "RevokedCertificateId"
)

// RevocationKey is the inventory key of a thing's revocation record.
func RevocationKey(thingName string) map[string]types.AttributeValue {
	return DeviceKey(thingName + fleet.RevocationSuffix)
}

// IsRevocationKey reports whether an inventory key value is a revocation
// record's, and returns its thing name.
func IsRevocationKey(key string) (string, bool) {
	return strings.CutSuffix(key, fleet.RevocationSuffix)
}

type revocationItem struct {
	ThingName            string    `dynamodbav:"ThingName"`
	Status               string    `dynamodbav:"Status"`
	RevokedCertificateID string    `dynamodbav:"RevokedCertificateId"`
	CertificatePem       string    `dynamodbav:"CertificatePem"`
	CaCertificateID      string    `dynamodbav:"CaCertificateId"`
	UpdatedAt            time.Time `dynamodbav:"UpdatedAt"`
	RevokedDay           string    `dynamodbav:"RevokedDay,omitempty"`
}

// MarshalRevocation returns the inventory item of a revocation record.
func MarshalRevocation(r fleet.Revocation) (map[string]types.AttributeValue, error) {
	if err := fleet.ValidateThingName(r.ThingName); err != nil {
		return nil, fmt.Errorf("marshal revocation: %w", err)
	}
	if r.Status != fleet.StatusRevoked && r.Status != fleet.StatusDecommissioned {
		return nil, fmt.Errorf("marshal revocation of %s: status %q: %w", r.ThingName, r.Status, fleet.ErrInvalid)
	}
	item, err := attributevalue.MarshalMap(revocationItem{
		ThingName: r.ThingName + fleet.RevocationSuffix, Status: string(r.Status), RevokedCertificateID: r.CertificateID,
		CertificatePem: r.CertificatePEM, CaCertificateID: r.CACertificateID, UpdatedAt: r.UpdatedAt,
		RevokedDay: revokedDay(r.UpdatedAt),
	})
	if err != nil {
		return nil, fmt.Errorf("marshal revocation of %s: %w", r.ThingName, err)
	}
	return item, nil
}

// UnmarshalRevocation decodes a revocation record. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalRevocation(item map[string]types.AttributeValue) (fleet.Revocation, error) {
	var it revocationItem
	if err := attributevalue.UnmarshalMap(item, &it); err != nil {
		return fleet.Revocation{}, fmt.Errorf("unmarshal revocation item: %w: %w", fleet.ErrInvalid, err)
	}
	thing, ok := IsRevocationKey(it.ThingName)
	if !ok || fleet.ValidateThingName(thing) != nil {
		return fleet.Revocation{}, fmt.Errorf("unmarshal revocation item: key %q: %w", it.ThingName, fleet.ErrInvalid)
	}
	r := fleet.Revocation{ThingName: thing, Status: fleet.Status(it.Status), CertificateID: it.RevokedCertificateID,
		CertificatePEM: it.CertificatePem, CACertificateID: it.CaCertificateID, UpdatedAt: it.UpdatedAt}
	if r.Status != fleet.StatusRevoked && r.Status != fleet.StatusDecommissioned {
		return fleet.Revocation{}, fmt.Errorf("unmarshal revocation item of %s: status %q: %w", thing, r.Status, fleet.ErrInvalid)
	}
	return r, nil
}

func revokedDay(t time.Time) string {
	if t.IsZero() {
		return "" // no day: not in the index
	}
	return RevokedDay(t)
}
