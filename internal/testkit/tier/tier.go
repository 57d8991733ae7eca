// Package tier is the rule of the integration test tiers: a test that needs
// something this machine may lack (moto_server, the Lambda RIE, mosquitto
// clients, cfn-lint, the SAM translator) is skipped where it is missing, and
// fails where it is required: in CI (CI=true), whose .ci/run installs all of
// them. Eventually is the polling such tests need.
package tier

import (
	"os"
	"os/exec"
	"testing"
	"time"
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

// pollInterval is how often Eventually checks.
const pollInterval = 50 * time.Millisecond

// Eventually calls check until it returns nil, every 50 ms, for at most
// within; then the test fails with what and check's last error. It is for
// tests that wait on real sockets, processes or AWS; a test whose code runs
// on the fakes and timers alone waits with testing/synctest instead.
func Eventually(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
			return
		}
		time.Sleep(pollInterval)
	}
}
