package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
)

// installCRDs applies the chart's CRDs (server-side: they are too big for
// the last-applied annotation) and waits until they are Established. The CRDs
// stay: other tests may use them, and removing CRDs is slow.
func installCRDs(t *testing.T, k *kube) {
	t.Helper()
	dir, err := filepath.Abs("../charts/membrane/crds")
	if err != nil {
		t.Fatal(err)
	}
	k.must("", "apply", "--server-side", "--force-conflicts", "--field-manager=membrane-e2e", "-f", dir)
	// kubectl wait fails at once while a new CRD has no conditions yet.
	eventually(t, time.Minute, "CRDs established", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		_, err := k.run(ctx, "", "wait", "--for=condition=Established", "--timeout=20s",
			"crd/membranenetworkpolicies.membrane.io",
			"crd/membraneclusterwidenetworkpolicies.membrane.io",
			"crd/membraneidentities.membrane.io")
		return err
	})
}

// starWarsPolicy is Cilium's getting-started L3/L4/L7 policy
// (sw_l3_l4_l7_policy.yaml) with apiVersion and kind changed.
const starWarsPolicy = `apiVersion: membrane.io/v1alpha1
kind: MembraneNetworkPolicy
metadata:
  name: rule1
spec:
  description: "L7 policy to restrict access to specific HTTP call"
  endpointSelector:
    matchLabels:
      org: empire
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - method: "POST"
          path: "/v1/request-landing"
          headers:
          - "X-Empire: true"
  egress:
  - toEndpoints:
    - matchLabels:
        k8s:io.kubernetes.pod.namespace: kube-system
        k8s:k8s-app: kube-dns
    toPorts:
    - ports:
      - port: "53"
        protocol: ANY
      rules:
        dns:
        - matchPattern: "*"
  - toCIDRSet:
    - cidr: 10.0.0.0/8
      except:
      - 10.96.0.0/12
    toPorts:
    - ports:
      - port: "8000"
        endPort: 8080
        protocol: TCP
`

