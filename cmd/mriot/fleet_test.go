package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mriot/mriot/internal/testkit/apitest"
	"github.com/mriot/mriot/internal/workflow/api"
)

// TestFleetCommands runs `mriot fleet` against the real API handler over
// HTTP, as an operator would against the local stack's API.
func TestFleetCommands(t *testing.T) {
	regions := []string{"eu-west-1", "us-west-2"}
	f := apitest.New(t, regions)
	all := map[string]apitest.Step{regions[0]: apitest.Attached, regions[1]: apitest.Attached}
	f.Onboard(t, "dev-1", all)
	f.Onboard(t, "dev-2", map[string]apitest.Step{regions[0]: apitest.Attached})
	f.Publish(t, "dev-1", 1767225600000, regions[0], "id-1", `{"temp":21.5}`)
	f.Publish(t, "dev-1", 1767225601000, regions[1], "id-2", `{"temp":22}`)
	h, err := api.New(f.Config())
	if err != nil {
		t.Fatal(err)
	}
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	t.Setenv(endpointEnv, srv.URL)
	t.Setenv(apiTokenEnv, "s3cret")

	run := func(args ...string) (string, error) {
		cmd := newRootCmd()
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"fleet"}, args...))
		err := cmd.Execute()
		return out.String(), err
	}
	cases := []struct {
		args    []string
		want    []string // in the output
		notWant []string // not in the output
		wantErr string
	}{
		{args: []string{"ls"}, want: []string{"THING", "CONNECTED", "dev-1  ACTIVE", "dev-2  ACTIVE"}},
		{args: []string{"get", "dev-1"}, want: []string{"live everywhere: yes", "eu-west-1", "us-west-2", "ACTIVE", "never seen connected"}},
		{args: []string{"get", "dev-2"}, want: []string{"live everywhere: no", "not live"}},
		{args: []string{"telemetry", "dev-1"}, want: []string{"1767225600000", `{"temp":21.5}`, "1767225601000"}},
		{args: []string{"telemetry", "dev-1", "--limit", "1"}, want: []string{"1767225601000", "older messages: --all"}},
		{args: []string{"telemetry", "dev-1", "--limit", "1", "--all"}, want: []string{"1767225601000", "1767225600000"}},
		{args: []string{"telemetry", "dev-1", "--since", "1767225601000", "--limit", "1", "--all"}, want: []string{"1767225601000"}, notWant: []string{"1767225600000", "older messages"}},
		{args: []string{"telemetry", "dev-1", "--since", "2026-01-01T00:00:00.5Z"}, want: []string{"1767225601000"}, notWant: []string{"1767225600000"}},
		{args: []string{"telemetry", "dev-1", "--since", "last week"}, wantErr: "HTTP 400: since"},
		{args: []string{"revoke", "dev-1"}, want: []string{"dev-1: revoke accepted"}},
		{args: []string{"revoke", "dev-1"}, want: []string{"dev-1: already so"}},
		{args: []string{"ls", "--status", "REVOKED"}, want: []string{"dev-1  REVOKED"}},
		{args: []string{"decommission", "dev-2"}, want: []string{"dev-2: decommission accepted"}},
		{args: []string{"get", "nobody"}, wantErr: "HTTP 404: get device nobody: not found"},
		{args: []string{"revoke", "dev-2"}, wantErr: "HTTP 409"},
		{args: []string{"ls", "--status", "bogus"}, wantErr: `--status "bogus"`},
		{args: []string{"ls", "-o", "yaml"}, wantErr: `-o "yaml"`},
		{args: []string{"ls", "--sigv4", "on"}, wantErr: "needs --region"},
		{args: []string{"ls", "--endpoint", "ftp://x"}, wantErr: "--endpoint"},
	}
	for _, tc := range cases {
		out, err := run(tc.args...)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: err = %v, want %q\n%s", tc.args, err, tc.wantErr, out)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v\n%s", tc.args, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(out, w) {
				t.Errorf("%v: output has %q:\n%s", tc.args, w, out)
			}
		}
	}
	if auth != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the token from %s", auth, apiTokenEnv)
	}
	// -o json prints the API's answer as it is.
	out, err := run("get", "dev-1", "-o", "json")
	var v api.DeviceView
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || v.ThingName != "dev-1" || v.Status != "REVOKED" {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	out, err = run("ls", "-o", "json")
	var list struct{ Items []api.DeviceSummary }
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list.Items) != 2 {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
}
