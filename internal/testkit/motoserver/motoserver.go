// Package motoserver runs moto_server for the adapter test tier: the AWS
// adapters (internal/aws/awsiot, internal/aws/awsddb) are exercised against a real
// HTTP API that speaks the AWS wire protocols.
//
// One moto_server process serves a whole test binary. Each Start hands out a
// Server scoped to a fresh AWS account id (moto's x-moto-account-id header),
// so tests are isolated from each other without resetting the server and may
// run in parallel. The process stops when the last test that holds it
// finishes, or, under Main, when the test binary's tests are done; it also
// exits by itself when the test binary dies (its standard input closes).
//
// moto is started with certificate ids equal to the hex SHA-256 of the DER,
// as in AWS IoT (moto's iot use_valid_cert setting, see launcher.py).
package motoserver

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/mriot/mriot/internal/testkit/proc"
	"github.com/mriot/mriot/internal/testkit/tier"
)

//go:embed launcher.py
var launcher string

// PythonEnv names the environment variable that overrides the python
// interpreter used to run moto (default: python3 on PATH).
const PythonEnv = "MOTO_PYTHON"

// accountHeader makes moto keep a separate backend per account id.
const accountHeader = "x-moto-account-id"

// startTimeout bounds how long moto may take to start on a loaded machine.
const startTimeout = 60 * time.Second

// Server is one test's view of the shared moto_server: its URL and the
// account id that isolates the test's resources.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// AccountID is the AWS account id of this handle's resources.
	AccountID string
}

var (
	mu       sync.Mutex
	shared   *process
	refs     int
	keep     bool // under Main: keep the process until the tests are done
	accounts atomic.Int64
)

// errNotInstalled marks a launch that failed because python or moto is missing.
var errNotInstalled = errors.New("moto_server not found")

// Start returns a handle on the shared moto_server, starting it if needed, and
// registers a cleanup that releases it. When moto is not installed the test
// is skipped, or fails when the environment has CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared == nil || shared.exited() {
		began := time.Now()
		p, err := launch()
		if err != nil {
			if errors.Is(err, errNotInstalled) {
				tier.Require(t, "%v", err)
			}
			t.Fatalf("start moto_server: %v", err)
		}
		t.Logf("moto_server started at %s in %v", p.url, time.Since(began).Round(time.Millisecond))
		shared = p
	}
	refs++
	p := shared
	t.Cleanup(func() { release(p) })
	n := accounts.Add(1)
	return &Server{URL: p.url, AccountID: fmt.Sprintf("%012d", 100000000000+n)}
}

// Main runs the tests of a package that uses moto in several tests, keeping
// one moto_server for all of them and stopping it at the end:
//
//	func TestMain(m *testing.M) { os.Exit(motoserver.Main(m)) }
//
// moto is started lazily, so a run that selects no moto test starts nothing.
func Main(m *testing.M) int {
	mu.Lock()
	keep = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	keep = false
	if shared != nil {
		shared.stop()
		shared = nil
	}
	return code
}

func release(p *process) {
	mu.Lock()
	defer mu.Unlock()
	if p != shared {
		return
	}
	refs--
	if refs == 0 && !keep {
		shared.stop()
		shared = nil
	}
}

// Config returns an SDK configuration for region that talks to this server
// with static test credentials, in this handle's account.
func (s *Server) Config(region string) aws.Config {
	return aws.Config{
		Region:       region,
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDMOTOTEST", "moto-test-secret", ""),
		BaseEndpoint: aws.String(s.URL),
		APIOptions: []func(*middleware.Stack) error{
			smithyhttp.SetHeaderValue(accountHeader, s.AccountID),
		},
	}
}

// process is a running moto_server.
type process struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc // stops it: SIGTERM, SIGKILL after stopGrace
	url    string
	stdin  io.WriteCloser
	done   chan struct{}

	logMu sync.Mutex
	tail  []string // the last lines of stderr, for error messages
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) addLine(line string) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	p.tail = append(p.tail, line)
	if len(p.tail) > 20 {
		p.tail = p.tail[len(p.tail)-20:]
	}
}

func (p *process) output() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Join(p.tail, "\n")
}

var runningOn = regexp.MustCompile(`Running on (http://127\.0\.0\.1:[0-9]+)`)

// launch starts moto_server on 127.0.0.1 with a port the kernel picks, and
// waits until it answers HTTP.
func launch() (*process, error) {
	python := os.Getenv(PythonEnv)
	if python == "" {
		var err error
		if python, err = exec.LookPath("python3"); err != nil {
			return nil, fmt.Errorf("%w: no python3 on PATH: %w", errNotInstalled, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, python, "-c", launcher, "--host", "127.0.0.1", "--port", "0")
	proc.Group(cmd, stopGrace)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("%w: run %s: %w", errNotInstalled, python, err)
	}
	p := &process{cmd: cmd, cancel: cancel, stdin: stdin, done: make(chan struct{})}
	urls := make(chan string, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.addLine(line)
			if m := runningOn.FindStringSubmatch(line); !found && m != nil {
				found = true
				urls <- m[1]
			}
		}
		// Keep draining whatever is left so that moto never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-readDone
		_ = cmd.Wait()
		close(p.done)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case p.url = <-urls:
	case <-p.done:
		out := p.output()
		if strings.Contains(out, "MOTO_IMPORT_ERROR") {
			return nil, fmt.Errorf("%w: %s cannot import moto: %s", errNotInstalled, python, out)
		}
		return nil, fmt.Errorf("moto_server exited (%v) before listening: %s", cmd.ProcessState, out)
	case <-timer.C:
		p.stop()
		return nil, fmt.Errorf("moto_server did not listen within %v: %s", startTimeout, p.output())
	}
	if err := p.waitHTTP(timer.C); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitHTTP polls the server until it answers an HTTP request.
func (p *process) waitHTTP(deadline <-chan time.Time) error {
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/moto-api/", nil)
		if err != nil {
			cancel()
			return fmt.Errorf("moto_server probe: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			return nil
		}
		cancel()
		select {
		case <-p.done:
			return fmt.Errorf("moto_server exited while starting: %s", p.output())
		case <-deadline:
			return fmt.Errorf("moto_server at %s did not answer: %w", p.url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stopGrace is how long moto has to exit on SIGTERM before it is killed.
const stopGrace = 5 * time.Second

// stop ends the process (SIGTERM to its group; killed if it is still there
// stopGrace later) and waits for it to exit.
func (p *process) stop() {
	_ = p.stdin.Close()
	p.cancel()
	<-p.done
}
