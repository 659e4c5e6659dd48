//go:build linux

package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// outputDrain bounds how long a finished container's or exec's output may
// keep flowing from processes that inherited it.
const outputDrain = 2 * time.Second

// ErrNotRunning is returned by Exec on a container that has exited.
var ErrNotRunning = errors.New("container is not running")

// Runtime starts containers.
type Runtime struct {
	logger *slog.Logger
	exe    string
}

// New returns a Runtime that re-executes exe as the container init; "" means
// the running binary (/proc/self/exe), whose main must call Init.
func New(logger *slog.Logger, exe string) *Runtime {
	if exe == "" {
		exe = "/proc/self/exe"
	}
	return &Runtime{logger: logger, exe: exe}
}

// Container is a running or exited container instance: one this runtime
// started (Start) or one an earlier runtime started and this one took over
// (Adopt).
type Container struct {
	logger *slog.Logger
	spec   Spec
	env    []string
	proc   Process
	cmd    *exec.Cmd // nil for an adopted container
	pidfd  *os.File  // signals an adopted container; nil for a started one
	done   chan struct{}
	// exitCode is written before done is closed.
	exitCode int
}

// Start starts the container described by s and returns once its program
// runs. A failure to set it up or to execute the program is returned as an
// error (an *InitError when the program could not be executed), and is also
// written to the container's log; the container's state directory is then
// removed. ctx bounds the start only, not the container's life.
func (r *Runtime) Start(ctx context.Context, s Spec) (*Container, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c, syncR, err := r.spawn(s)
	if err != nil {
		_ = os.RemoveAll(s.StateDir)
		return nil, fmt.Errorf("start container %s: %w", s.ID, err)
	}
	if err := c.awaitExec(ctx, syncR); err != nil {
		_ = os.RemoveAll(s.StateDir)
		return nil, fmt.Errorf("start container %s: %w", s.ID, err)
	}
	c.logger.Debug("container started", "pid", c.Pid())
	return c, nil
}

// spawn starts the init process and the goroutines that own its output and
// wait for it.
func (r *Runtime) spawn(s Spec) (*Container, *os.File, error) {
	if err := writeSpec(s); err != nil {
		return nil, nil, err
	}
	log, err := openCRILog(r.logger.With("container", s.ID), s.LogPath)
	if err != nil {
		return nil, nil, err
	}
	// The container writes its output into FIFOs, which it also holds open
	// for reading: its writes never fail while no runtime reads them, and
	// a later runtime reads on where an earlier one stopped (Adopt).
	outR, outW, err := openOutput(s)
	if err != nil {
		_ = log.close()
		return nil, nil, err
	}
	closeAll := func(files []*os.File) {
		for _, f := range files {
			_ = f.Close()
		}
	}
	parentEnds, childEnds := outR, outW
	syncR, syncW, err := os.Pipe()
	if err != nil {
		closeAll(parentEnds)
		closeAll(childEnds)
		_ = log.close()
		return nil, nil, fmt.Errorf("create pipe: %w", err)
	}
	parentEnds, childEnds = append(parentEnds, syncR), append(childEnds, syncW)
	attr := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
		Setsid:     true,
		// No Pdeathsig: containers outlive a restarting runner, which
		// adopts them (see Adopt) or kills those it no longer wants.
	}
	if s.HostPID {
		attr.Cloneflags &^= unix.CLONE_NEWPID
	}
	if s.Cgroup != "" {
		fd, err := unix.Open(s.Cgroup, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(parentEnds)
			closeAll(childEnds)
			_ = log.close()
			return nil, nil, fmt.Errorf("open cgroup: %w", err)
		}
		defer unix.Close(fd)
		attr.UseCgroupFD, attr.CgroupFD = true, fd
	}
	cmd := &exec.Cmd{
		Path:        r.exe,
		Args:        []string{r.exe, InitArg, s.specFile()},
		Env:         []string{},
		Stdout:      childEnds[0],
		Stderr:      childEnds[1],
		ExtraFiles:  []*os.File{childEnds[2]},
		SysProcAttr: attr,
	}
	err = cmd.Start()
	closeAll(childEnds)
	if err != nil {
		closeAll(parentEnds)
		_ = log.close()
		return nil, nil, fmt.Errorf("start init (%s): %w", r.exe, err)
	}
	proc, err := ProcessOf(cmd.Process.Pid)
	if err != nil {
		// It died at once: the sync pipe tells why.
		proc = Process{PID: cmd.Process.Pid}
	}
	c := &Container{
		logger:   r.logger.With("container", s.ID),
		spec:     s,
		env:      s.env(),
		proc:     proc,
		cmd:      cmd,
		done:     make(chan struct{}),
		exitCode: -1,
	}
	go c.wait(log, parentEnds[0], parentEnds[1], func() int {
		err := cmd.Wait()
		if err != nil && cmd.ProcessState == nil {
			c.logger.Error("wait for container", "err", err)
		}
		return exitCode(cmd.ProcessState)
	})
	return c, parentEnds[2], nil
}

