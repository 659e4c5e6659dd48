package localcluster

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io/fs"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
)

//go:embed addons/coredns.yaml
var corednsManifest string

// The addons' workloads, which up waits for.
const (
	corednsDeployment = "coredns"
	envoyDaemonSet    = "membrane-envoy"
)

// applyAddons installs cluster DNS, as kubeadm does, and the rendered
// chart's node Envoys (which only the agents configure) in one kubectl apply.
func applyAddons(ctx context.Context, o Options, s *State, objs []chart.Object) error {
	envoy, err := envoyManifest(objs)
	if err != nil {
		return err
	}
	dns := ClusterDNS(netip.MustParsePrefix(s.ServiceCIDR)).String()
	all := corednsYAML(s, dns) + "\n---\n" + envoy
	return kubectl(ctx, o, s, all, "apply", "--server-side", "-f", "-")
}

// applyCRDs installs Membrane's CustomResourceDefinitions, as the Helm chart
// does, and waits until the API server serves them.
func applyCRDs(ctx context.Context, o Options, s *State) error {
	entries, err := fs.ReadDir(chart.CRDs, "crds")
	if err != nil {
		return fmt.Errorf("read CRDs: %w", err)
	}
	var all []string
	for _, e := range entries {
		raw, err := fs.ReadFile(chart.CRDs, "crds/"+e.Name())
		if err != nil {
			return fmt.Errorf("read CRD %s: %w", e.Name(), err)
		}
		all = append(all, string(raw))
	}
	if err := kubectl(ctx, o, s, strings.Join(all, "\n---\n"), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	// kubectl wait fails at once on a CRD that has no conditions yet.
	return poll(ctx, 60*time.Second, "CRDs established", func() (bool, error) {
		return kubectl(ctx, o, s, "", "wait", "--for=condition=Established", "--timeout=5s", "crd", "--all") == nil, nil
	})
}

// kubectl runs the pinned kubectl with the admin kubeconfig.
func kubectl(ctx context.Context, o Options, s *State, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(o.ToolsDir, "bin", "kubectl"), append([]string{"--kubeconfig", s.Layout().Kubeconfig()}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// corednsYAML is the cluster DNS manifest for the cluster's addresses.
func corednsYAML(s *State, clusterDNS string) string {
	return strings.NewReplacer("CLUSTER_DNS_IP", clusterDNS, "WORLD_DNS_IP", s.Layout().WorldDNS().String()).Replace(corednsManifest)
}
