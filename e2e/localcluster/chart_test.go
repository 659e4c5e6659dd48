package localcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// renderedChart renders the chart with the pinned helm and the local
// cluster's values file, as Up installs it.
func renderedChart(t *testing.T) []chart.Object {
	t.Helper()
	helm := testenv.Tool(t, "helm")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	manifest, err := chart.Render(ctx, helm, chartNamespace, chartValues)
	if err != nil {
		t.Fatalf("render the Membrane chart: %v", err)
	}
	objs, err := chart.Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// chartObject returns the rendered object of kind and name.
func chartObject(t *testing.T, objs []chart.Object, kind, name string) chart.Object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	t.Fatalf("the rendered Membrane chart has no %s %s", kind, name)
	return chart.Object{}
}

// TestLocalValuesAgent checks the agent DaemonSet the local values render:
// its API socket is where Layout.AgentSocket finds it on the node, its CNI
// config and plugin go to the node's CNI directories, and the state
// directory, pin directory and encryption are the chart's own.
func TestLocalValuesAgent(t *testing.T) {
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict([]byte(chartObject(t, renderedChart(t), "DaemonSet", agentDaemonSet).YAML), &ds); err != nil {
		t.Fatal(err)
	}
	var args []string
	found := false
	for _, ct := range ds.Spec.Template.Spec.Containers {
		if ct.Name == agentContainer {
			args, found = ct.Args, true
			mounted := false
			for _, m := range ct.VolumeMounts {
				mounted = mounted || m.MountPath == "/var/run/membrane"
			}
			if !mounted {
				t.Errorf("the agent container does not mount /var/run/membrane: %+v", ct.VolumeMounts)
			}
		}
	}
	if !found {
		t.Fatalf("no container %q in DaemonSet %s", agentContainer, agentDaemonSet)
	}
	l := Layout{Name: "v", Index: 1}
	for flag, hostPath := range map[string]string{
		"--api-socket=/var/run/membrane/agent/api.sock": l.AgentSocket("v-node1"),
		"--state-dir=/var/lib/membrane/agent":           l.NodeAgentStateDir("v-node1"),
		"--bpf-pin-dir=/sys/fs/bpf/membrane":            l.NodeAgentPinDir("v-node1"),
		// The agent's conflist and plugin: the node's CNI directories.
		"--cni-conf-dir=/etc/cni/net.d": filepath.Join(l.NodeHostDir("v-node1"), "etc/cni/net.d"),
		"--cni-bin-dir=/opt/cni/bin":    filepath.Join(l.NodeHostDir("v-node1"), "opt/cni/bin"),
	} {
		if !slices.Contains(args, flag) {
			t.Errorf("agent args %q lack %s", args, flag)
		}
		// The node's host path mappings lead the flag's path to hostPath.
		_, path, _ := strings.Cut(flag, "=")
		if got := hostPathOf(l, "v-node1", path); got != hostPath {
			t.Errorf("%s: on the node that is %s, the harness looks in %s", flag, got, hostPath)
		}
	}
	if !slices.Contains(args, "--enable-encryption=false") {
		t.Errorf("agent args %q: the local values turn encryption on", args)
	}
}

// hostPathOf maps a path of a node's pod to the machine by the node's host
// path mappings (the longest that holds it).
func hostPathOf(l Layout, node, path string) string {
	best, out := -1, fmt.Sprintf("(no mapping for %s)", path)
	for _, hp := range l.NodeHostPaths(node, "/cg") {
		rest, ok := strings.CutPrefix(path, hp.Path)
		if ok && (rest == "" || strings.HasPrefix(rest, "/")) && len(hp.Path) > best {
			best, out = len(hp.Path), hp.Source+rest
		}
	}
	return out
}
