package membrane

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/e2e/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the rendered chart")

// render renders the embedded chart into kube-system with values.
func render(t *testing.T, values string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	return Render(ctx, testenv.Tool(t, "helm"), "kube-system", []byte(values))
}

// TestLint runs helm lint --strict on the chart's directory, with its
// defaults and with the values of every golden case.
func TestLint(t *testing.T) {
	helm := testenv.Tool(t, "helm")
	cases, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, values := range append([]string{""}, cases...) {
		args := []string{"lint", "--strict", "."}
		if values != "" {
			args = append(args, "--values", values)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		cmd := exec.CommandContext(ctx, helm, args...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !bytes.Contains(out, []byte("0 chart(s) failed")) {
			t.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEmbedded checks that every file of the chart's directory (but the Go
// package and its test data) is embedded: Render uses the embedded chart.
func TestEmbedded(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		want, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got, err := fs.ReadFile(Chart, filepath.ToSlash(path))
		if err != nil {
			t.Errorf("%s is not embedded: add it to the go:embed line of embed.go", path)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: embedded copy differs", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGolden renders the chart with each testdata/<case>.values.yaml and
// compares the manifest with testdata/<case>.out.yaml (-update rewrites it).
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 5 {
		t.Fatalf("want at least 5 cases in testdata, got %d", len(cases))
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".values.yaml")
		t.Run(name, func(t *testing.T) {
			values, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := render(t, string(values))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Objects(got); err != nil {
				t.Fatal(err)
			}
			out := strings.TrimSuffix(in, ".values.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(out, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (run go test ./charts/membrane -update)", err)
			}
			if diff := lineDiff(string(want), got); diff != "" {
				t.Errorf("%s differs from the rendered chart (go test ./charts/membrane -update rewrites it):\n%s", out, diff)
			}
		})
	}
}

// lineDiff shows the first lines where want and got differ, with context;
// empty when they are equal.
func lineDiff(want, got string) string {
	if want == got {
		return ""
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	for j := max(0, i-3); j < i; j++ {
		fmt.Fprintf(&b, "  %s\n", w[j])
	}
	for j := i; j < min(len(w), i+5); j++ {
		fmt.Fprintf(&b, "- %s\n", w[j])
	}
	for j := i; j < min(len(g), i+5); j++ {
		fmt.Fprintf(&b, "+ %s\n", g[j])
	}
	return fmt.Sprintf("line %d:\n%s", i+1, b.String())
}

// TestRejectedValues checks that values the chart cannot honour fail the
// rendering with a message naming the value at fault and what it allows.
func TestRejectedValues(t *testing.T) {
	for _, c := range []struct {
		name, values string
		want         []string
	}{
		{"encryption type", "encryption: {type: ipsec}", []string{"/encryption/type", "'wireguard'"}},
		{"misspelt top-level key", "kubeProxyReplacment: true", []string{"additional properties 'kubeProxyReplacment' not allowed"}},
		{"misspelt nested key", "operator: {replica: 3}", []string{"/operator", "additional properties 'replica' not allowed"}},
		{"cluster id above 255", "cluster: {id: 256}", []string{"/cluster/id", "255"}},
		{"negative cluster id", "cluster: {id: -1}", []string{"/cluster/id", "0"}},
		{"cluster name upper case", "cluster: {name: Prod}", []string{"/cluster/name", "does not match pattern"}},
		{"cluster name too long", "cluster: {name: " + strings.Repeat("a", 33) + "}", []string{"/cluster/name", "32"}},
		{"cluster name leading dash", "cluster: {name: -prod}", []string{"/cluster/name", "does not match pattern"}},
		{"ipam mode", "ipam: {mode: cluster-pool}", []string{"/ipam/mode", "'kubernetes'"}},
		{"bpf mount propagation", "bpf: {mountPropagation: None}", []string{"/bpf/mountPropagation", "'Bidirectional'", "'HostToContainer'"}},
		{"wireguard backend", "encryption: {wireguard: {backend: userspace}}", []string{"/encryption/wireguard/backend", "'auto'", "'kernel'", "'embedded'"}},
		{"operator replicas 0", "operator: {replicas: 0}", []string{"/operator/replicas", "minimum"}},
		{"operator replicas string", "operator: {replicas: three}", []string{"/operator/replicas", "integer"}},
		{"l7Proxy not a boolean", "l7Proxy: maybe", []string{"/l7Proxy", "boolean"}},
		{"envoy log level", "envoy: {logLevel: loud}", []string{"/envoy/logLevel", "'warn'"}},
		{"port out of range", "agent: {apiPort: 70000}", []string{"/agent/apiPort", "maximum", "65,535"}},
		{"duration", "operator: {identityGCInterval: 30}", []string{"/operator/identityGCInterval"}},
		{"relative state dir", "agent: {stateDir: var/lib/membrane}", []string{"/agent/stateDir", "does not match pattern"}},
		{"API socket outside /var/run/membrane", "agent: {apiSocket: /tmp/api.sock}", []string{"/agent/apiSocket", "does not match pattern"}},
		{"CNI install without the API socket", "agent: {apiSocket: \"\"}", []string{"agent.apiSocket: required with cni.install=true", "cni.install=false"}},
		{"CNI conf name not a conflist", "cni: {confName: 05-membrane.conf}", []string{"/cni/confName", "does not match pattern"}},
		{"CNI install not a boolean", "cni: {install: yes please}", []string{"/cni/install", "boolean"}},
		{"flow buffer too large", "observe: {flowBufferSize: 1000000}", []string{"/observe/flowBufferSize", "maximum", "262,144"}},
		{"MTU below IPv6's minimum", "datapath: {mtu: 576}", []string{"/datapath/mtu", "minimum", "1,280"}},
		{"image pull policy", "image: {pullPolicy: Sometimes}", []string{"/image/pullPolicy", "'IfNotPresent'"}},
		{"ingress load balancer mode", "ingressController: {loadbalancerMode: both}", []string{"/ingressController/loadbalancerMode", "'dedicated'", "'shared'"}},
		{"kube-proxy replacement without API server", "kubeProxyReplacement: true", []string{"k8sServiceHost: required with kubeProxyReplacement=true"}},
		{"shared port", "envoy: {adminPort: 9890}", []string{"envoy.adminPort=9890", "agent.apiPort"}},
		{"secrets namespace of the release", "gatewayAPI: {enabled: true, secretsNamespace: kube-system}", []string{"gatewayAPI.secretsNamespace=kube-system", "namespace of its own"}},
		{"pod label of the chart's own", "agent: {podLabels: {k8s-app: mine}}", []string{"agent.podLabels.k8s-app", "the chart sets this label"}},
		{"pull secret without a name", "imagePullSecrets: [{secret: regcred}]", []string{"/imagePullSecrets/0", "name"}},
		{"disruption budget not a percentage", "operator: {podDisruptionBudget: {enabled: true, maxUnavailable: half}}", []string{"/operator/podDisruptionBudget/maxUnavailable"}},
		{"secrets namespace not a name", "gatewayAPI: {enabled: true, secretsNamespace: My.Secrets}", []string{"/gatewayAPI/secretsNamespace", "does not match pattern"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := render(t, c.values)
			if err == nil {
				t.Fatalf("values %q rendered:\n%.300s", c.values, out)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("values %q: error does not name %q: %v", c.values, w, err)
				}
			}
		})
	}
}

// TestUnavailableFeatures checks that the features of Cilium's chart
// Membrane lacks are rejected when turned on, naming the value, and render
// when off.
func TestUnavailableFeatures(t *testing.T) {
	for _, c := range []struct{ values, key string }{
		{"clustermesh: {useAPIServer: true}", "clustermesh.useAPIServer=true"},
	} {
		t.Run(c.key, func(t *testing.T) {
			_, err := render(t, c.values)
			if err == nil {
				t.Fatalf("values %q rendered", c.values)
			}
			if msg := err.Error(); !strings.Contains(msg, c.key) || !strings.Contains(msg, "not available in this version") {
				t.Errorf("values %q: want an error naming %s and saying it is not available, got %v", c.values, c.key, err)
			}
			off := strings.ReplaceAll(c.values, "true", "false")
			if _, err := render(t, off); err != nil {
				t.Errorf("values %q: %v", off, err)
			}
		})
	}
}
