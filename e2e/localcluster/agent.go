package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// agentContainer is the agent's container in the chart's DaemonSet.
const agentContainer = "agent"

// AgentPod returns the agent pod of the chart's DaemonSet on node.
func AgentPod(ctx context.Context, c kubernetes.Interface, node string) (*corev1.Pod, error) {
	pods, err := c.CoreV1().Pods(chartNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "k8s-app=" + agentDaemonSet,
		FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		return nil, fmt.Errorf("list the agent pods on %s: %w", node, err)
	}
	var found []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("%d agent pods on %s, want 1", len(found), node)
	}
	return &found[0], nil
}

// AgentLog returns what node's agent container logged: its previous
// instance's log, if it restarted, then the running one's.
func AgentLog(ctx context.Context, cluster, node string) (string, error) {
	s, err := Load(cluster)
	if err != nil {
		return "", err
	}
	c, err := Client(s.Layout().Kubeconfig())
	if err != nil {
		return "", err
	}
	p, err := AgentPod(ctx, c, node)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, previous := range []bool{true, false} {
		if previous && agentRestarts(p) == 0 {
			continue
		}
		raw, err := c.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: agentContainer, Previous: previous}).DoRaw(ctx)
		if err != nil {
			return "", fmt.Errorf("read the log of agent pod %s: %w", p.Name, err)
		}
		b.Write(raw)
	}
	return b.String(), nil
}

// RestartAgent restarts node's agent as a crash and restart would: its
// container's process gets SIGTERM and the node runner starts the container
// again in the same pod. It returns once the pod is Ready again.
func RestartAgent(ctx context.Context, log *slog.Logger, cluster, node string) error {
	s, err := Load(cluster)
	if err != nil {
		return err
	}
	c, err := Client(s.Layout().Kubeconfig())
	if err != nil {
		return err
	}
	p, err := AgentPod(ctx, c, node)
	if err != nil {
		return err
	}
	restarts := agentRestarts(p)
	pids, err := podProcesses(filepath.Join(s.Layout().CgroupDir(s.CgroupRoot), node, "pods", string(p.UID)), "membrane-agent")
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("restart the agent on %s: no membrane-agent process in pod %s", node, p.Name)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("restart the agent on %s: signal pid %d: %w", node, pid, err)
		}
	}
	err = poll(ctx, workloadTimeout, "the agent on "+node+" restarted and ready", func() (bool, error) {
		cur, err := c.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if cur.UID != p.UID {
			return false, fmt.Errorf("agent pod %s was replaced", p.Name)
		}
		return agentRestarts(cur) > restarts && podReady(*cur), nil
	})
	if err != nil {
		return err
	}
	log.Info("agent restarted", "cluster", cluster, "node", node, "pod", p.Name)
	return nil
}

func agentRestarts(p *corev1.Pod) int32 {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == agentContainer {
			return cs.RestartCount
		}
	}
	return 0
}

// podProcesses lists the processes in the cgroup dir (and below) whose
// command name is comm.
func podProcesses(dir, comm string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil // gone meanwhile
		}
		for _, f := range strings.Fields(string(raw)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err == nil && strings.TrimSpace(string(name)) == comm {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the processes of %s: %w", dir, err)
	}
	return pids, nil
}
