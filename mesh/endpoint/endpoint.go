// Package endpoint is the first stage of the agent's policy pipeline:
// from the cluster's pods (from the watch layer, mesh/k8s) to this node's
// endpoints, each with the host-side interface its traffic crosses. The
// interfaces come from a Links (netlink in the agent, a map in tests).
package endpoint

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// Pod is a pod as policy sees it.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	IP        netip.Addr
	Labels    identity.Labels
	// Identity is 0 until the operator has allocated one for Labels.
	Identity   identity.ID
	NamedPorts map[string]policy.NamedPort
	// Cluster is the remote cluster of a pod of a connected cluster
	// (cluster mesh); empty for this cluster's pods.
	Cluster string `json:"cluster,omitempty"`
}

// Interface is a pod's host-side interface.
type Interface struct {
	Index int
	Name  string
}

// Links finds the pods' host-side interfaces by pod address.
type Links interface {
	HostInterfaces() (map[netip.Addr]Interface, error)
}

// Local is one pod of this node and its interface.
type Local struct {
	Pod
	// Interface is the zero Interface while HasInterface is false (the
	// pod's veth or route is not there yet).
	Interface    Interface
	HasInterface bool
}

// Discovery finds the endpoints of one node. It keeps the interfaces it
// found, and looks again only when they may have changed: after
// Invalidate, or when a pod of the node has an address without an
// interface (a new pod, a new address, or one whose interface is not there
// yet). A change of policy alone does not list the node's interfaces.
type Discovery struct {
	Node  string
	Links Links
	// ifaces are the interfaces last found; nil: look again.
	ifaces map[netip.Addr]Interface
}

// Invalidate makes the next Local look the interfaces up again: one may
// have come or gone that no pod's address tells of (the CNI plugin set up
// or tore down an interface, or writing one failed).
func (d *Discovery) Invalidate() { d.ifaces = nil }

// Interfaces returns the pods' host-side interfaces by pod address, as
// last found (looked up again if invalidated).
func (d *Discovery) Interfaces() (map[netip.Addr]Interface, error) {
	if d.ifaces == nil {
		ifaces, err := d.Links.HostInterfaces()
		if err != nil {
			return nil, fmt.Errorf("find the pods' interfaces: %w", err)
		}
		d.ifaces = ifaces
	}
	return d.ifaces, nil
}

// Local returns the pods of the node, in the order of pods, with their
// interfaces.
func (d *Discovery) Local(pods []Pod) ([]Local, error) {
	for _, p := range pods {
		if p.Node != d.Node || !p.IP.IsValid() {
			continue
		}
		if _, ok := d.ifaces[p.IP]; !ok {
			d.Invalidate()
			break
		}
	}
	ifaces, err := d.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []Local
	for _, p := range pods {
		if p.Node != d.Node {
			continue
		}
		iface, ok := ifaces[p.IP]
		out = append(out, Local{Pod: p, Interface: iface, HasInterface: ok})
	}
	return out, nil
}

// PolicyEndpoint is what the policy resolver needs of a pod.
func (p Pod) PolicyEndpoint() policy.Endpoint {
	return policy.Endpoint{Identity: p.Identity, Labels: p.Labels, Namespace: p.Namespace, NamedPorts: p.NamedPorts}
}

// ResolveKey is what a pod's resolved policy depends on: its identity (its
// labels, namespace included) and its named ports. Pods with one key share
// their policy.
func (p Pod) ResolveKey() string {
	names := slices.Sorted(maps.Keys(p.NamedPorts))
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(p.Identity), 10))
	for _, n := range names {
		np := p.NamedPorts[n]
		fmt.Fprintf(&b, " %s=%d/%d", n, np.Port, np.Proto)
	}
	return b.String()
}
