package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// UninstallConfig names what AwaitUninstallCleanup works on, all in one
// namespace: the agent DaemonSet it stops and the cleanup DaemonSet whose
// pods run Cleanup on every node once their agent is gone.
type UninstallConfig struct {
	Namespace, AgentDaemonSet, AgentSelector, CleanupDaemonSet string
	// Poll is the interval between checks.
	Poll time.Duration
}

// AwaitUninstallCleanup is the chart's pre-delete step: it deletes the
// agent DaemonSet (the agents stop; the datapath they pinned stays until
// cleaned), waits until no agent pod is left, then waits until every pod of
// the cleanup DaemonSet is ready, that is its node is cleaned. ctx bounds
// the wait.
func AwaitUninstallCleanup(ctx context.Context, log *slog.Logger, client kubernetes.Interface, cfg UninstallConfig) error {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	ds := client.AppsV1().DaemonSets(cfg.Namespace)
	err := ds.Delete(ctx, cfg.AgentDaemonSet, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		log.Info("agent daemonset already gone", "daemonset", cfg.AgentDaemonSet)
	case err != nil:
		return fmt.Errorf("delete daemonset %s/%s: %w", cfg.Namespace, cfg.AgentDaemonSet, err)
	default:
		log.Info("deleted agent daemonset", "daemonset", cfg.AgentDaemonSet)
	}
	err = poll(ctx, cfg.Poll, func() (bool, string, error) {
		pods, err := client.CoreV1().Pods(cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: cfg.AgentSelector})
		if err != nil {
			return false, "", fmt.Errorf("list pods %s in %s: %w", cfg.AgentSelector, cfg.Namespace, err)
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d agent pods left", len(pods.Items)), nil
	})
	if err != nil {
		return fmt.Errorf("wait for the agents to stop: %w", err)
	}
	log.Info("agents stopped")
	err = poll(ctx, cfg.Poll, func() (bool, string, error) {
		d, err := ds.Get(ctx, cfg.CleanupDaemonSet, metav1.GetOptions{})
		if err != nil {
			return false, "", fmt.Errorf("get daemonset %s/%s: %w", cfg.Namespace, cfg.CleanupDaemonSet, err)
		}
		s := d.Status
		state := fmt.Sprintf("%d of %d nodes cleaned", s.NumberReady, s.DesiredNumberScheduled)
		return d.Generation == s.ObservedGeneration && s.DesiredNumberScheduled > 0 && s.NumberReady == s.DesiredNumberScheduled, state, nil
	})
	if err != nil {
		return fmt.Errorf("wait for daemonset %s/%s: %w", cfg.Namespace, cfg.CleanupDaemonSet, err)
	}
	log.Info("every node cleaned")
	return nil
}

// poll calls check every interval until it reports done or fails, or ctx
// ends; the error then names check's last state.
func poll(ctx context.Context, interval time.Duration, check func() (bool, string, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, state, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%s)", ctx.Err(), state)
		case <-t.C:
		}
	}
}

// AwaitStopped waits until connections to addr (the agent's API address
// on the node) have been refused for quiet, checking every interval: the
// agent is gone and does not come back from a restart. Any other outcome
// of a dial (accepted, timed out) starts the quiet period again.
func AwaitStopped(ctx context.Context, addr string, quiet, interval time.Duration) error {
	var since time.Time
	state := "not checked yet"
	return poll(ctx, interval, func() (bool, string, error) {
		c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", addr)
		switch {
		case err == nil:
			c.Close()
			since, state = time.Time{}, "the agent still serves "+addr
		case errors.Is(err, syscall.ECONNREFUSED):
			if since.IsZero() {
				since = time.Now()
			}
			state = addr + " refused since " + since.Format(time.RFC3339Nano)
		case ctx.Err() != nil:
			// The deadline: poll reports it with the last state.
		default:
			since, state = time.Time{}, fmt.Sprintf("dial %s: %v", addr, err)
		}
		return !since.IsZero() && time.Since(since) >= quiet, state, nil
	})
}
