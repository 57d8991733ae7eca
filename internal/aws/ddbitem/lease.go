package ddbitem

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// Device leases: a regional table keyed by ThingName (hash key only), one
// item per device that mriot converged in the region: the lease (Owner,
// Fence, LeaseUntil), and the region's ledger of the device (its
// certificates, the item version it was converged to, and the obligations a
// run left). No TTL: the fencing counter must outlive any lease.
const (
	AttrOwner            = "Owner"                  // S: the run holding the lease; absent when free
	AttrFence            = "Fence"                  // N: +1 at every acquisition
	AttrLeaseUntil       = "LeaseUntil"             // N: epoch milliseconds; absent when free
	AttrCertificates     = "Certificates"           // SS: the ledger's certificate ids; absent when none
	AttrConvergedVersion = "ConvergedVersion"       // N
	AttrConvergedStatus  = "ConvergedStatus"        // S
	AttrConvergedCert    = "ConvergedCertificateId" // S
	AttrObligations      = "Obligations"            // L of M (fleet.Obligation); absent when none

	// LeasesHashKey is the lease table's partition key (AttrThingName).
	LeasesHashKey = AttrThingName
)

// LeaseKey is the lease-table key of a thing.
func LeaseKey(thingName string) map[string]types.AttributeValue {
	return DeviceKey(thingName)
}

// MillisValue is t as a number attribute of epoch milliseconds.
func MillisValue(t time.Time) *types.AttributeValueMemberN {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(t.UnixMilli(), 10)}
}

// CertificatesValue is ids as a string set (nil when empty: a set cannot be
// empty in DynamoDB).
func CertificatesValue(ids []string) types.AttributeValue {
	if len(ids) == 0 {
		return nil
	}
	return &types.AttributeValueMemberSS{Value: slices.Clone(ids)}
}

// ObligationsValue is obs as a list of maps (nil when empty).
func ObligationsValue(obs []fleet.Obligation) (types.AttributeValue, error) {
	if len(obs) == 0 {
		return nil, nil
	}
	av, err := attributevalue.Marshal(obs)
	if err != nil {
		return nil, fmt.Errorf("marshal obligations: %w", err)
	}
	return av, nil
}

// LedgerAttributes are the ledger's attributes of a lease item: nil values
// are attributes to remove.
func LedgerAttributes(l fleet.Ledger) (map[string]types.AttributeValue, error) {
	obs, err := ObligationsValue(l.Obligations)
	if err != nil {
		return nil, err
	}
	return map[string]types.AttributeValue{
		AttrCertificates:     CertificatesValue(l.Certificates),
		AttrConvergedVersion: &types.AttributeValueMemberN{Value: strconv.FormatInt(l.Converged.Version, 10)},
		AttrConvergedStatus:  &types.AttributeValueMemberS{Value: string(l.Converged.Status)},
		AttrConvergedCert:    &types.AttributeValueMemberS{Value: l.Converged.CertificateID},
		AttrObligations:      obs,
	}, nil
}

// UnmarshalLease decodes a lease item. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalLease(item map[string]types.AttributeValue) (fleet.Lease, error) {
	var l fleet.Lease
	name, ok := item[AttrThingName].(*types.AttributeValueMemberS)
	if !ok || name.Value == "" {
		return l, fmt.Errorf("unmarshal lease item: no %s: %w", AttrThingName, fleet.ErrInvalid)
	}
	l.ThingName = name.Value
	bad := func(attr string, err error) error {
		return fmt.Errorf("unmarshal lease item of %s: %s: %w: %w", l.ThingName, attr, fleet.ErrInvalid, err)
	}
	num := func(attr string) (int64, error) {
		av, ok := item[attr]
		if !ok {
			return 0, nil
		}
		n, ok := av.(*types.AttributeValueMemberN)
		if !ok {
			return 0, bad(attr, fmt.Errorf("not a number"))
		}
		v, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil {
			return 0, bad(attr, err)
		}
		return v, nil
	}
	str := func(attr string) string {
		s, _ := item[attr].(*types.AttributeValueMemberS)
		if s == nil {
			return ""
		}
		return s.Value
	}
	var err error
	l.Owner = str(AttrOwner)
	if l.Fence, err = num(AttrFence); err != nil {
		return fleet.Lease{}, err
	}
	until, err := num(AttrLeaseUntil)
	if err != nil {
		return fleet.Lease{}, err
	}
	if until != 0 {
		l.Until = time.UnixMilli(until).UTC()
	}
	if ss, ok := item[AttrCertificates].(*types.AttributeValueMemberSS); ok {
		l.Ledger.Certificates = slices.Sorted(slices.Values(ss.Value))
	}
	if l.Ledger.Converged.Version, err = num(AttrConvergedVersion); err != nil {
		return fleet.Lease{}, err
	}
	l.Ledger.Converged.Status = fleet.Status(str(AttrConvergedStatus))
	l.Ledger.Converged.CertificateID = str(AttrConvergedCert)
	if av, ok := item[AttrObligations]; ok {
		if err := attributevalue.Unmarshal(av, &l.Ledger.Obligations); err != nil {
			return fleet.Lease{}, bad(AttrObligations, err)
		}
	}
	return l, nil
}

