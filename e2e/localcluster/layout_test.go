package localcluster

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/membrane-mesh/membrane/e2e/noderunner"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Name: "demo", Nodes: 2, PodCIDR: DefaultPodCIDR, ServiceCIDR: DefaultServiceCIDR, ToolsDir: "/t", BinDir: "/b"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, good := range []Options{
		{HelmSet: []string{"encryption.enabled=true", "operator.replicas=1"}},
		{Encryption: EncryptionWireGuard},
		{NoMembrane: true},
		{UnderlayMTU: 1450},
	} {
		o := ok
		o.HelmSet, o.Encryption, o.NoMembrane, o.UnderlayMTU = good.HelmSet, good.Encryption, good.NoMembrane, good.UnderlayMTU
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", good, err)
		}
	}
	for field, mutate := range map[string]func(*Options){
		"--name":                 func(o *Options) { o.Name = "Bad_Name" },
		"--nodes":                func(o *Options) { o.Nodes = 0 },
		"--pod-cidr":             func(o *Options) { o.PodCIDR = "10.244.0.0/24" },
		"--service-cidr":         func(o *Options) { o.ServiceCIDR = "fd00::/64" },
		"overlaps":               func(o *Options) { o.ServiceCIDR = "10.244.0.0/20" },
		"--encryption \"ipsec\"": func(o *Options) { o.Encryption = "ipsec" },
		"--underlay-mtu 576":     func(o *Options) { o.UnderlayMTU = 576 },
		"--set \"encryption.enabled\": must be KEY=VALUE": func(o *Options) { o.HelmSet = []string{"encryption.enabled"} },
		"--set \"operator.replicas=1\": chart values, but --no-membrane": func(o *Options) {
			o.NoMembrane, o.HelmSet = true, []string{"operator.replicas=1"}
		},
		"--encryption \"wireguard\": the agents encrypt, but --no-membrane": func(o *Options) {
			o.NoMembrane, o.Encryption = true, EncryptionWireGuard
		},
	} {
		o := ok
		mutate(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
}

func TestLayoutNames(t *testing.T) {
	l := Layout{Name: "a-long-cluster-name1", Index: 7}
	for _, name := range []string{l.Bridge(), l.ControlPlaneLink(), l.NodeLink(50)} {
		if len(name) > 15 {
			t.Errorf("link name %q longer than IFNAMSIZ-1", name)
		}
	}
	if l.APIServerIP() != netip.MustParseAddr("198.18.7.2") || l.NodeIP(2) != netip.MustParseAddr("198.18.7.12") {
		t.Errorf("addresses: %s %s", l.APIServerIP(), l.NodeIP(2))
	}
	if got := ClusterDNS(netip.MustParsePrefix("10.96.0.0/16")); got != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("cluster DNS = %s", got)
	}
}

// Each node's host paths are its own: no two nodes share a directory, and
// the runner accepts them.
func TestNodeHostPaths(t *testing.T) {
	l := Layout{Name: "hp", Index: 3}
	a := l.NodeHostPaths(l.NodeName(1), "/sys/fs/cgroup/unified")
	b := l.NodeHostPaths(l.NodeName(2), "/sys/fs/cgroup/unified")
	cfg := noderunner.Config{
		Cluster: "hp", NodeName: l.NodeName(1), NodeIP: "198.18.3.11", ClusterDNS: "10.96.0.10",
		Kubeconfig: "/k", RoutesKubeconfig: "/r", StateDir: "/s", PodNetnsDir: "/n", CgroupDir: "/c",
		ImagesDir: "/i", KubeletPort: KubeletPort, HostPaths: a,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.HostPaths = append(cfg.HostPaths, noderunner.HostPathMapping{Path: "/sys/fs/bpf", Source: "/elsewhere"})
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "hostPaths[7].path") {
		t.Fatalf("a path mapped twice: %v", err)
	}
	want := map[string]string{
		"/sys/fs/bpf":       "/sys/fs/bpf/membrane/hp/hp-node1",
		"/sys/fs/cgroup":    "/sys/fs/cgroup/unified/membrane/hp/hp-node1",
		"/var/lib/membrane": "/var/lib/membrane/dev/hp/nodes/hp-node1/host/var/lib/membrane",
		"/var/run/membrane": "/run/membrane/dev/hp/nodes/hp-node1/membrane",
		"/run/membrane":     "/run/membrane/dev/hp/nodes/hp-node1/membrane",
		"/etc/cni/net.d":    "/var/lib/membrane/dev/hp/nodes/hp-node1/host/etc/cni/net.d",
		"/opt/cni/bin":      "/var/lib/membrane/dev/hp/nodes/hp-node1/host/opt/cni/bin",
	}
	if len(a) != len(want) {
		t.Fatalf("%d mappings, want %d: %v", len(a), len(want), a)
	}
	for i, m := range a {
		if want[m.Path] != m.Source {
			t.Errorf("%s -> %s, want %s", m.Path, m.Source, want[m.Path])
		}
		if b[i].Source == m.Source {
			t.Errorf("%s is %s on both nodes", m.Path, m.Source)
		}
	}
}
