// Package ipcache is the agent's map from addresses to security
// identities, built from the nodes, the API server, the policies' CIDR
// identities and the pods' identities. It is pure: the datapath writer
// (mesh/datapath) puts it into the kernel, the L7 translation
// (xds/l7) takes the peers' addresses from it.
package ipcache

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// Map is the identity of every known prefix.
type Map map[netip.Prefix]identity.ID

// Input is what the ipcache is built from.
type Input struct {
	// Node is this node's name: its addresses are the host.
	Node  string
	Nodes []model.Node
	// APIServer are the addresses of the kubernetes Service's endpoints.
	APIServer []netip.Addr
	Pods      []endpoint.Pod
	// CIDRs are the policies' CIDR identities.
	CIDRs []policy.CIDRIdentity
}

// Build maps every known address to its identity: the world (0.0.0.0/0),
// the policies' CIDR identities, the nodes (this one is host, the others
// remote-node; their gateway source addresses ingress), the API server, and every pod with an identity. More
// specific sources win: a pod over a node, the API server over a node.
// The datapath is IPv4-only: IPv6 addresses are left out.
func Build(in Input) Map {
	want := Map{
		netip.PrefixFrom(netip.IPv4Unspecified(), 0): identity.World,
	}
	for _, c := range in.CIDRs {
		if c.Prefix.Addr().Is4() {
			want[c.Prefix] = c.ID
		}
	}
	host := func(ip netip.Addr, id identity.ID) {
		if ip.Is4() {
			want[netip.PrefixFrom(ip, 32)] = id
		}
	}
	for _, n := range in.Nodes {
		id := identity.RemoteNode
		if n.Name == in.Node {
			id = identity.Host
		}
		for _, ip := range n.IPs {
			host(ip, id)
		}
		if n.IngressIP.IsValid() {
			host(n.IngressIP, identity.Ingress)
		}
	}
	for _, ip := range in.APIServer {
		host(ip, identity.KubeAPIServer)
	}
	for _, p := range in.Pods {
		if p.Identity != 0 {
			host(p.IP, p.Identity)
		}
	}
	return want
}

// ByIdentity are the prefixes of each identity, sorted by address and
// length.
func (m Map) ByIdentity() map[identity.ID][]netip.Prefix {
	out := map[identity.ID][]netip.Prefix{}
	for pfx, id := range m {
		out[id] = append(out[id], pfx)
	}
	for _, ps := range out {
		slices.SortFunc(ps, func(a, b netip.Prefix) int {
			return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
		})
	}
	return out
}
