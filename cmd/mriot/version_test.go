package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestPrintVersion(t *testing.T) {
	cases := []struct {
		name string
		info debug.BuildInfo
		want []string
	}{
		{
			name: "a build from a clean checkout",
			info: debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
				{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "amd64"},
				{Key: "vcs.revision", Value: "0d9d40d1"}, {Key: "vcs.time", Value: "2026-11-30T08:00:00Z"}, {Key: "vcs.modified", Value: "false"},
			}},
			want: []string{"mriot (devel)\n", "revision 0d9d40d1\n", "committed 2026-11-30T08:00:00Z\n", "go1.26.0 linux/amd64\n"},
		},
		{
			name: "uncommitted changes",
			info: debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"},
			}},
			want: []string{"mriot v1.2.3\n", "revision abc (with uncommitted changes)\n"},
		},
		{
			name: "no VCS information",
			info: debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}},
			want: []string{"revision unknown"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			printVersion(&b, &tc.info)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// TestVersionCommand runs `mriot version` in this test binary, which carries
// build information.
func TestVersionCommand(t *testing.T) {
	cmd := newRootCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "mriot ") || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("output:\n%s", out.String())
	}
}
