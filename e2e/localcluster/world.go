package localcluster

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
	"github.com/membrane-mesh/membrane/e2e/worldhost"
)

// The outside world of a local cluster: a few hosts in network namespaces
// on the underlay bridge, in a subnet of their own outside every range of
// the cluster (WorldSubnet), with an authoritative DNS server for WorldZone
// that the cluster DNS forwards to. Traffic from pods to them leaves its
// node through the node's underlay interface, masqueraded to the node's
// address, as a cluster without routes for its pod ranges on the outside
// does it; for policy they are world.

// WorldZone is the zone the world's DNS server is authoritative for.
const WorldZone = "example.com"

// worldNATTable is the nftables table, in each node's namespace, that
// masquerades pod traffic to the world.
const worldNATTable = "membrane_dev_world"

// defaultWorldTTL is the TTL of the zone's records as `up` writes them.
const defaultWorldTTL = 30

// WorldHost is one host of the outside world.
type WorldHost struct {
	Name  string
	IP    netip.Addr
	Netns string
	Link  string
	// Names are the zone's names that point at the host (HTTP hosts).
	Names []string
	// DNS: the host is the zone's authoritative server (and no HTTP).
	DNS bool
}

// WorldSubnet holds the world hosts: 198.19.0.0/16 is the other half of
// the benchmarking range 198.18.0.0/15, never routed anywhere.
func (l Layout) WorldSubnet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(l.Index), 0}), 24)
}

// WorldHosts are the world's hosts: its DNS server and two HTTP servers,
// api.example.com and other.example.com (port 80).
func (l Layout) WorldHosts() []WorldHost {
	host := func(i int, name string, last byte) WorldHost {
		return WorldHost{
			Name:  name,
			IP:    netip.AddrFrom4([4]byte{198, 19, byte(l.Index), last}),
			Netns: filepath.Join(NetnsDir, "membrane-"+l.Name+"-world-"+name),
			Link:  fmt.Sprintf("mbw%s%d", l.hash(), i),
		}
	}
	dns := host(0, "ns", 53)
	dns.DNS = true
	api := host(1, "api", 11)
	api.Names = []string{"api." + WorldZone}
	other := host(2, "other", 12)
	other.Names = []string{"other." + WorldZone}
	return []WorldHost{dns, api, other}
}

// WorldHost returns the world host called name.
func (l Layout) WorldHost(name string) (WorldHost, bool) {
	for _, h := range l.WorldHosts() {
		if h.Name == name {
			return h, true
		}
	}
	return WorldHost{}, false
}

// WorldDNS is the address of the world's authoritative DNS server.
func (l Layout) WorldDNS() netip.Addr {
	h, _ := l.WorldHost("ns")
	return h.IP
}

// WorldZoneFile is the zone the world's DNS server serves; SetWorldRecord
// changes it.
func (l Layout) WorldZoneFile() string { return filepath.Join(l.StateDir(), "world", "zone.json") }

// initialZone points each HTTP host's names at it.
func initialZone(l Layout) worldhost.Zone {
	z := worldhost.Zone{Origin: WorldZone, Records: map[string]worldhost.Record{}}
	for _, h := range l.WorldHosts() {
		for _, n := range h.Names {
			z.Records[worldhost.Canonical(n)] = worldhost.Record{IPs: []netip.Addr{h.IP}, TTL: defaultWorldTTL}
		}
	}
	return z
}

// SetWorldRecord makes the world's DNS server answer name (in WorldZone)
// with ips and ttl from now on; no ips removes the name.
func SetWorldRecord(l Layout, name string, ips []netip.Addr, ttl uint32) error {
	z, err := worldhost.ReadZone(l.WorldZoneFile())
	if err != nil {
		return err
	}
	name = worldhost.Canonical(name)
	if !strings.HasSuffix(name, "."+z.Origin) {
		return fmt.Errorf("name %q: not in zone %s", name, z.Origin)
	}
	if len(ips) == 0 {
		delete(z.Records, name)
	} else {
		z.Records[name] = worldhost.Record{IPs: ips, TTL: ttl}
	}
	return worldhost.WriteZone(l.WorldZoneFile(), z)
}

// ResetWorldZone makes the world's DNS server answer as `up` made it.
func ResetWorldZone(l Layout) error {
	return worldhost.WriteZone(l.WorldZoneFile(), initialZone(l))
}

