// Package proc stops the helper processes of the test tiers (moto_server,
// the Lambda RIE) with os/exec's own means: a command's Cancel and WaitDelay.
package proc

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Group makes cmd, made by exec.CommandContext and not yet started, the
// leader of a process group of its own, so that a Ctrl-C at the terminal
// reaches only the Go program, which stops it, and so that stopping it
// reaches what it started (the RIE's function bootstrap). When the command's
// context ends, the group gets SIGTERM (cmd.Cancel); if the command has not
// exited grace later, os/exec kills it and closes its pipes (cmd.WaitDelay).
func Group(cmd *exec.Cmd, grace time.Duration) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return signalGroup(cmd.Process, syscall.SIGTERM) }
	cmd.WaitDelay = grace
}

// signalGroup sends sig to the process group that p leads; os.ErrProcessDone
// when the group is gone.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	if err := syscall.Kill(-p.Pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	return nil
}
