package fleet

import "errors"

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
	// (InvalidRequestException, ValidationException, a malformed event).
	ErrInvalid = errors.New("invalid")
	// ErrThrottled: the provider throttled the call and the SDK's own retryer
	// gave up (ThrottlingException, LimitExceeded, ProvisionedThroughputExceeded).
	ErrThrottled = errors.New("throttled")
	// ErrUnavailable: a transient provider or network failure (5xx, timeout).
	ErrUnavailable = errors.New("unavailable")
)

// IsTransient reports whether err is worth retrying later: throttling, a
// provider outage or a deadline. Everything else is terminal.
func IsTransient(err error) bool {
	return errors.Is(err, ErrThrottled) || errors.Is(err, ErrUnavailable)
}
