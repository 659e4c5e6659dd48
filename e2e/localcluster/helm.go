package localcluster

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
)

// How `up` installs Membrane (Options.Install).
const (
	// InstallProcesses starts the agents and the operator as processes
	// of the host and applies only the node Envoys of the chart.
	InstallProcesses = "processes"
	// InstallHelm installs the chart with the pinned helm: the agents, the
	// operator and the node Envoys run as pods of the node runners.
	InstallHelm = "helm"
)

// The chart's workloads, which a helm install waits for.
const (
	agentDaemonSet     = "membrane-agent"
	operatorDeployment = "membrane-operator"
)

// Own images of `make build` (see e2e/images/own-images.sh): any tag runs
// the binaries of the build.
const (
	agentImage    = "membrane/membrane-agent"
	operatorImage = "membrane/membrane-operator"
	ownImageTag   = "dev"
)

// HelmDir holds the cluster's extracted chart, its values and helm's
// cache and configuration.
func (l Layout) HelmDir() string { return filepath.Join(l.StateDir(), "helm") }

// helmChartDir is the chart `up` installs and `Helm` upgrades.
func (l Layout) helmChartDir() string { return filepath.Join(l.HelmDir(), chart.ReleaseName) }

// localValuesFile and clusterValuesFile are the two values files of the
// release: the local cluster's (addons/membrane.values.yaml) and this
// cluster's addresses and choices.
func (l Layout) localValuesFile() string   { return filepath.Join(l.HelmDir(), "local.values.yaml") }
func (l Layout) clusterValuesFile() string { return filepath.Join(l.HelmDir(), "cluster.values.yaml") }

// clusterValues are the chart values that depend on the cluster: the API
// server the nodes reach (the agents and the operator start before Service
// translation does), the own images, the operator replicas (one per node, at
// most two: they are spread over the nodes) and the options of `up`.
func clusterValues(o Options, s *State) ([]byte, error) {
	l := s.Layout()
	replicas := min(len(s.Nodes), 2)
	v := map[string]any{
		"k8sServiceHost": l.APIServerIP().String(),
		"k8sServicePort": APIServerPort,
		"image":          map[string]any{"repository": agentImage, "tag": ownImageTag, "pullPolicy": "IfNotPresent"},
		"operator": map[string]any{
			"image":    map[string]any{"repository": operatorImage, "tag": ownImageTag, "pullPolicy": "IfNotPresent"},
			"replicas": replicas,
			// A development cluster collects unused identities quickly.
			"identityGCInterval": "5s",
		},
		// Gateway addresses (with --set gatewayAPI.enabled=true): on the
		// underlay, so the host reaches them through the bridge.
		"gatewayAPI": map[string]any{"addressPool": l.GatewayPool()},
	}
	if o.Encryption != "" {
		v["encryption"] = map[string]any{"enabled": true, "type": o.Encryption}
	}
	raw, err := yaml.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode the cluster's chart values: %w", err)
	}
	return raw, nil
}

