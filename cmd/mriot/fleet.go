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
	"time"

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
	var connected bool
	var limit int
	var all bool
	var since string
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the devices (every page); --status keeps one status, --connected the devices connected now",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			if status != "" && !fleet.Status(status).Valid() {
				return fmt.Errorf("--status %q: want ACTIVE, REVOKED or DECOMMISSIONED", status)
			}
			header := []string{"THING", "STATUS", "ORIGIN"}
			if connected {
				header = append(header, "CONNECTED IN", "SINCE")
			}
			devs, _, err := collect(true, func(cursor string) ([]api.DeviceSummary, string, error) {
				page, err := c.ListDevices(cmd.Context(), fleetapi.DeviceQuery{Limit: 1000, Cursor: cursor, Connected: connected})
				return page.Items, page.Next, err
			})
			if err != nil {
				return err
			}
			var rows [][]string
			items := []api.DeviceSummary{}
			for _, d := range devs {
				if status != "" && string(d.Status) != status {
					continue
				}
				items = append(items, d)
				row := []string{d.ThingName, string(d.Status), d.OriginRegion}
				if connected {
					row = append(row, where(d.Connected), sinceCol(d.Connected))
				}
				rows = append(rows, row)
			}
			return ff.print(cmd.OutOrStdout(), api.DeviceList{Items: items}, header, rows)
		},
	}
	ls.Flags().StringVar(&status, "status", "", "only devices with this status (ACTIVE, REVOKED, DECOMMISSIONED)")
	ls.Flags().BoolVar(&connected, "connected", false, "only devices connected now, with the region they are connected to")

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
			fmt.Fprintf(w, "%s  %s  version %d  origin %s  certificate %s  live everywhere: %s\n",
				v.ThingName, v.Status, v.Version, v.OriginRegion, v.CertificateID, yes(v.Live))
			switch {
			case v.Connected != nil:
				fmt.Fprintf(w, "connected in %s since %s\n", v.Connected.Region, v.Connected.Since.UTC().Format(time.RFC3339))
			case v.LastSeen != nil:
				fmt.Fprintf(w, "not connected; last seen %s\n", v.LastSeen.UTC().Format(time.RFC3339))
			default:
				fmt.Fprintln(w, "never seen connected")
			}
			for _, rc := range v.Retiring {
				fmt.Fprintf(w, "previous certificate %s works until %s (rotation grace)\n", rc.CertificateID, rc.RetireAt.UTC().Format(time.RFC3339))
			}
			fmt.Fprintln(w)
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
			items, cursor, err := collect(all, func(cursor string) ([]api.TelemetryItem, string, error) {
				page, err := c.Telemetry(cmd.Context(), args[0], fleetapi.TelemetryQuery{Limit: limit, Cursor: cursor, Since: since})
				return page.Items, page.Next, err
			})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, m := range items {
				rows = append(rows, []string{fmt.Sprint(m.TS), m.Region, string(m.Message)})
			}
			out := api.TelemetryList{Items: items, Next: cursor}
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
	telemetry.Flags().BoolVar(&all, "all", false, "every page, down to the oldest message (or to --since)")
	telemetry.Flags().StringVar(&since, "since", "", "only messages at or after this: RFC 3339, epoch milliseconds, or a duration back from now (15m)")

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
	cmd.AddCommand(ls, get, telemetry, revoke, decommission, ff.sendCmd(), ff.commandsCmd())
	return cmd
}

