package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one long-running process of the cluster, identified by PID and
// start time so a recycled PID is never signalled.
type Process struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	Log       string `json:"log"`
	// How it was started, so that Restart can do it again.
	Netns  string   `json:"netns"`
	Cgroup string   `json:"cgroup"`
	Argv   []string `json:"argv"`
}

// startDetached starts argv inside the network namespace netnsPath (through
// nsenter, which execs in place so the PID is the program's), in its own
// session, placed in the cgroup dir, with output to logPath.
func startDetached(name, netnsPath, cgroupDir, logPath string, argv []string) (Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return Process{}, fmt.Errorf("start %s: open log: %w", name, err)
	}
	defer logf.Close()
	cg, err := os.Open(cgroupDir)
	if err != nil {
		return Process{}, fmt.Errorf("start %s: open cgroup: %w", name, err)
	}
	defer cg.Close()
	args := append([]string{"--net=" + netnsPath, "--"}, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := cmd.Start(); err != nil {
		return Process{}, fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	st, err := startTime(pid)
	if err != nil {
		return Process{}, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it in the background if it exits while we still run; once we exit
	// it is reparented.
	go func() { _ = cmd.Wait() }()
	return Process{Name: name, PID: pid, StartTime: st, Log: logPath, Netns: netnsPath, Cgroup: cgroupDir, Argv: argv}, nil
}

// startTime reads the start time (in clock ticks since boot) of pid.
func startTime(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	// The command name may hold spaces; fields count from after its ')'.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	v, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse start time of pid %d: %w", pid, err)
	}
	return v, nil
}

// Alive reports whether p still runs (and is the same process).
func (p Process) Alive() bool {
	st, err := startTime(p.PID)
	if err != nil || st != p.StartTime {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p Process) stop(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, p.PID, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !p.Alive() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID, err)
	}
	for range 100 {
		if !p.Alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("kill %s (pid %d): still running", p.Name, p.PID)
}
