package local

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/core/obs"
)

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		wantErr string // "": valid
	}{
		{name: "defaults", cfg: Config{}},
		{name: "three regions", cfg: Config{Regions: []string{"eu-west-1", "us-west-2", "ap-southeast-2"}}},
		{name: "gov region", cfg: Config{Regions: []string{"us-gov-east-1"}}},
		{name: "misspelt region", cfg: Config{Regions: []string{"eu-west1"}}, wantErr: `region "eu-west1"`},
		{name: "repeated region", cfg: Config{Regions: []string{"eu-west-1", "eu-west-1"}}, wantErr: "repeated"},
		{name: "negative replication lag", cfg: Config{ReplicationLag: -time.Second}, wantErr: "replication lag -1s is negative"},
		{name: "negative API latency", cfg: Config{APILatency: -time.Millisecond}, wantErr: "API latency"},
		{name: "negative client latency", cfg: Config{Latency: map[string]time.Duration{"eu-west-1": -1}}, wantErr: "latency of eu-west-1"},
		{name: "fault on a real operation", cfg: Config{Faults: map[string]float64{"CreateThing": 0.1}}},
		{name: "fault on a misspelt operation", cfg: Config{Faults: map[string]float64{"CreateThings": 0.1}}, wantErr: `fault on "CreateThings"`},
		{name: "fault rate above 1", cfg: Config{Faults: map[string]float64{"CreateThing": 2}}, wantErr: "[0,1]"},
		{name: "quota on a misspelt operation", cfg: Config{Quotas: map[string]float64{"Describe": 10}}, wantErr: `quota on "Describe"`},
		{name: "port too high for the regions", cfg: Config{MQTTPort: 65535}, wantErr: "MQTT port 65535"},
		{name: "bind with a port", cfg: Config{Host: "127.0.0.1:8883"}, wantErr: "without a port"},
		{name: "bind IPv6", cfg: Config{Host: "::1"}},
		{name: "bind all interfaces", cfg: Config{Host: "0.0.0.0"}},
		{name: "API on loopback", cfg: Config{APIAddr: "127.0.0.1:8080"}},
		{name: "API on localhost", cfg: Config{APIAddr: "localhost:8080"}},
		{name: "API on IPv6 loopback", cfg: Config{APIAddr: "[::1]:8080"}},
		{name: "API on all interfaces without a token", cfg: Config{APIAddr: "0.0.0.0:8080"}, wantErr: "--api-token"},
		{name: "API on a LAN address without a token", cfg: Config{APIAddr: "192.168.1.10:8080"}, wantErr: "--api-token"},
		{name: "API on all interfaces with a token", cfg: Config{APIAddr: "0.0.0.0:8080", APIToken: "s3cret"}},
		{name: "API address without a port", cfg: Config{APIAddr: "127.0.0.1"}, wantErr: "API address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.defaults()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			case tc.wantErr != "" && !errors.Is(err, ErrConfig):
				t.Fatalf("err = %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	h := requireToken("s3cret", ok, obs.Discard())
	cases := []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/healthz", "", http.StatusOK},
		{"GET", "/devices", "", http.StatusUnauthorized},
		{"GET", "/devices", "Bearer s3cret", http.StatusOK},
		{"GET", "/devices", "Bearer s3cre", http.StatusUnauthorized},
		{"GET", "/devices", "Bearer s3cret2", http.StatusUnauthorized},
		{"GET", "/devices", "Basic s3cret", http.StatusUnauthorized},
		{"GET", "/devices", "s3cret", http.StatusUnauthorized},
		{"POST", "/devices/d1/revoke", "", http.StatusUnauthorized},
		{"POST", "/devices/d1/revoke", "Bearer s3cret", http.StatusOK},
		{"POST", "/healthz", "", http.StatusUnauthorized},
		{"GET", "/healthz/../devices", "", http.StatusUnauthorized},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %s with %q: %d, want %d", tc.method, tc.path, tc.auth, rec.Code, tc.want)
		}
		if rec.Code == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", tc.method, tc.path)
		}
	}
	// No token: everything passes.
	rec := httptest.NewRecorder()
	requireToken("", ok, obs.Discard()).ServeHTTP(rec, httptest.NewRequest("POST", "/devices/d1/revoke", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("without a token configured: %d", rec.Code)
	}
}
