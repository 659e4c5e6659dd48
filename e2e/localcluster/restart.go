package localcluster

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Restart stops the named process of a cluster (e.g. "membrane-agent/NODE")
// and starts it again the same way, as a crash and restart would.
func Restart(ctx context.Context, log *slog.Logger, cluster, process string) (Process, error) {
	s, err := Load(cluster)
	if err != nil {
		return Process{}, err
	}
	for i, p := range s.Processes {
		if p.Name != process {
			continue
		}
		if err := p.stop(5 * time.Second); err != nil {
			return Process{}, err
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
