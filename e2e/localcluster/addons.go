package localcluster

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed addons/coredns.yaml
var corednsManifest string

// applyAddons installs cluster DNS, as kubeadm does, with kubectl apply.
func applyAddons(ctx context.Context, o Options, s *State) error {
	dns := ClusterDNS(netip.MustParsePrefix(s.ServiceCIDR)).String()
	manifest := strings.ReplaceAll(corednsManifest, "CLUSTER_DNS_IP", dns)
	kubectl := filepath.Join(o.ToolsDir, "bin", "kubectl")
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", s.Layout().Kubeconfig(), "apply", "--server-side", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apply cluster DNS: %w: %s", err, out.String())
	}
	return nil
}
