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
// none fits (the error is then terminal for the workflows):
//
//	ResourceNotFoundException                          ErrNotFound
//	ResourceAlreadyExistsException                     ErrAlreadyExists
//	DeleteConflictException, CertificateStateException ErrDeleteConflict
//	VersionConflictException                           ErrConditionFailed (expectedVersion race)
//	InvalidRequestException, CertificateValidationException,
//	CertificateConflictException, MalformedPolicyException,
//	InvalidStateTransitionException, ValidationException,
//	UnauthorizedException                              ErrInvalid
//	ThrottlingException, LimitExceededException        ErrThrottled
//	ServiceUnavailableException, InternalFailureException,
//	InternalException, InternalServerException         ErrUnavailable
//
// and otherwise awsconf.TransientSentinel: throttling codes and HTTP 429,
// server faults and 5xx, network failures, deadlines, a retryer that gave up.
func Sentinel(err error) error {
	var (
		notFound       *types.ResourceNotFoundException
		exists         *types.ResourceAlreadyExistsException
		deleteConflict *types.DeleteConflictException
		certState      *types.CertificateStateException
		version        *types.VersionConflictException
		invalid        *types.InvalidRequestException
		certValidation *types.CertificateValidationException
		certConflict   *types.CertificateConflictException
		malformed      *types.MalformedPolicyException
		transition     *types.InvalidStateTransitionException
		validation     *types.ValidationException
		unauthorized   *types.UnauthorizedException
		throttling     *types.ThrottlingException
		limit          *types.LimitExceededException
		unavailable    *types.ServiceUnavailableException
		internal       *types.InternalFailureException
		internalExc    *types.InternalException
		internalServer *types.InternalServerException
	)
	switch {
	case errors.As(err, &notFound):
		return fleet.ErrNotFound
	case errors.As(err, &exists):
		return fleet.ErrAlreadyExists
	case errors.As(err, &deleteConflict), errors.As(err, &certState):
		return fleet.ErrDeleteConflict
	case errors.As(err, &version):
		return fleet.ErrConditionFailed
	case errors.As(err, &invalid), errors.As(err, &certValidation), errors.As(err, &certConflict),
		errors.As(err, &malformed), errors.As(err, &transition), errors.As(err, &validation),
		errors.As(err, &unauthorized):
		return fleet.ErrInvalid
	case errors.As(err, &throttling), errors.As(err, &limit):
		return fleet.ErrThrottled
	case errors.As(err, &unavailable), errors.As(err, &internal), errors.As(err, &internalExc),
		errors.As(err, &internalServer):
		return fleet.ErrUnavailable
	}
	return awsconf.TransientSentinel(err)
}
