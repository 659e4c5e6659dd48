// Package hostlinks is the endpoint stage's netlink side: it finds the
// pods' host-side interfaces in the node's routes and links.
package hostlinks

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// Netlink finds the pods' host-side veths: the interfaces of the node's
// /32 routes (main table) to pod addresses.
type Netlink struct{}

// HostInterfaces implements endpoint.Links.
func (Netlink) HostInterfaces() (map[netip.Addr]endpoint.Interface, error) {
	routes, err := nldump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	links, err := nldump.Retry(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	veths := map[int]string{}
	for _, l := range links {
		if l.Type() == "veth" {
			veths[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := map[netip.Addr]endpoint.Interface{}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == 0 {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		name, ok := veths[r.LinkIndex]
		if !ok || ones != 32 || bits != 32 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			out[ip] = endpoint.Interface{Index: r.LinkIndex, Name: name}
		}
	}
	return out, nil
}
