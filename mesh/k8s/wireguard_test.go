package k8s

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/membrane-mesh/membrane/encryption/wireguard"
)

func TestWireGuardNode(t *testing.T) {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: map[string]string{wireguard.AnnotationPublicKey: "KEY"}},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "bad", "fd00::1/64"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "n1"},
			{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
			{Type: corev1.NodeInternalIP, Address: "198.18.1.11"},
		}},
	}
	got := WireGuardNode(n)
	if got.Name != "n1" || got.Key != "KEY" || got.IP != netip.MustParseAddr("198.18.1.11") ||
		len(got.PodCIDRs) != 2 || got.PodCIDRs[1] != netip.MustParsePrefix("fd00::/64") {
		t.Fatalf("%+v", got)
	}
	n.Spec.PodCIDRs = nil
	n.Annotations = nil
	n.Status.Addresses = nil
	got = WireGuardNode(n)
	if got.Key != "" || got.IP.IsValid() || len(got.PodCIDRs) != 1 {
		t.Fatalf("%+v", got)
	}
}
