package ddbitem

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/core/fleet"
)

// JITR claims: a regional table keyed by CertificateId (hash key only) that
// every jitr instance of the region reads and writes before any IoT call, so
// that a registered event handled, or being handled, by one instance costs
// the others no registry call. ExpiresAt is the table's TTL attribute.
const (
	AttrRegistered = "Registered" // S: the event's certificateRegistrationTimestamp ("" when null)
	AttrState      = "State"      // S: ClaimStateClaimed or ClaimStateDone
	// AttrCertificateID (S, the hash key) and AttrExpiresAt (N, epoch
	// seconds) are shared with the other items.

	// ClaimsHashKey is the claims table's partition key.
	ClaimsHashKey = AttrCertificateID
)

// Claim item states.
const (
	ClaimStateClaimed = "CLAIMED" // a run is handling the registration until ExpiresAt
	ClaimStateDone    = "DONE"    // the registration was onboarded; duplicates until ExpiresAt are dropped
)

// Claim is a claims-table item.
type Claim struct {
	CertificateID string
	Registered    string
	State         string    // ClaimStateClaimed or ClaimStateDone
	ExpiresAt     time.Time // stored as epoch seconds
}

// MarshalClaim returns the claims-table item of c.
func MarshalClaim(c Claim) (map[string]types.AttributeValue, error) {
	if c.CertificateID == "" {
		return nil, fmt.Errorf("marshal claim: no certificate id: %w", fleet.ErrInvalid)
	}
	if c.State != ClaimStateClaimed && c.State != ClaimStateDone {
		return nil, fmt.Errorf("marshal claim of %s: state %q: %w", c.CertificateID, c.State, fleet.ErrInvalid)
	}
	return map[string]types.AttributeValue{
		AttrCertificateID: &types.AttributeValueMemberS{Value: c.CertificateID},
		AttrRegistered:    &types.AttributeValueMemberS{Value: c.Registered},
		AttrState:         &types.AttributeValueMemberS{Value: c.State},
		AttrExpiresAt:     &types.AttributeValueMemberN{Value: strconv.FormatInt(c.ExpiresAt.Unix(), 10)},
	}, nil
}

// UnmarshalClaim decodes a claims-table item. A malformed item wraps
// fleet.ErrInvalid.
func UnmarshalClaim(item map[string]types.AttributeValue) (Claim, error) {
	str := func(name string) (string, bool) {
		s, ok := item[name].(*types.AttributeValueMemberS)
		if !ok {
			return "", false
		}
		return s.Value, true
	}
	var c Claim
	var ok bool
	if c.CertificateID, ok = str(AttrCertificateID); !ok || c.CertificateID == "" {
		return Claim{}, fmt.Errorf("unmarshal claim item: no %s: %w", AttrCertificateID, fleet.ErrInvalid)
	}
	if c.Registered, ok = str(AttrRegistered); !ok {
		return Claim{}, fmt.Errorf("unmarshal claim item of %s: no %s: %w", c.CertificateID, AttrRegistered, fleet.ErrInvalid)
	}
	if c.State, _ = str(AttrState); c.State != ClaimStateClaimed && c.State != ClaimStateDone {
		return Claim{}, fmt.Errorf("unmarshal claim item of %s: state %q: %w", c.CertificateID, c.State, fleet.ErrInvalid)
	}
	n, ok := item[AttrExpiresAt].(*types.AttributeValueMemberN)
	if !ok {
		return Claim{}, fmt.Errorf("unmarshal claim item of %s: no %s: %w", c.CertificateID, AttrExpiresAt, fleet.ErrInvalid)
	}
	secs, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		return Claim{}, fmt.Errorf("unmarshal claim item of %s: %s %q: %w: %w", c.CertificateID, AttrExpiresAt, n.Value, fleet.ErrInvalid, err)
	}
	c.ExpiresAt = time.Unix(secs, 0).UTC()
	return c, nil
}

// ClaimKey is the claims-table key of a certificate.
func ClaimKey(certificateID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrCertificateID: &types.AttributeValueMemberS{Value: certificateID}}
}
