//go:build linux

package runtime

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Process names one process across restarts of the runtime's user: its PID
// and its start time (clock ticks since boot), so that a recycled PID is
// never mistaken for it.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// ProcessOf reads the start time of pid.
func ProcessOf(pid int) (Process, error) {
	st, state, err := readStat(pid)
	if err != nil {
		return Process{}, err
	}
	if state == "Z" {
		return Process{}, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	return Process{PID: pid, StartTime: st}, nil
}

// Alive reports whether p still runs (and is not a zombie).
func (p Process) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	st, state, err := readStat(p.PID)
	return err == nil && st == p.StartTime && state != "Z"
}

// readStat returns the start time and state of pid from /proc/<pid>/stat.
func readStat(pid int) (uint64, string, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	// The command name may hold spaces and parentheses: fields count from
	// after its last ')'.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, "", fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	st, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("parse start time of pid %d: %w", pid, err)
	}
	return st, fields[0], nil
}

// openPidfd opens a pidfd of p and checks, after opening it, that the PID
// still names p: signals sent through the pidfd then reach p or nothing.
func openPidfd(p Process) (*os.File, error) {
	fd, err := unix.PidfdOpen(p.PID, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("pid %d: %w", p.PID, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("open pidfd of %d: %w", p.PID, err)
	}
	if !p.Alive() {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d (start time %d): %w", p.PID, p.StartTime, ErrNotRunning)
	}
	// Non-blocking, so the runtime poller waits on it.
	return os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(p.PID)), nil
}

// waitPidfd blocks until the process of pidfd f has exited.
func waitPidfd(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("wait for %s: %w", f.Name(), err)
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			perr = err
			return true
		}
		return n > 0
	})
	if err != nil {
		return fmt.Errorf("wait for %s: %w", f.Name(), err)
	}
	if perr != nil {
		return fmt.Errorf("wait for %s: %w", f.Name(), perr)
	}
	return nil
}

func signalPidfd(f *os.File, sig unix.Signal) error {
	rc, err := f.SyscallConn()
	if errors.Is(err, os.ErrClosed) {
		return os.ErrProcessDone // closed once the process exited
	}
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return os.ErrProcessDone
		}
		return err
	}
	if errors.Is(serr, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return serr
}

// Kill sends SIGKILL to p, if it still runs, and waits up to timeout until it
// has exited. A process that is not p (its PID was recycled) is never
// signalled. Killing the init of a container ends all of the container.
func Kill(p Process, timeout time.Duration) error {
	f, err := openPidfd(p)
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := signalPidfd(f, unix.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", p.PID, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- waitPidfd(f) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-exited:
		return err
	case <-t.C:
		_ = f.SetReadDeadline(time.Now()) // ends the wait
		<-exited
		return fmt.Errorf("kill pid %d: still running after %s", p.PID, timeout)
	}
}

// PidNamespace returns the PID namespace of pid (as "pid:[inode]").
func PidNamespace(pid int) (string, error) {
	ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/pid")
	if err != nil {
		return "", fmt.Errorf("pid namespace of %d: %w", pid, err)
	}
	return ns, nil
}
