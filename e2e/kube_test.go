package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// kube runs kubectl against a cluster, as a user would.
type kube struct {
	t           *testing.T
	kubeconfig  string
	kubectlPath string
}

// run runs kubectl and returns stdout; stderr goes into the error.
func (k *kube) run(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.kubectlPath, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.String(), &kubectlError{args: args, err: err, stderr: errb.String()}
	}
	return out.String(), nil
}

type kubectlError struct {
	args   []string
	err    error
	stderr string
}

func (e *kubectlError) Error() string {
	return "kubectl " + strings.Join(e.args, " ") + ": " + e.err.Error() + ": " + strings.TrimSpace(e.stderr)
}

// must runs kubectl with a 2-minute bound and fails the test on error.
func (k *kube) must(stdin string, args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := k.run(ctx, stdin, args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// membrane runs the CLI against the cluster and fails the test on error.
func (k *kube) membrane(args ...string) string {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(shared.binDir, "membrane"), append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		k.t.Fatalf("membrane %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// pods lists pods matching a label selector.
func (k *kube) pods(ns, selector string) []corev1.Pod {
	k.t.Helper()
	var list corev1.PodList
	if err := json.Unmarshal([]byte(k.must("", "get", "pods", "-n", ns, "-l", selector, "-o", "json")), &list); err != nil {
		k.t.Fatalf("decode pods: %v", err)
	}
	return list.Items
}

// node returns a node object.
func (k *kube) node(name string) corev1.Node {
	k.t.Helper()
	var n corev1.Node
	if err := json.Unmarshal([]byte(k.must("", "get", "node", name, "-o", "json")), &n); err != nil {
		k.t.Fatalf("decode node: %v", err)
	}
	return n
}

// eventually retries fn every 200 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// restartAgents restarts membrane-agent (the agent pod's container) on every
// node of the shared cluster and waits until each is healthy again.
func restartAgents(t *testing.T, k *kube) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, n := range shared.cluster.Nodes {
		if err := localcluster.RestartAgent(t.Context(), log, sharedName, n.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range shared.cluster.Nodes {
		eventually(t, 60*time.Second, "restarted agent on "+n.Name+" healthy", func() error {
			_, err := k.run(t.Context(), "", "get", "--raw", "/api/v1/nodes/"+n.Name+":9890/proxy/healthz")
			return err
		})
	}
}
