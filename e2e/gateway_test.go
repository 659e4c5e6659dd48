package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/netns"
)

// gatewayTimeout bounds the wait for a status or a route to take effect.
const gatewayTimeout = 60 * time.Second

// TestGatewayAPI installs Membrane with gatewayAPI.enabled on a cluster of
// its own and serves a Gateway from the node Envoys: the test process, on
// the host, reaches the Gateway's address (from the pool, announced by one
// node) and gets the two backends of an HTTPRoute by weight and path, with
// the route's request header changes; a route with a backendRef to a
// missing Service gets ResolvedRefs=False (BackendNotFound) and 500, and
// nothing else changes.
func TestGatewayAPI(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-gw-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.242.0.0/16", ServiceCIDR: "10.92.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true"},
	})
	l := s.Layout()
	k := &kube{t: t, kubeconfig: l.Kubeconfig(), kubectlPath: shared.toolsDir + "/bin/kubectl"}

	// The operator creates and accepts the GatewayClass.
	eventually(t, gatewayTimeout, "GatewayClass membrane Accepted", func() error {
		var gc gwv1.GatewayClass
		out, err := k.run(t.Context(), "", "get", "gatewayclass", "membrane", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &gc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") || gc.Spec.ControllerName != "membrane.io/gateway-controller" {
			return fmt.Errorf("class %+v", gc)
		}
		if len(gc.Status.SupportedFeatures) == 0 {
			return fmt.Errorf("no supportedFeatures")
		}
		return nil
	})

	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
	for i, v := range []string{"v1", "v2"} {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: shop-%[1]s, namespace: shop}
spec:
  selector: {app: shop, version: %[1]s}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Pod
metadata: {name: shop-%[1]s, namespace: shop, labels: {app: shop, version: %[1]s}}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: echo
    image: gcr.io/k8s-staging-gateway-api/echo-basic:v1.4.1
    ports: [{name: http, containerPort: 3000}]
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
`, v, s.Nodes[i].Name)
	}
	b.WriteString(`---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  gatewayClassName: membrane
  listeners:
  - {name: http, protocol: HTTP, port: 80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /shop}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Gateway, value: membrane}]
        remove: [X-Internal]
    backendRefs:
    - {name: shop-v1, port: 8080, weight: 3}
    - {name: shop-v2, port: 8080, weight: 1}
  - matches: [{path: {type: Exact, value: /v2-only}}]
    backendRefs:
    - {name: shop-v2, port: 8080}
