package noderunner

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type fakeRefs struct {
	cms  map[string]*corev1.ConfigMap
	svcs map[string][]*corev1.Service
}

func (f fakeRefs) configMap(_ context.Context, ns, name string) (*corev1.ConfigMap, error) {
	if cm, ok := f.cms[ns+"/"+name]; ok {
		return cm, nil
	}
	return nil, errNotFound(name)
}

func (f fakeRefs) secret(_ context.Context, ns, name string) (*corev1.Secret, error) {
	return nil, errNotFound(name)
}

func (f fakeRefs) services(ns string) []*corev1.Service { return f.svcs[ns] }

type errNotFound string

func (e errNotFound) Error() string { return string(e) + " not found" }

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"plain":      "plain",
		"$(A)-$(B)":  "1-two",
		"$$(A)":      "$(A)",
		"$(MISSING)": "$(MISSING)",
		"cost $5":    "cost $5",
		"open $(A":   "open $(A",
		"$(A)$(A)$$": "11$",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	env := map[string]string{"URL": "http://x"}
	ep, cmd := []string{"/entry"}, []string{"default"}
	for _, tc := range []struct {
		name          string
		command, args []string
		want          []string
	}{
		{"image defaults", nil, nil, []string{"/entry", "default"}},
		{"args replace cmd", nil, []string{"-x", "$(URL)"}, []string{"/entry", "-x", "http://x"}},
		{"command replaces both", []string{"/bin/sh", "-c"}, []string{"echo $(URL)"}, []string{"/bin/sh", "-c", "echo http://x"}},
	} {
		c := &corev1.Container{Command: tc.command, Args: tc.args}
		if got := commandLine(c, ep, cmd, env); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}}}
	refs := fakeRefs{
		cms: map[string]*corev1.ConfigMap{"shop/cfg": {Data: map[string]string{"MODE": "fast"}}},
		svcs: map[string][]*corev1.Service{
			"shop":    {{ObjectMeta: metav1.ObjectMeta{Name: "backend-api"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", Ports: []corev1.ServicePort{{Name: "http", Port: 8080, Protocol: corev1.ProtocolTCP}}}}},
			"default": {{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.1", Ports: []corev1.ServicePort{{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP}}}}},
		},
	}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}, Prefix: "CFG_"}},
		Env: []corev1.EnvVar{
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "GREETING", Value: "$(POD) in $(CFG_MODE) mode"},
		},
	}
	env, err := containerEnv(t.Context(), pod, c, []string{"PATH=/bin"}, "10.244.1.5", "198.18.1.11", refs)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(env, "\n")
	for _, want := range []string{
		"PATH=/bin", "POD=web-1", "IP=10.244.1.5", "APP=web", "CFG_MODE=fast", "GREETING=web-1 in fast mode",
		"BACKEND_API_SERVICE_HOST=10.96.0.20", "BACKEND_API_SERVICE_PORT=8080", "BACKEND_API_SERVICE_PORT_HTTP=8080",
		"BACKEND_API_PORT=tcp://10.96.0.20:8080", "KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443",
	} {
		if !strings.Contains(got, want+"\n") && !strings.HasSuffix(got, want) {
			t.Errorf("env lacks %q:\n%s", want, got)
		}
	}
	c.EnvFrom[0].ConfigMapRef.Name = "missing"
	if _, err := containerEnv(t.Context(), pod, c, nil, "", "", refs); err == nil || !strings.Contains(err.Error(), `configMap "missing"`) {
		t.Fatalf("missing configMap: got %v", err)
	}
}

func TestResolvConf(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}}
	want := "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	if got := resolvConf(pod, "10.96.0.10", "cluster.local", "node"); got != want {
		t.Errorf("ClusterFirst:\n%s\nwant:\n%s", got, want)
	}
	pod.Spec.HostNetwork = true
	if got := resolvConf(pod, "10.96.0.10", "cluster.local", "node"); got != "node" {
		t.Errorf("hostNetwork with ClusterFirst uses the node's: got %q", got)
	}
	pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	if got := resolvConf(pod, "10.96.0.10", "cluster.local", "node"); got != want {
		t.Errorf("ClusterFirstWithHostNet: got %q", got)
	}
}

func TestDesiredRoutes(t *testing.T) {
	node := func(name, cidr, ip string) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.NodeSpec{PodCIDR: cidr},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
		}
	}
	got := desiredRoutes("n1", []*corev1.Node{
		node("n1", "10.244.0.0/24", "198.18.1.11"),
		node("n2", "10.244.1.0/24", "198.18.1.12"),
		node("n3", "", "198.18.1.13"),
		node("n4", "bogus", "198.18.1.14"),
	})
	if len(got) != 1 || got[0].cidr.String() != "10.244.1.0/24" || got[0].via.String() != "198.18.1.12" {
		t.Fatalf("routes = %+v", got)
	}
}
