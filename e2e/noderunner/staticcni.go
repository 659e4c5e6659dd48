package noderunner

import (
	"fmt"
	"net/netip"

	"github.com/membrane-mesh/membrane/mesh/cni/install"
)

// staticCNIConf is the name of the configuration installStaticCNI writes.
const staticCNIConf = "10-membrane.conflist"

// installStaticCNI installs cfg.StaticCNI as the node's membrane-cni with a
// configuration of the node's PodCIDR that reports to no agent (node paths,
// as an agent would write them: the plugin runs with the node's files).
func installStaticCNI(cfg Config, podCIDR netip.Prefix) error {
	paths := newHostPaths(cfg.HostPaths)
	bin, _, err := paths.resolve(cniBinPath)
	if err != nil {
		return fmt.Errorf("install the static CNI: %w", err)
	}
	confDir, _, err := paths.resolve(cniConfPath)
	if err != nil {
		return fmt.Errorf("install the static CNI: %w", err)
	}
	conf, err := install.Conflist(install.Options{PodCIDR: podCIDR, DataDir: "/var/lib/membrane/cni", LogFile: "/var/run/membrane/cni.log"})
	if err != nil {
		return fmt.Errorf("install the static CNI: %w", err)
	}
	if _, err := install.CopyBinary(cfg.StaticCNI, bin); err != nil {
		return fmt.Errorf("install the static CNI: %w", err)
	}
	if _, err := install.WriteConfig(confDir, staticCNIConf, conf); err != nil {
		return fmt.Errorf("install the static CNI: %w", err)
	}
	return nil
}