// createWorld creates the world's namespaces and starts their servers, and
// gives every node a route to the world and the masquerading of its pods'
// traffic there.
func createWorld(o Options, s *State) error {
	l := s.Layout()
	if err := os.MkdirAll(filepath.Dir(l.WorldZoneFile()), 0o755); err != nil {
		return fmt.Errorf("create world state: %w", err)
	}
	if err := worldhost.WriteZone(l.WorldZoneFile(), initialZone(l)); err != nil {
		return err
	}
	cg := filepath.Join(l.CgroupDir(s.CgroupRoot), "world")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		return fmt.Errorf("create cgroup %s: %w", cg, err)
	}
	for _, h := range l.WorldHosts() {
		if err := attachNamespace(l, h.Netns, h.Link, h.IP, 0); err != nil {
			return fmt.Errorf("world host %s: %w", h.Name, err)
		}
		// Replies to the nodes: the underlay is on the same segment.
		if err := onLinkRoute(h.Netns, l.Subnet()); err != nil {
			return fmt.Errorf("world host %s: %w", h.Name, err)
		}
		argv := []string{filepath.Join(o.BinDir, "membrane-dev"), "world-host", "--name=" + h.Name}
		if h.DNS {
			argv = append(argv, "--dns-addr="+net.JoinHostPort(h.IP.String(), "53"), "--zone-file="+l.WorldZoneFile())
		} else {
			// Every address of the host, including ranges AddWorldRange gives it.
			argv = append(argv, "--http-addr=:80")
		}
		p, err := startDetached("world/"+h.Name, h.Netns, cg, filepath.Join(l.LogDir(), "world-"+h.Name+".log"), argv)
		if err != nil {
			return err
		}
		s.Processes = append(s.Processes, p)
		if err := s.save(); err != nil {
			return err
		}
	}
	pods := netip.MustParsePrefix(s.PodCIDR)
	for _, n := range s.Nodes {
		if err := onLinkRoute(n.Netns, l.WorldSubnet()); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := masqueradeToWorld(n.Netns, pods, l.WorldSubnet()); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// removeWorld deletes the world's namespaces and links; its processes are
// the cluster's (stopped first), the nodes' routes and tables go with their
// namespaces.
func removeWorld(l Layout) []error {
	var errs []error
	for _, h := range l.WorldHosts() {
		if err := netns.Remove(h.Netns); err != nil {
			errs = append(errs, err)
		}
		if err := deleteLink(h.Link); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// onLinkRoute routes dst through the namespace's underlay interface.
func onLinkRoute(nsPath string, dst netip.Prefix) error {
	return netns.Do(nsPath, func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0 in %s: %w", nsPath, err)
		}
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Scope:     netlink.SCOPE_LINK,
			Dst:       &net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), 32)},
		}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s dev eth0 in %s: %w", dst, nsPath, err)
		}
		return nil
	})
}

// AddWorldRange makes the world host called host answer on every address
// of p as well (a local route for p in its namespace), routes p to it from
// every node and masquerades pod traffic to p there, as for the world's
// subnet: e.g. for many distinct addresses behind names. p must lie outside
// the cluster's ranges; it goes with the cluster.
func AddWorldRange(s *State, host string, p netip.Prefix) error {
	l := s.Layout()
	h, ok := l.WorldHost(host)
	if !ok {
		return fmt.Errorf("no world host %q", host)
	}
	p = p.Masked()
	err := netns.Do(h.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo in %s: %w", h.Netns, err)
		}
		r := &netlink.Route{LinkIndex: lo.Attrs().Index, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST,
			Dst: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("route local %s dev lo in %s: %w", p, h.Netns, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	pods := netip.MustParsePrefix(s.PodCIDR)
	for _, n := range s.Nodes {
		err := netns.Do(n.Netns, func() error {
			r := &netlink.Route{Dst: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}, Gw: net.IP(h.IP.AsSlice())}
			if err := netlink.RouteReplace(r); err != nil {
				return fmt.Errorf("route %s via %s in %s: %w", p, h.IP, n.Netns, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := masqueradeToWorld(n.Netns, pods, p); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// masqueradeToWorld installs, in the node's namespace,
//
//	table ip membrane_dev_world { chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr <pods> ip daddr <world> masquerade } }
func masqueradeToWorld(nsPath string, pods, world netip.Prefix) error {
	return netns.Do(nsPath, func() error {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables in %s: %w", nsPath, err)
		}
		t := conn.AddTable(&nftables.Table{Name: worldNATTable, Family: nftables.TableFamilyIPv4})
		ch := conn.AddChain(&nftables.Chain{
			Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
		})
		match := func(offset uint32, p netip.Prefix) []expr.Any {
			a := p.Addr().As4()
			mask := net.CIDRMask(p.Bits(), 32)
			return []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
			}
		}
		exprs := append(match(12, pods), match(16, world)...)
		exprs = append(exprs, &expr.Masq{})
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("add nftables table ip %s in %s: %w", worldNATTable, nsPath, err)
		}
		return nil
	})
}
