package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"
)

// Restart stops the named process of a cluster (e.g. "node-runner/NODE")
// and starts it again the same way, as a crash and restart would. The
// agents are pods: see RestartAgent.
func Restart(ctx context.Context, log *slog.Logger, cluster, process string) (Process, error) {
	return RestartWith(ctx, log, cluster, process, RestartOptions{})
}

// RestartOptions tune RestartWith.
type RestartOptions struct {
	// Kill ends the process with SIGKILL at once, as a crash, instead of
	// SIGTERM with a grace period.
	Kill bool
	// WhileDown, if set, runs after the process has ended and before it
	// starts again; an error aborts the restart (the process stays down).
	WhileDown func() error
}

// RestartWith is Restart with options.
func RestartWith(ctx context.Context, log *slog.Logger, cluster, process string, o RestartOptions) (Process, error) {
	s, err := Load(cluster)
	if err != nil {
		return Process{}, err
	}
	for i, p := range s.Processes {
		if p.Name != process {
			continue
		}
		if o.Kill {
			err = p.kill()
		} else {
			err = p.stop(5 * time.Second)
		}
		if err != nil {
			return Process{}, err
		}
		if o.WhileDown != nil {
			if err := o.WhileDown(); err != nil {
				return Process{}, fmt.Errorf("restart %s: while down: %w", process, err)
			}
		}
		if err := ctx.Err(); err != nil {
			return Process{}, fmt.Errorf("restart %s: %w", process, err)
		}
		np, err := startDetached(p.Name, p.Netns, p.Cgroup, p.Log, p.Argv)
		if err != nil {
			return Process{}, err
		}
		s.Processes[i] = np
		if err := s.save(); err != nil {
			return Process{}, err
		}
		log.Info("process restarted", "cluster", cluster, "process", process, "pid", np.PID)
		return np, nil
	}
	return Process{}, fmt.Errorf("cluster %q has no process %q", cluster, process)
}

// kill sends SIGKILL (by PID, after checking the start time) and waits
// until the process has ended.
func (p Process) kill() error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID, err)
	}
	for range 250 {
		if !p.Alive() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("kill %s (pid %d): still running", p.Name, p.PID)
}
