package noderunner

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// routeProtocol marks the routes the node runner owns, so stale ones can be
// found and removed without touching anything else.
const routeProtocol netlink.RouteProtocol = 77

// podCIDRRoute is "PodCIDR via node IP".
type podCIDRRoute struct {
	cidr netip.Prefix
	via  netip.Addr
}

// desiredRoutes returns a route for the PodCIDR of every other node: the
// underlay is one L2 segment, so another node's pods are one hop away.
func desiredRoutes(self string, nodes []*corev1.Node) []podCIDRRoute {
	var out []podCIDRRoute
	for _, n := range nodes {
		if n.Name == self || n.Spec.PodCIDR == "" {
			continue
		}
		cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			continue
		}
		ip, ok := internalIP(n)
		if !ok {
			continue
		}
		out = append(out, podCIDRRoute{cidr: cidr, via: ip})
	}
	return out
}

func internalIP(n *corev1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

// syncRoutes makes the routes of routeProtocol in h's main table equal to want.
func syncRoutes(h *netlink.Handle, want []podCIDRRoute) error {
	have, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	keep := map[string]bool{}
	var errs []error
	for _, r := range want {
		nr := &netlink.Route{
			Dst:      &net.IPNet{IP: net.IP(r.cidr.Addr().AsSlice()), Mask: net.CIDRMask(r.cidr.Bits(), 32)},
			Gw:       net.IP(r.via.AsSlice()),
			Protocol: routeProtocol,
		}
		keep[nr.Dst.String()] = true
		if err := h.RouteReplace(nr); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.cidr, r.via, err))
		}
	}
	for _, r := range have {
		if r.Dst != nil && !keep[r.Dst.String()] {
			if err := h.RouteDel(&r); err != nil {
				errs = append(errs, fmt.Errorf("delete stale route %s: %w", r.Dst, err))
			}
		}
	}
	return errors.Join(errs...)
}

// publishPodCIDR routes this node's PodCIDR via its IP in the namespace at
// nsPath (the control plane's), so replies to pods find their way back.
func publishPodCIDR(nsPath string, cidr netip.Prefix, nodeIP netip.Addr) error {
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	r := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(cidr.Addr().AsSlice()), Mask: net.CIDRMask(cidr.Bits(), 32)},
		Gw:       net.IP(nodeIP.AsSlice()),
		Protocol: routeProtocol,
	}
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", cidr, nodeIP, nsPath, err)
	}
	return nil
}
