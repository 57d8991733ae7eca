package memddb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// ClaimsKey is the key schema of the JITR claims table.
var ClaimsKey = KeySchema{HashKey: ddbitem.ClaimsHashKey}

// Claims is the JITR claims port on a regional table (a GlobalTable with a
// single region). Its conditions are those of the AWS adapter, evaluated
// atomically by the table's conditional writes.
type Claims struct{ t *Table }

// NewClaims returns the claims port of a table whose key schema is ClaimsKey.
func NewClaims(t *Table) *Claims { return &Claims{t: t} }

// Table returns the table the port works on.
func (c *Claims) Table() *Table { return c.t }

// Claim implements contract.Claims: attribute_not_exists(CertificateId) OR
// ExpiresAt <= :now OR Registered <> :reg; the old item of a failed
// condition tells a held claim from a done mark.
func (c *Claims) Claim(ctx context.Context, certID, registered string, now, until time.Time) (fleet.ClaimState, error) {
	item, err := ddbitem.MarshalClaim(ddbitem.Claim{CertificateID: certID, Registered: registered, State: ddbitem.ClaimStateClaimed, ExpiresAt: until})
	if err != nil {
		return 0, fmt.Errorf("claim certificate %s: %w", certID, err)
	}
	var found fleet.ClaimState
	err = c.t.PutItem(ctx, item, func(old map[string]types.AttributeValue) error {
		if old == nil {
			return nil
		}
		// As in a condition expression, a missing or mistyped attribute
		// makes its comparison false.
		if exp, err := strconv.ParseInt(numberAttr(old, ddbitem.AttrExpiresAt), 10, 64); err == nil && exp <= now.Unix() {
			return nil
		}
		if reg, ok := old[ddbitem.AttrRegistered].(*types.AttributeValueMemberS); ok && reg.Value != registered {
			return nil
		}
		found = fleet.ClaimHeld
		if stringAttr(old, ddbitem.AttrState) == ddbitem.ClaimStateDone {
			found = fleet.ClaimDone
		}
		return fmt.Errorf("ConditionalCheckFailedException: certificate %s is %s until %s: %w",
			certID, stringAttr(old, ddbitem.AttrState), numberAttr(old, ddbitem.AttrExpiresAt), fleet.ErrConditionFailed)
	})
	switch {
	case err == nil:
		return fleet.ClaimTaken, nil
	case found != 0 && errors.Is(err, fleet.ErrConditionFailed):
		return found, nil
	}
	return 0, fmt.Errorf("claim certificate %s: %w", certID, err)
}

// Done implements contract.Claims (unconditional put).
func (c *Claims) Done(ctx context.Context, certID, registered string, until time.Time) error {
	item, err := ddbitem.MarshalClaim(ddbitem.Claim{CertificateID: certID, Registered: registered, State: ddbitem.ClaimStateDone, ExpiresAt: until})
	if err != nil {
		return fmt.Errorf("mark certificate %s onboarded: %w", certID, err)
	}
	if err := c.t.PutItem(ctx, item, nil); err != nil {
		return fmt.Errorf("mark certificate %s onboarded: %w", certID, err)
	}
	return nil
}

// Release implements contract.Claims: a delete conditional on State =
// CLAIMED AND Registered = :reg; a failed condition is not an error.
func (c *Claims) Release(ctx context.Context, certID, registered string) error {
	if certID == "" {
		return fmt.Errorf("release claim: no certificate id: %w", fleet.ErrInvalid)
	}
	refused := false
	err := c.t.DeleteItem(ctx, ddbitem.ClaimKey(certID), func(old map[string]types.AttributeValue) error {
		if old == nil {
			return nil // nothing to delete: DeleteItem writes nothing
		}
		if stringAttr(old, ddbitem.AttrState) == ddbitem.ClaimStateClaimed {
			if reg, ok := old[ddbitem.AttrRegistered].(*types.AttributeValueMemberS); ok && reg.Value == registered {
				return nil
			}
		}
		refused = true
		return fmt.Errorf("ConditionalCheckFailedException: not this registration's claim: %w", fleet.ErrConditionFailed)
	})
	if err != nil && !(refused && errors.Is(err, fleet.ErrConditionFailed)) {
		return fmt.Errorf("release claim of certificate %s: %w", certID, err)
	}
	return nil
}
