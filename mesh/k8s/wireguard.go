package k8s

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

// WireGuardNode converts a Node for WireGuard peering: its InternalIP (the
// endpoint), its PodCIDRs (the allowed IPs) and its published public key.
// Unparsable addresses are left out; the key is passed on raw, for the
// peer derivation to judge and report.
func WireGuardNode(n *corev1.Node) wireguard.Node {
	out := wireguard.Node{Name: n.Name, Key: n.Annotations[wireguard.AnnotationPublicKey]}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
			out.IP = ip
			break
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p.Masked())
		}
	}
	return out
}
