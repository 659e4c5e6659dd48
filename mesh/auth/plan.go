// Package auth plans mutual authentication for one node (pure): from the
// cluster's pods and their resolved policies, which connections of the
// node's pods the datapath hands to the authenticating proxy, the proxy's
// mutual-TLS tunnels to the destination nodes, and which local pod ports
// accept authenticated connections from which SPIFFE IDs.
//
// A port of a pod requires authentication when one of its ingress allow
// entries does (policy rules with authentication.mode required). Every
// pod allowed there by that entry (its remote identity) sends its
// connections to the port through its own node's proxy, which tunnels them
// to the destination node's proxy in mutual TLS with the source pod's SVID;
// the destination accepts the SPIFFE IDs of the allowed identity's pods,
// each only from that identity's pod addresses, and delivers from the
// client's address. The destination datapath drops everything else to the
// port ("Authentication required").
//
// An egress rule requiring authentication works the same way from the
// other end: the source pod's connections to the rule's pods (remote
// identity; every pod for 0) take its node's proxy, and the destination's
// proxy accepts the source's SPIFFE ID from the source pod's address (and
// applies the destination's L7 rules for the source, which the datapath
// does not redirect again). Peers without a SPIFFE identity (CIDRs, the
// world, nodes) cannot be authenticated: the source's datapath drops
// connections to them ("Authentication required"), as it does an egress
// entry that also redirects to the L7 proxy.
//
// A port that also has L7 rules for the peer (the entry redirects to the L7
// proxy) composes: the destination's proxy applies the destination pod's
// L7 rules of that port to the requests inside the tunnel, keyed by the
// peer's SPIFFE ID, before delivering (xds/mtls), so the connection passes
// one proxy on each node. The plan then rewrites the entry for the local
// destination as an allow requiring authentication (Ingress): the
// datapath lets only the proxy's delivery through, and never redirects it
// to the L7 listener, which is not authenticated.
//
// A workload's SPIFFE ID is spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
// Only TCP is authenticated. A side whose SVID the node does not hold (yet)
// is left out: its connections are not redirected, and the destination
// drops them.
package auth

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/l7"
	"github.com/membrane-mesh/membrane/xds/mtls"
)

// maxRange is the widest port range planned port by port (the proxy
// matches single ports); wider ranges are reported and stay dropped.
const maxRange = 256

// Pod is a pod as the planner sees it.
type Pod struct {
	Namespace, Name, Node string
	IP                    netip.Addr
	Identity              identity.ID
	ServiceAccount        string
}

// Input is what the plan depends on.
type Input struct {
	// Node is this node's name.
	Node        string
	TrustDomain spiffeid.TrustDomain
	// Nodes give the proxies' addresses (a node's first IPv4 address).
	Nodes []model.Node
	// Pods are the cluster's pods.
	Pods []Pod
	// Rules returns a pod's resolved datapath rules.
	Rules func(Pod) []policy.DatapathRule
	// L7 returns a pod's resolved L7 rules; nil: none.
	L7 func(Pod) []policy.L7Rule
	// SVIDs are the identities this node holds.
	SVIDs map[spiffeid.ID]bool
	// OutboundPort is the proxy's authenticating listener, the egress
	// redirects' proxy port.
	OutboundPort uint16
}

// Plan is a node's mutual-authentication plan.
type Plan struct {
	// Egress are the redirects to add to local pods' policies, by pod
	// address.
	Egress map[netip.Addr][]policy.DatapathRule
	// Ingress are the local pods' ingress entries whose L7 rules the
	// tunnel applies: they replace the resolved entries of the same key.
	Ingress  map[netip.Addr][]policy.DatapathRule
	Outbound []mtls.Outbound
	Inbound  []mtls.Inbound
	// Problems are parts that could not be planned (their traffic is
	// dropped).
	Problems []string
}

// ID is the SPIFFE ID of a namespace's service account.
func ID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID of service account %s/%s: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// PodFrom adapts an endpoint pod (its service account is a label).
func PodFrom(namespace, name, node string, ip netip.Addr, id identity.ID, labels identity.Labels) Pod {
	return Pod{Namespace: namespace, Name: name, Node: node, IP: ip, Identity: id, ServiceAccount: labels[identity.ServiceAccount]}
}

