package agent

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
)

func TestUplinkIndexes(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.18.1.2"},
		{Type: corev1.NodeInternalIP, Address: "fd00::2"},
		{Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
		{Type: corev1.NodeHostName, Address: "node-1"},
	}}}
	ips := nodeIPv4s(n)
	if want := []netip.Addr{netip.MustParseAddr("198.18.1.2")}; !slices.Equal(ips, want) {
		t.Fatalf("nodeIPv4s %v, want %v", ips, want)
	}
	addr := func(idx int, ip string) netlink.Addr {
		return netlink.Addr{LinkIndex: idx, IPNet: &net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(24, 32)}}
	}
	got := uplinkIndexes(ips, []netlink.Addr{
		addr(1, "127.0.0.1"),
		addr(7, "198.18.1.2"),
		addr(3, "198.18.1.2"), // the same address twice: both interfaces
		addr(7, "198.18.1.2"),
		addr(9, "203.0.113.5"), // ExternalIP: not an uplink
		{LinkIndex: 4},
	})
	if want := []int{3, 7}; !slices.Equal(got, want) {
		t.Errorf("uplinkIndexes %v, want %v", got, want)
	}
	if got := uplinkIndexes(nil, []netlink.Addr{addr(7, "198.18.1.2")}); len(got) != 0 {
		t.Errorf("no node address: %v, want none", got)
	}
}
