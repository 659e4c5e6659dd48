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

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
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
// most two: they are spread over the nodes) and the encryption mode.
func clusterValues(s *State) ([]byte, error) {
	l := s.Layout()
	replicas := min(len(s.Nodes), 2)
	if s.IdentityProvider == IdentitySPIRE {
		replicas = 1 // the SPIRE server runs in the operator's pod
	}
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
	}
	if s.ClusterID != 0 {
		v["cluster"] = map[string]any{"name": s.Name, "id": s.ClusterID}
	}
	if s.Encryption != "" {
		v["encryption"] = map[string]any{"enabled": true, "type": s.Encryption}
	}
	if s.IdentityProvider != "" {
		v["authentication"] = map[string]any{"mutual": map[string]any{
			"enabled": true,
			// The local nodes' kubelets serve no /pods for SPIRE's k8s
			// workload attestor: the agents (root, the only process with
			// the admin socket mounted) are selected by their uid.
			"spire": map[string]any{"enabled": s.IdentityProvider == IdentitySPIRE, "clusterName": s.Name,
				"delegateSelectors": []string{"unix:uid:0"},
				// Inside the node's host paths.
				"adminHostDir": "/var/run/membrane/spire-admin", "agentDataHostDir": "/var/lib/membrane/spire-agent"},
		}}
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
	if err := os.WriteFile(l.localValuesFile(), chartValues, 0o600); err != nil {
		return fmt.Errorf("write chart values: %w", err)
	}
	if err := writeClusterValues(s); err != nil {
		return err
	}
	if _, err := runHelm(ctx, o.ToolsDir, s, releaseArgs(l, "template", o.HelmSet)...); err != nil {
		return fmt.Errorf("the Membrane chart refuses the values: %w", err)
	}
	return nil
}

// writeClusterValues writes the values file of clusterValues.
func writeClusterValues(s *State) error {
	cv, err := clusterValues(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.Layout().clusterValuesFile(), cv, 0o600); err != nil {
		return fmt.Errorf("write chart values: %w", err)
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
	if s.NoMembrane {
		return "", fmt.Errorf("cluster %q was started with --no-membrane: it has no helm release", cluster)
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

// installHelm installs the chart.
func installHelm(ctx context.Context, log *slog.Logger, o Options, s *State) error {
	log.Info("installing Membrane with helm", "cluster", s.Name, "chart", s.Layout().helmChartDir())
	_, err := runHelm(ctx, o.ToolsDir, s, releaseArgs(s.Layout(), "install", o.HelmSet)...)
	return err
}

// waitMembrane waits until the agents run on every node and the operator
// and the node Envoys are available, then installs cluster DNS and waits
// until it answers.
func waitMembrane(ctx context.Context, log *slog.Logger, o Options, s *State, c kubernetes.Interface) error {
	for _, w := range []workload{
		{"daemonset", chartNamespace, agentDaemonSet},
		{"deployment", chartNamespace, operatorDeployment},
		{"daemonset", chartNamespace, envoyDaemonSet},
	} {
		if err := waitAvailable(ctx, c, s, w); err != nil {
			return err
		}
	}
	start, stop := s.Layout().LoadBalancerPool()
	pool := fmt.Sprintf("apiVersion: membrane.io/v1alpha1\nkind: MembraneLoadBalancerIPPool\nmetadata: {name: default}\nspec: {blocks: [{start: %s, stop: %s}]}\n", start, stop)
	if err := kubectl(ctx, o, s, pool, "apply", "-f", "-"); err != nil {
		return fmt.Errorf("create the default load-balancer IP pool: %w", err)
	}
	log.Info("installing cluster DNS", "cluster", s.Name)
	dns := ClusterDNS(netip.MustParsePrefix(s.ServiceCIDR)).String()
	if err := kubectl(ctx, o, s, corednsYAML(s, dns), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	return waitAvailable(ctx, c, s, workload{"deployment", "kube-system", corednsDeployment})
}

// applyUnderlayRBAC lets the underlay identity read the nodes (their
// PodCIDRs), the harness's only role.
func applyUnderlayRBAC(ctx context.Context, c kubernetes.Interface) error {
	return bindClusterRole(ctx, c, underlayUser, underlayRole())
}
