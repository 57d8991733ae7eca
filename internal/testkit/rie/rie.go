// Package rie runs a function's real bootstrap under the AWS Lambda Runtime
// Interface Emulator (aws-lambda-rie), without Docker, the way
// `sam local invoke -e` runs it in a container: the same binary, the
// environment of `sam local invoke --env-vars` (events/env.json), the event
// POSTed to the emulator's invoke endpoint. `make invoke` and the deploy
// tests use it.
package rie

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mriot/mriot/internal/testkit/proc"
)

// Module is the emulator's command at the pinned version, for go install.
const Module = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d"

// Binary is the emulator's executable name.
const Binary = "aws-lambda-rie"

// ErrNotInstalled says the emulator is not installed and could not be.
var ErrNotInstalled = errors.New("aws-lambda-rie not installed")

// Find returns the emulator's path: $AWS_LAMBDA_RIE, then gobin, then PATH.
// The error wraps ErrNotInstalled.
func Find(gobin string) (string, error) {
	if p := os.Getenv("AWS_LAMBDA_RIE"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%w: AWS_LAMBDA_RIE=%s is not an executable", ErrNotInstalled, p)
	}
	if gobin != "" {
		if p := filepath.Join(gobin, Binary); isExecutable(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath(Binary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: not in %s nor on PATH", ErrNotInstalled, gobin)
}

// Install returns the emulator's path, installing it into gobin with
// `go install` (through the Go module proxy) when Find does not find it.
// The error wraps ErrNotInstalled when go install fails.
func Install(ctx context.Context, gobin string) (string, error) {
	if p, err := Find(gobin); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return "", fmt.Errorf("install %s: %w", Binary, err)
	}
	cmd := exec.CommandContext(ctx, goTool(), "install", Module)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
	cmd.Dir = gobin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%w: go install %s: %w: %s", ErrNotInstalled, Module, err, bytes.TrimSpace(out))
	}
	return Find(gobin)
}

func goTool() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" && isExecutable(p) {
		return p
	}
	return "go"
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// LogicalID is the template's logical id of a function directory name:
// jitr -> JitrFunction.
func LogicalID(fn string) string {
	if fn == "" {
		return ""
	}
	r := []rune(fn)
	r[0] = unicode.ToUpper(r[0])
	return string(r) + "Function"
}

// LoadEnv reads the variables of one function from a file in the
// `sam local invoke --env-vars` format: {"<LogicalId>": {"NAME": "value"}}.
// Values may be strings, numbers or booleans, as SAM accepts. A
// "Parameters" object applies to every function, below its own variables.
func LoadEnv(path, logicalID string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read env vars file: %w", err)
	}
	var file map[string]map[string]any
	if err := json.Unmarshal(b, &file); err != nil {
		return nil, fmt.Errorf("env vars file %s: want {\"LogicalId\": {\"NAME\": \"value\"}}: %w", path, err)
	}
	vars, ok := file[logicalID]
	if !ok {
		return nil, fmt.Errorf("env vars file %s has no entry for %s", path, logicalID)
	}
	out := map[string]string{}
	for _, src := range []map[string]any{file["Parameters"], vars} {
		for k, v := range src {
			switch x := v.(type) {
			case string:
				out[k] = x
			case float64, bool:
				out[k] = fmt.Sprint(x)
			default:
				return nil, fmt.Errorf("env vars file %s: %s.%s is a %T, want a string", path, logicalID, k, v)
			}
		}
	}
	return out, nil
}

// Build compiles ./functions/<fn> of the module at root for the host (the
// emulator runs it as a local process) into dir/bootstrap, with the Lambda
// build tags and flags of the Makefile.
func Build(ctx context.Context, root, fn, dir string) (string, error) {
	out := filepath.Join(dir, "bootstrap")
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-tags", "lambda.norpc", "-o", out, "./functions/"+fn)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build function %s: %w: %s", fn, err, bytes.TrimSpace(b))
	}
	return out, nil
}

