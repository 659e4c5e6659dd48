package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/gateway/ir"
)

// Owned returns the Gateway addresses this node announces: each address is
// announced by one Ready node, chosen by rendezvous hashing over the Ready
// nodes (every agent computes the same choice, and a node leaving moves
// only its own addresses).
func Owned(model ir.IR, nodes []corev1.Node, self string) []netip.Addr {
	var ready []string
	for _, n := range nodes {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, n.Name)
			}
		}
	}
	var out []netip.Addr
	for _, l := range model.Listeners {
		if owner(l.Address, ready) == self && !slices.Contains(out, l.Address) {
			out = append(out, l.Address)
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func owner(a netip.Addr, nodes []string) string {
	var best string
	var bestScore uint64
	for _, n := range nodes {
		h := fnv.New64a()
		h.Write(a.AsSlice())
		h.Write([]byte(n))
		if s := h.Sum64(); best == "" || s > bestScore || (s == bestScore && cmp.Less(n, best)) {
			best, bestScore = n, s
		}
	}
	return best
}

// nodeIP is the node's InternalIP (IPv4).
func nodeIP(nodes []corev1.Node, name string) netip.Addr {
	for _, n := range nodes {
		if n.Name != name {
			continue
		}
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() {
				return ip
			}
		}
	}
	return netip.Addr{}
}

// Announcer puts the addresses this node announces on its underlay
// interface (the kernel answers ARP for them) and removes those it no
// longer announces.
type Announcer interface {
	Sync(ctx context.Context, nodeIP netip.Addr, want []netip.Addr) error
}

// addressLabel marks the addresses the announcer manages: the interface's
// name with this suffix (IFA_LABEL, at most 15 bytes).
const addressLabel = ":mgw"

// Netlink is the Announcer of the node's network namespace: the addresses
// go, as /32 with the label "<interface>:mgw", on the interface holding the
// node's InternalIP.
type Netlink struct{ Log *slog.Logger }

// Sync implements Announcer.
func (n Netlink) Sync(_ context.Context, nodeIP netip.Addr, want []netip.Addr) error {
	if !nodeIP.IsValid() {
		if len(want) == 0 {
			return nil
		}
		return errors.New("the node has no IPv4 InternalIP: no interface to announce on")
	}
	link, err := linkWith(nodeIP)
	if err != nil {
		return err
	}
	label := link.Attrs().Name + addressLabel
	if len(label) > 15 {
		label = ""
	}
	have, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	var errs []error
	present := map[netip.Addr]bool{}
	for _, a := range have {
		ip, _ := netip.AddrFromSlice(a.IP.To4())
		ones, _ := a.Mask.Size()
		if a.Label != label || label == "" || ones != 32 {
			present[ip] = present[ip] || slices.Contains(want, ip)
			continue
		}
		if slices.Contains(want, ip) {
			present[ip] = true
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove gateway address %s from %s: %w", ip, link.Attrs().Name, err))
			continue
		}
		n.Log.Info("gateway address withdrawn", "address", ip, "interface", link.Attrs().Name)
	}
	for _, ip := range want {
		if present[ip] {
			continue
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(32, 32)}, Label: label}
		if err := netlink.AddrAdd(link, a); err != nil {
			errs = append(errs, fmt.Errorf("add gateway address %s to %s: %w", ip, link.Attrs().Name, err))
			continue
		}
		n.Log.Info("gateway address announced", "address", ip, "interface", link.Attrs().Name)
	}
	return errors.Join(errs...)
}

func linkWith(ip netip.Addr) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP.To4()); ok && got == ip {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("find the interface of %s: %w", ip, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface has the node address %s", ip)
}

// Cleanup withdraws every Gateway address (label suffix ":mgw") from the
// interfaces of the calling thread's network namespace: what a node keeps
// of the announcer once the agent is gone.
func Cleanup(log *slog.Logger) error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	var errs []error
	for _, a := range addrs {
		if len(a.Label) <= len(addressLabel) || a.Label[len(a.Label)-len(addressLabel):] != addressLabel {
			continue
		}
		link, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			errs = append(errs, fmt.Errorf("find the interface of %s: %w", a.IP, err))
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			errs = append(errs, fmt.Errorf("remove gateway address %s from %s: %w", a.IP, link.Attrs().Name, err))
			continue
		}
		log.Info("gateway address removed", "address", a.IP.String(), "interface", link.Attrs().Name)
	}
	return errors.Join(errs...)
}
