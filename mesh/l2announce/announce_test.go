package l2announce

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestWanted(t *testing.T) {
	svc := func(typ corev1.ServiceType, cip string, ingress ...string) *corev1.Service {
		s := &corev1.Service{Spec: corev1.ServiceSpec{Type: typ, ClusterIP: cip, Ports: []corev1.ServicePort{
			{Port: 443, Protocol: corev1.ProtocolTCP}, {Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 80},
		}}}
		for _, a := range ingress {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: a})
		}
		return s
	}
	got := Wanted([]*corev1.Service{
		svc(corev1.ServiceTypeLoadBalancer, "10.96.0.10", "198.18.1.150", "fd00::1"),
		svc(corev1.ServiceTypeClusterIP, "10.96.0.11", "198.18.1.151"),
		svc(corev1.ServiceTypeLoadBalancer, "None", "198.18.1.152"),
		svc(corev1.ServiceTypeLoadBalancer, "10.96.0.13"),
	})
	if len(got) != 1 {
		t.Fatalf("wanted %v, want only 198.18.1.150", got)
	}
	tg := got[netip.MustParseAddr("198.18.1.150")]
	if tg.ClusterIP != netip.MustParseAddr("10.96.0.10") || len(tg.Ports) != 2 || tg.Ports[0] != 80 || tg.Ports[1] != 443 {
		t.Errorf("target %+v, want 10.96.0.10 ports [80 443]", tg)
	}
	if n := LeaseName(netip.MustParseAddr("198.18.1.150")); n != "membrane-lb-198-18-1-150" {
		t.Errorf("LeaseName = %q", n)
	}
}
