// Command coldstart measures every Lambda bootstrap's cold start under the
// Lambda Runtime Interface Emulator beside two peers built the same way in
// the same run: a bare aws-lambda-go handler (scripts/coldstart/hello) and
// the same handler with the SDK clients and the X-Ray SDK every function
// must link (scripts/coldstart/hellosdk). On a shared, noisy machine an
// absolute time says little; the ratios to the peers, measured round by
// round in a shuffled order, are the result.
//
// Init is what the emulator reports as INIT REPORT(durationMs): from the
// runtime process's start to its first request for work, the phase Lambda
// bills and reports as Init Duration. Sizes are of the linux/arm64 bootstrap
// that `make build` deploys.
//
//	go run ./scripts/coldstart [-rounds 10] [-fn jitr,api] [-src DIR]
//
// -src builds the functions of another checkout of this module (a before
// and after comparison); the peers are always built from this one.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/rie"
)

// events are the fixtures each function is invoked with: the invocation only
// starts the runtime, whose init is measured; its outcome does not matter.
var events = map[string]string{
	"jitr":      "events/jitr-registered.json",
	"replicate": "events/replicate-insert.json",
	"reconcile": "events/reconcile-scheduled.json",
	"ingest":    "events/ingest-telemetry.json",
	"api":       "events/api-get-device.json",
	"presence":  "events/presence-connected.json",
	"commands":  "events/commands-ack.json",
}

var allFunctions = []string{"jitr", "replicate", "reconcile", "ingest", "api", "setup", "presence", "commands"}

const (
	peerBare   = "hello"
	peerSDK    = "hello+sdk"
	peerNoXRay = "hello+sdk-xray"
)

type subject struct {
	name      string
	pkg       string // the main package's directory, relative to dir
	tags      string // build tags besides lambda.norpc
	dir       string // the module checkout to build it in
	logicalID string // its entry in events/env.json ("": none)
	event     []byte
	bootstrap string // host build
	arm64     int64  // size of the linux/arm64 build
	inits     []float64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "coldstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("coldstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rounds := fs.Int("rounds", 10, "cold starts per bootstrap")
	fns := fs.String("fn", strings.Join(allFunctions, ","), "functions under functions/ to measure, comma-separated")
	src := fs.String("src", root, "checkout of this module to build the functions from")
	gobin := fs.String("gobin", filepath.Join(root, "bin", "tools"), "where aws-lambda-rie is, or is installed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 {
		return fmt.Errorf("-rounds %d: at least 1", *rounds)
	}
	var names []string
	for fn := range strings.SplitSeq(*fns, ",") {
		fn = strings.TrimSpace(fn)
		if !slices.Contains(allFunctions, fn) {
			return fmt.Errorf("-fn: no function %q (have %s)", fn, strings.Join(allFunctions, ", "))
		}
		names = append(names, fn)
	}

	gb, err := filepath.Abs(*gobin)
	if err != nil {
		return err
	}
	rieBin, err := rie.Install(ctx, gb)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "coldstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	subjects := []*subject{
		{name: peerBare, pkg: "./scripts/coldstart/hello", dir: root},
		{name: peerSDK, pkg: "./scripts/coldstart/hellosdk", dir: root},
		{name: peerNoXRay, pkg: "./scripts/coldstart/hellosdk", dir: root, tags: "noxray"},
	}
	for _, fn := range names {
		s := &subject{name: fn, pkg: "./functions/" + fn, dir: *src, logicalID: rie.LogicalID(fn)}
		if ev, ok := events[fn]; ok {
			if s.event, err = os.ReadFile(filepath.Join(*src, ev)); err != nil {
				return fmt.Errorf("event of %s: %w", fn, err)
			}
		}
		subjects = append(subjects, s)
	}
	for _, s := range subjects {
		if s.event == nil {
			s.event = []byte("{}")
		}
		if err := s.build(ctx, work); err != nil {
			return err
		}
	}

	fmt.Fprintf(stderr, "coldstart: %d rounds of %d bootstraps under %s\n", *rounds, len(subjects), filepath.Base(rieBin))
	for r := range *rounds {
		order := slices.Clone(subjects)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, s := range order {
			ms, err := s.coldStart(ctx, rieBin, *src)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, s.name, err)
			}
			s.inits = append(s.inits, ms)
		}
	}
	report(stdout, subjects, *rounds)
	return nil
}

