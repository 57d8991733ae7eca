package awsiot

import (
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/awsconf"
	"github.com/mriot/mriot/internal/fleet"
)

// wrap prefixes err with the operation and, when it maps onto a fleet
// sentinel, wraps that sentinel too: "create thing x: already exists:
// operation error IoT: CreateThing, ...". A nil err stays nil.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	op := fmt.Sprintf(format, args...)
	if s := Sentinel(err); s != nil {
		return fmt.Errorf("%s: %w: %w", op, s, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Sentinel returns the fleet sentinel an AWS IoT error maps onto, or nil when
// none fits (the error is then terminal for the workflows). The typed
// exceptions are matched with errors.As; the same codes arriving as a
// *smithy.GenericAPIError (an operation whose model does not list the
// exception) map the same way; then awsconf.GenericSentinel: SDK-side
// parameter errors, throttling codes and HTTP 429, server faults and 5xx,
// network failures, deadlines, a retryer that gave up.
func Sentinel(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range exceptions {
		if e.is(err) {
			return e.sentinel
		}
	}
	return awsconf.GenericSentinel(err, exceptionCodes)
}

func is[T error](err error) bool {
	var target T
	return errors.As(err, &target)
}

// exceptions maps the IoT exceptions onto the fleet sentinels.
var exceptions = []struct {
	is       func(error) bool
	code     string
	sentinel error
}{
	{is[*types.ResourceNotFoundException], "ResourceNotFoundException", fleet.ErrNotFound},
	{is[*types.ResourceAlreadyExistsException], "ResourceAlreadyExistsException", fleet.ErrAlreadyExists},
	// Attached to something, or ACTIVE (CertificateStateException).
	{is[*types.DeleteConflictException], "DeleteConflictException", fleet.ErrDeleteConflict},
	{is[*types.CertificateStateException], "CertificateStateException", fleet.ErrDeleteConflict},
	// An expectedVersion race: the caller re-reads and decides again.
	{is[*types.VersionConflictException], "VersionConflictException", fleet.ErrConditionFailed},
	// Requests that retrying will not make valid.
	{is[*types.InvalidRequestException], "InvalidRequestException", fleet.ErrInvalid},
	{is[*types.CertificateValidationException], "CertificateValidationException", fleet.ErrInvalid},
	{is[*types.CertificateConflictException], "CertificateConflictException", fleet.ErrInvalid},
	{is[*types.MalformedPolicyException], "MalformedPolicyException", fleet.ErrInvalid},
	{is[*types.InvalidStateTransitionException], "InvalidStateTransitionException", fleet.ErrInvalid},
	{is[*types.ValidationException], "ValidationException", fleet.ErrInvalid},
	{is[*types.UnauthorizedException], "UnauthorizedException", fleet.ErrInvalid},
	// The SDK's retryer gave up on these.
	{is[*types.ThrottlingException], "ThrottlingException", fleet.ErrThrottled},
	{is[*types.LimitExceededException], "LimitExceededException", fleet.ErrThrottled},
	{is[*types.ServiceUnavailableException], "ServiceUnavailableException", fleet.ErrUnavailable},
	{is[*types.InternalFailureException], "InternalFailureException", fleet.ErrUnavailable},
	{is[*types.InternalException], "InternalException", fleet.ErrUnavailable},
	{is[*types.InternalServerException], "InternalServerException", fleet.ErrUnavailable},
}

// exceptionCodes is exceptions by error code.
var exceptionCodes = func() map[string]error {
	m := make(map[string]error, len(exceptions))
	for _, e := range exceptions {
		m[e.code] = e.sentinel
	}
	return m
}()
