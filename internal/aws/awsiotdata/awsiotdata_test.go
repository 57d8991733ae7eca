package awsiotdata

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/mriot/mriot/internal/core/fleet"
)

func TestPublish(t *testing.T) {
	tests := []struct {
		name   string
		status int
		want   error
	}{
		{"ok", 200, nil},
		{"throttled", 429, fleet.ErrThrottled},
		{"unavailable", 503, fleet.ErrUnavailable},
		{"forbidden", 403, fleet.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotPath, gotQuery, gotAuth, gotBody string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotPath, gotQuery, gotAuth = r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization")
				b, _ := io.ReadAll(r.Body)
				gotBody = string(b)
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			cfg := aws.Config{Region: "eu-west-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
			p, err := New(cfg, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Publish(context.Background(), "e/dev-1/cmd/42", []byte(`{"a":1}`), 1)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Publish = %v, want %v", err, tt.want)
			}
			if gotPath != "/topics/e%2Fdev-1%2Fcmd%2F42" || gotQuery != "qos=1" || gotBody != `{"a":1}` {
				t.Errorf("request %s?%s %q", gotPath, gotQuery, gotBody)
			}
			if !strings.Contains(gotAuth, "/eu-west-1/iotdata/aws4_request") {
				t.Errorf("Authorization %q: not SigV4 for iotdata in eu-west-1", gotAuth)
			}
		})
	}
	if _, err := New(aws.Config{}, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Errorf("New with no endpoint = %v", err)
	}
}
