package awsconf

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/core/fleet"
)

// GenericSentinel classifies an SDK error that no typed exception of the
// service explains. The adapters call it after mapping their service's typed
// exceptions. It returns:
//
//   - fleet.ErrInvalid for a request the SDK refused to send
//     (smithy.InvalidParamsError, *smithy.SerializationError: a required or
//     path member missing or empty);
//   - codes[code] for an API error whose code is in codes: a service error
//     that the operation's model does not list arrives as a
//     *smithy.GenericAPIError with only its code;
//   - fleet.ErrThrottled for a throttling error code (the SDK's own list,
//     retry.DefaultThrottleErrorCodes) or HTTP 429;
//   - fleet.ErrUnavailable for a server fault, an HTTP 5xx, a request that
//     could not be sent, a network error, the caller's deadline, or a
//     retryable error the retryer gave up on (retry.MaxAttemptsError);
//   - nil otherwise: the error is terminal for the workflows.
func GenericSentinel(err error, codes map[string]error) error {
	if err == nil {
		return nil
	}
	var params *smithy.InvalidParamsError
	var serialization *smithy.SerializationError
	if errors.As(err, &params) || errors.As(err, &serialization) {
		return fleet.ErrInvalid
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if s, ok := codes[apiErr.ErrorCode()]; ok {
			return s
		}
		if _, ok := retry.DefaultThrottleErrorCodes[apiErr.ErrorCode()]; ok {
			return fleet.ErrThrottled
		}
		if apiErr.ErrorFault() == smithy.FaultServer {
			return fleet.ErrUnavailable
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch code := respErr.HTTPStatusCode(); {
		case code == http.StatusTooManyRequests:
			return fleet.ErrThrottled
		case code >= 500:
			return fleet.ErrUnavailable
		}
	}
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	var maxErr *retry.MaxAttemptsError
	switch {
	case errors.As(err, &sendErr), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &maxErr):
		return fleet.ErrUnavailable
	}
	return nil
}

// Exception maps one typed exception of a service, and its error code for
// the untyped form, onto a fleet sentinel. Build it with On.
type Exception struct {
	is       func(error) bool
	code     string
	sentinel error
}

// On maps the SDK exception type T onto sentinel. T's error code (what the
// same exception carries when it arrives untyped, as a *smithy.GenericAPIError)
// is read from T itself: the SDK's ErrorCode works on a nil receiver.
func On[T interface {
	error
	ErrorCode() string
}](sentinel error) Exception {
	var zero T
	is := func(err error) bool {
		_, ok := errors.AsType[T](err)
		return ok
	}
	return Exception{is: is, code: zero.ErrorCode(), sentinel: sentinel}
}

// Exceptions is a service's table of typed exceptions, with the codes that
// classify the same exceptions when they arrive untyped.
type Exceptions struct {
	typed []Exception
	codes map[string]error
}

// NewExceptions builds the table; extraCodes adds codes the SDK has no type
// for.
func NewExceptions(typed []Exception, extraCodes map[string]error) Exceptions {
	codes := make(map[string]error, len(typed)+len(extraCodes))
	maps.Copy(codes, extraCodes)
	for _, e := range typed {
		codes[e.code] = e.sentinel
	}
	return Exceptions{typed: typed, codes: codes}
}

// Sentinel maps err: the typed exceptions first (errors.As), then
// GenericSentinel with the table's codes. nil when nothing fits.
func (x Exceptions) Sentinel(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range x.typed {
		if e.is(err) {
			return e.sentinel
		}
	}
	return GenericSentinel(err, x.codes)
}
