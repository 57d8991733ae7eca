package awsiot

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/iot/types"

	"github.com/mriot/mriot/internal/aws/awsconf"
	"github.com/mriot/mriot/internal/core/fleet"
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

// exceptions maps the IoT exceptions onto the fleet sentinels.
var exceptions = awsconf.NewExceptions([]awsconf.Exception{
	awsconf.On[*types.ResourceNotFoundException](fleet.ErrNotFound),
	awsconf.On[*types.ResourceAlreadyExistsException](fleet.ErrAlreadyExists),
	// Attached to something, or ACTIVE (CertificateStateException).
	awsconf.On[*types.DeleteConflictException](fleet.ErrDeleteConflict),
	awsconf.On[*types.CertificateStateException](fleet.ErrDeleteConflict),
	// An expectedVersion race: the caller re-reads and decides again.
	awsconf.On[*types.VersionConflictException](fleet.ErrConditionFailed),
	// Requests that retrying will not make valid.
	awsconf.On[*types.InvalidRequestException](fleet.ErrInvalid),
	awsconf.On[*types.CertificateValidationException](fleet.ErrInvalid),
	awsconf.On[*types.CertificateConflictException](fleet.ErrInvalid),
	awsconf.On[*types.MalformedPolicyException](fleet.ErrInvalid),
	awsconf.On[*types.InvalidStateTransitionException](fleet.ErrInvalid),
	awsconf.On[*types.ValidationException](fleet.ErrInvalid),
	awsconf.On[*types.UnauthorizedException](fleet.ErrInvalid),
	// HTTP 410: the number of attached entities exceeds the limit (a
	// certificate's policies, say). No retry can help. The SDK's retryer
	// still counts the code among its throttling codes and retries it, so
	// it may arrive inside a MaxAttemptsError: errors.As finds it there.
	awsconf.On[*types.LimitExceededException](fleet.ErrInvalid),
	// Two pending updates of the same resource conflict; AWS says to retry.
	awsconf.On[*types.ConflictingResourceUpdateException](fleet.ErrBusy),
	// The SDK's retryer gave up on these.
	awsconf.On[*types.ThrottlingException](fleet.ErrThrottled),
	awsconf.On[*types.ServiceUnavailableException](fleet.ErrUnavailable),
	awsconf.On[*types.InternalFailureException](fleet.ErrUnavailable),
	awsconf.On[*types.InternalException](fleet.ErrUnavailable),
	awsconf.On[*types.InternalServerException](fleet.ErrUnavailable),
}, nil)

// Sentinel returns the fleet sentinel an AWS IoT error maps onto, or nil when
// none fits (the error is then terminal for the workflows). The typed
// exceptions are matched with errors.As; the same codes arriving as a
// *smithy.GenericAPIError (an operation whose model does not list the
// exception) map the same way; then awsconf.GenericSentinel: SDK-side
// parameter errors, throttling codes and HTTP 429, server faults and 5xx,
// network failures, deadlines, a retryer that gave up.
func Sentinel(err error) error { return exceptions.Sentinel(err) }
