package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/mesh/mtu"
)

// mtuNodeWait bounds the wait for this node's Node (its addresses tell
// which interface is the underlay's) when the MTU is detected.
const mtuNodeWait = 30 * time.Second

// underlayMTU returns --mtu, or, when it is not given, the MTU of this
// node's interface holding its InternalIP (else of its default route's);
// DefaultMTU when neither is found.
func (a *Agent) underlayMTU(ctx context.Context) int {
	if a.cfg.MTU != 0 {
		return a.cfg.MTU
	}
	ips, err := a.nodeIPs(ctx)
	if err != nil {
		a.log.Warn("read this node's addresses to find the underlay's MTU; trying the default route", "error", err)
	}
	found, err := mtu.Detect(ips)
	switch {
	case err != nil:
		a.log.Warn("underlay MTU not found; set --mtu (chart datapath.mtu)", "assumed", DefaultMTU, "error", err)
		return DefaultMTU
	case found.MTU < minMTU || found.MTU > maxMTU:
		a.log.Warn("underlay MTU out of range; set --mtu (chart datapath.mtu)", "device", found.Device, "mtu", found.MTU, "assumed", DefaultMTU)
		return DefaultMTU
	}
	a.log.Info("underlay MTU detected", "mtu", found.MTU, "device", found.Device, "by", found.By)
	return found.MTU
}

// nodeIPs returns this node's IPv4 InternalIP addresses, waiting up to
// mtuNodeWait for the Node.
func (a *Agent) nodeIPs(ctx context.Context) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, mtuNodeWait)
	defer cancel()
	for {
		n, err := a.client.CoreV1().Nodes().Get(ctx, a.cfg.NodeName, metav1.GetOptions{})
		if err == nil {
			return nodeIPv4s(n), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("get node %s: %w", a.cfg.NodeName, err)
		case <-time.After(time.Second):
		}
	}
}
