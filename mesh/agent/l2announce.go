package agent

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/l2announce"
)

// lbLeaseNamespace holds the Leases electing the announcer of each
// LoadBalancer address.
const lbLeaseNamespace = "kube-system"

// newL2Announcer registers the L2 announcer's informers: Services (their
// load-balancer addresses) and Nodes (this node's InternalIP).
func (a *Agent) newL2Announcer(inf *k8s.Informers) (*l2announce.Announcer, error) {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { signal() },
		UpdateFunc: func(any, any) { signal() },
		DeleteFunc: func(any) { signal() },
	}
	svcs := inf.Typed.Core().V1().Services().Informer()
	if err := inf.Watch(svcs, h); err != nil {
		return nil, fmt.Errorf("watch services: %w", err)
	}
	nodes := inf.Typed.Core().V1().Nodes().Informer()
	if err := inf.Watch(nodes, h); err != nil {
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	name := a.cfg.NodeName
	nodeIP := func() netip.Addr {
		o, ok, _ := nodes.GetIndexer().GetByKey(name)
		n, _ := o.(*corev1.Node)
		if !ok || n == nil {
			return netip.Addr{}
		}
		for _, ad := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(ad.Address); err == nil && ad.Type == corev1.NodeInternalIP && ip.Is4() {
				return ip
			}
		}
		return netip.Addr{}
	}
	return &l2announce.Announcer{
		Log: a.log.With("component", "l2announce"), Client: a.client, Namespace: lbLeaseNamespace,
		Node: name, NodeIP: nodeIP, Services: svcs.GetIndexer(), Changed: changed,
	}, nil
}
