package veth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/membrane-mesh/membrane/mesh/nldump"
)

// Verify checks that the pair described by cfg is in place and configured as
// Setup left it. The error lists every difference it found.
func Verify(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	host, pod, err := handles(cfg.PodNS)
	if err != nil {
		return err
	}
	defer host.Close()
	defer pod.Close()

	hostLink, err := host.LinkByName(cfg.HostIfName)
	if err != nil {
		return fmt.Errorf("host veth %s: not found: %w", cfg.HostIfName, err)
	}
	podLink, err := pod.LinkByName(cfg.PodIfName)
	if err != nil {
		return fmt.Errorf("pod interface %s in netns %s: not found: %w", cfg.PodIfName, cfg.PodNS.Path(), err)
	}
	return errors.Join(
		verifyHost(host, hostLink, podLink, cfg.IP),
		verifyPod(pod, podLink, hostLink.Attrs().HardwareAddr, cfg),
	)
}

func verifyHost(h *netlink.Handle, link, peer netlink.Link, ip netip.Addr) error {
	name := link.Attrs().Name
	var errs []error
	if _, ok := link.(*netlink.Veth); !ok {
		errs = append(errs, fmt.Errorf("host veth %s: is a %s, not a veth", name, link.Type()))
	}
	if link.Attrs().ParentIndex != peer.Attrs().Index {
		errs = append(errs, fmt.Errorf("host veth %s: its peer is ifindex %d, not the pod interface (ifindex %d)",
			name, link.Attrs().ParentIndex, peer.Attrs().Index))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("host veth %s: is down", name))
	}
	routes, err := nldump.Retry(func() ([]netlink.Route, error) { return h.RouteList(link, netlink.FAMILY_V4) })
	if err != nil {
		errs = append(errs, fmt.Errorf("host veth %s: list routes: %w", name, err))
	} else if !hasRoute(routes, hostNet(ip), nil, netlink.SCOPE_LINK) {
		errs = append(errs, fmt.Errorf("host: missing route %s/32 dev %s scope link", ip, name))
	}
	if on, err := forwardingEnabled(name); err != nil {
		errs = append(errs, fmt.Errorf("host veth %s: %w", name, err))
	} else if !on {
		errs = append(errs, fmt.Errorf("host: IPv4 forwarding is off (ip_forward or %s)", name))
	}
	return errors.Join(errs...)
}

func verifyPod(h *netlink.Handle, link netlink.Link, hostMAC net.HardwareAddr, cfg Config) error {
	name := link.Attrs().Name
	var errs []error
	if _, ok := link.(*netlink.Veth); !ok {
		errs = append(errs, fmt.Errorf("pod interface %s: is a %s, not a veth", name, link.Type()))
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("pod interface %s: is down", name))
	}
	if link.Attrs().MTU != cfg.MTU {
		errs = append(errs, fmt.Errorf("pod interface %s: MTU %d, want %d", name, link.Attrs().MTU, cfg.MTU))
	}
	addrs, err := nldump.Retry(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_V4) })
	if err != nil {
		errs = append(errs, fmt.Errorf("pod interface %s: list addresses: %w", name, err))
	} else if !hasAddr(addrs, hostNet(cfg.IP)) {
		errs = append(errs, fmt.Errorf("pod interface %s: missing address %s/32", name, cfg.IP))
	}
	gw := net.IP(Gateway().AsSlice())
	routes, err := nldump.Retry(func() ([]netlink.Route, error) { return h.RouteList(link, netlink.FAMILY_V4) })
	if err != nil {
		errs = append(errs, fmt.Errorf("pod interface %s: list routes: %w", name, err))
	} else {
		if !hasRoute(routes, hostNet(Gateway()), nil, netlink.SCOPE_LINK) {
			errs = append(errs, fmt.Errorf("pod: missing route %s dev %s scope link", gw, name))
		}
		if !hasRoute(routes, defaultNet(), gw, netlink.SCOPE_UNIVERSE) {
			errs = append(errs, fmt.Errorf("pod: missing default route via %s dev %s", gw, name))
		}
	}
	neighs, err := nldump.Retry(func() ([]netlink.Neigh, error) {
		return h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("pod interface %s: list neighbors: %w", name, err))
	} else if !hasNeigh(neighs, gw, hostMAC) {
		errs = append(errs, fmt.Errorf("pod: missing permanent neighbor %s lladdr %s dev %s", gw, hostMAC, name))
	}
	return errors.Join(errs...)
}

func hasAddr(addrs []netlink.Addr, want *net.IPNet) bool {
	for _, a := range addrs {
		if a.IPNet != nil && a.IP.Equal(want.IP) && bytes.Equal(a.Mask, want.Mask) {
			return true
		}
	}
	return false
}

func hasRoute(routes []netlink.Route, dst *net.IPNet, gw net.IP, scope netlink.Scope) bool {
	for _, r := range routes {
		rdst := r.Dst
		if rdst == nil {
			rdst = defaultNet()
		}
		if rdst.IP.Equal(dst.IP) && bytes.Equal(rdst.Mask, dst.Mask) && r.Gw.Equal(gw) && r.Scope == scope {
			return true
		}
	}
	return false
}

func hasNeigh(neighs []netlink.Neigh, ip net.IP, mac net.HardwareAddr) bool {
	for _, n := range neighs {
		if n.IP.Equal(ip) && bytes.Equal(n.HardwareAddr, mac) && n.State&netlink.NUD_PERMANENT != 0 {
			return true
		}
	}
	return false
}
