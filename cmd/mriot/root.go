package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/emulator/pki"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "mriot",
		Short:         "Multi-region serverless AWS IoT onboarding and telemetry, runnable on one machine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("state-dir", ".mriot", "directory of the local PKI and state")
	root.AddCommand(newPKICmd(), newLocalCmd(), newDeviceCmd(), newReconcileCmd(), newBenchCmd(), newVersionCmd(), newFleetCmd())
	return root
}

func stateDir(cmd *cobra.Command) string {
	d, _ := cmd.Flags().GetString("state-dir")
	return d
}

func newPKICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the fleet's certificates (root CA, intermediate CA, server, devices)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "init",
		Short: "Create the root CA, the intermediate CA and the iot.example.com server certificate (kept if present)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := pki.Store{Dir: stateDir(cmd)}
			inter, err := s.Init()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CA (register this in AWS IoT): %s\nCA certificate id:             %s\nroot CA (devices' --cafile):   %s\nserver certificate:            %s\n",
				s.Path(pki.InterCertFile), fleet.CertificateID(inter.Cert), s.Path(pki.RootCertFile), s.Path(pki.ServerCertFile))
			return nil
		},
	})
	var renew bool
	device := &cobra.Command{
		Use:   "device NAME...",
		Short: "Issue device certificates whose CN is the thing name (--renew: a new one for an existing device)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := pki.Store{Dir: stateDir(cmd)}
			if _, err := s.Init(); err != nil {
				return err
			}
			for _, name := range args {
				if err := fleet.ValidateThingName(name); err != nil {
					return fmt.Errorf("device %q: %w", name, err)
				}
				issue := s.Device
				if renew {
					issue = s.RenewDevice
				}
				certFile, keyFile, err := issue(name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: --cert %s --key %s\n", name, certFile, keyFile)
			}
			return nil
		},
	}
	device.Flags().BoolVar(&renew, "renew", false,
		"issue a new key and certificate for a device that has one (NotBefore later than the current one's); the previous pair is kept as NAME"+pki.PreviousSuffix+".crt/.key")
	cmd.AddCommand(device)
	return cmd
}
