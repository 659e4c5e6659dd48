package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/mesh/k8s"
)

// checkL4Routes: a Gateway with a UDP and a TCP listener on port 53 (DNS)
// in namespace shop. Two CoreDNS pods answer l4.test. with 192.0.2.1 and
// 192.0.2.2; a UDPRoute weighs them 1:1, a TCPRoute forwards to the first.
// Queries from the host's root namespace to the Gateway's address get both
// answers over UDP (each query is a session of its own) and the first over
// TCP; the backend sees them come from a node's ingress address. A second TCPRoute on the same listener is refused, naming the route
// served; deleting the UDPRoute stops the UDP answers. The GatewayClass
// lists TCPRoute and UDPRoute.
func checkL4Routes(t *testing.T, k *kube, s *localcluster.State) {
	dnsPod := func(name, node, answer string) string {
		return `apiVersion: v1
kind: ConfigMap
metadata: {name: ` + name + `, namespace: shop}
data:
  Corefile: |
    .:1053 {
        template IN A l4.test {
            answer "{{ .Name }} 5 IN A ` + answer + `"
        }
        template IN A who.test {
            answer "{{ .Name }} 5 IN A {{ .Remote }}"
        }
    }
---
apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: shop, labels: {app: ` + name + `}}
spec:
  nodeName: ` + node + `
  terminationGracePeriodSeconds: 0
  containers:
  - name: coredns
    image: registry.k8s.io/coredns/coredns:v1.15.0
    args: ["-conf", "/etc/coredns/Corefile"]
    ports: [{name: dns, containerPort: 1053, protocol: UDP}, {name: dns-tcp, containerPort: 1053, protocol: TCP}]
    volumeMounts: [{name: conf, mountPath: /etc/coredns}]
  volumes: [{name: conf, configMap: {name: ` + name + `}}]
---
apiVersion: v1
kind: Service
metadata: {name: ` + name + `, namespace: shop}
spec:
  selector: {app: ` + name + `}
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: dns}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: dns-tcp}
---
`
	}
	k.must(dnsPod("dns-a", s.Nodes[0].Name, "192.0.2.1")+dnsPod("dns-b", s.Nodes[1].Name, "192.0.2.2")+`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: dns, protocol: UDP, port: 53}
  - {name: dns-tcp, protocol: TCP, port: 53}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: dns, namespace: shop}
spec:
  parentRefs: [{name: l4, sectionName: dns}]
  rules:
  - backendRefs: [{name: dns-a, port: 53, weight: 1}, {name: dns-b, port: 53, weight: 1}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: dns-tcp, namespace: shop}
spec:
  parentRefs: [{name: l4, sectionName: dns-tcp}]
  rules:
  - backendRefs: [{name: dns-a, port: 53}]
`, "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "dns-a", "dns-b", "--timeout=90s")
	// Younger than dns-tcp: the listener is taken.
	k.must(`apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: second, namespace: shop}
spec:
  parentRefs: [{name: l4, sectionName: dns-tcp}]
  rules:
  - backendRefs: [{name: dns-b, port: 53}]
`, "apply", "-f", "-")
	gw := waitGateway(t, k, "shop", "l4")
	addr := net.JoinHostPort(gw.Status.Addresses[0].Value, "53")

	// lookup asks addr for l4.test.'s A record over network.
	lookupName := func(network, name string) (string, error) {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		ips, err := r.LookupIP(ctx, "ip4", name)
		if err != nil {
			return "", err
		}
		if len(ips) != 1 {
			return "", fmt.Errorf("answers %v", ips)
		}
		return ips[0].String(), nil
	}
	lookup := func(network string) (string, error) { return lookupName(network, "l4.test.") }
	eventually(t, gatewayTimeout, "both CoreDNS pods answer through the UDPRoute", func() error {
		seen := map[string]int{}
		for range 20 {
			ip, err := lookup("udp")
			if err != nil {
				return err
			}
			seen[ip]++
		}
		if len(seen) != 2 || seen["192.0.2.1"] == 0 || seen["192.0.2.2"] == 0 {
			return fmt.Errorf("answers %v, want 192.0.2.1 and 192.0.2.2", seen)
		}
		t.Logf("20 queries over UDP: %v", seen)
		return nil
	})
	eventually(t, gatewayTimeout, "dns-a answers through the TCPRoute", func() error {
		ip, err := lookup("tcp")
		if err == nil && ip != "192.0.2.1" {
			err = fmt.Errorf("answer %s, want 192.0.2.1 (dns-a)", ip)
		}
		return err
	})
	// The backends see the gateway's traffic come from a node's ingress
	// address (the reserved ingress identity), over UDP as over TCP.
	var nodes corev1.NodeList
	if err := getJSON(k, &nodes, "get", "nodes"); err != nil {
		t.Fatal(err)
	}
	var ingress []string
	for _, n := range nodes.Items {
		ingress = append(ingress, k8s.NodeIngressIP(&n).String())
	}
	for _, network := range []string{"udp", "tcp"} {
		ip, err := lookupName(network, "who.test.")
		if err != nil || !slices.Contains(ingress, ip) {
			t.Errorf("over %s the backend saw the query come from %q (%v); want a node's ingress address %v", network, ip, err, ingress)
		}
		t.Logf("over %s the backend saw the query come from %s (nodes' ingress addresses %v)", network, ip, ingress)
	}
	eventually(t, gatewayTimeout, "TCPRoute second refused", func() error {
		var rt gwv1alpha2.TCPRoute
		if err := getJSON(k, &rt, "-n", "shop", "get", "tcproute", "second"); err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		c := meta.FindStatusCondition(rt.Status.Parents[0].Conditions, "Accepted")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NotAllowedByListeners" || !strings.Contains(c.Message, "shop/dns-tcp") {
			return fmt.Errorf("Accepted %+v, want False NotAllowedByListeners naming shop/dns-tcp", c)
		}
		return nil
	})
	var gc gwv1.GatewayClass
	if err := getJSON(k, &gc, "get", "gatewayclass", "membrane"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []gwv1.FeatureName{"TCPRoute", "UDPRoute"} {
		if !slices.ContainsFunc(gc.Status.SupportedFeatures, func(sf gwv1.SupportedFeature) bool { return sf.Name == f }) {
			t.Errorf("GatewayClass membrane does not list %s: %v", f, gc.Status.SupportedFeatures)
		}
	}

	k.must("", "-n", "shop", "delete", "udproute", "dns")
	eventually(t, gatewayTimeout, "no UDP answer without the UDPRoute", func() error {
		if ip, err := lookup("udp"); err == nil {
			return fmt.Errorf("answer %s", ip)
		}
		return nil
	})
	if ip, err := lookup("tcp"); err != nil || ip != "192.0.2.1" {
		t.Errorf("over TCP after the UDPRoute's deletion: %q, %v; want 192.0.2.1", ip, err)
	}
}
