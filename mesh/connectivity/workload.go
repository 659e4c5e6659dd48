package connectivity

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The test's pods and Service: echo-a and the clients on the first node
// (host-client in the node's network namespace), echo-b on the second;
// Service echo (port 8080) in front of both echo pods (port 3000).
const (
	EchoA       = "echo-a"
	EchoB       = "echo-b"
	Client      = "client"
	OtherClient = "client-other"
	HostClient  = "host-client"
	EchoService = "echo"
)

// Workload is what the test makes in its namespace.
type Workload struct {
	Namespace string
	TwoNodes  bool
	Pods      []corev1.Pod
	Services  []corev1.Service
	// NetworkPolicy lets only Client reach the echo pods; L7Policy lets
	// Client GET /public/… of them (a MembraneNetworkPolicy).
	NetworkPolicy Policy
	L7Policy      Policy
}

// Policy is a policy object the checks apply.
type Policy struct {
	Kind, Name string
	Object     *unstructured.Unstructured
}

// echoPods are the names of the echo pods.
func (w Workload) echoPods() []string {
	if w.TwoNodes {
		return []string{EchoA, EchoB}
	}
	return []string{EchoA}
}

// labels of every object the test makes, plus extra.
func labels(extra map[string]string) map[string]string {
	out := map[string]string{"app.kubernetes.io/managed-by": ManagedBy}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// newWorkload is the workload of o on nodes.
func newWorkload(o Options, nodes []string) Workload {
	w := Workload{Namespace: o.Namespace, TwoNodes: len(nodes) > 1}
	meta := func(name string, extra map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: o.Namespace, Labels: labels(extra)}
	}
	zero := int64(0)
	echo := func(name, node string) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: meta(name, map[string]string{"app": "echo", "member": name}),
			Spec: corev1.PodSpec{
				NodeName: node, TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{
					Name: "echo", Image: o.EchoImage,
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}},
					Env: []corev1.EnvVar{
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(3000)}}, PeriodSeconds: 1},
				}},
			},
		}
	}
	client := func(name, role, node string) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: meta(name, map[string]string{"app": "client", "role": role}),
			Spec: corev1.PodSpec{
				NodeName: node, TerminationGracePeriodSeconds: &zero,
				Containers: []corev1.Container{{Name: "curl", Image: o.ClientImage, Command: []string{"sleep", "3600"}}},
			},
		}
	}
	w.Pods = []corev1.Pod{echo(EchoA, nodes[0]), client(Client, "client", nodes[0]), client(OtherClient, "other", nodes[0])}
	if o.HostClient {
		hc := client(HostClient, "host", nodes[0])
		hc.Spec.HostNetwork = true
		// The cluster DNS, as a pod's, though in the node's namespace.
		hc.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		w.Pods = append(w.Pods, hc)
	}
	if w.TwoNodes {
		w.Pods = append(w.Pods, echo(EchoB, nodes[1]))
	}
	w.Services = []corev1.Service{{
		ObjectMeta: meta(EchoService, nil),
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(3000), Protocol: corev1.ProtocolTCP}},
		},
	}}
	managed := map[string]any{"app.kubernetes.io/managed-by": ManagedBy}
	np := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.k8s.io/v1",
		"kind":       "NetworkPolicy",
		"metadata":   map[string]any{"name": "echo-from-client", "namespace": o.Namespace, "labels": managed},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"app": "echo"}},
			"policyTypes": []any{"Ingress"},
			"ingress": []any{map[string]any{
				"from":  []any{map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"role": "client"}}}},
				"ports": []any{map[string]any{"protocol": "TCP", "port": int64(3000)}},
			}},
		},
	}}
	w.NetworkPolicy = Policy{Kind: "NetworkPolicy", Name: "echo-from-client", Object: np}
	l7 := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "membrane.io/v1alpha1",
		"kind":       "MembraneNetworkPolicy",
		"metadata":   map[string]any{"name": "echo-l7", "namespace": o.Namespace, "labels": managed},
		"spec": map[string]any{
			"endpointSelector": map[string]any{"matchLabels": map[string]any{"app": "echo"}},
			"ingress": []any{map[string]any{
				"fromEndpoints": []any{map[string]any{"matchLabels": map[string]any{"role": "client"}}},
				"toPorts": []any{map[string]any{
					"ports": []any{map[string]any{"port": "3000", "protocol": "TCP"}},
					"rules": map[string]any{"http": []any{map[string]any{"method": "GET", "path": "/public/.*"}}},
				}},
			}},
		},
	}}
	w.L7Policy = Policy{Kind: "MembraneNetworkPolicy", Name: "echo-l7", Object: l7}
	return w
}
