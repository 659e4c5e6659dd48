// Package veth wires a pod's network namespace to the node with a veth pair,
// routed point-to-point (no bridge, no proxy ARP):
//
//	pod netns:  eth0 <ip>/32, 169.254.1.1 dev eth0 scope link,
//	            default via 169.254.1.1 dev eth0,
//	            neighbor 169.254.1.1 lladdr <host veth MAC> PERMANENT, lo up
//	node netns: mbrXXXXXXXXXXX up, <ip>/32 dev mbrXXXXXXXXXXX scope link,
//	            forwarding on
//
// Host-side operations act on the network namespace of the calling thread,
// which for the plugin binary is the node's. That namespace needs lo up, as
// every real node has: without any local route the kernel takes every address
// for a broadcast address and sends pod traffic to ff:ff:ff:ff:ff:ff.
package veth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostPrefix starts every host-side interface name. legacyHostPrefix is the
// one earlier versions used; interfaces named with it are still removed
// (see Remove's callers), so pods created before the change detach cleanly.
const (
	hostPrefix       = "mbr"
	legacyHostPrefix = "lxc"
)

// Gateway returns the link-local next hop every pod routes through. It is
// never configured as an address: the pod resolves it, through a permanent
// neighbor entry, to the MAC address of its host-side veth.
func Gateway() netip.Addr { return netip.AddrFrom4([4]byte{169, 254, 1, 1}) }

// HostIfName returns the host-side interface name for a container's interface:
// "mbr" and the first 11 hex digits of sha256(containerID+ifName), 14 bytes,
// within the kernel's 15.
func HostIfName(containerID, ifName string) string {
	return hostPrefix + ifHash(containerID, ifName)
}

// HostIfNames returns the names the host-side interface of a container's
// interface may have: HostIfName, then the name earlier versions gave it
// ("lxc" and the same digits).
func HostIfNames(containerID, ifName string) []string {
	h := ifHash(containerID, ifName)
	return []string{hostPrefix + h, legacyHostPrefix + h}
}

func ifHash(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + ifName))
	return hex.EncodeToString(sum[:])[:11]
}

// Config describes one pod interface.
type Config struct {
	HostIfName string     // node side, see HostIfName
	PodIfName  string     // pod side, CNI_IFNAME
	PodNS      ns.NetNS   // the pod's network namespace
	IP         netip.Addr // the pod's IPv4 address
	MTU        int        // of both ends
}

func (c Config) validate() error {
	switch {
	case c.HostIfName == "" || c.PodIfName == "":
		return errors.New("veth: interface names are required")
	case c.PodNS == nil:
		return errors.New("veth: pod netns is required")
	case !c.IP.Is4():
		return fmt.Errorf("veth: %s is not an IPv4 address", c.IP)
	case c.MTU <= 0:
		return fmt.Errorf("veth: invalid MTU %d", c.MTU)
	}
	return nil
}

// Link is one end of the pair, as created.
type Link struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
}

// Pair is the created veth pair.
type Pair struct {
	Host Link
	Pod  Link
}

// handles opens netlink handles in the calling thread's netns and in the pod's.
func handles(podNS ns.NetNS) (host, pod *netlink.Handle, err error) {
	host, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink in host netns: %w", err)
	}
	pod, err = netlink.NewHandleAt(netns.NsHandle(int(podNS.Fd())), unix.NETLINK_ROUTE)
	if err != nil {
		host.Close()
		return nil, nil, fmt.Errorf("open netlink in pod netns %s: %w", podNS.Path(), err)
	}
	return host, pod, nil
}

// Setup creates and configures the pair. On error it removes whatever it
// created.
func Setup(ctx context.Context, cfg Config) (Pair, error) {
	if err := cfg.validate(); err != nil {
		return Pair{}, err
	}
	if err := ctx.Err(); err != nil {
		return Pair{}, err
	}
	host, pod, err := handles(cfg.PodNS)
	if err != nil {
		return Pair{}, err
	}
	defer host.Close()
	defer pod.Close()

	if _, err := pod.LinkByName(cfg.PodIfName); err == nil {
		return Pair{}, fmt.Errorf("interface %q already exists in netns %s", cfg.PodIfName, cfg.PodNS.Path())
	}
	hostMAC, err := randomMAC()
	if err != nil {
		return Pair{}, err
	}
	podMAC, err := randomMAC()
	if err != nil {
		return Pair{}, err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = cfg.HostIfName
	attrs.MTU = cfg.MTU
	// Set both MACs explicitly: udev leaves addresses it did not see the kernel
	// pick at random alone, so the pod's neighbor entry stays right.
	attrs.HardwareAddr = hostMAC
	v := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         cfg.PodIfName,
		PeerMTU:          uint32(cfg.MTU),
		PeerHardwareAddr: podMAC,
		PeerNamespace:    netlink.NsFd(int(cfg.PodNS.Fd())),
	}
	if err := host.LinkAdd(v); err != nil {
		return Pair{}, fmt.Errorf("create veth %s <-> %s: %w", cfg.HostIfName, cfg.PodIfName, err)
	}
	pair, err := configure(host, pod, cfg)
	if err != nil {
		if derr := host.LinkDel(v); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove veth %s after failure: %w", cfg.HostIfName, derr))
		}
		return Pair{}, err
	}
	return pair, nil
}

