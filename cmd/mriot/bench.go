package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/emulator/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the local stack against its floor",
	}
	var (
		devices int
		regions []int
		policy  string
		timeout time.Duration
	)
	storm := &cobra.Command{
		Use:   "storm",
		Short: "Onboard N devices at once under AWS IoT's default quotas; print per region the calls, the floor and the ratio",
		Long: `storm starts an in-process local stack with --quotas aws in R regions,
has N devices connect at once through its global endpoint, and times every
device ACTIVE in every region. Per region it prints every throttled API's
calls, the floor (the slowest API's calls over its rate), the time and the
ratio, and the dead letters; then the devices lost. The same storm runs again
with the seed article's retry policy (Step Functions Retry MaxAttempts 2,
IntervalSeconds 1, BackoffRate 2, then roll back) for comparison.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var policies []bench.Policy
			switch policy {
			case "both":
				policies = []bench.Policy{bench.PolicyMriot, bench.PolicySeed}
			case "mriot":
				policies = []bench.Policy{bench.PolicyMriot}
			case "seed":
				policies = []bench.Policy{bench.PolicySeed}
			default:
				return fmt.Errorf("--policy %q: want both, mriot or seed", policy)
			}
			if devices < 1 {
				return fmt.Errorf("--devices %d: want at least 1", devices)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			return runStorms(ctx, cmd, bench.StormConfig{Devices: devices, Timeout: timeout}, regions, policies)
		},
	}
	f := storm.Flags()
	f.IntVar(&devices, "devices", 200, "devices onboarding at once")
	f.IntSliceVar(&regions, "regions", []int{2}, fmt.Sprintf("region counts to run (1 to %d), e.g. 2,3", len(bench.RegionNames)))
	f.StringVar(&policy, "policy", "both", "retry policy: both, mriot or seed")
	f.DurationVar(&timeout, "timeout", 0, "how long a storm may take; a device not ACTIVE everywhere then is lost (default 2m + 1s per 5 devices)")
	cmd.AddCommand(storm)
	return cmd
}

func runStorms(ctx context.Context, cmd *cobra.Command, cfg bench.StormConfig, regions []int, policies []bench.Policy) error {
	lost := 0
	for _, r := range regions {
		if r < 1 || r > len(bench.RegionNames) {
			return fmt.Errorf("--regions %d: want 1 to %d", r, len(bench.RegionNames))
		}
		cfg.Regions = r
		res, err := bench.Compare(ctx, cfg, policies, cmd.OutOrStdout())
		if err != nil {
			return fmt.Errorf("storm of %d devices in %d regions: %w", cfg.Devices, r, err)
		}
		for _, s := range res {
			lost += s.Lost
		}
	}
	if lost > 0 {
		return fmt.Errorf("%d devices lost", lost)
	}
	return nil
}
