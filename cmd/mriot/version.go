package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the module version, the VCS revision it was built from and the Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, ok := debug.ReadBuildInfo()
			if !ok {
				return fmt.Errorf("version: this binary carries no build information")
			}
			printVersion(cmd.OutOrStdout(), info)
			return nil
		},
	}
}

// printVersion writes the module's version ("(devel)" for a build from a
// checkout), the VCS revision, its time and whether the tree had changes
// (as `go build` stamps them with -buildvcs, the default in a checkout),
// and the Go version.
func printVersion(w io.Writer, info *debug.BuildInfo) {
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(w, "mriot %s\n", info.Main.Version)
	if rev := settings["vcs.revision"]; rev != "" {
		dirty := ""
		if settings["vcs.modified"] == "true" {
			dirty = " (with uncommitted changes)"
		}
		fmt.Fprintf(w, "revision %s%s\n", rev, dirty)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(w, "committed %s\n", t)
		}
	} else {
		fmt.Fprintln(w, "revision unknown (built without VCS information, e.g. go run or -buildvcs=false)")
	}
	fmt.Fprintf(w, "%s %s/%s\n", info.GoVersion, settings["GOOS"], settings["GOARCH"])
}
