package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
	"github.com/mriot/mriot/internal/emulator/sim"
)

func newDeviceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Simulated devices"}
	var (
		name     string
		count    int
		endpoint string
		caFile   string
		rate     float64
		messages int
		duration time.Duration
	)
	run := &cobra.Command{
		Use:   "run --name NAME",
		Short: "Connect as a device (or --count devices), back off while refused, then publish telemetry with QoS 1",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := fleet.ValidateThingName(name); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			store := pki.Store{Dir: stateDir(cmd)}
			if _, err := store.Init(); err != nil {
				return err
			}
			if caFile == "" {
				caFile = filepath.Join(store.Dir, pki.RootCertFile)
			}
			cfg := sim.Config{
				Endpoint: endpoint, CAFile: caFile, Rate: rate, Messages: messages,
				Progress: cmd.OutOrStdout(),
			}
			if count <= 1 {
				certFile, keyFile, err := store.Device(name)
				if err != nil {
					return err
				}
				cfg.Devices = []sim.Device{{Name: name, CertFile: certFile, KeyFile: keyFile}}
			} else {
				cfg.Count = count
				cfg.Mint = func(i int) (sim.Device, error) {
					n := fmt.Sprintf("%s-%05d", name, i+1)
					certFile, keyFile, err := store.Device(n)
					return sim.Device{Name: n, CertFile: certFile, KeyFile: keyFile}, err
				}
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel func()
				ctx, cancel = contextWithTimeout(ctx, duration)
				defer cancel()
			}
			sum, err := sim.Run(ctx, cfg)
			fmt.Fprintln(cmd.OutOrStdout(), sum.String())
			return err
		},
	}
	f := run.Flags()
	f.StringVar(&name, "name", "", "thing name, required (with --count, the prefix of NAME-00001 ...)")
	f.IntVar(&count, "count", 1, "number of devices")
	f.StringVar(&endpoint, "endpoint", "localhost:8883", "MQTT endpoint host:port (iot.example.com's address)")
	f.StringVar(&caFile, "cafile", "", "CA file that verifies the server (default: <state-dir>/root-ca.crt)")
	f.Float64Var(&rate, "rate", 1, "messages per second per device")
	f.IntVar(&messages, "messages", 5, "messages per device (0: until stopped)")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: when done)")
	_ = run.MarkFlagRequired("name")
	cmd.AddCommand(run)
	return cmd
}
