package localcluster

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed addons/coredns.yaml
var corednsManifest string

// The workloads up waits for: cluster DNS and the chart's node Envoys.
const (
	corednsDeployment = "coredns"
	envoyDaemonSet    = "membrane-envoy"
)

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
