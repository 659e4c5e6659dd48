// Package mtu finds the MTU of the network between the nodes (the
// underlay) on this node: the MTU of the interface that holds the node's
// address, else of the interface of the IPv4 default route. The agent uses
// it when --mtu is not given.
package mtu

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// ErrNotFound: no interface holds a node address and there is no default
// route.
var ErrNotFound = errors.New("no interface holds the node's address and there is no IPv4 default route")

// Found is the underlay MTU found and where.
type Found struct {
	MTU    int
	Device string
	// By is how the device was chosen: "node address <ip>" or "default route".
	By string
}

// Detect returns the MTU of the interface holding the first of nodeIPs
// found on this node, else of the IPv4 default route's interface (the
// lowest MTU of several).
func Detect(nodeIPs []netip.Addr) (Found, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Found{}, fmt.Errorf("list addresses: %w", err)
	}
	for _, ip := range nodeIPs {
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); !ok || got.Unmap() != ip.Unmap() {
				continue
			}
			link, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return Found{}, fmt.Errorf("interface %d of %s: %w", a.LinkIndex, ip, err)
			}
			return Found{MTU: link.Attrs().MTU, Device: link.Attrs().Name, By: "node address " + ip.String()}, nil
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return Found{}, fmt.Errorf("list routes: %w", err)
	}
	var found Found
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue // not a default route
			}
		}
		indexes := []int{r.LinkIndex}
		for _, hop := range r.MultiPath {
			indexes = append(indexes, hop.LinkIndex)
		}
		for _, i := range indexes {
			if i == 0 {
				continue
			}
			link, err := netlink.LinkByIndex(i)
			if err != nil {
				return Found{}, fmt.Errorf("interface %d of the default route: %w", i, err)
			}
			if m := link.Attrs().MTU; found.MTU == 0 || m < found.MTU {
				found = Found{MTU: m, Device: link.Attrs().Name, By: "default route"}
			}
		}
	}
	if found.MTU == 0 {
		return Found{}, ErrNotFound
	}
	return found, nil
}