// prepareHelm extracts the chart and writes the release's values files, then
// renders the chart with them and the user's --set values: values the
// chart's schema or checks refuse fail here, before anything of the cluster
// exists.
func prepareHelm(ctx context.Context, o Options, s *State) error {
	l := s.Layout()
	if err := os.MkdirAll(l.helmChartDir(), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", l.helmChartDir(), err)
	}
	if err := chart.Extract(l.helmChartDir()); err != nil {
		return err
	}
	cv, err := clusterValues(o, s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(l.localValuesFile(), chartValues, 0o600); err != nil {
		return fmt.Errorf("write chart values: %w", err)
	}
	if err := os.WriteFile(l.clusterValuesFile(), cv, 0o600); err != nil {
		return fmt.Errorf("write chart values: %w", err)
	}
	if _, err := runHelm(ctx, o.ToolsDir, s, releaseArgs(l, "template", o.HelmSet)...); err != nil {
		return fmt.Errorf("the Membrane chart refuses the values: %w", err)
	}
	return nil
}

// releaseArgs are helm's arguments for verb (template, install or upgrade)
// of the release with the cluster's values, then sets (key=value, as
// `helm --set` takes them; later ones win).
func releaseArgs(l Layout, verb string, sets []string) []string {
	args := []string{verb, chart.ReleaseName, l.helmChartDir(), "--namespace", chartNamespace,
		"--values", l.localValuesFile(), "--values", l.clusterValuesFile()}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// runHelm runs the pinned helm against the cluster with the admin
// kubeconfig and returns its output; a failure carries helm's message.
func runHelm(ctx context.Context, toolsDir string, s *State, args ...string) (string, error) {
	l := s.Layout()
	cmd := exec.CommandContext(ctx, filepath.Join(toolsDir, "bin", "helm"), args...)
	h := l.HelmDir()
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig(),
		"HELM_CACHE_HOME="+filepath.Join(h, "cache"), "HELM_CONFIG_HOME="+filepath.Join(h, "config"), "HELM_DATA_HOME="+filepath.Join(h, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Helm runs the pinned helm against the named cluster (e.g. `list -n
// kube-system`). For `upgrade`, and `install` after an uninstall, give only
// the values to change (--set KEY=VALUE): the release's chart, values files
// and `up`'s values come first, as `up` installed them.
func Helm(ctx context.Context, toolsDir, cluster string, args ...string) (string, error) {
	s, err := Load(cluster)
	if err != nil {
		return "", err
	}
	if s.Install != InstallHelm {
		return "", fmt.Errorf("cluster %q: Membrane is not installed by helm (start it with --install %s)", cluster, InstallHelm)
	}
	if len(args) > 0 && (args[0] == "upgrade" || args[0] == "install") {
		sets := append([]string{}, s.HelmSet...)
		for i := 1; i < len(args); i++ {
			if args[i] != "--set" || i+1 == len(args) {
				return "", fmt.Errorf("helm %s: only --set KEY=VALUE arguments, got %q", args[0], args[i])
			}
			sets = append(sets, args[i+1])
			i++
		}
		args = releaseArgs(s.Layout(), args[0], sets)
	}
	return runHelm(ctx, toolsDir, s, args...)
}

// installHelm installs the chart, then cluster DNS, and waits until the
// agents run on every node, the operator and the node Envoys are available
// and DNS answers.
func installHelm(ctx context.Context, log *slog.Logger, o Options, s *State, c kubernetes.Interface) error {
	log.Info("installing Membrane with helm", "cluster", s.Name, "chart", s.Layout().helmChartDir())
	if _, err := runHelm(ctx, o.ToolsDir, s, releaseArgs(s.Layout(), "install", o.HelmSet)...); err != nil {
		return err
	}
	for _, w := range []struct {
		name string
		wait func(context.Context, kubernetes.Interface, *State, string, string) error
	}{
		{agentDaemonSet, waitDaemonSetAvailable},
		{operatorDeployment, waitDeploymentAvailable},
		{envoyDaemonSet, waitDaemonSetAvailable},
	} {
		if err := w.wait(ctx, c, s, chartNamespace, w.name); err != nil {
			return fmt.Errorf("%w%s", err, notReadyPods(ctx, c, chartNamespace, w.name))
		}
	}
	log.Info("installing cluster DNS", "cluster", s.Name)
	dns := ClusterDNS(netip.MustParsePrefix(s.ServiceCIDR)).String()
	if err := kubectl(ctx, o, s, strings.ReplaceAll(corednsManifest, "CLUSTER_DNS_IP", dns), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	return waitDeploymentAvailable(ctx, c, s, "kube-system", corednsDeployment)
}

// applyUnderlayRBAC lets the underlay identity read the nodes (their
// PodCIDRs), the harness's only role when the chart is installed.
func applyUnderlayRBAC(ctx context.Context, c kubernetes.Interface) error {
	return bindClusterRole(ctx, c, underlayUser, underlayRole())
}

// notReadyPods describes the pods of a chart workload (label k8s-app=name)
// that are not ready, with the end of their logs: why an install did not
// become available.
func notReadyPods(ctx context.Context, c kubernetes.Interface, ns, name string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=" + name})
	if err != nil {
		return fmt.Sprintf("\n(list the pods of %s: %v)", name, err)
	}
	var b strings.Builder
	for _, p := range pods.Items {
		if podReady(p) {
			continue
		}
		fmt.Fprintf(&b, "\npod %s/%s on %q: %s %s %s", ns, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Status.Message)
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Waiting != nil:
				fmt.Fprintf(&b, "; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.State.Terminated != nil:
				fmt.Fprintf(&b, "; %s exited %d: %s", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
			}
			if cs.RestartCount > 0 {
				fmt.Fprintf(&b, " (%d restarts)", cs.RestartCount)
			}
		}
		tail := int64(tailLines)
		logs, err := c.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		if err == nil && len(logs) > 0 {
			fmt.Fprintf(&b, "\nlast lines of its log:\n%s", strings.TrimRight(string(logs), "\n"))
		}
	}
	return b.String()
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
