package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
	"github.com/membrane-mesh/membrane/e2e/worldhost"
)

// checkExtAuth: an HTTPRoute of Gateway web (namespace shop, base its
// address) whose rules ask authorization servers first (the ExternalAuth
// filter): one that allows (http-echo answering 200) lets requests reach
// the backend, one that denies (403) answers the client with its 403, one
// without endpoints fails closed (403), one that does not exist makes its
// rule answer 500 and the route ResolvedRefs=False; a rule without the
// filter is not asked.
func checkExtAuth(t *testing.T, k *kube, s *localcluster.State, base string) {
	authz := func(name, node string, code int) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: shop, labels: {app: %[1]s}}
spec:
  nodeName: %[2]s
  terminationGracePeriodSeconds: 0
  containers:
  - name: authz
    image: hashicorp/http-echo:1.0.0
    args: ["-text=%[1]s", "-status-code=%[3]d", "-listen=:5678"]
    ports: [{name: http, containerPort: 5678}]
---
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: shop}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 8080, targetPort: http}]
---
`, name, node, code)
	}
	filter := func(service string) string {
		return `[{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: ` + service + `, port: 8080}, http: {}}}]`
	}
	k.must(authz("authz-allow", s.Nodes[0].Name, 200)+authz("authz-deny", s.Nodes[1].Name, 403)+`apiVersion: v1
kind: Service
metadata: {name: authz-down, namespace: shop}
spec:
  selector: {app: nothing}
  ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: authz, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [authz.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /allowed}}]
    filters: `+filter("authz-allow")+`
    backendRefs: [{name: flaky-failing, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /denied}}]
    filters: `+filter("authz-deny")+`
    backendRefs: [{name: flaky-failing, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /down}}]
    filters: `+filter("authz-down")+`
    backendRefs: [{name: flaky-failing, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    filters: `+filter("authz-missing")+`
    backendRefs: [{name: flaky-failing, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /open}}]
    backendRefs: [{name: flaky-failing, port: 8080}]
`, "apply", "-f", "-")
	k.must("", "-n", "shop", "wait", "--for=condition=Ready", "pod", "authz-allow", "authz-deny", "--timeout=90s")
	want := map[string]int{
		"/allowed": http.StatusOK, "/denied": http.StatusForbidden, "/down": http.StatusForbidden,
		"/missing": http.StatusInternalServerError, "/open": http.StatusOK,
	}
	eventually(t, gatewayTimeout, "every rule answers as its authorization server says", func() error {
		var wrong []string
		for path, code := range want {
			got, err := statusOf(base+path, "authz.example.com", 3*time.Second)
			if err != nil || got != code {
				wrong = append(wrong, fmt.Sprintf("%s: %d (%v), want %d", path, got, err, code))
			}
		}
		if len(wrong) > 0 {
			return fmt.Errorf("%s", strings.Join(wrong, "; "))
		}
		return nil
	})
	t.Logf("through the authorization servers: %v", want)
	eventually(t, gatewayTimeout, "route authz ResolvedRefs=False naming the missing server", func() error {
		var rt gwv1.HTTPRoute
		if err := getJSON(k, &rt, "-n", "shop", "get", "httproute", "authz"); err != nil {
			return err
		}
		if len(rt.Status.Parents) != 1 {
			return fmt.Errorf("parents %+v", rt.Status.Parents)
		}
		c := meta.FindStatusCondition(rt.Status.Parents[0].Conditions, "ResolvedRefs")
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "BackendNotFound" || !strings.Contains(c.Message, "rules[3].filters: externalAuth: Service shop/authz-missing not found") {
			return fmt.Errorf("ResolvedRefs %+v", c)
		}
		return nil
	})

	// Over gRPC: the world host api (outside the cluster, a Service
	// without selector in front of it) serves Envoy's Authorization
	// service, allowing paths under /allowed with a header naming it.
	api, ok := s.Layout().WorldHost("api")
	if !ok {
		t.Fatal("no world host api")
	}
	k.must(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: authz-world, namespace: shop}
spec:
  ports: [{name: grpc, port: 9001, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: authz-world, namespace: shop, labels: {kubernetes.io/service-name: authz-world}}
addressType: IPv4
ports: [{name: grpc, port: 80}]
endpoints: [{addresses: [%s]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: authz-grpc, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [authz-grpc.example.com]
  rules:
  - filters: [{type: ExternalAuth, externalAuth: {protocol: GRPC, backendRef: {name: authz-world, port: 9001}, grpc: {}}}]
    backendRefs: [{name: flaky-failing, port: 8080}]
`, api.IP), "apply", "-f", "-")
	eventually(t, gatewayTimeout, "the gRPC authorization server allows /allowed, adding its header", func() error {
		r, err := hostGet(base+"/allowed/grpc", getOptions{host: "authz-grpc.example.com"})
		if err != nil {
			return err
		}
		if got := r.Echo.Headers[http.CanonicalHeaderKey(worldhost.AuthzHeader)]; r.Code != http.StatusOK || !slices.Equal(got, []string{api.Name}) {
			return fmt.Errorf("status %d, the backend saw %s %q", r.Code, worldhost.AuthzHeader, got)
		}
		return nil
	})
	if r, err := hostGet(base+"/elsewhere", getOptions{host: "authz-grpc.example.com"}); err != nil || r.Code != http.StatusForbidden || r.Body != "denied by "+api.Name+"\n" {
		t.Errorf("a path the gRPC authorization server denies: %d %q (%v), want its 403", r.Code, r.Body, err)
	}
	t.Logf("over gRPC: /allowed/grpc 200 with %s: %s, /elsewhere 403", worldhost.AuthzHeader, api.Name)
}
