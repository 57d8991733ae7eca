package awsddb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/expression"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/ddbitem"
	"github.com/mriot/mriot/internal/core/fleet"
)

// Claims is the JITR claims table of one region (a regional table: a claim
// is about this region's registry).
type Claims struct{ common }

// NewClaims returns the claims adapter over table.
func NewClaims(client Client, table string) *Claims {
	return &Claims{common{client: client, table: table}}
}

// Claim puts a CLAIMED item until `until` under
// attribute_not_exists(CertificateId) OR ExpiresAt <= :now OR Registered <> :reg.
// A failed condition returns the old item (ALL_OLD), which tells a held
// claim from a done mark in the same call.
func (c *Claims) Claim(ctx context.Context, certID, registered string, now, until time.Time) (fleet.ClaimState, error) {
	item, err := ddbitem.MarshalClaim(ddbitem.Claim{CertificateID: certID, Registered: registered, State: ddbitem.ClaimStateClaimed, ExpiresAt: until})
	if err != nil {
		return 0, fmt.Errorf("claim certificate %s: %w", certID, err)
	}
	cond := expression.AttributeNotExists(expression.Name(ddbitem.AttrCertificateID)).Or(
		expression.Name(ddbitem.AttrExpiresAt).LessThanEqual(expression.Value(now.Unix())),
		expression.Name(ddbitem.AttrRegistered).NotEqual(expression.Value(registered)))
	expr, err := expression.NewBuilder().WithCondition(cond).Build()
	if err != nil {
		return 0, fmt.Errorf("claim certificate %s: build condition: %w", certID, err)
	}
	_, err = c.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(c.table),
		Item:                                item,
		ConditionExpression:                 expr.Condition(),
		ExpressionAttributeNames:            expr.Names(),
		ExpressionAttributeValues:           expr.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err == nil {
		return fleet.ClaimTaken, nil
	}
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		// The condition failed on an unexpired item of this registration.
		if s, ok := ccf.Item[ddbitem.AttrState].(*types.AttributeValueMemberS); ok && s.Value == ddbitem.ClaimStateDone {
			return fleet.ClaimDone, nil
		}
		return fleet.ClaimHeld, nil
	}
	return 0, c.wrap(err, "claim certificate %s", certID)
}

// Done puts a DONE item until `until` (unconditional).
func (c *Claims) Done(ctx context.Context, certID, registered string, until time.Time) error {
	item, err := ddbitem.MarshalClaim(ddbitem.Claim{CertificateID: certID, Registered: registered, State: ddbitem.ClaimStateDone, ExpiresAt: until})
	if err != nil {
		return fmt.Errorf("mark certificate %s onboarded: %w", certID, err)
	}
	_, err = c.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.table), Item: item})
	return c.wrap(err, "mark certificate %s onboarded", certID)
}

// Release deletes the item under State = CLAIMED AND Registered = :reg; a
// failed condition (a done mark, another registration's claim, no item) is
// not an error.
func (c *Claims) Release(ctx context.Context, certID, registered string) error {
	if certID == "" {
		return fmt.Errorf("release claim: no certificate id: %w", fleet.ErrInvalid)
	}
	cond := expression.Name(ddbitem.AttrState).Equal(expression.Value(ddbitem.ClaimStateClaimed)).And(
		expression.Name(ddbitem.AttrRegistered).Equal(expression.Value(registered)))
	expr, err := expression.NewBuilder().WithCondition(cond).Build()
	if err != nil {
		return fmt.Errorf("release claim of certificate %s: build condition: %w", certID, err)
	}
	_, err = c.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(c.table),
		Key:                       ddbitem.ClaimKey(certID),
		ConditionExpression:       expr.Condition(),
		ExpressionAttributeNames:  expr.Names(),
		ExpressionAttributeValues: expr.Values(),
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return nil
	}
	return c.wrap(err, "release claim of certificate %s", certID)
}
