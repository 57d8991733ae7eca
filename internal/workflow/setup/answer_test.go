package setup

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/iot"
)

// answered is one answer CloudFormation received, and when.
type answered struct {
	response
	at time.Time
}

// cloudFormation is the pre-signed URL's end: it records every answer.
func cloudFormation(t *testing.T) (*httptest.Server, chan answered) {
	t.Helper()
	got := make(chan answered, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a answered
		if err := json.NewDecoder(r.Body).Decode(&a.response); err != nil || r.Method != http.MethodPut {
			t.Errorf("answer: %s %v", r.Method, err)
		}
		a.at = time.Now()
		got <- a
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func cfnEvent(rt cfn.RequestType, url string) cfn.Event {
	ev := event(rt, props("eu-west-1", "us-west-2"))
	ev.ResponseURL, ev.StackID = url+"/answer", "arn:aws:cloudformation:us-west-2:123456789012:stack/mriot/1"
	if rt == cfn.RequestCreate {
		ev.PhysicalResourceID = ""
	}
	return ev
}

// invoke runs the wrapped handler as Lambda would, with a deadline in
// budget, and returns the one answer CloudFormation got.
func invoke(t *testing.T, handle cfn.CustomResourceFunction, rt cfn.RequestType, budget, margin time.Duration) (answered, time.Time) {
	t.Helper()
	srv, got := cloudFormation(t)
	deadline := time.Now().Add(budget)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Answerer{Margin: margin}.Wrap(handle)(ctx, cfnEvent(rt, srv.URL)) }()
	var a answered
	select {
	case a = <-got:
	case <-time.After(budget + 2*time.Second):
		t.Fatalf("no answer sent to CloudFormation (deadline %v)", budget)
	}
	if err := <-errc; err != nil {
		t.Errorf("handler error = %v, want nil once answered", err)
	}
	select {
	case extra := <-got:
		t.Errorf("a second answer: %+v", extra)
	default:
	}
	return a, deadline
}

// stuckTables never answers DescribeTable and ignores its context: a call
// stuck past the Lambda deadline.
type stuckTables struct{ release chan struct{} }

func (s stuckTables) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	<-s.release
	return nil, errors.New("released")
}

// absentTables says the replica does not exist yet, every time.
type absentTables struct{}

func (absentTables) DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	return nil, &ddbtypes.ResourceNotFoundException{}
}

// panickyIoT panics on its first call.
type panickyIoT struct{ fakeIoT }

func (*panickyIoT) DescribeEventConfigurations(context.Context, *iot.DescribeEventConfigurationsInput, ...func(*iot.Options)) (*iot.DescribeEventConfigurationsOutput, error) {
	panic("nil map somewhere")
}

// TestAnswerBeforeTheDeadline: a setup that would run past the invocation's
// deadline (waiting for a replica longer than the function may run, or
// stuck in a call) still answers FAILED, before the deadline, with the
// reason.
func TestAnswerBeforeTheDeadline(t *testing.T) {
	for _, c := range []struct {
		name   string
		tables Tables
		reason string
	}{
		{"waiting for the replica", absentTables{}, "deploy the primary region eu-west-1 first"},
		{"stuck in a call", stuckTables{make(chan struct{})}, "did not finish within the function's timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if s, ok := c.tables.(stuckTables); ok {
				defer close(s.release)
			}
			h := &Handler{IoT: &fakeIoT{enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true}}, Tables: c.tables,
				Region: "us-west-2", StreamWait: time.Hour, Poll: 5 * time.Millisecond}
			a, deadline := invoke(t, h.Handle, cfn.RequestCreate, 1500*time.Millisecond, 500*time.Millisecond)
			if a.Status != cfn.StatusFailed || !strings.Contains(a.Reason, c.reason) || a.RequestID != "req-1" || a.PhysicalResourceID == "" {
				t.Errorf("answer = %+v, want FAILED with %q", a.response, c.reason)
			}
			if !a.at.Before(deadline) {
				t.Errorf("answered %v after the deadline", a.at.Sub(deadline))
			}
		})
	}
}

// TestAnswerOnPanic: a setup that panics answers FAILED, with the request
// id as the physical id of a create (CloudFormation's rollback deletes
// that id).
func TestAnswerOnPanic(t *testing.T) {
	h := &Handler{IoT: &panickyIoT{}, Tables: absentTables{}, Region: "us-west-2"}
	a, _ := invoke(t, h.Handle, cfn.RequestCreate, 10*time.Second, time.Second)
	if a.Status != cfn.StatusFailed || !strings.Contains(a.Reason, "panicked: nil map somewhere") || a.PhysicalResourceID != "req-1" {
		t.Errorf("answer = %+v, want FAILED with the panic, physical id req-1", a.response)
	}
}

// TestAnswerWhenSetupCannotStart: a function whose initialisation failed
// answers every request FAILED with why, but a Delete, which has nothing to
// undo and must not block the stack's rollback or deletion.
func TestAnswerWhenSetupCannotStart(t *testing.T) {
	h := Failing(errors.New("setup cannot start: load AWS config: boom"))
	for _, rt := range []cfn.RequestType{cfn.RequestCreate, cfn.RequestUpdate} {
		a, _ := invoke(t, h, rt, 10*time.Second, time.Second)
		if a.Status != cfn.StatusFailed || !strings.Contains(a.Reason, "boom") || a.PhysicalResourceID == "" {
			t.Errorf("%s answer = %+v, want FAILED with the init error", rt, a.response)
		}
	}
	a, _ := invoke(t, h, cfn.RequestDelete, 10*time.Second, time.Second)
	if a.Status != cfn.StatusSuccess || a.PhysicalResourceID != "phys-1" {
		t.Errorf("delete answer = %+v, want SUCCESS with the resource's physical id", a.response)
	}
}

// TestAnswerSuccess: a setup that finishes answers SUCCESS with its data.
func TestAnswerSuccess(t *testing.T) {
	h := &Handler{IoT: &fakeIoT{enabled: map[string]bool{"CERTIFICATE": true, "CA_CERTIFICATE": true}, endpoint: "abc-ats.iot.us-west-2.amazonaws.com"},
		Tables: &fakeTables{answers: []func() (*dynamodb.DescribeTableOutput, error){table(ddbtypes.TableStatusActive, streamARN)}}, Region: "us-west-2"}
	a, _ := invoke(t, h.Handle, cfn.RequestCreate, 10*time.Second, time.Second)
	if a.Status != cfn.StatusSuccess || a.Data[AttrInventoryStreamArn] != streamARN || a.PhysicalResourceID != "mriot-setup-us-west-2-mriot-device-inventory" {
		t.Errorf("answer = %+v", a.response)
	}
}

// TestAnswerNotSent: an answer CloudFormation refuses fails the invocation
// (Lambda retries it).
func TestAnswerNotSent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) }))
	defer srv.Close()
	err := Answerer{}.Wrap(Failing(errors.New("x")))(context.Background(), cfnEvent(cfn.RequestCreate, srv.URL))
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("err = %v, want the refused answer", err)
	}
}