// New plans in.
func New(in Input) Plan {
	p := Plan{Egress: map[netip.Addr][]policy.DatapathRule{}, Ingress: map[netip.Addr][]policy.DatapathRule{}}
	nodeAddr := map[string]netip.Addr{}
	for _, n := range in.Nodes {
		for _, a := range n.IPs {
			if a.Unmap().Is4() {
				nodeAddr[n.Name] = a.Unmap()
				break
			}
		}
	}
	ids := map[netip.Addr]spiffeid.ID{}
	byIdentity := map[identity.ID][]Pod{}
	var locals []Pod
	for _, pod := range in.Pods {
		if pod.Identity == 0 || !pod.IP.IsValid() {
			continue
		}
		id, err := ID(in.TrustDomain, pod.Namespace, pod.ServiceAccount)
		if err != nil {
			p.Problems = append(p.Problems, err.Error())
			continue
		}
		ids[pod.IP] = id
		byIdentity[pod.Identity] = append(byIdentity[pod.Identity], pod)
		if pod.Node == in.Node {
			locals = append(locals, pod)
		}
	}
	type egressKey struct {
		src           netip.Addr
		remote        identity.ID
		port, endPort uint16
	}
	egress := map[egressKey]bool{}
	for _, dst := range in.Pods {
		dstID, ok := ids[dst.IP]
		if !ok || dst.Identity == 0 {
			continue
		}
		for _, r := range in.Rules(dst) {
			if r.Direction != model.Ingress || !r.AuthRequired || r.AuthAlwaysFail || r.Verdict == model.Deny {
				continue
			}
			if r.Proto != model.TCP && r.Proto != model.AnyProtocol {
				continue
			}
			ports, err := portsOf(r)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s/%s %s: %v", dst.Namespace, dst.Name, r, err))
				continue
			}
			if dst.Node == in.Node && in.SVIDs[dstID] {
				peers := peersOf(in.TrustDomain, r.RemoteIdentity, byIdentity[r.RemoteIdentity], ids)
				var l7s []policy.L7Rule
				if r.Verdict == model.Redirect && in.L7 != nil {
					l7s = in.L7(dst)
				}
				for _, port := range ports {
					ib := mtls.Inbound{Destination: dst.IP, Port: port, DestinationID: dstID, Peers: peers}
					if r.Verdict == model.Redirect {
						ib.L7 = l7Of(in.TrustDomain, l7s, port, byIdentity, ids)
					}
					p.Inbound = append(p.Inbound, ib)
				}
				if r.Verdict == model.Redirect {
					w := r
					w.Verdict, w.ProxyPort = model.Allow, 0
					w.Origins = append(slices.Clone(r.Origins), "mutual authentication (L7 rules in the tunnel)")
					p.Ingress[dst.IP] = append(p.Ingress[dst.IP], w)
				}
			}
			node, ok := nodeAddr[dst.Node]
			if !ok {
				continue
			}
			for _, src := range locals {
				srcID := ids[src.IP]
				if r.RemoteIdentity != 0 && src.Identity != r.RemoteIdentity || !in.SVIDs[srcID] {
					continue
				}
				for _, port := range ports {
					p.Outbound = append(p.Outbound, mtls.Outbound{
						Source: src.IP, SourceID: srcID, Destination: dst.IP, Port: port, DestinationID: dstID, Node: node,
					})
				}
				egress[egressKey{src.IP, dst.Identity, r.Port, r.EndPort}] = true
			}
		}
	}
	// Egress rules requiring authentication: the source's connections to
	// the rule's pods take the tunnel, and their destination accepts the
	// source's SPIFFE ID from the source's address.
	for _, src := range in.Pods {
		srcID, ok := ids[src.IP]
		if !ok {
			continue
		}
		srcLocal := src.Node == in.Node && in.SVIDs[srcID]
		for _, r := range in.Rules(src) {
			if r.Direction != model.Egress || !r.AuthRequired || r.AuthAlwaysFail || r.Verdict != model.Allow {
				continue
			}
			if r.Proto != model.TCP && r.Proto != model.AnyProtocol {
				continue
			}
			ports, err := portsOf(r)
			if err != nil {
				p.Problems = append(p.Problems, fmt.Sprintf("%s/%s %s: %v", src.Namespace, src.Name, r, err))
				continue
			}
			for _, dst := range in.Pods {
				dstID, ok := ids[dst.IP]
				if !ok || dst.IP == src.IP || r.RemoteIdentity != 0 && dst.Identity != r.RemoteIdentity {
					continue
				}
				if node, ok := nodeAddr[dst.Node]; ok && srcLocal {
					for _, port := range ports {
						p.Outbound = append(p.Outbound, mtls.Outbound{
							Source: src.IP, SourceID: srcID, Destination: dst.IP, Port: port, DestinationID: dstID, Node: node,
						})
					}
					egress[egressKey{src.IP, r.RemoteIdentity, r.Port, r.EndPort}] = true
				}
				if dst.Node != in.Node || !in.SVIDs[dstID] {
					continue
				}
				peers := []mtls.Peer{{ID: srcID, Sources: []netip.Prefix{netip.PrefixFrom(src.IP.Unmap(), 32)}}}
				dstRules := in.Rules(dst)
				for _, port := range ports {
					ib := mtls.Inbound{Destination: dst.IP, Port: port, DestinationID: dstID, Peers: peers}
					// The tunnel delivers as the proxy, which the
					// destination's datapath does not redirect again: the
					// destination's L7 rules for the source apply inside.
					if port != 0 && in.L7 != nil && redirects(dstRules, src.Identity, port) {
						ib.L7 = l7Of(in.TrustDomain, in.L7(dst), port, byIdentity, ids)
					}
					p.Inbound = append(p.Inbound, ib)
				}
			}
		}
	}
	for k := range egress {
		p.Egress[k.src] = append(p.Egress[k.src], policy.DatapathRule{
			Direction: model.Egress, RemoteIdentity: k.remote, Proto: model.TCP,
			Port: k.port, EndPort: k.endPort, Verdict: model.Redirect, ProxyPort: in.OutboundPort,
			Origins: []string{"mutual authentication"},
		})
	}
	for _, rs := range p.Egress {
		slices.SortFunc(rs, func(a, b policy.DatapathRule) int {
			return cmp.Or(cmp.Compare(a.RemoteIdentity, b.RemoteIdentity), cmp.Compare(a.Port, b.Port), cmp.Compare(a.EndPort, b.EndPort))
		})
	}
	slices.SortFunc(p.Outbound, func(a, b mtls.Outbound) int {
		return cmp.Or(a.Source.Compare(b.Source), a.Destination.Compare(b.Destination), cmp.Compare(a.Port, b.Port))
	})
	p.Outbound = slices.Compact(p.Outbound)
	slices.SortStableFunc(p.Inbound, func(a, b mtls.Inbound) int {
		return cmp.Or(a.Destination.Compare(b.Destination), cmp.Compare(a.Port, b.Port))
	})
	return p
}

