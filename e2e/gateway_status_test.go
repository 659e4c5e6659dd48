package e2e

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// TestGatewayStatusEnvoyRejects: a TLS Secret whose certificate and key do
// not match passes the translation (both are PEM) but the node Envoys
// reject the HTTPS listener made from it. The Gateway's Programmed
// condition and the listener's become False (Invalid) with Envoy's error
// and the nodes; the route attached to that listener gets
// membrane.io/Programmed=False naming the listener; the HTTPS listener
// keeps serving the last accepted certificate; the other listener of the
// same Gateway and another Gateway still take route changes. Fixing the
// Secret brings Programmed=True back, and the new certificate is served.
// The seconds from each write to the status are logged.
func TestGatewayStatusEnvoyRejects(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-gwst-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.244.0.0/16", ServiceCIDR: "10.100.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true", "ingressController.enabled=true"},
	})
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}
	const host = "a.example.com"
	cert, key := selfSigned(t, host)
	_, otherKey := selfSigned(t, host)
	secret := func(cert, key []byte) string { return tlsSecret("nack", "a-cert", cert, key) }
	// A path starting with "~" is a RegularExpression match.
	route := func(name, gateway, section string, paths ...string) string {
		parent := "{name: " + gateway + "}"
		if section != "" {
			parent = "{name: " + gateway + ", sectionName: " + section + "}"
		}
		var rules strings.Builder
		for _, p := range paths {
			typ := "PathPrefix"
			if re, ok := strings.CutPrefix(p, "~"); ok {
				typ, p = "RegularExpression", "'"+re+"'"
			}
			fmt.Fprintf(&rules, "  - matches: [{path: {type: %s, value: %s}}]\n    backendRefs: [{name: echo, port: 8080}]\n", typ, p)
		}
		return fmt.Sprintf("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: %s, namespace: nack}\nspec:\n  parentRefs: [%s]\n  rules:\n%s",
			name, parent, rules.String())
	}
	k.must(`apiVersion: v1
kind: Namespace
metadata: {name: nack}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: nack}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: nack, labels: {app: echo}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
---
`+secret(cert, key)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: front, namespace: nack}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: `+host+`
    tls: {certificateRefs: [{name: a-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: nack}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: http, protocol: HTTP, port: 80}
`+route("front-http", "front", "http", "/v1")+route("front-https", "front", "https", "/secure")+route("other", "other", "", "/o1"),
		"apply", "-f", "-")
	k.must("", "-n", "nack", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	gateway := func(name string) gwv1.Gateway {
		t.Helper()
		var gw gwv1.Gateway
		if err := getJSON(k, &gw, "-n", "nack", "get", "gateway", name); err != nil {
			t.Fatalf("get Gateway %s: %v", name, err)
		}
		return gw
	}
	programmed := func(name string) (gwv1.Gateway, *metav1.Condition) {
		gw := gateway(name)
		return gw, meta.FindStatusCondition(gw.Status.Conditions, "Programmed")
	}
	addrs := map[string]string{}
	for _, name := range []string{"front", "other"} {
		eventually(t, gatewayTimeout, "Gateway "+name+" Programmed with an address", func() error {
			gw, c := programmed(name)
			if c == nil || c.Status != metav1.ConditionTrue || len(gw.Status.Addresses) == 0 {
				return fmt.Errorf("status %+v", gw.Status)
			}
			addrs[name] = gw.Status.Addresses[0].Value
			return nil
		})
	}
	roots := func(cert []byte) *x509.CertPool {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(cert)
		return pool
	}
	get := func(url, host string, roots *x509.CertPool) (echoResponse, int, error) {
		r, err := hostGet(url, getOptions{host: host, roots: roots})
		return r.Echo, r.Code, err
	}
	serves := func(what, url, host string, roots *x509.CertPool) {
		t.Helper()
		eventually(t, gatewayTimeout, what, func() error {
			e, code, err := get(url, host, roots)
			if err == nil && (code != http.StatusOK || e.Pod != "echo") {
				err = fmt.Errorf("status %d from %q", code, e.Pod)
			}
			return err
		})
	}
	front, other := "http://"+addrs["front"], "http://"+addrs["other"]
	secure := "https://" + addrs["front"] + "/secure"
	serves("GET front /v1", front+"/v1", "", nil)
	serves("GET other /o1", other+"/o1", "", nil)
	serves("GET https front /secure with the Secret's certificate", secure, host, roots(cert))
	// The same kind of route change as below, before any rejection: the
	// time it takes to serve is the baseline.
	baseline := time.Now()
	k.must(route("front-http", "front", "http", "/v1", "/v0"), "apply", "-f", "-")
	serves("GET front /v0 (baseline change)", front+"/v0", "", nil)
	t.Logf("baseline: a new rule on front's HTTP listener served %.2fs after the write", time.Since(baseline).Seconds())

	routeParent := func(name string) gwv1.RouteParentStatus {
		t.Helper()
		var rt gwv1.HTTPRoute
		if err := getJSON(k, &rt, "-n", "nack", "get", "httproute", name); err != nil {
			t.Fatalf("get HTTPRoute %s: %v", name, err)
		}
		if len(rt.Status.Parents) != 1 {
			t.Fatalf("HTTPRoute %s parents %+v", name, rt.Status.Parents)
		}
		return rt.Status.Parents[0]
	}

	// Break: the key of another certificate.
	broke := time.Now()
	k.must(secret(cert, otherKey), "apply", "-f", "-")
	var gw gwv1.Gateway
	eventually(t, gatewayTimeout, "Gateway front Programmed=False with Envoy's error", func() error {
		var c *metav1.Condition
		gw, c = programmed("front")
		if c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
	toRejected := time.Since(broke)
	c := meta.FindStatusCondition(gw.Status.Conditions, "Programmed")
	t.Logf("Gateway front Programmed=False %.2fs after the broken Secret was written: %s: %s", toRejected.Seconds(), c.Reason, c.Message)
	if c.Reason != "Invalid" || !strings.Contains(c.Message, "KEY_VALUES_MISMATCH") || !strings.Contains(c.Message, "listener https (port 443)") {
		t.Errorf("Gateway front Programmed: reason %s message %q; want Invalid, the listener and Envoy's error", c.Reason, c.Message)
	}
	// Every node's Envoy rejects it: each is named once it reports.
	eventually(t, gatewayTimeout, "Gateway front Programmed names every node", func() error {
		_, c := programmed("front")
		for _, n := range s.Nodes {
			if c == nil || !strings.Contains(c.Message, "node "+n.Name) {
				return fmt.Errorf("node %s not in %+v", n.Name, c)
			}
		}
		return nil
	})
	t.Logf("every node named %.2fs after the broken Secret was written", time.Since(broke).Seconds())
	for _, ls := range gw.Status.Listeners {
		want := map[gwv1.SectionName]metav1.ConditionStatus{"http": metav1.ConditionTrue, "https": metav1.ConditionFalse}[ls.Name]
		if lc := meta.FindStatusCondition(ls.Conditions, "Programmed"); lc == nil || lc.Status != want {
			t.Errorf("listener %s Programmed %+v, want %s", ls.Name, lc, want)
		}
	}
	eventually(t, gatewayTimeout, "HTTPRoute front-https names the rejected listener", func() error {
		rc := meta.FindStatusCondition(routeParent("front-https").Conditions, "membrane.io/Programmed")
		if rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "ProxyRejected" ||
			!strings.Contains(rc.Message, "listener https of Gateway nack/front") || !strings.Contains(rc.Message, "KEY_VALUES_MISMATCH") {
			return fmt.Errorf("condition %+v", rc)
		}
		t.Logf("HTTPRoute front-https: %s", rc.Message)
		return nil
	})
	if rc := meta.FindStatusCondition(routeParent("front-http").Conditions, "membrane.io/Programmed"); rc != nil {
		t.Errorf("HTTPRoute front-http (on the listener Envoy accepts) has %+v", rc)
	}
	if _, c := programmed("other"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Gateway other Programmed %+v, want True", c)
	}
	// membrane status shows it on the Gateway's line.
	if out := k.membrane("status"); !strings.Contains(out, "KEY_VALUES_MISMATCH") {
		t.Errorf("membrane status does not show the rejection:\n%s", out)
	} else {
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "KEY_VALUES_MISMATCH") {
				t.Logf("membrane status: %s", line)
			}
		}
	}

	// The last accepted certificate keeps serving.
	for range 5 {
		if e, code, err := get(secure, host, roots(cert)); err != nil || code != http.StatusOK || e.Pod != "echo" {
			t.Errorf("GET https /secure after the rejection: %d from %q, %v; want 200 with the accepted certificate", code, e.Pod, err)
		}
	}
	// The other listener of the same Gateway and the other Gateway take
	// route changes.
	changed := time.Now()
	k.must(route("front-http", "front", "http", "/v1", "/v0", "/v2"), "apply", "-f", "-")
	serves("GET front /v2 (a new rule on the other listener)", front+"/v2", "", nil)
	t.Logf("a new rule on front's HTTP listener served %.2fs after the write", time.Since(changed).Seconds())
	changed = time.Now()
	k.must(route("other", "other", "", "/o1", "/o2"), "apply", "-f", "-")
	serves("GET other /o2 (a new rule on the other Gateway)", other+"/o2", "", nil)
	t.Logf("a new rule on Gateway other served %.2fs after the write", time.Since(changed).Seconds())
	if _, c := programmed("front"); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Gateway front Programmed after the other changes %+v, want still False", c)
	}
	if e, code, err := get(secure, host, roots(cert)); err != nil || code != http.StatusOK || e.Pod != "echo" {
		t.Errorf("GET https /secure after the other changes: %d, %v", code, err)
	}

	// Fix: a new certificate and its key.
	newCert, newKey := selfSigned(t, host)
	fixed := time.Now()
	k.must(secret(newCert, newKey), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "Gateway front Programmed=True after the fix", func() error {
		var c *metav1.Condition
		gw, c = programmed("front")
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
	t.Logf("Gateway front Programmed=True %.2fs after the fixed Secret was written", time.Since(fixed).Seconds())
	checkCondition(t, "Gateway front Programmed after the fix", gw.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed", gw.Generation)
	serves("GET https /secure with the new certificate", secure, host, roots(newCert))
	eventually(t, gatewayTimeout, "HTTPRoute front-https without the rejection", func() error {
		if rc := meta.FindStatusCondition(routeParent("front-https").Conditions, "membrane.io/Programmed"); rc != nil {
			return fmt.Errorf("condition %+v", rc)
		}
		return nil
	})

	// A rule whose path regex is over Envoy's RE2 program size limit
	// (valid RE2, also for Go's regexp): the route's status names the rule.
	broke = time.Now()
	k.must(route("other", "other", "", "/o1", "/o2", "~/o/[a-z]{600}[0-9]{600}"), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "HTTPRoute other names the rejected rule", func() error {
		rc := meta.FindStatusCondition(routeParent("other").Conditions, "membrane.io/Programmed")
		if rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != "ProxyRejected" ||
			!strings.Contains(rc.Message, "rules[2] on listener http of Gateway nack/other") || !strings.Contains(rc.Message, "program size") {
			return fmt.Errorf("condition %+v", rc)
		}
		t.Logf("HTTPRoute other %.2fs after the write: %s", time.Since(broke).Seconds(), rc.Message)
		return nil
	})
	gw, c = programmed("other")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Invalid" || !strings.Contains(c.Message, "nack/other/rule/2") {
		t.Errorf("Gateway other Programmed %+v, want False (Invalid) naming the rule", c)
	}
	if _, c := programmed("front"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Gateway front Programmed %+v while Gateway other is rejected, want True", c)
	}
	serves("GET other /o2 (the accepted rules keep serving)", other+"/o2", "", nil)
	changed = time.Now()
	k.must(route("front-http", "front", "http", "/v1", "/v0", "/v2", "/v3"), "apply", "-f", "-")
	serves("GET front /v3 (a change on the other Gateway)", front+"/v3", "", nil)
	t.Logf("a new rule on front served %.2fs after the write, Gateway other rejected", time.Since(changed).Seconds())
	fixed = time.Now()
	k.must(route("other", "other", "", "/o1", "/o2", "/o3"), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "Gateway other Programmed=True after the fix", func() error {
		if _, c := programmed("other"); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
	t.Logf("Gateway other Programmed=True %.2fs after the fixed route was written", time.Since(fixed).Seconds())
	serves("GET other /o3", other+"/o3", "", nil)
	eventually(t, gatewayTimeout, "HTTPRoute other without the rejection", func() error {
		if rc := meta.FindStatusCondition(routeParent("other").Conditions, "membrane.io/Programmed"); rc != nil {
			return fmt.Errorf("condition %+v", rc)
		}
		return nil
	})

	// An Ingress whose TLS Secret Envoy rejects: a Warning Event, the
	// address and the last accepted certificate stay.
	const ingHost = "b.example.com"
	bCert, bKey := selfSigned(t, ingHost)
	k.must(tlsSecret("nack", "b-cert", bCert, bKey)+`---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: nack}
