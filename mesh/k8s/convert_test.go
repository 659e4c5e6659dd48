package k8s

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/membrane-mesh/membrane/mesh/model"
)

func TestService(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeNodePort,
			ClusterIP:             "10.96.0.5",
			ClusterIPs:            []string{"10.96.0.5"},
			ExternalIPs:           []string{"192.0.2.10", "not-an-ip"},
			SessionAffinity:       corev1.ServiceAffinityClientIP,
			InternalTrafficPolicy: &local,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			},
		},
	}
	got, err := Service(s)
	if err == nil || !strings.Contains(err.Error(), `spec.externalIPs: "not-an-ip"`) {
		t.Fatalf("want an error naming spec.externalIPs, got %v", err)
	}
	want := model.Service{
		ID:                     model.ServiceID{Namespace: "shop", Name: "cart"},
		Type:                   model.NodePort,
		ClusterIPs:             []netip.Addr{netip.MustParseAddr("10.96.0.5")},
		ExternalIPs:            []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		Ports:                  []model.ServicePort{{Name: "http", Port: 80, NodePort: 30080, Protocol: model.TCP}, {Name: "dns", Port: 53, Protocol: model.UDP}},
		AffinityTimeoutSeconds: 10800,
		InternalLocal:          true,
		ExternalLocal:          true,
	}
	if got.ID != want.ID || got.Type != want.Type || got.AffinityTimeoutSeconds != want.AffinityTimeoutSeconds ||
		!got.InternalLocal || !got.ExternalLocal || len(got.Ports) != 2 || got.Ports[1] != want.Ports[1] ||
		len(got.ExternalIPs) != 1 || got.ExternalIPs[0] != want.ExternalIPs[0] || got.ClusterIPs[0] != want.ClusterIPs[0] {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}

	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "h"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}
	if got, err := Service(headless); err != nil || len(got.ClusterIPs) != 0 || got.Type != model.ClusterIP {
		t.Fatalf("headless: %+v, %v", got, err)
	}
}

func TestEndpointSlice(t *testing.T) {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "cart-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To("n1")},
			{Addresses: []string{"10.244.1.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
			{Addresses: []string{"bogus"}},
		},
	}
	got, ok, err := EndpointSlice(s)
	if !ok || err == nil || !strings.Contains(err.Error(), `endpoints[2]: "bogus"`) {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if got.Service != (model.ServiceID{Namespace: "shop", Name: "cart"}) || len(got.Ports) != 1 || got.Ports[0] != (model.EndpointPort{Name: "http", Port: 8080, Protocol: model.TCP}) {
		t.Fatalf("got %+v", got)
	}
	if e := got.Endpoints[0]; !e.Ready || !e.Serving || e.Terminating || e.NodeName != "n1" {
		t.Fatalf("endpoint 0: %+v (unset conditions mean ready and serving)", e)
	}
	if e := got.Endpoints[1]; e.Ready || !e.Serving || !e.Terminating {
		t.Fatalf("endpoint 1: %+v", e)
	}
	orphan := s.DeepCopy()
	orphan.Labels = nil
	if _, ok, _ := EndpointSlice(orphan); ok {
		t.Fatal("a slice without a service label was converted")
	}
}

func TestNodeIngressIP(t *testing.T) {
	for _, tc := range []struct {
		cidrs []string
		want  string
	}{
		{[]string{"10.244.3.0/24"}, "10.244.3.1"},
		{[]string{"fd00::/64", "10.244.3.0/24"}, "10.244.3.1"},
		{[]string{"10.244.3.0/31"}, ""},
		{nil, ""},
	} {
		n := &corev1.Node{}
		n.Spec.PodCIDRs = tc.cidrs
		got := NodeIngressIP(n)
		if (tc.want == "" && got.IsValid()) || (tc.want != "" && got.String() != tc.want) {
			t.Errorf("PodCIDRs %v: ingress address %v, want %q", tc.cidrs, got, tc.want)
		}
	}
}
