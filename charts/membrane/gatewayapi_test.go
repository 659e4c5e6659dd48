package membrane

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestGatewayAPICRDs renders the chart with Gateway API on, per CRD channel,
// and checks that it installs exactly the pinned module's CRD files of that
// channel, unchanged (bundle-version annotation included), and none with
// crds=none or Gateway API off.
func TestGatewayAPICRDs(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("go list -m sigs.k8s.io/gateway-api: %v", err)
	}
	modDir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd")
	for _, c := range []struct{ values, channel string }{
		{"gatewayAPI: {enabled: true}", "standard"},
		{"gatewayAPI: {enabled: true, crds: experimental}", "experimental"},
		{"gatewayAPI: {enabled: true, crds: none}", ""},
		{"gatewayAPI: {enabled: false, crds: experimental}", ""},
	} {
		t.Run(c.values, func(t *testing.T) {
			manifest, err := render(t, c.values)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Objects(manifest)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, o := range objs {
				if o.Kind == "CustomResourceDefinition" && strings.Contains(o.Name, "gateway.networking") {
					got[o.Name] = o.YAML
				}
			}
			if c.channel == "" {
				if len(got) != 0 {
					t.Fatalf("rendered %d Gateway API CRDs, want none", len(got))
				}
				return
			}
			files, err := filepath.Glob(filepath.Join(modDir, c.channel, "gateway.networking.*.yaml"))
			if err != nil || len(files) < 6 {
				t.Fatalf("module CRDs of %s: %v, %d files", c.channel, err, len(files))
			}
			if len(got) != len(files) {
				t.Errorf("rendered %d CRDs, the module's %s channel has %d", len(got), c.channel, len(files))
			}
			for _, f := range files {
				want, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var meta struct {
					Metadata struct {
						Name        string            `json:"name"`
						Annotations map[string]string `json:"annotations"`
					} `json:"metadata"`
				}
				if err := yaml.Unmarshal(want, &meta); err != nil {
					t.Fatal(err)
				}
				if v := meta.Metadata.Annotations["gateway.networking.k8s.io/bundle-version"]; v != GatewayAPIVersion {
					t.Errorf("%s: bundle-version %q, want %s", f, v, GatewayAPIVersion)
				}
				g, ok := got[meta.Metadata.Name]
				if !ok {
					t.Errorf("CRD %s not rendered", meta.Metadata.Name)
					continue
				}
				if strings.TrimSpace(withoutSource(g)) != strings.TrimSpace(string(want)) {
					t.Errorf("CRD %s differs from %s", meta.Metadata.Name, f)
				}
			}
		})
	}
}

// TestGatewayAPIValues checks that Gateway API is rejected without what it
// needs, naming the value.
func TestGatewayAPIValues(t *testing.T) {
	for _, c := range []struct{ values, want string }{
		{"{gatewayAPI: {enabled: true}, l7Proxy: false}", "needs l7Proxy=true"},
		// Gateway addresses come from the MembraneLoadBalancerIPPools.
		{"gatewayAPI: {enabled: true, addressPool: 10.0.0.0/28}", "addressPool"},
		{"gatewayAPI: {enabled: true, crds: alpha}", "/gatewayAPI/crds"},
		{"ingressController: {enabled: true}", "ingressController.enabled=true: needs gatewayAPI.enabled=true"},
	} {
		t.Run(c.values, func(t *testing.T) {
			_, err := render(t, c.values)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("values %q: want an error naming %q, got %v", c.values, c.want, err)
			}
		})
	}
}

// TestSecretsNamespace: the chart creates the namespace of the copies
// unless told that it exists; the agents' Role is in it either way.
func TestSecretsNamespace(t *testing.T) {
	const ns = "kind: Namespace\nmetadata:\n  name: gw-copies\n"
	for _, c := range []struct {
		values string
		create bool
	}{
		{"{gatewayAPI: {enabled: true, secretsNamespace: gw-copies}}", true},
		{"{gatewayAPI: {enabled: true, secretsNamespace: gw-copies, createSecretsNamespace: false}}", false},
	} {
		manifest, err := render(t, c.values)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(manifest, ns); got != c.create {
			t.Errorf("values %s: creates the namespace %v, want %v", c.values, got, c.create)
		}
		if !strings.Contains(manifest, "kind: Role\nmetadata:\n  name: membrane-agent-gateway-secrets\n  namespace: gw-copies\n") {
			t.Errorf("values %s: no agent Role in gw-copies", c.values)
		}
	}
}

// withoutSource drops the "# Source: <template>" line helm template adds.
func withoutSource(doc string) string {
	if strings.HasPrefix(doc, "# Source: ") {
		if _, rest, ok := strings.Cut(doc, "\n"); ok {
			return rest
		}
	}
	return doc
}

// TestIngressClass: ingressController.enabled creates the IngressClass
// membrane with the load balancer mode and, when asked, as the default.
func TestIngressClass(t *testing.T) {
	manifest, err := render(t, "{gatewayAPI: {enabled: true}, ingressController: {enabled: true, default: true, loadbalancerMode: shared}}")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: IngressClass", "controller: membrane.io/ingress-controller",
		"ingress.membrane.io/loadbalancer-mode: shared", `ingressclass.kubernetes.io/is-default-class: "true"`} {
		if !strings.Contains(manifest, want) {
			t.Errorf("manifest lacks %q", want)
		}
	}
	manifest, err = render(t, "{gatewayAPI: {enabled: true}}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(manifest, "kind: IngressClass") {
		t.Error("IngressClass rendered with ingressController.enabled=false")
	}
}