spec:
  ingressClassName: membrane
  tls: [{hosts: [`+ingHost+`], secretName: b-cert}]
  rules:
  - host: `+ingHost+`
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 8080}}}}
`, "apply", "-f", "-")
	var ingAddr string
	eventually(t, gatewayTimeout, "Ingress shop has an address", func() error {
		out, err := k.run(t.Context(), "", "-n", "nack", "get", "ingress", "shop", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
		if ingAddr = strings.TrimSpace(out); err == nil && ingAddr == "" {
			err = fmt.Errorf("no address yet")
		}
		return err
	})
	ingURL := "https://" + ingAddr + "/"
	bRoots := roots(bCert)
	serves("GET https Ingress shop", ingURL, ingHost, bRoots)
	_, otherBKey := selfSigned(t, ingHost)
	broke = time.Now()
	k.must(tlsSecret("nack", "b-cert", bCert, otherBKey), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "Warning Event on Ingress shop with Envoy's error", func() error {
		out, err := k.run(t.Context(), "", "-n", "nack", "get", "events", "--field-selector", "involvedObject.kind=Ingress,involvedObject.name=shop", "-o", "json")
		if err != nil {
			return err
		}
		var list struct {
			Items []struct{ Type, Reason, Message string } `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Type == "Warning" && strings.Contains(ev.Message, "port 443 rejected by the node Envoy") && strings.Contains(ev.Message, "KEY_VALUES_MISMATCH") {
				t.Logf("Ingress Event %.2fs after the broken Secret was written: %s %s", time.Since(broke).Seconds(), ev.Reason, ev.Message)
				return nil
			}
		}
		return fmt.Errorf("events %+v", list.Items)
	})
	for range 5 {
		if e, code, err := get(ingURL, ingHost, bRoots); err != nil || code != http.StatusOK || e.Pod != "echo" {
			t.Errorf("GET https Ingress shop after the rejection: %d, %v; want 200 with the accepted certificate", code, err)
		}
	}
	if out, err := k.run(t.Context(), "", "-n", "nack", "get", "ingress", "shop", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"); err != nil || strings.TrimSpace(out) != ingAddr {
		t.Errorf("Ingress shop address after the rejection %q, %v; want %s kept", out, err, ingAddr)
	}
	if _, c := programmed("front"); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Gateway front Programmed %+v while the Ingress is rejected, want True", c)
	}
	newBCert, newBKey := selfSigned(t, ingHost)
	k.must(tlsSecret("nack", "b-cert", newBCert, newBKey), "apply", "-f", "-")
	newBRoots := roots(newBCert)
	serves("GET https Ingress shop with the fixed Secret's certificate", ingURL, ingHost, newBRoots)

	// A listener on a port another process of a node holds (here a
	// socket on every address of the first node): that node's Envoy
	// refuses it, the Gateway says so; once the process lets go, the
	// agent's retry has it served and Programmed is True again.
	node := s.Nodes[0].Name
	var busy net.Listener
	if err := netns.Do(l.NodeNetns(node), func() error {
		var err error
		busy, err = net.Listen("tcp", "0.0.0.0:8081")
		return err
	}); err != nil {
		t.Fatalf("listen on port 8081 of node %s: %v", node, err)
	}
	defer busy.Close()
	k.must(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: nack}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: http, protocol: HTTP, port: 80}
  - {name: busy, protocol: HTTP, port: 8081}
`, "apply", "-f", "-")
	eventually(t, gatewayTimeout, "Gateway other Programmed=False: node "+node+" cannot bind port 8081", func() error {
		if _, c := programmed("other"); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "cannot bind") || !strings.Contains(c.Message, node) {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
	busy.Close()
	freed := time.Now()
	eventually(t, gatewayTimeout, "Gateway other Programmed=True once port 8081 is free", func() error {
		if _, c := programmed("other"); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Programmed %+v", c)
		}
		return nil
	})
	t.Logf("Gateway other Programmed=True %.2fs after node %s's socket on port 8081 closed", time.Since(freed).Seconds(), node)
	serves("GET Gateway other on port 8081", "http://"+addrs["other"]+":8081/o1", "", nil)
}