// The reconciler's cursor: one item of the lease table under the key
// fleet.ReconcileCursorKey (LeaseKey does not validate names, so the key,
// which no thing can have, works). It has no Obligations attribute, so a
// scan for pending leases never returns it. Empty strings and a zero
// PassStarted are left out of the item.
const (
	AttrPhase       = "Phase"       // S
	AttrCursor      = "Cursor"      // S: opaque to the table
	AttrPass        = "Pass"        // N
	AttrPassStarted = "PassStarted" // N: epoch milliseconds
	AttrRevision    = "Revision"    // N: +1 at every save; the save's condition
)

// ReconcileCursorKey is the lease-table key of the reconciler's cursor item.
func ReconcileCursorKey() map[string]types.AttributeValue {
	return LeaseKey(fleet.ReconcileCursorKey)
}

// MarshalReconcileCursor returns the cursor item of c, with c.Revision as it
// is (the caller sets the revision it saves).
func MarshalReconcileCursor(c fleet.ReconcileCursor) map[string]types.AttributeValue {
	item := ReconcileCursorKey()
	if c.Phase != "" {
		item[AttrPhase] = &types.AttributeValueMemberS{Value: c.Phase}
	}
	if c.Cursor != "" {
		item[AttrCursor] = &types.AttributeValueMemberS{Value: c.Cursor}
	}
	item[AttrPass] = &types.AttributeValueMemberN{Value: strconv.FormatInt(c.Pass, 10)}
	if !c.PassStarted.IsZero() {
		item[AttrPassStarted] = MillisValue(c.PassStarted)
	}
	item[AttrRevision] = &types.AttributeValueMemberN{Value: strconv.FormatInt(c.Revision, 10)}
	return item
}

// UnmarshalReconcileCursor decodes the cursor item. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalReconcileCursor(item map[string]types.AttributeValue) (fleet.ReconcileCursor, error) {
	var c fleet.ReconcileCursor
	if name, ok := item[AttrThingName].(*types.AttributeValueMemberS); !ok || name.Value != fleet.ReconcileCursorKey {
		return c, fmt.Errorf("unmarshal reconcile cursor: %s is not %q: %w", AttrThingName, fleet.ReconcileCursorKey, fleet.ErrInvalid)
	}
	num := func(attr string) (int64, error) {
		av, ok := item[attr]
		if !ok {
			return 0, nil
		}
		n, ok := av.(*types.AttributeValueMemberN)
		if !ok {
			return 0, fmt.Errorf("unmarshal reconcile cursor: %s is not a number: %w", attr, fleet.ErrInvalid)
		}
		v, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unmarshal reconcile cursor: %s: %w: %w", attr, fleet.ErrInvalid, err)
		}
		return v, nil
	}
	str := func(attr string) (string, error) {
		av, ok := item[attr]
		if !ok {
			return "", nil
		}
		s, ok := av.(*types.AttributeValueMemberS)
		if !ok {
			return "", fmt.Errorf("unmarshal reconcile cursor: %s is not a string: %w", attr, fleet.ErrInvalid)
		}
		return s.Value, nil
	}
	var err error
	if c.Phase, err = str(AttrPhase); err != nil {
		return fleet.ReconcileCursor{}, err
	}
	if c.Cursor, err = str(AttrCursor); err != nil {
		return fleet.ReconcileCursor{}, err
	}
	if c.Pass, err = num(AttrPass); err != nil {
		return fleet.ReconcileCursor{}, err
	}
	started, err := num(AttrPassStarted)
	if err != nil {
		return fleet.ReconcileCursor{}, err
	}
	if _, ok := item[AttrPassStarted]; ok {
		c.PassStarted = time.UnixMilli(started).UTC()
	}
	if c.Revision, err = num(AttrRevision); err != nil {
		return fleet.ReconcileCursor{}, err
	}
	return c, nil
}
