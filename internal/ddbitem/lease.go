package ddbitem

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/fleet"
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
