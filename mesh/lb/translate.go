// Package lb turns Services and their EndpointSlices into load-balancing
// entries (frontend → backends) as one node sees them, and keeps a datapath's
// tables equal to them.
package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/membrane-mesh/membrane/mesh/model"
)

// Kind is the kind of a frontend.
type Kind string

// Frontend kinds, as `membrane service list` shows them.
const (
	KindClusterIP    Kind = "ClusterIP"
	KindNodePort     Kind = "NodePort"
	KindExternalIP   Kind = "ExternalIP"
	KindLoadBalancer Kind = "LoadBalancer"
)

// Frontend is an address a client connects to.
type Frontend struct {
	Addr     netip.Addr     `json:"addr"`
	Port     uint16         `json:"port"`
	Protocol model.Protocol `json:"protocol"`
}

func (f Frontend) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(f.Addr, f.Port), f.Protocol)
}

// Backend is an address traffic is sent to.
type Backend struct {
	Addr     netip.Addr     `json:"addr"`
	Port     uint16         `json:"port"`
	Protocol model.Protocol `json:"protocol"`
}

func (b Backend) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(b.Addr, b.Port), b.Protocol)
}

// BackendState says why a backend is in the set.
type BackendState string

// Backend states.
const (
	// Active backends are ready.
	Active BackendState = "active"
	// Terminating backends are used only while no backend is ready.
	Terminating BackendState = "terminating"
)

// BackendRef is a backend of one frontend.
type BackendRef struct {
	Backend `json:",inline"`
	State   BackendState `json:"state"`
	Node    string       `json:"node,omitempty"`
	// Cluster is the remote cluster of a global Service's backend; empty
	// for this cluster's.
	Cluster string `json:"cluster,omitempty"`
}

// Entry is one frontend with the backends this node sends it to.
type Entry struct {
	Frontend        Frontend        `json:"frontend"`
	Service         model.ServiceID `json:"service"`
	Kind            Kind            `json:"kind"`
	PortName        string          `json:"portName,omitempty"`
	AffinitySeconds uint32          `json:"affinitySeconds,omitempty"`
	Backends        []BackendRef    `json:"backends"`
}

// Entries returns every frontend of svc with its backends as node self sees
// them. Parts that cannot be programmed are skipped and reported in problems;
// the rest is still returned.
func Entries(svc model.Service, eps []model.EndpointSlice, nodes []model.Node, self string) (entries []Entry, problems []error) {
	if svc.Type == model.ExternalName || len(svc.ClusterIPs) == 0 {
		return nil, nil // headless and ExternalName services are DNS-only
	}
	for _, sp := range svc.Ports {
		if sp.Port == 0 {
			problems = append(problems, fmt.Errorf("service %s port %q: port 0", svc.ID, sp.Name))
			continue
		}
		if sp.Protocol != model.TCP && sp.Protocol != model.UDP {
			problems = append(problems, fmt.Errorf("service %s port %q: protocol %s is not load-balanced", svc.ID, sp.Name, sp.Protocol))
			continue
		}
		candidates, bad := backendsFor(sp, meshSlices(svc, eps))
		problems = append(problems, bad...)
		all := preferred(candidates, svc.Mesh.Affinity)
		// onNode is the backend set of traffic policy Local: those on the node
		// that receives the traffic.
		onNode := func(node string) []BackendRef { return localTo(candidates, node) }
		add := func(kind Kind, addr netip.Addr, port uint16, bs []BackendRef) {
			if !addr.Is4() {
				return // the datapath is IPv4 only for now
			}
			entries = append(entries, Entry{
				Frontend:        Frontend{Addr: addr, Port: port, Protocol: sp.Protocol},
				Service:         svc.ID,
				Kind:            kind,
				PortName:        sp.Name,
				AffinitySeconds: svc.AffinityTimeoutSeconds,
				Backends:        bs,
			})
		}
		for _, ip := range svc.ClusterIPs {
			if svc.InternalLocal {
				add(KindClusterIP, ip, sp.Port, onNode(self))
			} else {
				add(KindClusterIP, ip, sp.Port, all)
			}
		}
		// Clients of these frontends are in the cluster (the datapath
		// translates at connect time), and like kube-proxy Membrane sends
		// in-cluster traffic to external addresses to every backend.
		for _, ip := range svc.ExternalIPs {
			add(KindExternalIP, ip, sp.Port, all)
		}
		if svc.Type == model.LoadBalancer {
			for _, ip := range svc.LoadBalancerIPs {
				add(KindLoadBalancer, ip, sp.Port, all)
			}
		}
		// A node port is served by the node whose address it is; with
		// externalTrafficPolicy Local, by that node's backends only.
		if (svc.Type == model.NodePort || svc.Type == model.LoadBalancer) && sp.NodePort != 0 {
			for _, n := range nodes {
				for _, ip := range n.IPs {
					if svc.ExternalLocal {
						add(KindNodePort, ip, sp.NodePort, onNode(n.Name))
					} else {
						add(KindNodePort, ip, sp.NodePort, all)
					}
				}
			}
		}
	}
	slices.SortFunc(entries, compareEntries)
	return entries, problems
}

