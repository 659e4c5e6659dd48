package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/vishvananda/netlink"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// uplinkInterval is how often the agent looks for the node's uplinks again
// (addresses may move, interfaces come and go).
const uplinkInterval = 30 * time.Second

// uplinks keeps host routing on the node's uplinks: the interfaces holding
// the Node's InternalIP addresses, where packets from other nodes to its
// pods arrive.
type uplinks struct {
	log   *slog.Logger
	dp    *bpfpolicy.Datapath
	node  string
	nodes corelisters.NodeLister
	on    bool // --host-routing=bpf and the kernel has it
}

// run sets the uplinks at once and every uplinkInterval until ctx is done
// (call it once the informers synced). With host routing off it only
// detaches what an earlier agent attached.
func (u *uplinks) run(ctx context.Context) {
	if !u.on {
		if err := u.dp.SetUplinks(nil); err != nil {
			u.log.Warn("detach host routing from uplinks", "error", err)
		}
		return
	}
	var last []int
	t := time.NewTicker(uplinkInterval)
	defer t.Stop()
	for {
		got, err := u.find()
		switch {
		case err != nil:
			u.log.Warn("find the node's uplinks", "error", err)
		case len(got) == 0:
			// Nothing known yet: what is attached stays.
		case !slices.Equal(got, last):
			err := u.dp.SetUplinks(got)
			if errors.Is(err, bpfpolicy.ErrNotSupported) {
				u.log.Info("host routing of packets from other nodes is off: it needs tcx (Linux 6.6+)")
				return
			}
			if err != nil {
				u.log.Error("attach host routing to the node's uplinks", "uplinks", got, "error", err)
			} else {
				u.log.Info("host routing on the node's uplinks", "ifindexes", got)
				last = got
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// find returns the indexes of the interfaces holding the node's addresses.
func (u *uplinks) find() ([]int, error) {
	n, err := u.nodes.Get(u.node)
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", u.node, err)
	}
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list the node's addresses: %w", err)
	}
	return uplinkIndexes(nodeIPv4s(n), addrs), nil
}

// nodeIPv4s are the IPv4 InternalIP addresses of n.
func nodeIPv4s(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() {
			out = append(out, ip)
		}
	}
	return out
}

// uplinkIndexes are the interfaces (sorted, once each) among addrs that
// hold one of ips.
func uplinkIndexes(ips []netip.Addr, addrs []netlink.Addr) []int {
	var out []int
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && slices.Contains(ips, ip) && a.LinkIndex > 0 {
			out = append(out, a.LinkIndex)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
