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

// Discovery finds the endpoints of one node.
type Discovery struct {
	Node  string
	Links Links
}

// Local returns the pods of the node, in the order of pods, with their
// interfaces.
func (d Discovery) Local(pods []Pod) ([]Local, error) {
	ifaces, err := d.Links.HostInterfaces()
	if err != nil {
		return nil, fmt.Errorf("find the pods' interfaces: %w", err)
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