// backendsFor collects the candidate backends of one service port: ready
// endpoints and serving terminating ones (usable picks among them).
func backendsFor(sp model.ServicePort, eps []model.EndpointSlice) (candidates []BackendRef, problems []error) {
	var ready, terminating []BackendRef
	seen := map[Backend]bool{}
	for _, s := range eps {
		for _, p := range s.Ports {
			if p.Name != sp.Name || p.Protocol != sp.Protocol {
				continue
			}
			if p.Port == 0 {
				problems = append(problems, fmt.Errorf("endpointslice %s/%s port %q: port 0", s.Service.Namespace, s.Name, p.Name))
				continue
			}
			for _, ep := range s.Endpoints {
				for _, addr := range ep.Addrs {
					if !usableAddr(addr) {
						problems = append(problems, fmt.Errorf("endpointslice %s/%s: unusable address %s", s.Service.Namespace, s.Name, addr))
						continue
					}
					if !addr.Is4() {
						continue
					}
					b := Backend{Addr: addr, Port: p.Port, Protocol: p.Protocol}
					if seen[b] {
						continue
					}
					switch {
					case ep.Ready:
						seen[b] = true
						ready = append(ready, BackendRef{Backend: b, State: Active, Node: ep.NodeName, Cluster: s.Cluster})
					case ep.Serving && ep.Terminating:
						seen[b] = true
						terminating = append(terminating, BackendRef{Backend: b, State: Terminating, Node: ep.NodeName, Cluster: s.Cluster})
					}
				}
			}
		}
	}
	return append(ready, terminating...), problems
}

// usable keeps the active backends, or the terminating ones when none is
// active, sorted.
func usable(refs []BackendRef) []BackendRef {
	out := []BackendRef{}
	for _, r := range refs {
		if r.State == Active {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		for _, r := range refs {
			if r.State == Terminating {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b BackendRef) int { return compareBackends(a.Backend, b.Backend) })
	return out
}

// meshSlices drops the slices of remote clusters unless svc is global.
func meshSlices(svc model.Service, eps []model.EndpointSlice) []model.EndpointSlice {
	if svc.Mesh.Global {
		return eps
	}
	var own []model.EndpointSlice
	for _, s := range eps {
		if s.Cluster == "" {
			own = append(own, s)
		}
	}
	return own
}

// preferred applies a global Service's affinity: with local (remote), only
// the ready backends of this cluster (of remote clusters) while there is
// any, else every usable one; with none, every usable one.
func preferred(refs []BackendRef, aff model.Affinity) []BackendRef {
	var local bool
	switch aff {
	case model.AffinityLocal:
		local = true
	case model.AffinityRemote:
	default:
		return usable(refs)
	}
	var pick []BackendRef
	for _, r := range refs {
		if r.State == Active && (r.Cluster == "") == local {
			pick = append(pick, r)
		}
	}
	if len(pick) == 0 {
		return usable(refs)
	}
	return usable(pick)
}

// localTo returns the usable backends on node.
func localTo(refs []BackendRef, node string) []BackendRef {
	var on []BackendRef
	for _, r := range refs {
		if r.Node == node {
			on = append(on, r)
		}
	}
	return usable(on)
}

func compareEntries(a, b Entry) int {
	if c := a.Frontend.Addr.Compare(b.Frontend.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Frontend.Port, b.Frontend.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Frontend.Protocol, b.Frontend.Protocol)
}

func compareBackends(a, b Backend) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.Protocol, b.Protocol)
}

// usableAddr rejects addresses no backend can have: unspecified, loopback,
// multicast, link-local and, for IPv4, the reserved class E with the limited
// broadcast address.
func usableAddr(a netip.Addr) bool {
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
		return false
	}
	return !a.Is4() || a.As4()[0] < 240
}
