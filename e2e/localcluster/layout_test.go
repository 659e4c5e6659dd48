package localcluster

import (
	"net/netip"
	"strings"
	"testing"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{Name: "demo", Nodes: 2, PodCIDR: DefaultPodCIDR, ServiceCIDR: DefaultServiceCIDR, ToolsDir: "/t", BinDir: "/b"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, mutate := range map[string]func(*Options){
		"--name":         func(o *Options) { o.Name = "Bad_Name" },
		"--nodes":        func(o *Options) { o.Nodes = 0 },
		"--pod-cidr":     func(o *Options) { o.PodCIDR = "10.244.0.0/24" },
		"--service-cidr": func(o *Options) { o.ServiceCIDR = "fd00::/64" },
		"overlaps":       func(o *Options) { o.ServiceCIDR = "10.244.0.0/20" },
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