`)
	k.must(b.String(), "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")

	// The Gateway gets an address of the pool and is programmed.
	var gw gwv1.Gateway
	eventually(t, gatewayTimeout, "Gateway shop/web Programmed with an address", func() error {
		gw = gwv1.Gateway{}
		if err := getJSON(k, &gw, "-n", "shop", "get", "gateway", "web"); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gw.Status.Conditions, "Programmed") || len(gw.Status.Addresses) == 0 {
			return fmt.Errorf("status %+v", gw.Status)
		}
		return nil
	})
	addr := netip.MustParseAddr(gw.Status.Addresses[0].Value)
	if pool := l.GatewayPool(); !inRange(addr, pool) {
		t.Errorf("Gateway address %s is not in the pool %s", addr, pool)
	}
	checkCondition(t, "Gateway Accepted", gw.Status.Conditions, "Accepted", metav1.ConditionTrue, "Accepted", gw.Generation)
	if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 1 {
		t.Errorf("listener status %+v, want one listener with 1 attached route", gw.Status.Listeners)
	} else {
		checkCondition(t, "listener Programmed", gw.Status.Listeners[0].Conditions, "Programmed", metav1.ConditionTrue, "Programmed", gw.Generation)
		checkCondition(t, "listener ResolvedRefs", gw.Status.Listeners[0].Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", gw.Generation)
	}
	routeParent := func(name string) gwv1.RouteParentStatus {
		t.Helper()
		var rt gwv1.HTTPRoute
		var ps gwv1.RouteParentStatus
		eventually(t, gatewayTimeout, "HTTPRoute "+name+" status", func() error {
			if err := getJSON(k, &rt, "-n", "shop", "get", "httproute", name); err != nil {
				return err
			}
			if len(rt.Status.Parents) != 1 || rt.Status.Parents[0].ControllerName != "membrane.io/gateway-controller" {
				return fmt.Errorf("parents %+v", rt.Status.Parents)
			}
			ps = rt.Status.Parents[0]
			return nil
		})
		return ps
	}
	ps := routeParent("shop")
	checkCondition(t, "route shop Accepted", ps.Conditions, "Accepted", metav1.ConditionTrue, "Accepted", 1)
	checkCondition(t, "route shop ResolvedRefs", ps.Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", 1)

	// Exactly one node has the address.
	var owners []string
	for _, n := range s.Nodes {
		if nodeHasAddress(t, l.NodeNetns(n.Name), addr) {
			owners = append(owners, n.Name)
		}
	}
	if len(owners) != 1 {
		t.Errorf("address %s is on nodes %v, want exactly one", addr, owners)
	}
	t.Logf("Gateway address %s, announced by %v", addr, owners)

	base := "http://" + addr.String()
	eventually(t, gatewayTimeout, "GET "+base+"/shop", func() error {
		_, code, err := echo(base+"/shop/items", nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d", code)
		}
		return err
	})
	counts := map[string]int{}
	const n = 40
	for range n {
		e, code, err := echo(base+"/shop/items", map[string]string{"X-Internal": "secret"})
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /shop/items: %d, %v", code, err)
		}
		counts[e.Pod]++
		if got := e.Headers["X-Gateway"]; len(got) != 1 || got[0] != "membrane" {
			t.Errorf("backend got X-Gateway %q, want membrane (set by the route)", got)
		}
		if got, ok := e.Headers["X-Internal"]; ok {
			t.Errorf("backend got X-Internal %q, which the route removes", got)
		}
		if e.Path != "/shop/items" {
			t.Errorf("backend got path %q", e.Path)
		}
	}
	t.Logf("%d requests to /shop (weights 3:1): %v", n, counts)
	if counts["shop-v1"]+counts["shop-v2"] != n || counts["shop-v2"] == 0 || counts["shop-v1"] <= counts["shop-v2"] {
		t.Errorf("requests by backend %v: want both, shop-v1 (weight 3) more than shop-v2 (weight 1)", counts)
	}
	for range 5 {
		if e, code, err := echo(base+"/v2-only", nil); err != nil || code != http.StatusOK || e.Pod != "shop-v2" {
			t.Errorf("GET /v2-only: %d from %q, %v; want 200 from shop-v2", code, e.Pod, err)
		}
	}
	if _, code, err := echo(base+"/v2-only/more", nil); err != nil || code != http.StatusNotFound {
		t.Errorf("GET /v2-only/more (an exact match only): %d, %v; want 404", code, err)
	}

	// A backendRef to a missing Service: ResolvedRefs=False
	// (BackendNotFound), 500 for its requests; the rest stays as it was.
	k.must(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /broken}}]
    backendRefs:
    - {name: nowhere, port: 8080}
`, "apply", "-f", "-")
	var broken gwv1.RouteParentStatus
	eventually(t, gatewayTimeout, "route broken ResolvedRefs=False", func() error {
		broken = routeParent("broken")
		if c := meta.FindStatusCondition(broken.Conditions, "ResolvedRefs"); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("conditions %+v", broken.Conditions)
		}
		return nil
	})
	checkCondition(t, "route broken ResolvedRefs", broken.Conditions, "ResolvedRefs", metav1.ConditionFalse, "BackendNotFound", 1)
	checkCondition(t, "route broken Accepted", broken.Conditions, "Accepted", metav1.ConditionTrue, "Accepted", 1)
	eventually(t, gatewayTimeout, "GET /broken -> 500", func() error {
		if _, code, err := echo(base+"/broken", nil); err != nil || code != http.StatusInternalServerError {
			return fmt.Errorf("status %d, %v", code, err)
		}
		return nil
	})
	for range 10 {
		if _, code, err := echo(base+"/shop/items", nil); err != nil || code != http.StatusOK {
			t.Errorf("GET /shop/items after the broken route: %d, %v", code, err)
		}
	}
	ps = routeParent("shop")
	checkCondition(t, "route shop ResolvedRefs after the broken route", ps.Conditions, "ResolvedRefs", metav1.ConditionTrue, "ResolvedRefs", 1)
	eventually(t, gatewayTimeout, "listener with 2 attached routes", func() error {
		gw = gwv1.Gateway{}
		if err := getJSON(k, &gw, "-n", "shop", "get", "gateway", "web"); err != nil {
			return err
		}
		if len(gw.Status.Listeners) != 1 || gw.Status.Listeners[0].AttachedRoutes != 2 {
			return fmt.Errorf("listeners %+v", gw.Status.Listeners)
		}
		return nil
	})
	checkCondition(t, "Gateway Programmed after the broken route", gw.Status.Conditions, "Programmed", metav1.ConditionTrue, "Programmed", gw.Generation)
}

// echoResponse is what echo-basic answers: the request as it arrived.
type echoResponse struct {
	Path    string              `json:"path"`
	Pod     string              `json:"pod"`
	Headers map[string][]string `json:"headers"`
}

// echo makes one GET (3 s bound) and decodes echo-basic's answer when the
// status is 200.
func echo(url string, headers map[string]string) (echoResponse, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return echoResponse{}, 0, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	// No proxy from the environment: the address is on the local underlay.
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return echoResponse{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return echoResponse{}, resp.StatusCode, err
	}
	var e echoResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &e); err != nil {
			return e, resp.StatusCode, fmt.Errorf("decode %q: %w", body, err)
		}
	}
	return e, resp.StatusCode, nil
}

func getJSON(k *kube, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := k.run(ctx, "", append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(out), v)
}

func checkCondition(t *testing.T, what string, conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, gen int64) {
	t.Helper()
	c := meta.FindStatusCondition(conds, typ)
	switch {
	case c == nil:
		t.Errorf("%s: no %s condition in %+v", what, typ, conds)
	case c.Status != status || c.Reason != reason || c.ObservedGeneration != gen:
		t.Errorf("%s: %s=%s reason %s observedGeneration %d, want %s reason %s generation %d (%s)",
			what, typ, c.Status, c.Reason, c.ObservedGeneration, status, reason, gen, c.Message)
	}
}

// inRange reports whether a is in a "first-last" range.
func inRange(a netip.Addr, r string) bool {
	first, last, _ := strings.Cut(r, "-")
	f, err1 := netip.ParseAddr(first)
	l, err2 := netip.ParseAddr(last)
	return err1 == nil && err2 == nil && !a.Less(f) && !l.Less(a)
}

// nodeHasAddress reports whether a is an address of an interface in the
// node's network namespace.
func nodeHasAddress(t *testing.T, nsPath string, a netip.Addr) bool {
	t.Helper()
	var found bool
	err := netns.Do(nsPath, func() error {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, x := range addrs {
			if ip, ok := netip.AddrFromSlice(x.IP.To4()); ok && ip == a {
				found = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("addresses in %s: %v", nsPath, err)
	}
	return found
}
