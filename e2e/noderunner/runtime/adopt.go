//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Layout of StateDir for the container's output.
func (s Spec) stdoutFIFO() string { return filepath.Join(s.StateDir, "stdout.fifo") }
func (s Spec) stderrFIFO() string { return filepath.Join(s.StateDir, "stderr.fifo") }

// openOutput makes fresh stdout and stderr FIFOs for a new instance and
// returns the runtime's (read) and the container's (read-write) ends.
func openOutput(s Spec) (readEnds, childEnds []*os.File, err error) {
	closeAll := func() {
		for _, f := range append(readEnds, childEnds...) {
			_ = f.Close()
		}
	}
	for _, path := range []string{s.stdoutFIFO(), s.stderrFIFO()} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			closeAll()
			return nil, nil, fmt.Errorf("reset output fifo: %w", err)
		}
		if err := unix.Mkfifo(path, 0o600); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("create output fifo %s: %w", path, err)
		}
		r, err := openFIFOReader(path)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		readEnds = append(readEnds, r)
		// Read-write, so opening it never blocks and the container holds a
		// reader of its own output as long as it runs.
		w, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("open output fifo %s: %w", path, err)
		}
		childEnds = append(childEnds, w)
	}
	return readEnds, childEnds, nil
}

// openFIFOReader opens a FIFO for reading without waiting for a writer. Once
// every writer has closed it (the container and all it started have exited)
// reads end with EOF.
func openFIFOReader(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open output fifo %s: %w", path, err)
	}
	return f, nil
}

// Adopt takes over a container that an earlier runtime started from
// stateDir (its Spec.StateDir) and that still runs as p: the new Container
// signals it, execs in it, logs its further output (and what it wrote while
// nobody read) to the same log, and reports when it exits. Its exit status
// is unknown (ExitCode stays -1). Adopt fails with ErrNotRunning when p has
// exited.
func (r *Runtime) Adopt(stateDir string, p Process) (*Container, error) {
	s, err := readSpec(filepath.Join(stateDir, "spec.json"))
	if err != nil {
		return nil, fmt.Errorf("adopt container in %s: %w", stateDir, err)
	}
	pidfd, err := openPidfd(p)
	if err != nil {
		return nil, fmt.Errorf("adopt container %s: %w", s.ID, err)
	}
	var readEnds []*os.File
	fail := func(err error) (*Container, error) {
		_ = pidfd.Close()
		for _, f := range readEnds {
			_ = f.Close()
		}
		return nil, fmt.Errorf("adopt container %s: %w", s.ID, err)
	}
	for _, path := range []string{s.stdoutFIFO(), s.stderrFIFO()} {
		f, err := openFIFOReader(path)
		if err != nil {
			return fail(err)
		}
		readEnds = append(readEnds, f)
	}
	log, err := openCRILog(r.logger.With("container", s.ID), s.LogPath)
	if err != nil {
		return fail(err)
	}
	c := &Container{
		logger:   r.logger.With("container", s.ID),
		spec:     s,
		env:      s.env(),
		proc:     p,
		pidfd:    pidfd,
		done:     make(chan struct{}),
		exitCode: -1,
	}
	go c.wait(log, readEnds[0], readEnds[1], func() int {
		if err := waitPidfd(pidfd); err != nil {
			c.logger.Error("wait for adopted container", "err", err)
		}
		_ = pidfd.Close()
		return -1
	})
	c.logger.Debug("container adopted", "pid", p.PID)
	return c, nil
}
