package awsconf

import (
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/fleet"
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
