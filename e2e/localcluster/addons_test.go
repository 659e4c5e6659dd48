package localcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/e2e/images"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// envoyAddon decodes the node Envoys of the rendered chart: their ConfigMap
// and DaemonSet.
func envoyAddon(t *testing.T) (*corev1.ConfigMap, *appsv1.DaemonSet) {
	t.Helper()
	var cm *corev1.ConfigMap
	var ds *appsv1.DaemonSet
	objs := renderedChart(t)
	for _, kind := range []string{"ConfigMap", "DaemonSet"} {
		doc := chartObject(t, objs, kind, envoyDaemonSet).YAML
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("envoy manifest: %v", err)
		}
		var obj any
		switch meta.Kind {
		case "ConfigMap":
			cm = &corev1.ConfigMap{}
			obj = cm
		case "DaemonSet":
			ds = &appsv1.DaemonSet{}
			obj = ds
		default:
			t.Fatalf("envoy manifest: unexpected kind %q", meta.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("envoy manifest: %s: %v", meta.Kind, err)
		}
	}
	if cm == nil || ds == nil {
		t.Fatal("envoy manifest: want a ConfigMap and a DaemonSet")
	}
	return cm, ds
}

// TestEnvoyAddon checks that the DaemonSet runs the image install.sh builds
// with the ConfigMap's bootstrap, and that the bootstrap names nothing but
// the agent: everything else comes over xDS.
func TestEnvoyAddon(t *testing.T) {
	cm, ds := envoyAddon(t)
	if cm.Name != envoyDaemonSet || ds.Name != envoyDaemonSet || cm.Namespace != "kube-system" || ds.Namespace != "kube-system" {
		t.Errorf("want kube-system/%s, got ConfigMap %s/%s, DaemonSet %s/%s", envoyDaemonSet, cm.Namespace, cm.Name, ds.Namespace, ds.Name)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("want hostNetwork with ClusterFirstWithHostNet, got hostNetwork=%v dnsPolicy=%q", spec.HostNetwork, spec.DNSPolicy)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	// e2e/tools/install.sh, step envoy-image.
	if key := images.Key(c.Image); key != "envoyproxy_envoy" {
		t.Errorf("image %q has store key %q, want envoyproxy_envoy", c.Image, key)
	}
	if !slices.Contains(c.Args, "--disable-hot-restart") {
		t.Errorf("args %q: want --disable-hot-restart (several Envoys share the machine)", c.Args)
	}
	if len(spec.Volumes) != 1 || spec.Volumes[0].ConfigMap == nil || spec.Volumes[0].ConfigMap.Name != cm.Name {
		t.Errorf("want one volume, ConfigMap %s, got %+v", cm.Name, spec.Volumes)
	}

	var bootstrap struct {
		Node             map[string]any `json:"node"`
		DynamicResources map[string]any `json:"dynamic_resources"`
		StaticResources  struct {
			Clusters []map[string]any `json:"clusters"`
		} `json:"static_resources"`
		Admin               map[string]any   `json:"admin"`
		LayeredRuntime      map[string]any   `json:"layered_runtime"`
		BootstrapExtensions []map[string]any `json:"bootstrap_extensions"`
	}
	if err := yaml.UnmarshalStrict([]byte(cm.Data["envoy.yaml"]), &bootstrap); err != nil {
		t.Fatalf("bootstrap: only dynamic_resources, one static cluster, admin, layered_runtime and bootstrap_extensions: %v", err)
	}
	if ext := bootstrap.BootstrapExtensions; len(ext) != 1 || ext[0]["name"] != "envoy.bootstrap.internal_listener" {
		t.Errorf("bootstrap: want the internal listener extension only (mutual authentication's L7 rules), got %v", ext)
	}
	if cl := bootstrap.StaticResources.Clusters; len(cl) != 1 || cl[0]["name"] != "membrane-agent" {
		t.Errorf("bootstrap: want the static cluster membrane-agent only, got %v", cl)
	}
}

// TestEnvoyBootstrapValidates runs the pinned Envoy in validate mode with the
// DaemonSet's own arguments on the ConfigMap's bootstrap.
func TestEnvoyBootstrapValidates(t *testing.T) {
	envoy := testenv.Tool(t, "envoy")
	cm, ds := envoyAddon(t)
	c := ds.Spec.Template.Spec.Containers[0]
	dir := t.TempDir()
	for name, data := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.VolumeMounts) != 1 {
		t.Fatalf("want one volume mount, got %+v", c.VolumeMounts)
	}
	mount := c.VolumeMounts[0].MountPath
	args := []string{"--mode", "validate"}
	for _, a := range c.Args {
		a = strings.ReplaceAll(a, "$(NODE_NAME)", "n1")
		if rest, ok := strings.CutPrefix(a, mount+"/"); ok {
			a = filepath.Join(dir, rest)
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, envoy, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("envoy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("envoy %s: %s", strings.Join(args, " "), out)
}
