// Command invoke runs one function's real bootstrap under the Lambda Runtime
// Interface Emulator with an event, as `sam local invoke -e` would, without
// Docker (make invoke FN=jitr EVENT=events/jitr-registered.json). The
// function talks to AWS_ENDPOINT_URL when set, in events/env.json or else in
// the shell (moto_server), and to AWS otherwise.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/mriot/mriot/internal/testkit/rie"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "invoke:", err)
		os.Exit(1)
	}
}

func run() error {
	fn := flag.String("fn", "", "function directory under functions/ (jitr, replicate, ingest, api, setup, presence, commands)")
	event := flag.String("event", "", "event file (JSON)")
	envFile := flag.String("env", "events/env.json", "env vars file in the sam local invoke --env-vars format")
	gobin := flag.String("gobin", "bin/tools", "where aws-lambda-rie is, or is installed")
	timeout := flag.Duration("timeout", 5*time.Minute, "overall time limit")
	flag.Parse()
	if *fn == "" || *event == "" {
		flag.Usage()
		return fmt.Errorf("-fn and -event are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	payload, err := os.ReadFile(*event)
	if err != nil {
		return fmt.Errorf("read event: %w", err)
	}
	env, err := rie.LoadEnv(*envFile, rie.LogicalID(*fn))
	if err != nil {
		return err
	}
	// events/env.json declares AWS_ENDPOINT_URL empty (as the template
	// does, so that sam local invoke --env-vars can set it): left empty
	// there, the shell's value (e.g. moto_server) still applies.
	if env["AWS_ENDPOINT_URL"] == "" {
		if v := os.Getenv("AWS_ENDPOINT_URL"); v != "" {
			env["AWS_ENDPOINT_URL"] = v
		}
	}
	if _, ok := os.LookupEnv("AWS_REGION"); !ok {
		if r := os.Getenv("AWS_DEFAULT_REGION"); r != "" {
			env["AWS_REGION"] = r
		}
	}
	gb, err := filepath.Abs(*gobin)
	if err != nil {
		return fmt.Errorf("gobin: %w", err)
	}
	bin, err := rie.Install(ctx, gb)
	if err != nil {
		return err
	}
	dir := filepath.Join("bin", "host", *fn)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build dir: %w", err)
	}
	bootstrap, err := rie.Build(ctx, ".", *fn, dir)
	if err != nil {
		return err
	}
	em, err := rie.Start(ctx, bin, bootstrap, env, os.Stderr)
	if err != nil {
		return err
	}
	defer em.Stop()
	resp, err := em.Invoke(ctx, payload)
	fmt.Println(string(resp))
	return err
}
