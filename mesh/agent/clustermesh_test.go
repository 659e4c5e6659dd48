package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/mesh/clustermesh"
	"github.com/membrane-mesh/membrane/mesh/cni/nstest"
)

func TestClusterMeshConfig(t *testing.T) {
	base := Config{NodeName: "n1", BPFPinDir: "/sys/fs/bpf/m", CgroupPath: "/sys/fs/cgroup", APIAddr: ":9890",
		ClusterName: "east", ClusterID: 1, ClusterMeshSecret: "kube-system/membrane-clustermesh", ClusterMeshCacheTTL: clustermesh.DefaultCacheTTL}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*Config)
		flag string
	}{
		{func(c *Config) { c.ClusterName = "East" }, "--cluster-name"},
		{func(c *Config) { c.ClusterID = 256 }, "--cluster-id"},
		{func(c *Config) { c.ClusterMeshSecret = "membrane-clustermesh" }, "--clustermesh-secret"},
		{func(c *Config) { c.ClusterMeshCacheTTL = -1 }, "--clustermesh-cache-ttl"},
	} {
		c := base
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("want an error naming %s, got %v", tc.flag, err)
		}
	}
}

// TestMeshRoutes checks in a fresh network namespace that the agent's
// routes to remote PodCIDRs follow the remote nodes, and that routes of
// other owners are left alone.
func TestMeshRoutes(t *testing.T) {
	nstest.RequireRoot(t)
	n := nstest.New(t)
	nstest.Do(t, n, func() error {
		dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "under0"}, PeerName: "under1"}
		if err := netlink.LinkAdd(dummy); err != nil {
			return err
		}
		for _, name := range []string{"under0", "under1"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		a, _ := netlink.ParseAddr("198.18.1.11/24")
		if err := netlink.AddrAdd(dummy, a); err != nil {
			return err
		}
		// Someone else's route to a remote CIDR stays.
		_, other, _ := net.ParseCIDR("10.9.0.0/24")
		if err := netlink.RouteAdd(&netlink.Route{Dst: other, Gw: net.ParseIP("198.18.1.99")}); err != nil {
			return err
		}
		m := newMeshRoutes(slog.New(slog.NewTextHandler(io.Discard, nil)))
		node := func(name, ip string, cidrs ...string) clustermesh.RemoteNode {
			rn := clustermesh.RemoteNode{Name: name, IP: netip.MustParseAddr(ip)}
			for _, c := range cidrs {
				rn.PodCIDRs = append(rn.PodCIDRs, netip.MustParsePrefix(c))
			}
			return rn
		}
		routes := func() map[string]string {
			list, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string]string{}
			for _, r := range list {
				if r.Dst != nil && r.Gw != nil {
					out[r.Dst.String()] = r.Gw.String()
				}
			}
			return out
		}
		m.set("west", []clustermesh.RemoteNode{node("w1", "198.18.1.21", "10.2.0.0/24"), node("w2", "198.18.1.22", "10.2.1.0/24")})
		if got := routes(); got["10.2.0.0/24"] != "198.18.1.21" || got["10.2.1.0/24"] != "198.18.1.22" || got["10.9.0.0/24"] != "198.18.1.99" {
			t.Errorf("routes = %v", got)
		}
		m.set("west", []clustermesh.RemoteNode{node("w1", "198.18.1.23", "10.2.0.0/24")})
		if got := routes(); got["10.2.0.0/24"] != "198.18.1.23" || got["10.2.1.0/24"] != "" {
			t.Errorf("routes after w2 left and w1 moved = %v", got)
		}
		if err := m.clear(); err != nil {
			return err
		}
		if got := routes(); len(got) != 1 || got["10.9.0.0/24"] != "198.18.1.99" {
			t.Errorf("routes after clear = %v, want only the other owner's", got)
		}

		// With encryption on, a node that publishes a key is reached only
		// through the tunnel (no underlay route); one without keeps its
		// route. Every change is told, and the nodes are peers by
		// CLUSTER/NODE.
		keyed := node("w1", "198.18.1.21", "10.2.0.0/24")
		keyed.WireGuardKey = "k1"
		m.set("west", []clustermesh.RemoteNode{keyed, node("w2", "198.18.1.22", "10.2.1.0/24")})
		if got := routes(); got["10.2.0.0/24"] != "198.18.1.21" {
			t.Errorf("encryption off: routes = %v, want one to the keyed node too", got)
		}
		told := 0
		m.encryptWith(func() { told++ })
		if got := routes(); got["10.2.0.0/24"] != "" || got["10.2.1.0/24"] != "198.18.1.22" {
			t.Errorf("encryption on: routes = %v, want only the one to the node without a key", got)
		}
		peers := map[string]string{}
		for _, n := range m.wireGuardNodes() {
			peers[n.Name] = n.Key + " " + n.IP.String() + " " + fmt.Sprint(n.PodCIDRs)
		}
		if want := map[string]string{"west/w1": "k1 198.18.1.21 [10.2.0.0/24]", "west/w2": " 198.18.1.22 [10.2.1.0/24]"}; fmt.Sprint(peers) != fmt.Sprint(want) {
			t.Errorf("wireGuardNodes = %v, want %v", peers, want)
		}
		m.set("west", nil) // disconnect
		if told != 1 || len(m.wireGuardNodes()) != 0 {
			t.Errorf("after disconnect: told %d times, %d nodes left", told, len(m.wireGuardNodes()))
		}
		if got := routes(); len(got) != 1 {
			t.Errorf("routes after disconnect = %v, want only the other owner's", got)
		}
		return nil
	})
}