// awaitExec reads the init's report until the program runs or init fails.
func (c *Container) awaitExec(ctx context.Context, syncR *os.File) error {
	report := make(chan []byte, 1)
	go func() {
		defer syncR.Close()
		b, _ := io.ReadAll(syncR) // EOF: exec closed it, or init died
		report <- b
	}()
	var b []byte
	select {
	case b = <-report:
	case <-ctx.Done():
		_ = c.signal(syscall.SIGKILL)
		<-c.done
		<-report
		return fmt.Errorf("wait for init: %w", ctx.Err())
	}
	rest, ready := bytes.CutPrefix(b, []byte(syncReady))
	if ready && len(rest) == 0 {
		return nil
	}
	<-c.done
	if len(rest) > 0 {
		var ie InitError
		if err := json.Unmarshal(rest, &ie); err != nil {
			return fmt.Errorf("init failed (exit status %d) with an unreadable report %q", c.exitCode, rest)
		}
		return &ie
	}
	return fmt.Errorf("init exited with status %d before executing the program (does %s hand %q to runtime.Init?)",
		c.exitCode, c.cmd.Path, InitArg)
}

// wait owns the init process: it copies its output to the log and records
// its exit, which waitExit waits for.
func (c *Container) wait(log *criLog, stdout, stderr *os.File, waitExit func() int) {
	var copiers sync.WaitGroup
	copiers.Add(2)
	go func() { defer copiers.Done(); log.copyFrom("stdout", stdout) }()
	go func() { defer copiers.Done(); log.copyFrom("stderr", stderr) }()
	c.exitCode = waitExit()

	copied := make(chan struct{})
	go func() { copiers.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(outputDrain):
		c.logger.Warn("container output still open after exit, closing it")
	}
	_ = stdout.Close() // ends copiers still reading
	_ = stderr.Close()
	<-copied
	if err := log.close(); err != nil {
		c.logger.Error("close container log", "err", err)
	}
	c.logger.Debug("container exited", "exitCode", c.exitCode)
	close(c.done)
}

// exitCode is a process's exit status as Kubernetes reports it: 128+n when
// killed by signal n.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return ps.ExitCode()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return ws.ExitStatus()
	}
}

// Pid is the host PID of the container's pid 1.
func (c *Container) Pid() int { return c.proc.PID }

// Process names the container's pid 1 so that a later runtime can adopt it.
func (c *Container) Process() Process { return c.proc }

// signal sends sig to the container's pid 1.
func (c *Container) signal(sig syscall.Signal) error {
	if c.pidfd != nil {
		return signalPidfd(c.pidfd, sig)
	}
	return c.cmd.Process.Signal(sig)
}

// Spec returns the spec the container was started with.
func (c *Container) Spec() Spec { return c.spec }

// Done is closed when the container has exited and its output is logged.
func (c *Container) Done() <-chan struct{} { return c.done }

// ExitCode is the exit status (128+signal when killed); valid after Done,
// -1 before. It stays -1 for an adopted container: only the parent, the
// runtime that started it, learns its exit status.
func (c *Container) ExitCode() int {
	select {
	case <-c.done:
		return c.exitCode
	default:
		return -1
	}
}

// Stop sends SIGTERM to the container's pid 1 and SIGKILL after grace, and
// returns once the container has exited. As with Docker, a pid 1 without a
// SIGTERM handler ignores SIGTERM. Stopping an exited container does nothing.
func (c *Container) Stop(grace time.Duration) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := c.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop container %s: %w", c.spec.ID, err)
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-c.done:
			return nil
		case <-t.C:
		}
	}
	if err := c.signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill container %s: %w", c.spec.ID, err)
	}
	<-c.done
	return nil
}

// Remove kills the container if it still runs and deletes its state
// directory (not its log). It may be called more than once.
func (c *Container) Remove() error {
	if err := c.Stop(0); err != nil {
		return err
	}
	if err := os.RemoveAll(c.spec.StateDir); err != nil {
		return fmt.Errorf("remove container %s: %w", c.spec.ID, err)
	}
	return nil
}