// redirects reports whether an ingress entry of rules redirects remote's
// TCP connections to port to the L7 proxy.
func redirects(rules []policy.DatapathRule, remote identity.ID, port uint16) bool {
	for _, r := range rules {
		if r.Direction == model.Ingress && r.Verdict == model.Redirect && (r.RemoteIdentity == 0 || r.RemoteIdentity == remote) &&
			(r.Proto == model.TCP || r.Proto == model.AnyProtocol) && port >= r.Port && port <= max(r.Port, r.EndPort) {
			return true
		}
	}
	return false
}

// l7Of are the L7 rules of a destination's ingress on port, with their
// remote identities' SPIFFE IDs as peers; never nil: a redirected port
// without rules denies every request.
func l7Of(td spiffeid.TrustDomain, rules []policy.L7Rule, port uint16, byIdentity map[identity.ID][]Pod, ids map[netip.Addr]spiffeid.ID) *mtls.L7 {
	out := &mtls.L7{}
	for _, r := range rules {
		if r.Direction != model.Ingress || r.Proto != model.TCP && r.Proto != model.AnyProtocol ||
			port < r.Port || port > max(r.Port, r.EndPort) {
			continue
		}
		rule := mtls.L7Rule{HTTP: l7.HTTPRules(r.HTTP)}
		for _, remote := range r.RemoteIdentities {
			rule.Peers = append(rule.Peers, peersOf(td, remote, byIdentity[remote], ids)...)
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}

// portsOf lists a rule's ports; 0 is every port.
func portsOf(r policy.DatapathRule) ([]uint16, error) {
	if r.Port == 0 || r.EndPort <= r.Port {
		return []uint16{r.Port}, nil
	}
	if int(r.EndPort)-int(r.Port)+1 > maxRange {
		return nil, fmt.Errorf("port range %d-%d is wider than %d ports: mutual authentication is not applied, the traffic is dropped", r.Port, r.EndPort, maxRange)
	}
	var out []uint16
	for port := int(r.Port); port <= int(r.EndPort); port++ {
		out = append(out, uint16(port))
	}
	return out, nil
}

// peersOf are the SPIFFE IDs allowed by a rule's remote identity, each from
// its pods' addresses; remote 0 is every identity of the trust domain.
func peersOf(td spiffeid.TrustDomain, remote identity.ID, pods []Pod, ids map[netip.Addr]spiffeid.ID) []mtls.Peer {
	if remote == 0 {
		return []mtls.Peer{{TrustDomain: td}}
	}
	byID := map[spiffeid.ID][]netip.Prefix{}
	for _, pod := range pods {
		id := ids[pod.IP]
		byID[id] = append(byID[id], netip.PrefixFrom(pod.IP.Unmap(), 32))
	}
	var out []mtls.Peer
	for id, srcs := range byID {
		slices.SortFunc(srcs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		out = append(out, mtls.Peer{ID: id, Sources: srcs})
	}
	slices.SortFunc(out, func(a, b mtls.Peer) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	return out
}
