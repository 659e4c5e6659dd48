package noderunner

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/cni/netconf"
)

// Without an agent the runner installs membrane-cni itself, with node
// paths in its configuration, and does it again unchanged on a restart.
func TestInstallStaticCNI(t *testing.T) {
	dir := t.TempDir()
	plugin := filepath.Join(dir, "build", "membrane-cni")
	if err := os.MkdirAll(filepath.Dir(plugin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plugin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, bin := filepath.Join(dir, "node/etc/cni/net.d"), filepath.Join(dir, "node/opt/cni/bin")
	cfg := Config{StaticCNI: plugin, HostPaths: []HostPathMapping{{Path: cniConfPath, Source: conf}, {Path: cniBinPath, Source: bin}}}
	for range 2 {
		if err := installStaticCNI(cfg, netip.MustParsePrefix("10.244.3.0/24")); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(bin, "membrane-cni")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("plugin in the node's /opt/cni/bin: %v", err)
	}
	n, err := newNetwork(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	list, err := n.config()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 1 {
		t.Fatalf("%d plugins", len(list.Plugins))
	}
	pc, err := netconf.Parse(list.Plugins[0].Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pc.PodCIDR != "10.244.3.0/24" || pc.AgentSocket != "" || pc.DataDir != "/var/lib/membrane/cni" {
		t.Errorf("static configuration: %+v", pc)
	}
	if entries, _ := os.ReadDir(conf); len(entries) != 1 {
		t.Errorf("node's /etc/cni/net.d holds %v", entries)
	}
}