// Emulator is a running aws-lambda-rie with one function.
type Emulator struct {
	// URL is the invoke endpoint.
	URL string

	cmd    *exec.Cmd
	cancel context.CancelFunc // stops it: SIGTERM, SIGKILL after stopGrace
	done   chan struct{}
	mu     sync.Mutex
	logs   bytes.Buffer
	tee    io.Writer
}

// Write collects the emulator's and the function's output.
func (e *Emulator) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.logs.Write(p)
	if e.tee != nil {
		_, _ = e.tee.Write(p)
	}
	return len(p), nil
}

// Logs returns everything the emulator and the function printed so far.
func (e *Emulator) Logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

// Start runs bootstrap under the emulator at rieBin on free 127.0.0.1 ports,
// with the process environment plus env (env wins), and waits until it
// listens. Output goes to logs as well (nil: kept only for Logs).
func Start(ctx context.Context, rieBin, bootstrap string, env map[string]string, logs io.Writer) (*Emulator, error) {
	invokePort, err := freePort()
	if err != nil {
		return nil, err
	}
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + invokePort
	e := &Emulator{URL: "http://" + addr + "/2015-03-31/functions/function/invocations", done: make(chan struct{}), tee: logs}
	abs, err := filepath.Abs(bootstrap)
	if err != nil {
		return nil, fmt.Errorf("bootstrap path: %w", err)
	}
	// The emulator lives until Stop, not until ctx ends: ctx bounds the start.
	procCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	cmd := exec.CommandContext(procCtx, rieBin,
		"--runtime-interface-emulator-address", addr,
		"--runtime-api-address", "127.0.0.1:"+apiPort,
		"--log-level", "warn",
		abs)
	cmd.Dir = filepath.Dir(abs)
	cmd.Env = mergeEnv(os.Environ(), env)
	cmd.Stdout, cmd.Stderr = e, e
	// The group holds the function's bootstrap too: Stop's SIGTERM reaches
	// both; a Ctrl-C of make invoke reaches the script, which stops them.
	proc.Group(cmd, stopGrace)
	e.cmd = cmd
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s: %w", rieBin, err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return e, nil
		}
		select {
		case <-e.done:
			return nil, fmt.Errorf("aws-lambda-rie exited before listening on %s: %s", addr, e.Logs())
		case <-ctx.Done():
			e.Stop()
			return nil, fmt.Errorf("aws-lambda-rie on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.Stop()
			return nil, fmt.Errorf("aws-lambda-rie did not listen on %s within 15s: %s", addr, e.Logs())
		}
	}
}

// FunctionError is an invocation the function answered with an error.
type FunctionError struct {
	Type    string `json:"errorType"`
	Message string `json:"errorMessage"`
}

func (e *FunctionError) Error() string { return "function error " + e.Type + ": " + e.Message }

// Invoke POSTs the event and returns the function's response. A function
// error is returned as a *FunctionError, with the response.
func (e *Emulator) Invoke(ctx context.Context, event []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(event))
	if err != nil {
		return nil, fmt.Errorf("invoke request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", e.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read invoke response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("invoke: HTTP %d: %s", resp.StatusCode, body)
	}
	var fe FunctionError
	if resp.Header.Get("X-Amz-Function-Error") != "" ||
		(json.Unmarshal(body, &fe) == nil && fe.Type != "" && fe.Message != "") {
		if fe.Type == "" {
			_ = json.Unmarshal(body, &fe)
		}
		return body, &fe
	}
	return body, nil
}

// stopGrace is how long the emulator has to exit on SIGTERM before it is
// killed.
const stopGrace = 3 * time.Second

// Stop ends the emulator and its function (SIGTERM to their process group;
// the emulator is killed if it is still there stopGrace later) and waits
// until it has exited.
func (e *Emulator) Stop() {
	e.cancel()
	<-e.done
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	if err != nil {
		return "", fmt.Errorf("pick a free port: %w", err)
	}
	return port, nil
}

// mergeEnv returns base with the variables of over set (replacing any).
func mergeEnv(base []string, over map[string]string) []string {
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if _, replaced := over[name]; !replaced {
			out = append(out, kv)
		}
	}
	for k, v := range over {
		out = append(out, k+"="+v)
	}
	return out
}