// build compiles the subject for the host (the emulator runs it) and for
// linux/arm64 (its deployed size), with the Makefile's Lambda flags.
func (s *subject) build(ctx context.Context, work string) error {
	dir := filepath.Join(work, strings.NewReplacer("+", "-", "-", "_").Replace(s.name))
	s.bootstrap = filepath.Join(dir, "bootstrap")
	arm := filepath.Join(dir, "bootstrap-arm64")
	for _, b := range []struct{ out, goarch string }{{s.bootstrap, ""}, {arm, "arm64"}} {
		tags := "lambda.norpc"
		if s.tags != "" {
			tags += "," + s.tags
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", tags,
			"-ldflags=-s -w", "-buildvcs=false", "-o", b.out, s.pkg)
		cmd.Dir = s.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if b.goarch != "" {
			cmd.Env = append(cmd.Env, "GOARCH="+b.goarch)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", s.name, err, bytes.TrimSpace(out))
		}
	}
	fi, err := os.Stat(arm)
	if err != nil {
		return err
	}
	s.arm64 = fi.Size()
	return nil
}

var initReport = regexp.MustCompile(`INIT REPORT\(durationMs: ([0-9.]+)\)`)

// coldStart starts a fresh emulator with the subject, invokes it once and
// returns the init duration the emulator reports.
func (s *subject) coldStart(ctx context.Context, rieBin, src string) (float64, error) {
	env := map[string]string{
		// Calls fail at once instead of reaching AWS: the invocation only
		// starts the runtime.
		"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "coldstart", "AWS_SECRET_ACCESS_KEY": "coldstart",
		"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
	}
	if s.logicalID != "" {
		fenv, err := rie.LoadEnv(filepath.Join(src, "events/env.json"), s.logicalID)
		if err != nil {
			return 0, err
		}
		maps.Copy(env, fenv)
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	api, err := freePort()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rieBin, "--runtime-interface-emulator-address", "127.0.0.1:"+port,
		"--runtime-api-address", "127.0.0.1:"+api, "--log-level", "info", s.bootstrap)
	cmd.Dir = filepath.Dir(s.bootstrap)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"), "HOME="+os.Getenv("HOME"))
	proc.Group(cmd, 2*time.Second) // the bootstrap stops with the emulator
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cancel(); _ = cmd.Wait() }()

	url := "http://127.0.0.1:" + port + "/2015-03-31/functions/function/invocations"
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("emulator never listened: %s", logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(s.event))
		if err != nil {
			return
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	for {
		if m := initReport.FindStringSubmatch(logs.String()); m != nil {
			return strconv.ParseFloat(m[1], 64)
		}
		select {
		case <-ctx.Done():
			return 0, errors.New("no INIT REPORT from the emulator:\n" + lastLines(logs.String(), 20))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func report(w io.Writer, subjects []*subject, rounds int) {
	med := map[string]float64{}
	for _, s := range subjects {
		med[s.name] = median(s.inits)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "bootstrap\tarm64 MB\tinit ms (median of %d)\tmin\tmax\t× %s\t× %s\t\n", rounds, peerBare, peerSDK)
	for _, s := range subjects {
		fmt.Fprintf(tw, "%s\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", s.name, float64(s.arm64)/1e6, med[s.name],
			slices.Min(s.inits), slices.Max(s.inits), med[s.name]/med[peerBare], med[s.name]/med[peerSDK])
	}
	tw.Flush()
	sdk, bare := subjectByName(subjects, peerSDK), subjectByName(subjects, peerNoXRay)
	fmt.Fprintf(w, "ratio X-Ray SDK: init %.2f ×, size %.2f × (%s over %s)\n", med[peerSDK]/med[peerNoXRay],
		float64(sdk.arm64)/float64(bare.arm64), peerSDK, peerNoXRay)
	for _, s := range subjects[3:] {
		fmt.Fprintf(w, "ratio %s init %.2f × %s, %.2f × %s; size %.2f × %s\n", s.name,
			med[s.name]/med[peerSDK], peerSDK, med[s.name]/med[peerBare], peerBare,
			float64(s.arm64)/float64(subjectByName(subjects, peerSDK).arm64), peerSDK)
	}
}

func subjectByName(ss []*subject, name string) *subject {
	for _, s := range ss {
		if s.name == name {
			return s
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// moduleRoot is the directory of go.mod at or above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// syncBuffer collects the emulator's output from its two pipes.
type syncBuffer = proc.Buffer