// TestCRD installs the membrane.io CRDs on the real API server, stores a
// converted Cilium policy unchanged, has the server reject invalid policies
// with a message naming the field, and shows the printer columns.
func TestCRD(t *testing.T) {
	k := cluster(t)
	installCRDs(t, k)

	const ns = "crd-e2e"
	k.must("", "create", "namespace", ns)
	t.Cleanup(func() { k.must("", "delete", "namespace", ns, "--wait=false") })

	// kubectl may still have the discovery from before the CRDs: retry.
	eventually(t, 30*time.Second, "create the Star Wars policy", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, err := k.run(ctx, starWarsPolicy, "create", "-n", ns, "-f", "-")
		return err
	})
	var want, got v1alpha1.MembraneNetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(starWarsPolicy), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(k.must("", "get", "mnp", "rule1", "-n", ns, "-o", "json")), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Spec, got.Spec); diff != "" {
		t.Errorf("stored spec differs (-applied +stored):\n%s", diff)
	}
	if errs := got.Validate(); len(errs) > 0 {
		t.Errorf("stored policy does not validate: %v", errs.ToAggregate())
	}

	t.Run("invalid policies rejected", func(t *testing.T) {
		for _, tc := range []struct {
			name, spec string
			want       []string // all in the error
			noSelector bool     // leave out endpointSelector: {}
			args       []string // more kubectl flags
		}{
			{name: "port 70000", spec: `
  ingress:
  - toPorts:
    - ports:
      - port: "70000"`, want: []string{"spec.ingress[0].toPorts[0].ports[0].port", "70000"}},
			{name: "protocol FOO", spec: `
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: FOO`, want: []string{"spec.ingress[0].toPorts[0].ports[0].protocol", `Unsupported value: "FOO"`}},
			{name: "entity moon", spec: `
  egress:
  - toEntities:
    - world
    - moon`, want: []string{"spec.egress[0].toEntities[1]", `Unsupported value: "moon"`}},
			{name: "header as an object", spec: `
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - headers:
          - name: X-My-Header
            value: "true"`, want: []string{"spec.ingress[0].toPorts[0].rules.http[0].headers[0]"}},
			{name: "header as an object, without strict field validation", spec: `
  ingress:
  - toPorts:
    - ports:
      - port: "80"
        protocol: TCP
      rules:
        http:
        - headers:
          - name: X-My-Header`, want: []string{"spec.ingress[0].toPorts[0].rules.http[0].headers[0]", `must be of type string`}, args: []string{"--validate=false"}},
			{name: "CIDR /33", spec: `
  egress:
  - toCIDR:
    - 10.0.0.0/33`, want: []string{"spec.egress[0].toCIDR[0]", "10.0.0.0/33", "cidr"}},
			{name: "except not a CIDR", spec: `
  egress:
  - toCIDRSet:
    - cidr: 10.0.0.0/8
      except:
      - 10.1.0.0`, want: []string{"spec.egress[0].toCIDRSet[0].except[0]", "cidr"}},
			{name: "endPort below port", spec: `
  egress:
  - toPorts:
    - ports:
      - port: "444"
        endPort: 80`, want: []string{"spec.egress[0].toPorts[0].ports[0].endPort", "greater than or equal"}},
			{name: "endPort with a named port", spec: `
  egress:
  - toPorts:
    - ports:
      - port: http
        endPort: 80`, want: []string{"spec.egress[0].toPorts[0].ports[0].endPort", "numeric port"}},
			{name: "endPort 70000", spec: `
  egress:
  - toPorts:
    - ports:
      - port: "80"
        endPort: 70000`, want: []string{"spec.egress[0].toPorts[0].ports[0].endPort", "65535"}},
			{name: "authentication mode", spec: `
  ingress:
  - authentication:
      mode: mtls`, want: []string{"spec.ingress[0].authentication.mode", `Unsupported value: "mtls"`}},
			{name: "http and dns mixed", spec: `
  egress:
  - toPorts:
    - ports:
      - port: "53"
      rules:
        http:
        - method: GET
        dns:
        - matchPattern: "*"`, want: []string{"spec.egress[0].toPorts[0].rules", "cannot be combined"}},
			{name: "fqdn with both names", spec: `
  egress:
  - toFQDNs:
    - matchName: a.example.com
      matchPattern: "*.example.com"`, want: []string{"spec.egress[0].toFQDNs[0]", "exactly one of matchName and matchPattern"}},
			{name: "unsupported Cilium field", spec: `
  ingress:
  - icmps:
    - fields:
      - type: 8`, want: []string{`unknown field "spec.ingress[0].icmps"`}},
			{name: "no endpointSelector", spec: `
  description: no selector`, want: []string{"spec.endpointSelector", "Required value"}, noSelector: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				manifest := "apiVersion: membrane.io/v1alpha1\nkind: MembraneNetworkPolicy\nmetadata:\n  name: invalid\nspec:"
				if !tc.noSelector {
					manifest += "\n  endpointSelector: {}"
				}
				manifest += tc.spec + "\n"
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				_, err := k.run(ctx, manifest, append([]string{"create", "-n", ns, "-f", "-"}, tc.args...)...)
				if err == nil {
					_, _ = k.run(ctx, "", "delete", "-n", ns, "mnp", "invalid")
					t.Fatalf("the API server accepted:\n%s", manifest)
				}
				t.Log(err)
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error does not contain %q: %v", w, err)
					}
				}
			})
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		_, err := k.run(ctx, "apiVersion: membrane.io/v1alpha1\nkind: MembraneNetworkPolicy\nmetadata:\n  name: empty\n", "create", "-n", ns, "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "one of spec or specs must be set") {
			t.Errorf("a policy without spec or specs: got %v", err)
		}
	})

	t.Run("printer columns", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		patch := `{"status":{"observedGeneration":1,"conditions":[{"type":"Valid","status":"True","reason":"Valid","message":"","lastTransitionTime":"2025-01-01T00:00:00Z"}]}}`
		if _, err := k.run(ctx, "", "patch", "mnp", "rule1", "-n", ns, "--subresource=status", "--type=merge", "-p", patch); err != nil {
			t.Fatal(err)
		}
		out, err := k.run(ctx, "", "get", "mnp", "-n", ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl get mnp:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME VALID PROGRAMMED AGE DESCRIPTION" {
			t.Fatalf("kubectl get mnp:\n%s", out)
		}
		if f := strings.Fields(lines[1]); len(f) < 4 || f[0] != "rule1" || f[1] != "True" || !strings.HasSuffix(lines[1], "L7 policy to restrict access to specific HTTP call") {
			t.Errorf("kubectl get mnp:\n%s", out)
		}
	})

	t.Run("clusterwide policy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		// Selects no endpoint, so it cannot disturb the tests sharing the cluster.
		mcnp := `apiVersion: membrane.io/v1alpha1
kind: MembraneClusterwideNetworkPolicy
metadata:
  name: crd-e2e-lockdown
specs:
- endpointSelector:
    matchLabels:
      crd-e2e: none
  description: external lockdown
  ingressDeny:
  - fromEntities:
    - world
  ingress:
  - fromEntities:
    - all
`
		if _, err := k.run(ctx, mcnp, "create", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = k.run(context.Background(), "", "delete", "mcnp", "crd-e2e-lockdown") })
		out, err := k.run(ctx, "", "get", "mcnp", "crd-e2e-lockdown", "-o", "jsonpath={.specs[0].ingressDeny[0].fromEntities[0]}")
		if err != nil || out != "world" {
			t.Errorf("kubectl get mcnp: %q, %v", out, err)
		}
	})

	t.Run("identity", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		id := `apiVersion: membrane.io/v1alpha1
kind: MembraneIdentity
metadata:
  name: "4000000001"
securityLabels:
  k8s:app: crd-e2e
  k8s:io.kubernetes.pod.namespace: ` + ns + "\n"
		if _, err := k.run(ctx, id, "create", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = k.run(context.Background(), "", "delete", "mid", "4000000001") })
		out, err := k.run(ctx, "", "get", "mid", "4000000001")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl get mid:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME NAMESPACE AGE" || !strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "4000000001 "+ns+" ") {
			t.Errorf("kubectl get mid:\n%s", out)
		}
		_, err = k.run(ctx, "", "patch", "mid", "4000000001", "--type=merge", "-p", `{"securityLabels":{"k8s:app":"other"}}`)
		if err == nil || !strings.Contains(err.Error(), "securityLabels is immutable") {
			t.Errorf("changing securityLabels: got %v", err)
		}
		bad := strings.Replace(id, `"4000000001"`, "web", 1)
		_, err = k.run(ctx, bad, "create", "-f", "-")
		if err == nil || !strings.Contains(err.Error(), "numeric identity") {
			t.Errorf("a non-numeric identity name: got %v", err)
		}
	})
}
