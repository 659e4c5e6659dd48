package localcluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/membrane-mesh/membrane/e2e/netns"
)

// createBridge makes the underlay bridge in the root namespace with the host's
// address on it. The bridge has no physical port: nothing on it leaves the
// machine.
func createBridge(l Layout) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.Bridge()}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", l.Bridge(), err)
	}
	if err := netlink.AddrAdd(br, addr(l.HostIP(), l.Subnet().Bits())); err != nil {
		return fmt.Errorf("address bridge %s: %w", l.Bridge(), err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up: %w", l.Bridge(), err)
	}
	return nil
}

// attachNamespace creates the namespace at nsPath and joins it to the bridge
// through a veth whose namespace side is eth0 with ip; both ends get mtu
// (0: the kernel's default).
func attachNamespace(l Layout, nsPath, hostLink string, ip netip.Addr, mtu int) error {
	if err := netns.Create(nsPath); err != nil {
		return err
	}
	br, err := netlink.LinkByName(l.Bridge())
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", l.Bridge(), err)
	}
	peer := hostLink + "p"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostLink, MasterIndex: br.Attrs().Index, MTU: mtu}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", hostLink, err)
	}
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find veth peer %s: %w", peer, err)
	}
	if err := netlink.LinkSetNsFd(peerLink, int(ns)); err != nil {
		return fmt.Errorf("move %s into %s: %w", peer, nsPath, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", hostLink, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	inner, err := h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", peer, nsPath, err)
	}
	if mtu != 0 {
		if err := h.LinkSetMTU(inner, mtu); err != nil {
			return fmt.Errorf("set %s MTU %d in %s: %w", peer, mtu, nsPath, err)
		}
	}
	if err := h.LinkSetName(inner, l.UnderlayIf()); err != nil {
		return fmt.Errorf("rename %s to %s: %w", peer, l.UnderlayIf(), err)
	}
	if err := h.AddrAdd(inner, addr(ip, l.Subnet().Bits())); err != nil {
		return fmt.Errorf("address %s in %s: %w", l.UnderlayIf(), nsPath, err)
	}
	if err := h.LinkSetUp(inner); err != nil {
		return fmt.Errorf("set %s up in %s: %w", l.UnderlayIf(), nsPath, err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", nsPath, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", nsPath, err)
	}
	return nil
}

// enableForwarding turns a namespace into a router for its pods.
func enableForwarding(nsPath string) error {
	return netns.Do(nsPath, func() error {
		for _, s := range []struct{ key, val string }{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv4/conf/all/rp_filter", "0"},
			{"net/ipv4/conf/default/rp_filter", "0"},
		} {
			if err := os.WriteFile(filepath.Join("/proc/sys", s.key), []byte(s.val), 0); err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", s.key, nsPath, err)
			}
		}
		return nil
	})
}

// deleteLink removes a root-namespace link; a missing one is fine.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

func addr(ip netip.Addr, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(bits, 32)}}
}
