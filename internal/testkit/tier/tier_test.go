package tier

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a testing.TB that records the first Skipf or Fatalf, which
// would have ended the test, instead of ending it.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, a ...any) {
	if r.skipped == "" && r.failed == "" {
		r.skipped = fmt.Sprintf(format, a...)
	}
}

func (r *recorder) Fatalf(format string, a ...any) {
	if r.skipped == "" && r.failed == "" {
		r.failed = fmt.Sprintf(format, a...)
	}
}

func TestRequire(t *testing.T) {
	for _, tt := range []struct {
		ci                  string
		wantSkip, wantFatal string
	}{
		{"", "no moto", ""},
		{"false", "no moto", ""},
		{"true", "", "CI=true, required: no moto"},
	} {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Require(r, "no %s", "moto")
			if r.skipped != tt.wantSkip || r.failed != tt.wantFatal {
				t.Errorf("skipped %q, failed %q; want %q, %q", r.skipped, r.failed, tt.wantSkip, tt.wantFatal)
			}
		})
	}
}

func TestTool(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	if p := Tool(r, "go"); p == "" || r.skipped != "" {
		t.Errorf("Tool(go) = %q, skipped %q", p, r.skipped)
	}
	if p := Tool(r, "mriot-no-such-tool"); p != "" || r.skipped == "" || r.failed != "" {
		t.Errorf("Tool of a missing tool = %q, skipped %q, failed %q; want a skip", p, r.skipped, r.failed)
	}
}

func TestEventually(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		Eventually(t, time.Second, "third time", func() error {
			if calls++; calls < 3 {
				return errors.New("not yet")
			}
			return nil
		})
		if calls != 3 || time.Since(start) != 2*pollInterval {
			t.Errorf("%d calls in %v, want 3 in %v", calls, time.Since(start), 2*pollInterval)
		}

		r := &recorder{TB: t}
		start = time.Now()
		Eventually(r, time.Second, "never", func() error { return errors.New("still not") })
		if want := "never: not within 1s: still not"; r.failed != want {
			t.Errorf("failed %q, want %q", r.failed, want)
		}
		if d := time.Since(start); d < time.Second || d > time.Second+pollInterval {
			t.Errorf("gave up after %v, want 1s", d)
		}
	})
}
