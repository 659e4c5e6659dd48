package localcluster

import (
	"fmt"
	"log/slog"

	"github.com/membrane-mesh/membrane/bpf/hostfs"
	"github.com/membrane-mesh/membrane/e2e/cgroups"
)

// prepareHost readies the machine before anything of a cluster is created:
// it mounts bpffs for BPFRoot where none is (and leaves it mounted, as a
// node agent would), and finds the cgroup v2 hierarchy the nodes' cgroups
// go in, which must be there already.
func prepareHost(log *slog.Logger) (cgroupRoot string, err error) {
	if _, err := hostfs.MountBPF(log, BPFRoot); err != nil {
		return "", fmt.Errorf("prepare host: %w", err)
	}
	root, err := cgroups.Root()
	if err != nil {
		return "", fmt.Errorf("prepare host: %w", err)
	}
	return root, nil
}
