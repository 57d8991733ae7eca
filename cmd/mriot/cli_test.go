package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCLIRefusesBadValues: a value that would run other than asked is an
// error naming the flag, before anything starts.
func TestCLIRefusesBadValues(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"local", "--log-level", "bogus"}, `--log-level "bogus"`},
		{[]string{"local", "--fault", "CreateThings=0.1", "--api-addr", "", "--mqtt-port", "0"}, `fault on "CreateThings"`},
		{[]string{"local", "--fault", "CreateThing=2"}, "--fault"},
		{[]string{"local", "--replication-lag", "-1s", "--api-addr", "", "--mqtt-port", "0"}, "replication lag -1s is negative"},
		{[]string{"local", "--reconcile-interval", "-5s"}, "--reconcile-interval"},
		{[]string{"local", "--rotation-grace", "0s"}, "--rotation-grace"},
		{[]string{"local", "--api-addr", "0.0.0.0:0", "--mqtt-port", "0"}, "--api-token"},
		{[]string{"local", "--regions", "eu-west1", "--api-addr", "", "--mqtt-port", "0"}, `region "eu-west1"`},
		{[]string{"local", "--quotas", "all"}, "--quotas"},
		{[]string{"device", "run"}, `required flag(s) "name"`},
		{[]string{"bench", "storm", "--policy", "fast"}, `--policy "fast"`},
		{[]string{"bench", "storm", "--devices", "0"}, "--devices 0"},
		{[]string{"bench", "storm", "--regions", "7"}, "--regions 7"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := newRootCmd()
			var out strings.Builder
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(append(tc.args, "--state-dir", t.TempDir()))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestDeviceRunHelpSaysNameIsRequired(t *testing.T) {
	cmd := newRootCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"device", "run", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "run --name NAME") || !strings.Contains(out.String(), "thing name, required") {
		t.Fatalf("help:\n%s", out.String())
	}
}

// TestBenchStormTiny runs `mriot bench storm` at 10 devices: one ratio line
// per retry policy, with no dead letter and no device lost.
func TestBenchStormTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("two storms of 10 devices take several seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(t, ctx, "bench", "storm", "--devices", "10")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ratio := regexp.MustCompile(`(?m)^  ratio \[(mriot|seed).*\]: all ACTIVE everywhere after .* × floor .* × minimal floor .*; dead letters 0; lost 0$`)
	if got := ratio.FindAllStringSubmatch(out, -1); len(got) != 2 || got[0][1] != "mriot" || got[1][1] != "seed" {
		t.Errorf("want a ratio line for mriot then seed, each with 0 dead letters and 0 lost:\n%s", out)
	}
	if n := strings.Count(out, "floor"); n < 6 {
		t.Errorf("want a floor per region:\n%s", out)
	}
}
