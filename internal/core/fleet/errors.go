package fleet

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors returned (wrapped) by every port implementation. Adapters map
// the provider's error codes onto these so that workflows decide with errors.Is
// and never depend on a provider's types.
var (
	// ErrNotFound: the resource does not exist (ResourceNotFoundException).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the resource exists already (ResourceAlreadyExistsException).
	ErrAlreadyExists = errors.New("already exists")
	// ErrDeleteConflict: the resource cannot be deleted while something is
	// attached to it or while it is in its current state (DeleteConflictException,
	// CertificateStateException).
	ErrDeleteConflict = errors.New("delete conflict")
	// ErrConditionFailed: a conditional write found another state than expected
	// (ConditionalCheckFailedException, a version race).
	ErrConditionFailed = errors.New("condition failed")
	// ErrInvalid: the request is invalid and will not become valid by retrying
	// (InvalidRequestException, ValidationException, IoT's
	// LimitExceededException: too many entities attached, a malformed event).
	ErrInvalid = errors.New("invalid")
	// ErrThrottled: the provider throttled the call and the SDK's own retryer
	// gave up (ThrottlingException, DynamoDB's LimitExceededException,
	// ProvisionedThroughputExceeded).
	ErrThrottled = errors.New("throttled")
	// ErrUnavailable: a transient provider or network failure (5xx, timeout).
	ErrUnavailable = errors.New("unavailable")
	// ErrBusy: another run is changing the same resources right now (the
	// device's lease is held in this region; IoT's
	// ConflictingResourceUpdateException). Retrying later succeeds.
	ErrBusy = errors.New("busy")
	// ErrLeaseLost: the run's lease on a device expired or was taken over, so
	// it must not change the device's resources any more. The run stops and
	// its event is delivered again.
	ErrLeaseLost = errors.New("lease lost")
)

// IsTransient reports whether err is worth retrying later: throttling, a
// provider outage, another writer on the same device, or a lost lease.
// Everything else is terminal.
func IsTransient(err error) bool {
	return errors.Is(err, ErrThrottled) || errors.Is(err, ErrUnavailable) ||
		errors.Is(err, ErrBusy) || errors.Is(err, ErrLeaseLost)
}

// LeaseHeldError is the refusal of a lease held by another run: who holds
// it and until when. It wraps ErrBusy.
type LeaseHeldError struct {
	ThingName string
	Owner     string
	Until     time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("lease on %s is held by %s until %s", e.ThingName, e.Owner, e.Until.UTC().Format(time.RFC3339Nano))
}

// Unwrap makes the error an ErrBusy.
func (e *LeaseHeldError) Unwrap() error { return ErrBusy }
