package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/testkit/tier"
)

// quickStartMarker precedes the README block a new user runs in a second
// terminal while `make run` serves in the first.
const quickStartMarker = "<!-- quickstart:"

// TestReadmeQuickStart runs the README's quick start as a newcomer does, in
// a fresh copy of the repository (no bin/, no .mriot/): `make run` in one
// process, then the README's block, verbatim, in bash with -e. It is the
// README that is tested: an edit that breaks a step fails here.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the whole system")
	}
	for _, tool := range []string{"make", "bash", "mosquitto_pub", "curl", "jq", "git"} {
		tier.Tool(t, tool)
	}
	for _, port := range []string{"8883", "8884", "8885", "8080"} {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			tier.Require(t, "the quick start needs port %s, which is busy here: %v", port, err)
		}
		l.Close()
	}
	root := repoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script := quickStartBlock(t, string(readme))
	dir := copyRepo(t, root)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, "make", "run")
	run.Dir = dir
	out := &syncWriter{}
	run.Stdout, run.Stderr = out, out
	// make and mriot in a group of their own: Ctrl-C for the whole group.
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	run.Cancel = func() error { return syscall.Kill(-run.Process.Pid, syscall.SIGINT) }
	run.WaitDelay = 15 * time.Second
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-run.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	defer stop()
	tier.Eventually(t, 3*time.Minute, "make run serving", func() error {
		select {
		case err := <-done:
			t.Fatalf("make run ended early: %v\n%s", err, out)
		default:
		}
		if !strings.Contains(out.String(), "serving; Ctrl-C stops") {
			return fmt.Errorf("not serving yet:\n%s", out)
		}
		return nil
	})

	sh := exec.CommandContext(ctx, "bash", "-e", "-u", "-o", "pipefail", "-c", script)
	sh.Dir = dir
	got, err := sh.CombinedOutput()
	text := string(got)
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s\n--- make run:\n%s", err, text, out)
	}
	for _, want := range []string{
		"test_001: --cert",                 // step 1 made the certificate
		"refused, as expected",             // step 2: dropped while JITR onboards
		"received CONNACK (0)",             // step 3 connects
		"received PUBACK",                  // and its message is acknowledged
		`"live": true`,                     // step 4: live in every region
		`"status": "ACTIVE"`,               //
		`"message": "Hello From Test-001"`, // the telemetry
		`"certificateStatus": "ACTIVE"`,    // per region
		"CONNECTED IN",                     // step 5: mriot fleet ls --connected
		": ACKED (delivered in ",           // the command reached the device and was acknowledged
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the quick start's output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("quick start output:\n%s\n--- make run:\n%s", text, out)
	}
	stop()
	if !strings.Contains(out.String(), "shutting down") {
		t.Errorf("make run did not stop on Ctrl-C:\n%s", out)
	}
}

// quickStartBlock returns the fenced sh block that follows the marker.
func quickStartBlock(t *testing.T, readme string) string {
	t.Helper()
	i := strings.Index(readme, quickStartMarker)
	if i < 0 {
		t.Fatalf("README.md has no %q marker", quickStartMarker)
	}
	m := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(readme[i:])
	if m == nil {
		t.Fatal("no ```sh block after the quick-start marker")
	}
	return m[1]
}

// repoRoot is the directory of go.mod above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s", dir)
	}
	return dir
}

// copyRepo copies the files git tracks (as they are in the working tree)
// into a new directory: a clean clone with this checkout's changes.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	ls := exec.Command("git", "ls-files", "-z")
	ls.Dir = root
	list, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dir := t.TempDir()
	for name := range strings.SplitSeq(strings.TrimRight(string(list), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil {
			continue // deleted in the working tree
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
