package awsddb

import (
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/fleet"
)

// exceptions maps the DynamoDB exceptions onto the fleet sentinels.
// ResourceNotFoundException is handled apart: it means a missing table.
var exceptions = awsconf.NewExceptions([]awsconf.Exception{
	awsconf.On[*types.ConditionalCheckFailedException](fleet.ErrConditionFailed),
	awsconf.On[*types.TransactionConflictException](fleet.ErrConditionFailed),
	// The SDK's retryer gave up on these.
	awsconf.On[*types.ProvisionedThroughputExceededException](fleet.ErrThrottled),
	awsconf.On[*types.RequestLimitExceeded](fleet.ErrThrottled),
	awsconf.On[*types.ThrottlingException](fleet.ErrThrottled),
	awsconf.On[*types.LimitExceededException](fleet.ErrThrottled),
	awsconf.On[*types.ReplicatedWriteConflictException](fleet.ErrUnavailable),
	awsconf.On[*types.InternalServerError](fleet.ErrUnavailable),
	// Requests that retrying will not make valid.
	awsconf.On[*types.ItemCollectionSizeLimitExceededException](fleet.ErrInvalid),
}, map[string]error{ // codes without a typed entry above
	"ResourceNotFoundException":   fleet.ErrInvalid, // a missing table
	"ValidationException":         fleet.ErrInvalid,
	"SerializationException":      fleet.ErrInvalid,
	"AccessDeniedException":       fleet.ErrInvalid,
	"UnrecognizedClientException": fleet.ErrInvalid,
	"ServiceUnavailable":          fleet.ErrUnavailable,
})

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
	if _, ok := errors.AsType[*types.ResourceNotFoundException](err); ok {
		return fleet.ErrInvalid
	}
	return exceptions.Sentinel(err)
}

// wrap prefixes err with the operation and the sentinel it maps onto. A
// missing table says so: it is a misconfiguration, not a missing item.
func (c *common) wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf(format, args...)
	if _, ok := errors.AsType[*types.ResourceNotFoundException](err); ok {
		return fmt.Errorf("%s: table %s does not exist in this region (check the configuration): %w: %w", op, c.table, fleet.ErrInvalid, err)
	}
	if s := Sentinel(err); s != nil {
		return fmt.Errorf("%s: %w: %w", op, s, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
