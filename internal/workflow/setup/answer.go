package setup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
)

// Defaults of Answerer.
const (
	// DefaultMargin is how long before the invocation's deadline the
	// answer is sent when the handler has not returned.
	DefaultMargin = 30 * time.Second
	// DefaultSendTimeout bounds one attempt to send the answer.
	DefaultSendTimeout = 10 * time.Second
	// maxReason keeps the answer under CloudFormation's 4 KB response limit.
	maxReason = 1024
)

// HTTPDoer sends the answer (an *http.Client).
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// Answerer makes a custom resource's Lambda handler that always answers
// CloudFormation. cfn.LambdaWrap answers only once its function returns:
// a function that runs into the Lambda deadline is stopped before it can,
// and CloudFormation then waits for the resource's ServiceTimeout.
type Answerer struct {
	// Client sends the answer; nil: an http.Client with DefaultSendTimeout.
	Client HTTPDoer
	// Margin before the invocation's deadline at which the handler's
	// context ends and, if it has not returned by then, FAILED is sent
	// (default DefaultMargin).
	Margin time.Duration
	Log    *slog.Logger // discarded when nil
}

// response is the document CloudFormation reads from the pre-signed URL
// (cfn.Response, whose URL field is not exported).
type response struct {
	Status             cfn.StatusType `json:"Status"`
	RequestID          string         `json:"RequestId"`
	LogicalResourceID  string         `json:"LogicalResourceId"`
	StackID            string         `json:"StackId"`
	PhysicalResourceID string         `json:"PhysicalResourceId"`
	Reason             string         `json:"Reason,omitempty"`
	Data               map[string]any `json:"Data,omitempty"`
}

type result struct {
	id   string
	data map[string]any
	err  error
}

// Wrap returns the Lambda handler of handle. handle runs with a context
// that ends Margin before the invocation's deadline; CloudFormation gets
// SUCCESS with handle's result, or FAILED with its error, its panic, or, if
// it has not returned by the time its context ends, a timeout. The Lambda
// handler fails only when the answer could not be sent.
func (a Answerer) Wrap(handle cfn.CustomResourceFunction) func(context.Context, cfn.Event) error {
	return func(ctx context.Context, ev cfn.Event) error {
		log := a.log().With("request_type", string(ev.RequestType), "logical_id", ev.LogicalResourceID, "request_id", ev.RequestID)
		margin := a.Margin
		if margin <= 0 {
			margin = DefaultMargin
		}
		hctx, cancel := context.WithCancel(ctx)
		if d, ok := ctx.Deadline(); ok {
			hctx, cancel = context.WithDeadline(ctx, d.Add(-margin))
		}
		defer cancel()

		done := make(chan result, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					log.Error("setup panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					done <- result{err: fmt.Errorf("setup panicked: %v (stack in the function's log)", p)}
				}
			}()
			id, data, err := handle(hctx, ev)
			done <- result{id, data, err}
		}()

		var r result
		select {
		case r = <-done:
		case <-hctx.Done():
			// A handler that honours its context returns at once with its
			// own error; one stuck in a call that does not gets a timeout.
			select {
			case r = <-done:
			case <-time.After(min(time.Second, margin/4)):
				r = result{err: fmt.Errorf("setup did not finish within the function's timeout (%v before the deadline): %w", margin, context.Cause(hctx))}
			}
		}
		return a.send(ctx, log, ev, r)
	}
}

// Failing is the handler of a setup function that could not start (err):
// it fails every request but Delete, which has nothing to undo (Handle) and
// must not block the stack's deletion or rollback.
func Failing(err error) cfn.CustomResourceFunction {
	return func(_ context.Context, ev cfn.Event) (string, map[string]any, error) {
		if ev.RequestType == cfn.RequestDelete {
			return ev.PhysicalResourceID, nil, nil
		}
		return "", nil, err
	}
}

// send PUTs the answer to the event's pre-signed URL, retrying until the
// invocation's deadline.
func (a Answerer) send(ctx context.Context, log *slog.Logger, ev cfn.Event, r result) error {
	resp := response{
		RequestID:          ev.RequestID,
		LogicalResourceID:  ev.LogicalResourceID,
		StackID:            ev.StackID,
		PhysicalResourceID: r.id,
		Status:             cfn.StatusSuccess,
		Data:               r.data,
	}
	if resp.PhysicalResourceID == "" {
		// A failed create has no resource of its own: CloudFormation sends
		// the Delete of its rollback with the id given here.
		resp.PhysicalResourceID = ev.PhysicalResourceID
		if ev.RequestType == cfn.RequestCreate {
			resp.PhysicalResourceID = ev.RequestID
		}
	}
	if r.err != nil {
		resp.Status, resp.Data = cfn.StatusFailed, nil
		resp.Reason = r.err.Error()
		if len(resp.Reason) > maxReason {
			resp.Reason = resp.Reason[:maxReason] + "..."
		}
		log.Error("answering FAILED", "reason", resp.Reason)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("custom resource answer: %w", err)
	}
	var errs []error
	for attempt := 1; ; attempt++ {
		err := a.put(ctx, ev.ResponseURL, body)
		if err == nil {
			log.Info("answered", "status", string(resp.Status), "physical_id", resp.PhysicalResourceID, "attempts", attempt)
			return nil
		}
		errs = append(errs, err)
		log.Warn("sending the answer failed", "attempt", attempt, "error", err.Error())
		if attempt == 3 || ctx.Err() != nil {
			return fmt.Errorf("custom resource answer %s not sent: %w", resp.Status, errors.Join(errs...))
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}
}

func (a Answerer) put(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, DefaultSendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	// The URL is pre-signed without a content type.
	req.Header.Del("Content-Type")
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultSendTimeout}
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT answer: HTTP %s", res.Status)
	}
	return nil
}

func (a Answerer) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}