// sendCmd is `mriot fleet send`.
func (ff *fleetFlags) sendCmd() *cobra.Command {
	var payload string
	var ttl, timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "send NAME --payload JSON",
		Short: "Send a command to a device, wherever it is connected or when it next connects",
		Long: `Queues a command for the device. The API delivers it on e/<thing>/cmd/<id>
in the region the device is connected to, or when it next connects, in any
region, until --ttl has passed; the device acknowledges on
i/<thing>/ack/<id>. --wait polls until the command is ACKED (exit 0) or
EXPIRED (exit 1), or --timeout passes (exit 1, the command stays queued).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if payload == "" {
				return errors.New("--payload is required (a JSON value, e.g. '{\"op\":\"reboot\"}')")
			}
			if !json.Valid([]byte(payload)) {
				return fmt.Errorf("--payload %q is not JSON", payload)
			}
			if ttl < 0 || ttl%time.Second != 0 {
				return fmt.Errorf("--ttl %s: want a whole number of seconds", ttl)
			}
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			sent, err := c.SendCommand(cmd.Context(), args[0], json.RawMessage(payload), ttl)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if !wait {
				if ff.output == "json" {
					return ff.print(w, sent, nil, nil)
				}
				fmt.Fprintf(w, "command %s to %s: %s until %s (mriot fleet commands %s)\n",
					sent.ID, args[0], sent.Status, sent.ExpiresAt.UTC().Format(time.RFC3339), args[0])
				return nil
			}
			if ff.output != "json" {
				fmt.Fprintf(w, "command %s to %s: %s; waiting for the acknowledgement\n", sent.ID, args[0], sent.Status)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			got, err := c.WaitCommand(ctx, args[0], sent.ID, time.Second)
			if got.ID == "" {
				got = sent
			}
			if ff.output == "json" {
				if perr := ff.print(w, got, nil, nil); perr != nil {
					return perr
				}
			} else if err == nil {
				fmt.Fprintf(w, "command %s: %s%s\n", got.ID, got.Status, delivered(got))
			}
			switch {
			case errors.Is(err, context.DeadlineExceeded):
				return fmt.Errorf("command %s still %s after %s: it stays queued until %s", got.ID, got.Status, timeout, got.ExpiresAt.UTC().Format(time.RFC3339))
			case err != nil:
				return err
			case got.Status != fleet.CommandAcked:
				return fmt.Errorf("command %s %s: the device did not acknowledge it in time", got.ID, got.Status)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&payload, "payload", "", "the command, a JSON value")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the command may wait for the device (default: the API's, 24h)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the device acknowledges the command or it expires")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long --wait waits")
	return cmd
}

// commandsCmd is `mriot fleet commands`.
func (ff *fleetFlags) commandsCmd() *cobra.Command {
	var limit int
	var all bool
	cmd := &cobra.Command{
		Use:   "commands NAME",
		Short: "A device's commands, newest first, with their delivery status",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := ff.client(cmd.Context())
			if err != nil {
				return err
			}
			items, cursor, err := collect(all, func(cursor string) ([]api.CommandView, string, error) {
				page, err := c.Commands(cmd.Context(), args[0], limit, cursor)
				return page.Items, page.Next, err
			})
			if err != nil {
				return err
			}
			var rows [][]string
			for _, m := range items {
				rows = append(rows, []string{m.ID, string(m.Status), m.CreatedAt.UTC().Format(time.RFC3339),
					m.SentRegion, fmt.Sprint(m.Deliveries), stamp(m.AckedAt), string(m.Payload)})
			}
			w := cmd.OutOrStdout()
			if err := ff.print(w, api.CommandList{Items: items, Next: cursor}, []string{"ID", "STATUS", "CREATED", "SENT IN", "DELIVERIES", "ACKED", "PAYLOAD"}, rows); err != nil {
				return err
			}
			if cursor != "" && ff.output != "json" {
				fmt.Fprintf(w, "older commands: --all, or the API's cursor %s\n", cursor)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "commands per page (default: the API's)")
	cmd.Flags().BoolVar(&all, "all", false, "every page")
	return cmd
}

// collect reads pages from fetch, from the first, while all is set and a
// cursor is left, and returns their items (never nil) and the cursor where
// it stopped ("" at the end).
func collect[T any](all bool, fetch func(cursor string) ([]T, string, error)) ([]T, string, error) {
	items := []T{}
	cursor := ""
	for {
		page, next, err := fetch(cursor)
		if err != nil {
			return nil, "", err
		}
		items = append(items, page...)
		cursor = next
		if !all || cursor == "" {
			return items, cursor, nil
		}
	}
}

// where is the CONNECTED column: the region, or "-".
func where(c *api.Connection) string {
	if c == nil {
		return "-"
	}
	return c.Region
}

// sinceCol is the SINCE column: when the session began, or "-".
func sinceCol(c *api.Connection) string {
	if c == nil {
		return "-"
	}
	return c.Since.UTC().Format(time.RFC3339)
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// delivered says where and how often a command was delivered.
func delivered(c api.CommandView) string {
	if c.SentRegion == "" {
		return ""
	}
	return fmt.Sprintf(" (delivered in %s, %d time(s))", c.SentRegion, c.Deliveries)
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
