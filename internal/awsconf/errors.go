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

// TransientSentinel classifies an SDK error that no service-specific
// exception explains: it returns fleet.ErrThrottled for a throttling error
// code (the SDK's own list, retry.DefaultThrottleErrorCodes) or HTTP 429,
// fleet.ErrUnavailable for a server fault, an HTTP 5xx, a request that could
// not be sent, a network error, the caller's deadline, or a retryable error
// the retryer gave up on (retry.MaxAttemptsError); and nil otherwise. The
// adapters call it after mapping the typed exceptions of their service.
func TransientSentinel(err error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
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
