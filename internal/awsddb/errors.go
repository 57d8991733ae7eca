package awsddb

import (
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/fleet"
)

func is[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

// exceptions maps the DynamoDB exceptions onto the fleet sentinels.
// ResourceNotFoundException is handled apart: it means a missing table.
var exceptions = []struct {
	is       func(error) bool
	code     string
	sentinel error
}{
	{is[*types.ConditionalCheckFailedException], "ConditionalCheckFailedException", fleet.ErrConditionFailed},
	{is[*types.TransactionConflictException], "TransactionConflictException", fleet.ErrConditionFailed},
	// The SDK's retryer gave up on these.
	{is[*types.ProvisionedThroughputExceededException], "ProvisionedThroughputExceededException", fleet.ErrThrottled},
	{is[*types.RequestLimitExceeded], "RequestLimitExceeded", fleet.ErrThrottled},
	{is[*types.ThrottlingException], "ThrottlingException", fleet.ErrThrottled},
	{is[*types.LimitExceededException], "LimitExceededException", fleet.ErrThrottled},
	{is[*types.ReplicatedWriteConflictException], "ReplicatedWriteConflictException", fleet.ErrUnavailable},
	{is[*types.InternalServerError], "InternalServerError", fleet.ErrUnavailable},
	// Requests that retrying will not make valid.
	{is[*types.ItemCollectionSizeLimitExceededException], "ItemCollectionSizeLimitExceededException", fleet.ErrInvalid},
}

// exceptionCodes is exceptions by error code, plus the codes that have no
// typed exception in the SDK.
var exceptionCodes = func() map[string]error {
	m := map[string]error{
		"ResourceNotFoundException":   fleet.ErrInvalid, // a missing table
		"ValidationException":         fleet.ErrInvalid,
		"SerializationException":      fleet.ErrInvalid,
		"AccessDeniedException":       fleet.ErrInvalid,
		"UnrecognizedClientException": fleet.ErrInvalid,
		"ServiceUnavailable":          fleet.ErrUnavailable,
	}
	for _, e := range exceptions {
		m[e.code] = e.sentinel
	}
	return m
}()

// Sentinel returns the fleet sentinel a DynamoDB error maps onto, or nil
// when none fits (terminal for the workflows):
//
//	ConditionalCheckFailedException, TransactionConflictException  ErrConditionFailed
//	ProvisionedThroughputExceededException, RequestLimitExceeded,
//	ThrottlingException, LimitExceededException                     ErrThrottled
//	InternalServerError, ReplicatedWriteConflictException          ErrUnavailable
//	ResourceNotFoundException (a missing table: misconfiguration),
//	ValidationException, ItemCollectionSizeLimitExceededException   ErrInvalid
//
// then awsconf.GenericSentinel (SDK parameter errors, throttling codes,
// 5xx, network failures, deadlines, a retryer that gave up).
func Sentinel(err error) error {
	if err == nil {
		return nil
	}
	if is[*types.ResourceNotFoundException](err) {
		return fleet.ErrInvalid
	}
	for _, e := range exceptions {
		if e.is(err) {
			return e.sentinel
		}
	}
	return awsconf.GenericSentinel(err, exceptionCodes)
}

// wrap prefixes err with the operation and the sentinel it maps onto. A
// missing table says so: it is a misconfiguration, not a missing item.
func (c *common) wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf(format, args...)
	if is[*types.ResourceNotFoundException](err) {
		return fmt.Errorf("%s: table %s does not exist in this region (check the configuration): %w: %w", op, c.table, fleet.ErrInvalid, err)
	}
	if s := Sentinel(err); s != nil {
		return fmt.Errorf("%s: %w: %w", op, s, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
