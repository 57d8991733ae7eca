package awsconf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/core/fleet"
)

// isolate keeps the machine's AWS files and variables out of the test.
func isolate(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE":             dir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials",
		"AWS_ACCESS_KEY_ID":           "AKIDTEST",
		"AWS_SECRET_ACCESS_KEY":       "secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_REGION":                  "eu-central-1",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_IOT":        "",
		"AWS_ENDPOINT_URL_DYNAMODB":   "",
		"AWS_RETRY_MODE":              "",
		"AWS_MAX_ATTEMPTS":            "",
		TracingEnv:                    "",
	} {
		t.Setenv(k, v)
	}
}

// recorder is an HTTP server that answers every AWS call with an empty JSON
// object (or status) and records what it was asked.
type recorder struct {
	mu       sync.Mutex
	requests []*http.Request
	status   int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req)
	status := r.status
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	if status != 0 {
		w.Header().Set("X-Amzn-Errortype", "ThrottlingException")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"__type":"ThrottlingException","message":"slow down"}`))
		return
	}
	_, _ = w.Write([]byte(`{}`))
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

func TestLoadEndpointFromEnvReachesIoTAndDynamoDB(t *testing.T) {
	isolate(t)
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)

	cfg, err := Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Region != "eu-central-1" {
		t.Errorf("region = %q, want eu-central-1 from AWS_REGION", cfg.Region)
	}
	ctx := context.Background()
	if _, err := iot.NewFromConfig(cfg).ListThings(ctx, &iot.ListThingsInput{}); err != nil {
		t.Fatalf("iot ListThings against AWS_ENDPOINT_URL: %v", err)
	}
	if _, err := dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{}); err != nil {
		t.Fatalf("dynamodb ListTables against AWS_ENDPOINT_URL: %v", err)
	}
	if got := rec.count(); got != 2 {
		t.Fatalf("endpoint got %d requests, want 2 (iot and dynamodb)", got)
	}
	if p := rec.requests[0].URL.Path; p != "/things" {
		t.Errorf("iot request path = %q, want /things", p)
	}
	if target := rec.requests[1].Header.Get("X-Amz-Target"); target != "DynamoDB_20120810.ListTables" {
		t.Errorf("dynamodb target = %q", target)
	}
	for _, r := range rec.requests {
		if auth := r.Header.Get("Authorization"); !strings.Contains(auth, "/eu-central-1/") {
			t.Errorf("request signed for another region: %s", auth)
		}
	}
}

// TestLoadEmptyEndpointURLIsUnset: the template declares AWS_ENDPOINT_URL
// empty in every function (so that sam local invoke --env-vars can set it);
// the SDK must then resolve the region's AWS endpoints, as without it.
func TestLoadEmptyEndpointURLIsUnset(t *testing.T) {
	isolate(t) // AWS_ENDPOINT_URL and the per-service variables set, empty
	if v, ok := os.LookupEnv("AWS_ENDPOINT_URL"); !ok || v != "" {
		t.Fatalf("AWS_ENDPOINT_URL = %q (set: %v), want set and empty", v, ok)
	}
	cfg, err := Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BaseEndpoint != nil {
		t.Fatalf("BaseEndpoint = %q, want none", *cfg.BaseEndpoint)
	}
	hosts := &hostRecorder{}
	ctx := context.Background()
	_, _ = iot.NewFromConfig(cfg, func(o *iot.Options) { o.HTTPClient = hosts; o.RetryMaxAttempts = 1 }).ListThings(ctx, &iot.ListThingsInput{})
	_, _ = dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.HTTPClient = hosts; o.RetryMaxAttempts = 1 }).ListTables(ctx, &dynamodb.ListTablesInput{})
	want := []string{"https://iot.eu-central-1.amazonaws.com", "https://dynamodb.eu-central-1.amazonaws.com"}
	if strings.Join(hosts.urls, " ") != strings.Join(want, " ") {
		t.Errorf("requests went to %v, want %v", hosts.urls, want)
	}
}

// hostRecorder is an HTTP client that records where each request goes and
// sends nothing.
type hostRecorder struct{ urls []string }

func (h *hostRecorder) Do(r *http.Request) (*http.Response, error) {
	h.urls = append(h.urls, r.URL.Scheme+"://"+r.URL.Host)
	return nil, errors.New("not sent")
}

func TestLoadRetryerIsAdaptive(t *testing.T) {
	isolate(t)
	tests := []struct {
		name string
		opts []Option
		want int
	}{
		{"default", nil, DefaultMaxAttempts},
		{"configured", []Option{WithMaxAttempts(2)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(context.Background(), tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Retryer()
			if _, ok := r.(*retry.AdaptiveMode); !ok {
				t.Fatalf("retryer is %T, want *retry.AdaptiveMode", r)
			}
			if got := r.MaxAttempts(); got != tt.want {
				t.Errorf("max attempts = %d, want %d", got, tt.want)
			}
		})
	}
	if _, err := Load(context.Background(), WithMaxAttempts(0)); err == nil {
		t.Error("Load with 0 max attempts succeeded")
	}
}

func TestLoadRetriesThrottlingUpToMaxAttempts(t *testing.T) {
	isolate(t)
	rec := &recorder{status: http.StatusBadRequest}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	cfg, err := Load(context.Background(), WithMaxAttempts(2))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = dynamodb.NewFromConfig(cfg).ListTables(ctx, &dynamodb.ListTablesInput{})
	var maxErr *retry.MaxAttemptsError
	if !errors.As(err, &maxErr) {
		t.Fatalf("err = %v, want a MaxAttemptsError", err)
	}
	if got := rec.count(); got != 2 {
		t.Errorf("server saw %d attempts, want 2", got)
	}
}

func TestLoadTracing(t *testing.T) {
	isolate(t)
	base, err := Load(context.Background(), WithTracing(false))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     string
		opts    []Option
		traced  bool
		wantErr bool
	}{
		{"env unset", "", nil, false, false},
		{"env true", "true", nil, true, false},
		{"env false", "false", nil, false, false},
		{"option overrides env", "true", []Option{WithTracing(false)}, false, false},
		{"option on", "", []Option{WithTracing(true)}, true, false},
		{"env malformed", "yes please", nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(TracingEnv, tt.env)
			cfg, err := Load(context.Background(), tt.opts...)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), TracingEnv) {
					t.Fatalf("err = %v, want an error naming %s", err, TracingEnv)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			traced := len(cfg.APIOptions) > len(base.APIOptions)
			if traced != tt.traced {
				t.Errorf("instrumented = %v (%d API options, %d without), want %v",
					traced, len(cfg.APIOptions), len(base.APIOptions), tt.traced)
			}
		})
	}
}

func TestLoadTracedClientWorksWithoutSegment(t *testing.T) {
	isolate(t)
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	t.Setenv("AWS_ENDPOINT_URL", srv.URL)
	t.Setenv("AWS_XRAY_CONTEXT_MISSING", "IGNORE_ERROR")
	cfg, err := Load(context.Background(), WithTracing(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dynamodb.NewFromConfig(cfg).ListTables(context.Background(), &dynamodb.ListTablesInput{}); err != nil {
		t.Fatalf("traced call without a segment: %v", err)
	}
}

func TestForRegion(t *testing.T) {
	isolate(t)
	cfg, err := Load(context.Background(), WithRegion("us-east-1"))
	if err != nil {
		t.Fatal(err)
	}
	other := ForRegion(cfg, "ap-southeast-2")
	if other.Region != "ap-southeast-2" {
		t.Errorf("ForRegion region = %q", other.Region)
	}
	if cfg.Region != "us-east-1" {
		t.Errorf("ForRegion changed the original's region to %q", cfg.Region)
	}
	if other.Credentials != cfg.Credentials || len(other.APIOptions) != len(cfg.APIOptions) {
		t.Error("ForRegion did not keep credentials and API options")
	}
	if other.Retryer().MaxAttempts() != DefaultMaxAttempts {
		t.Error("ForRegion did not keep the retryer")
	}
}

func TestGenericSentinel(t *testing.T) {
	resp := func(code int, err error) error {
		return &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: code}},
			Err:      err,
		}
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"throttling code", &smithy.GenericAPIError{Code: "ThrottlingException"}, fleet.ErrThrottled},
		{"too many requests code", &smithy.GenericAPIError{Code: "TooManyRequestsException"}, fleet.ErrThrottled},
		{"server fault", &smithy.GenericAPIError{Code: "Boom", Fault: smithy.FaultServer}, fleet.ErrUnavailable},
		{"client fault", &smithy.GenericAPIError{Code: "Nope", Fault: smithy.FaultClient}, nil},
		{"http 429", resp(429, errors.New("x")), fleet.ErrThrottled},
		{"http 503", resp(503, errors.New("x")), fleet.ErrUnavailable},
		{"http 400", resp(400, errors.New("x")), nil},
		{"send error", &smithyhttp.RequestSendError{Err: errors.New("connection refused")}, fleet.ErrUnavailable},
		{"net error", &net.OpError{Op: "dial", Err: errors.New("refused")}, fleet.ErrUnavailable},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), fleet.ErrUnavailable},
		{"canceled", context.Canceled, nil},
		{"missing parameter", &smithy.InvalidParamsError{Context: "CreateThingInput"}, fleet.ErrInvalid},
		{"empty path member", &smithy.SerializationError{Err: errors.New("input member thingName must not be empty")}, fleet.ErrInvalid},
		{"code from the table", &smithy.GenericAPIError{Code: "ResourceNotFoundException"}, fleet.ErrNotFound},
		{"table wins over throttle list", &smithy.GenericAPIError{Code: "LimitExceededException"}, fleet.ErrInvalid},
		{"retryer gave up", &retry.MaxAttemptsError{Attempt: 5, Err: errors.New("EOF")}, fleet.ErrUnavailable},
		{"plain", errors.New("bad"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			codes := map[string]error{"ResourceNotFoundException": fleet.ErrNotFound, "LimitExceededException": fleet.ErrInvalid}
			if got := GenericSentinel(tt.err, codes); got != tt.want {
				t.Errorf("GenericSentinel(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