func configure(host, pod *netlink.Handle, cfg Config) (Pair, error) {
	hostLink, err := host.LinkByName(cfg.HostIfName)
	if err != nil {
		return Pair{}, fmt.Errorf("find host veth %s: %w", cfg.HostIfName, err)
	}
	podLink, err := pod.LinkByName(cfg.PodIfName)
	if err != nil {
		return Pair{}, fmt.Errorf("find pod veth %s: %w", cfg.PodIfName, err)
	}
	if err := configurePod(pod, podLink, hostLink.Attrs().HardwareAddr, cfg.IP); err != nil {
		return Pair{}, fmt.Errorf("configure pod side %s: %w", cfg.PodIfName, err)
	}
	if err := configureHost(host, hostLink, cfg.IP); err != nil {
		return Pair{}, fmt.Errorf("configure host side %s: %w", cfg.HostIfName, err)
	}
	return Pair{Host: linkOf(hostLink), Pod: linkOf(podLink)}, nil
}

func configurePod(h *netlink.Handle, link netlink.Link, hostMAC net.HardwareAddr, ip netip.Addr) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	if err := h.AddrAdd(link, &netlink.Addr{IPNet: hostNet(ip)}); err != nil {
		return fmt.Errorf("add address %s/32: %w", ip, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	gw := Gateway()
	idx := link.Attrs().Index
	gwRoute := &netlink.Route{LinkIndex: idx, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(gwRoute); err != nil {
		return fmt.Errorf("add route %s dev %s scope link: %w", gw, link.Attrs().Name, err)
	}
	def := &netlink.Route{LinkIndex: idx, Dst: defaultNet(), Gw: net.IP(gw.AsSlice())}
	if err := h.RouteAdd(def); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	neigh := &netlink.Neigh{
		LinkIndex:    idx,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           net.IP(gw.AsSlice()),
		HardwareAddr: hostMAC,
	}
	if err := h.NeighSet(neigh); err != nil {
		return fmt.Errorf("add neighbor %s lladdr %s: %w", gw, hostMAC, err)
	}
	return nil
}

func configureHost(h *netlink.Handle, link netlink.Link, ip netip.Addr) error {
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	if err := enableForwarding(link.Attrs().Name); err != nil {
		return err
	}
	if err := acceptLocal(link.Attrs().Name); err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostNet(ip), Scope: netlink.SCOPE_LINK}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("add route %s/32 dev %s: %w", ip, link.Attrs().Name, err)
	}
	return nil
}

// Remove deletes the host-side interface, and with it the pod side. It
// reports whether there was anything to delete; a missing interface is not an
// error.
func Remove(ctx context.Context, hostIfName string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return false, fmt.Errorf("open netlink in host netns: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(hostIfName)
	if err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("find host veth %s: %w", hostIfName, err)
	}
	if err := h.LinkDel(link); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return false, nil
		}
		return false, fmt.Errorf("delete host veth %s: %w", hostIfName, err)
	}
	return true, nil
}

// RemoveAll removes the host-side interface of a container's interface under
// any name in HostIfNames. It reports whether there was anything to delete.
func RemoveAll(ctx context.Context, containerID, ifName string) (bool, error) {
	removed := false
	for _, name := range HostIfNames(containerID, ifName) {
		ok, err := Remove(ctx, name)
		if err != nil {
			return removed, err
		}
		removed = removed || ok
	}
	return removed, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func linkOf(l netlink.Link) Link {
	a := l.Attrs()
	return Link{Name: a.Name, Index: a.Index, MAC: a.HardwareAddr}
}

func hostNet(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(32, 32)}
}

func defaultNet() *net.IPNet {
	return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("random MAC: %w", err)
	}
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac, nil
}
