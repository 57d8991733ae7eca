// Package tier is the rule of the integration test tiers: a test that needs
// something this machine may lack (moto_server, the Lambda RIE, mosquitto
// clients, cfn-lint, the SAM translator) is skipped where it is missing, and
// fails where it is required: in CI (CI=true), whose .ci/run installs all of
// them.
package tier

import (
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI (CI=true), where every tier is
// required.
func CI() bool { return os.Getenv("CI") == "true" }

// Require says that the test cannot run here, for the reason given: it is
// skipped, or it fails when CI=true.
func Require(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf("CI=true, required: "+format, args...)
	}
	t.Skipf(format, args...)
}

// Tool returns the path of the executable name (exec.LookPath), or calls
// Require when it is not installed.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Require(t, "%s is not installed (.ci/run installs it): %v", name, err)
	}
	return p
}
