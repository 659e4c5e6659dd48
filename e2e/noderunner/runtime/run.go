//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Run runs the program of s to completion in the foreground, as a runtime
// runs a node's helper (a CNI plugin): its own mount namespace on the
// overlay root with s's mounts, every other namespace the caller's (s.NetNS
// and s.Cgroup are not used, and neither is s.LogPath), stdin, stdout and
// stderr the caller's. It returns the program's exit code; err is set only
// when the program could not be run at all, or ctx ended first (the
// program is then killed). s.StateDir is removed afterwards.
func (r *Runtime) Run(ctx context.Context, s Spec, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if s.LogPath == "" {
		s.LogPath = filepath.Join(s.StateDir, "unused.log")
	}
	if err := s.Validate(); err != nil {
		return -1, err
	}
	if s.NetNS != "" || s.Cgroup != "" {
		return -1, fmt.Errorf("run %s: netns and cgroup are the caller's", s.ID)
	}
	defer os.RemoveAll(s.StateDir)
	if err := writeSpec(s); err != nil {
		return -1, err
	}
	// Init reports on syncFD; a failure also goes to stderr, so the report
	// itself is not read (it fits the pipe's buffer).
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("create pipe: %w", err)
	}
	defer syncR.Close()
	cmd := exec.CommandContext(ctx, r.exe, InitArg, s.specFile())
	cmd.Env = []string{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{syncW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWNS}
	err = cmd.Start()
	syncW.Close()
	if err == nil {
		err = cmd.Wait()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case ctx.Err() != nil:
		return -1, fmt.Errorf("run %s: %w", s.ID, ctx.Err())
	case errors.As(err, &exit):
		return exitCode(exit.ProcessState), nil
	default:
		return -1, fmt.Errorf("run %s (%s): %w", s.ID, r.exe, err)
	}
}
