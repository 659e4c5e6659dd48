//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Exec runs argv inside the container: in its mount, UTS, IPC, network and
// PID namespaces, its root and working directory, its cgroup and with its
// environment (through util-linux nsenter), with the runtime's own
// capabilities: a container's Security limits its program, not what is
// executed in it later. It returns the command's exit
// status (128+signal when killed); a non-zero status is not an error.
//
// stdin may be nil. With tty, the command gets a pseudo-terminal (80x24)
// as stdin, stdout and stderr, whose output goes to stdout. Exec returns when
// the command has exited and its output is copied; a Read of stdin still
// blocked then ends in the background when stdin is closed. Cancelling ctx
// kills the command.
func (c *Container) Exec(ctx context.Context, argv []string, stdin io.Reader, stdout, stderr io.Writer, tty bool) (int, error) {
	if len(argv) == 0 {
		return -1, fmt.Errorf("exec in container %s: no command", c.spec.ID)
	}
	select {
	case <-c.done:
		return -1, fmt.Errorf("exec in container %s: %w", c.spec.ID, ErrNotRunning)
	default:
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return -1, fmt.Errorf("exec in container %s: %w (install util-linux)", c.spec.ID, err)
	}
	args := []string{"--target", strconv.Itoa(c.Pid()),
		"--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd", "--"}
	cmd := exec.CommandContext(ctx, nsenter, append(args, argv...)...)
	cmd.Env = c.env
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	// The command runs in its own process group (nsenter forks it), so
	// cancelling kills both.
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = outputDrain
	if c.spec.Cgroup != "" {
		fd, err := unix.Open(c.spec.Cgroup, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("exec in container %s: open cgroup: %w", c.spec.ID, err)
		}
		defer unix.Close(fd)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	if tty {
		err = runTTY(cmd, stdin, stdout)
	} else {
		err = runPipes(cmd, stdin, stdout, stderr)
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, fmt.Errorf("exec in container %s: %w", c.spec.ID, ctx.Err())
	case err == nil, errors.As(err, &exitErr), errors.Is(err, exec.ErrWaitDelay):
		return exitCode(cmd.ProcessState), nil
	default:
		return -1, fmt.Errorf("exec in container %s: %w", c.spec.ID, err)
	}
}

func runPipes(cmd *exec.Cmd, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd.SysProcAttr.Setpgid = true
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var stdinW *os.File
	if stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("create stdin pipe: %w", err)
		}
		cmd.Stdin, stdinW = r, w
	}
	err := cmd.Start()
	if stdinW != nil {
		_ = cmd.Stdin.(*os.File).Close() // the command has its copy
	}
	if err != nil {
		if stdinW != nil {
			_ = stdinW.Close()
		}
		return err
	}
	if stdinW != nil {
		go copyStdin(stdinW, stdin)
		// Closing it ends a copy blocked on a command that no longer reads.
		defer stdinW.Close()
	}
	return cmd.Wait()
}

// copyStdin copies stdin to w and closes w, so the command sees EOF.
func copyStdin(w *os.File, stdin io.Reader) {
	_, _ = io.Copy(w, stdin)
	_ = w.Close()
}

func runTTY(cmd *exec.Cmd, stdin io.Reader, stdout io.Writer) error {
	ptm, pts, err := openPTY()
	if err != nil {
		return err
	}
	defer ptm.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	err = cmd.Start()
	_ = pts.Close()
	if err != nil {
		return err
	}
	if stdout == nil {
		stdout = io.Discard
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(stdout, ptm) // ends with EIO once no process has the terminal
	}()
	if stdin != nil {
		go func() { _, _ = io.Copy(ptm, stdin) }() // ends when ptm is closed or stdin ends
	}
	err = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(outputDrain):
	}
	_ = ptm.Close()
	<-copied
	return err
}

// openPTY returns a new pseudo-terminal's controller (non-blocking, for the
// runtime poller) and its terminal, sized 80x24.
func openPTY() (ptm, pts *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	if err := unix.IoctlSetWinsize(m, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80}); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("size pty: %w", err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(m)
		return nil, nil, fmt.Errorf("open pty peer: %w", errno)
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(s, "pty"), nil
}
