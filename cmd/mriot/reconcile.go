package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mriot/mriot/internal/workflow/reconcile"
)

func newReconcileCmd() *cobra.Command {
	var (
		apiURL  string
		regions []string
		dryRun  bool
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Repair (or, with --dry-run, report) the drift between each region's registry and the inventory, once",
		Long: `Runs every region's reconciler through a whole pass, through the HTTP API of a
running mriot local (POST /regions/{region}/reconcile), and prints what it
found and repaired. With --dry-run it changes nothing and reports what it would
change (GET /regions/{region}/drift).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := url.Parse(apiURL)
			if err != nil || base.Scheme == "" || base.Host == "" {
				return fmt.Errorf("--api %q: want a URL such as http://127.0.0.1:8080", apiURL)
			}
			if len(regions) == 0 {
				if regions, err = apiRegions(base); err != nil {
					return err
				}
			}
			client := &http.Client{Timeout: 10 * time.Minute}
			var reports []reconcile.Report
			for _, region := range regions {
				rep, err := runReconcile(client, base, region, dryRun)
				if err != nil {
					return err
				}
				reports = append(reports, rep...)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(reports)
			}
			printReports(out, reports, dryRun)
			for _, r := range reports {
				if !dryRun && r.Unrepaired() > 0 {
					return fmt.Errorf("drift left unrepaired in %s (see the log; the next pass tries again)", r.Region)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&apiURL, "api", "http://127.0.0.1:8080", "the HTTP API of mriot local")
	f.StringSliceVar(&regions, "region", nil, "regions to reconcile (default: every region of the stack)")
	f.BoolVar(&dryRun, "dry-run", false, "report the drift, change nothing")
	f.BoolVar(&asJSON, "json", false, "print the reports as JSON")
	return cmd
}

// apiRegions asks the API which regions the stack runs (the health route
// answers them).
func apiRegions(base *url.URL) ([]string, error) {
	var body struct {
		Regions []string `json:"regions"`
	}
	if err := getJSON(&http.Client{Timeout: 10 * time.Second}, base.JoinPath("healthz").String(), &body); err != nil {
		return nil, err
	}
	if len(body.Regions) == 0 {
		return nil, fmt.Errorf("%s does not say which regions it runs; give --region", base)
	}
	return body.Regions, nil
}

// runReconcile reconciles one region (one report), or pages through its
// dry-run drift report.
func runReconcile(client *http.Client, base *url.URL, region string, dryRun bool) ([]reconcile.Report, error) {
	if !dryRun {
		resp, err := client.Post(base.JoinPath("regions", region, "reconcile").String(), "application/json", nil)
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", region, err)
		}
		var rep reconcile.Report
		if err := decode(resp, &rep); err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", region, err)
		}
		return []reconcile.Report{rep}, nil
	}
	var reports []reconcile.Report
	cursor := ""
	for {
		u := base.JoinPath("regions", region, "drift")
		if cursor != "" {
			u.RawQuery = url.Values{"cursor": {cursor}}.Encode()
		}
		var rep reconcile.Report
		if err := getJSON(client, u.String(), &rep); err != nil {
			return nil, fmt.Errorf("drift of %s: %w", region, err)
		}
		reports = append(reports, rep)
		if rep.Complete || rep.Next == "" {
			return reports, nil
		}
		cursor = rep.Next
	}
}

func getJSON(client *http.Client, u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	return decode(resp, v)
}

func decode(resp *http.Response, v any) error {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return json.Unmarshal(body, v)
}

func printReports(w io.Writer, reports []reconcile.Report, dryRun bool) {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	verb := "repaired"
	if dryRun {
		verb = "would repair"
	}
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\tchecked %d, %d findings, %d left\n", r.Region, r.Checked, len(r.Findings), r.Unrepaired())
		for _, f := range r.Findings {
			state := verb
			switch {
			case dryRun:
			case f.Repaired:
				state = "repaired"
			default:
				state = "NOT repaired " + f.Error
			}
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\n", f.Kind, f.ThingName, shortID(f.Certificate), state)
		}
	}
	_ = tw.Flush()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
