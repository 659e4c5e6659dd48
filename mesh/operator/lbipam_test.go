package operator

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func TestLoadBalancersPredicate(t *testing.T) {
	svc := func(typ corev1.ServiceType) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: typ}}
	}
	lb, cip := svc(corev1.ServiceTypeLoadBalancer), svc(corev1.ServiceTypeClusterIP)
	p := loadBalancers()
	for _, c := range []struct {
		name string
		got  bool
		want bool
	}{
		{"create LoadBalancer", p.Create(event.CreateEvent{Object: lb}), true},
		{"create ClusterIP", p.Create(event.CreateEvent{Object: cip}), false},
		{"ClusterIP to LoadBalancer", p.Update(event.UpdateEvent{ObjectOld: cip, ObjectNew: lb}), true},
		{"LoadBalancer to ClusterIP", p.Update(event.UpdateEvent{ObjectOld: lb, ObjectNew: cip}), true},
		{"ClusterIP changed", p.Update(event.UpdateEvent{ObjectOld: cip, ObjectNew: cip}), false},
		{"delete LoadBalancer", p.Delete(event.DeleteEvent{Object: lb}), true},
		{"delete ClusterIP", p.Delete(event.DeleteEvent{Object: cip}), false},
	} {
		if c.got != c.want {
			t.Errorf("%s: passed %v, want %v", c.name, c.got, c.want)
		}
	}
}
