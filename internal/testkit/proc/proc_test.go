package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mriot/mriot/internal/testkit/tier"
)

// exitSignal is the signal that ended cmd's process, or -1.
func exitSignal(cmd *exec.Cmd) syscall.Signal {
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return -1
}

// gone reports whether pid has exited (no such process, or a zombie that
// nobody reaped yet).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...
	s := string(b)
	return strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z")
}

func TestCancelTerminatesTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The shell prints the pid of a child in its group, then waits for it.
	cmd := exec.CommandContext(ctx, "sh", "-c", "sleep 30 & echo $!; wait")
	Group(cmd, 10*time.Second)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	if err := cmd.Wait(); err == nil {
		t.Fatal("Wait: no error after cancel")
	}
	if sig := exitSignal(cmd); sig != syscall.SIGTERM {
		t.Errorf("the shell ended by %v, want SIGTERM", sig)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopped after %v, want at once", d)
	}
	tier.Eventually(t, 5*time.Second, "the shell's child ends with the group's SIGTERM", func() error {
		if !gone(child) {
			return fmt.Errorf("process %d is still there", child)
		}
		return nil
	})
}

func TestKilledAfterGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	const grace = 200 * time.Millisecond
	Group(cmd, grace)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	err = cmd.Wait()
	if d := time.Since(start); d < grace {
		t.Errorf("killed after %v, want the %v grace first", d, grace)
	}
	if sig := exitSignal(cmd); sig != syscall.SIGKILL {
		t.Errorf("ended by %v (%v), want SIGKILL", sig, err)
	}
}

func TestCancelAfterExit(t *testing.T) {
	cmd := exec.CommandContext(context.Background(), "true")
	Group(cmd, time.Second)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Cancel(); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Cancel after exit = %v, want os.ErrProcessDone", err)
	}
}
