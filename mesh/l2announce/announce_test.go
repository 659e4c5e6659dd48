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
	got, errs := Wanted([]*corev1.Service{
		svc(corev1.ServiceTypeLoadBalancer, "10.96.0.10", "198.18.1.150", "fd00::1"),
		svc(corev1.ServiceTypeClusterIP, "10.96.0.11", "198.18.1.151"),
		svc(corev1.ServiceTypeLoadBalancer, "None", "198.18.1.152"),
		svc(corev1.ServiceTypeLoadBalancer, "10.96.0.13"),
	})
	if len(got) != 1 || len(errs) != 0 {
		t.Fatalf("wanted %v (%v), want only 198.18.1.150", got, errs)
	}
	tg := got[netip.MustParseAddr("198.18.1.150")]
	if tg.ClusterIP != netip.MustParseAddr("10.96.0.10") || len(tg.Ports) != 2 || tg.Ports[0] != 80 || tg.Ports[1] != 443 || tg.SourceRanges != nil {
		t.Errorf("target %+v, want 10.96.0.10 ports [80 443], every client", tg)
	}
	if n := LeaseName(netip.MustParseAddr("198.18.1.150")); n != "membrane-lb-198-18-1-150" {
		t.Errorf("LeaseName = %q", n)
	}
}

// SourceRanges: the field, else the legacy annotation; a range that does
// not parse admits nobody.
func TestSourceRanges(t *testing.T) {
	for _, c := range []struct {
		name       string
		field      []string
		annotation string
		want       []string // nil: every client
		err        bool
	}{
		{name: "none"},
		{name: "field", field: []string{"10.0.0.0/8", "198.18.2.1/32"}, want: []string{"10.0.0.0/8", "198.18.2.1/32"}},
		{name: "field masked", field: []string{"10.1.2.3/8"}, want: []string{"10.0.0.0/8"}},
		{name: "annotation", annotation: "10.0.0.0/8, 192.168.0.0/16", want: []string{"10.0.0.0/8", "192.168.0.0/16"}},
		{name: "field over annotation", field: []string{"10.0.0.0/8"}, annotation: "0.0.0.0/0", want: []string{"10.0.0.0/8"}},
		{name: "a typo admits nobody", annotation: "10.0.0.0/8,10.0.0/24", want: []string{}, err: true},
		{name: "IPv6 admits nobody", field: []string{"fd00::/8"}, want: []string{}, err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &corev1.Service{Spec: corev1.ServiceSpec{LoadBalancerSourceRanges: c.field}}
			if c.annotation != "" {
				s.Annotations = map[string]string{sourceRangesAnnotation: c.annotation}
			}
			got, err := SourceRanges(s)
			if (err != nil) != c.err {
				t.Errorf("error %v, want one: %v", err, c.err)
			}
			if (got == nil) != (c.want == nil) || len(got) != len(c.want) {
				t.Fatalf("ranges %v, want %v", got, c.want)
			}
			for i, w := range c.want {
				if got[i].String() != w {
					t.Errorf("ranges %v, want %v", got, c.want)
				}
			}
		})
	}
}
