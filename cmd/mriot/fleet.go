package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/core/fleet"
	"github.com/mriot/mriot/internal/operator/fleetapi"
	"github.com/mriot/mriot/internal/workflow/api"
)

// endpointEnv names the API when --endpoint is not given.
const endpointEnv = "MRIOT_ENDPOINT"

type fleetFlags struct {
	endpoint, token, region, output string
	sigv4                           string // auto, on, off
}

func newFleetCmd() *cobra.Command {
	var ff fleetFlags
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Operate the fleet through its HTTP API: the local stack's or the deployed one (SigV4)",
		Long: `Calls the fleet HTTP API at --endpoint (default $` + endpointEnv + `, then
http://127.0.0.1:8080, the local stack's). An execute-api endpoint is AWS's:
every request is signed with SigV4 for execute-api in the endpoint's region,
with the credentials of the AWS SDK's default chain (environment, profile,
SSO, instance role). The local API takes --api-token (default $` + apiTokenEnv + `).

Tables for people by default; -o json prints the API's answers.`,
	}
	p := cmd.PersistentFlags()
	p.StringVar(&ff.endpoint, "endpoint", "", "API base URL (default $"+endpointEnv+" or http://127.0.0.1:8080)")
	p.StringVar(&ff.token, "api-token", "", "bearer token of the local API (default $"+apiTokenEnv+")")
	p.StringVar(&ff.region, "region", "", "SigV4 region (default: from an execute-api endpoint's host)")
	p.StringVar(&ff.sigv4, "sigv4", "auto", "sign requests with SigV4: auto (for execute-api endpoints), on or off")
	p.StringVarP(&ff.output, "output", "o", "table", "table or json")

	var status string
	var limit int
	var all bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the devices (every page), with --status to keep one status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			if status != "" && !fleet.Status(status).Valid() {
				return fmt.Errorf("--status %q: want ACTIVE, REVOKED or DECOMMISSIONED", status)
			}
			var rows [][]string
			var items []any
			cursor := ""
			for {
				page, err := c.ListDevices(cmd.Context(), 1000, cursor)
				if err != nil {
					return err
				}
				for _, d := range page.Items {
					if status != "" && string(d.Status) != status {
						continue
					}
					items = append(items, d)
					rows = append(rows, []string{d.ThingName, string(d.Status), d.OriginRegion})
				}
				if page.Next == "" {
					break
				}
				cursor = page.Next
			}
			return ff.print(cmd.OutOrStdout(), map[string]any{"items": items}, []string{"THING", "STATUS", "ORIGIN"}, rows)
		},
	}
	ls.Flags().StringVar(&status, "status", "", "only devices with this status (ACTIVE, REVOKED, DECOMMISSIONED)")

	get := &cobra.Command{
		Use:   "get NAME",
		Short: "A device's record and its state in every region",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			var rows [][]string
			for _, r := range slices.Sorted(maps.Keys(v.Regions)) {
				rv := v.Regions[r]
				state := "live"
				switch {
				case rv.Error != "":
					state = "unreadable: " + rv.Error
				case !rv.Live():
					state = "not live"
				}
				rows = append(rows, []string{r, yes(rv.Thing), string(rv.CertificateStatus), yes(rv.PrincipalAttached), yes(rv.PolicyAttached), state})
			}
			if ff.output == "json" {
				return ff.print(cmd.OutOrStdout(), v, nil, nil)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s  %s  version %d  origin %s  certificate %s  live everywhere: %s\n\n",
				v.ThingName, v.Status, v.Version, v.OriginRegion, v.CertificateID, yes(v.Live))
			return ff.print(w, nil, []string{"REGION", "THING", "CERTIFICATE", "ATTACHED", "POLICY", "STATE"}, rows)
		},
	}

	telemetry := &cobra.Command{
		Use:   "telemetry NAME",
		Short: "A device's newest messages",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			var rows [][]string
			var items []api.TelemetryItem
			cursor := ""
			for {
				page, err := c.Telemetry(cmd.Context(), args[0], limit, cursor)
				if err != nil {
					return err
				}
				for _, m := range page.Items {
					items = append(items, m)
					rows = append(rows, []string{fmt.Sprint(m.TS), m.Region, string(m.Message)})
				}
				cursor = page.Next
				if !all || cursor == "" {
					break
				}
			}
			out := api.TelemetryList{Items: items, Next: cursor}
			if out.Items == nil {
				out.Items = []api.TelemetryItem{}
			}
			if err := ff.print(cmd.OutOrStdout(), out, []string{"TS", "REGION", "MESSAGE"}, rows); err != nil {
				return err
			}
			if cursor != "" && ff.output != "json" {
				fmt.Fprintf(cmd.OutOrStdout(), "older messages: --all, or the API's cursor %s\n", cursor)
			}
			return nil
		},
	}
	telemetry.Flags().IntVar(&limit, "limit", 0, "messages per page (default: the API's)")
	telemetry.Flags().BoolVar(&all, "all", false, "every page, down to the oldest message")

	change := func(use, short string, call func(*fleetapi.Client, context.Context, string) (any, bool, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := ff.client(cmd.Context())
				if err != nil {
					return err
				}
				rec, changed, err := call(c, cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if ff.output == "json" {
					return ff.print(cmd.OutOrStdout(), rec, nil, nil)
				}
				if changed {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s accepted; every region converges to it (mriot fleet get %s)\n", args[0], use, args[0])
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: already so, nothing changed\n", args[0])
				}
				return nil
			},
		}
	}
	revoke := change("revoke", "Revoke a device in every region (absorbing)", func(c *fleetapi.Client, ctx context.Context, n string) (any, bool, error) {
		return c.Revoke(ctx, n)
	})
	decommission := change("decommission", "Remove a device from every region; its certificate stays REVOKED", func(c *fleetapi.Client, ctx context.Context, n string) (any, bool, error) {
		return c.Decommission(ctx, n)
	})
	cmd.AddCommand(ls, get, telemetry, revoke, decommission)
	return cmd
}

// client builds the API client the flags describe.
func (ff *fleetFlags) client(ctx context.Context) (*fleetapi.Client, error) {
	if ff.output != "table" && ff.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", ff.output)
	}
	raw := ff.endpoint
	if raw == "" {
		raw = os.Getenv(endpointEnv)
	}
	if raw == "" {
		raw = "http://127.0.0.1:8080"
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--endpoint %q: want an http or https URL", raw)
	}
	c := &fleetapi.Client{Endpoint: u, Token: ff.token}
	if c.Token == "" {
		c.Token = os.Getenv(apiTokenEnv)
	}
	region, isAWS := fleetapi.RegionOf(u.Host)
	if ff.region != "" {
		region = ff.region
	}
	var sign bool
	switch ff.sigv4 {
	case "auto":
		sign = isAWS
	case "on":
		sign = true
	case "off":
	default:
		return nil, fmt.Errorf("--sigv4 %q: want auto, on or off", ff.sigv4)
	}
	if sign {
		if region == "" {
			return nil, errors.New("--sigv4 on needs --region (the endpoint's host does not name one)")
		}
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
		if err != nil {
			return nil, fmt.Errorf("AWS credentials for SigV4: %w", err)
		}
		c.Credentials, c.Region = cfg.Credentials, region
	}
	return c, nil
}

// print writes v as JSON with -o json, else the table.
func (ff *fleetFlags) print(w io.Writer, v any, header []string, rows [][]string) error {
	if ff.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
