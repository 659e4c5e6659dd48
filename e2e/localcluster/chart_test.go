package localcluster

import (
	"context"
	"testing"
	"time"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
	"github.com/membrane-mesh/membrane/e2e/testenv"
)

// renderedChart renders the chart as Up does, with the pinned helm.
func renderedChart(t *testing.T) []chart.Object {
	t.Helper()
	testenv.Tool(t, "helm")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	objs, err := renderChart(ctx, Options{ToolsDir: testenv.ToolsDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// TestEnvoyManifestOnlyEnvoy checks that the harness applies the node
// Envoys' ConfigMap and DaemonSet from the chart, and nothing else of it:
// the agents and the operator are its own processes.
func TestEnvoyManifestOnlyEnvoy(t *testing.T) {
	objs := renderedChart(t)
	manifest, err := envoyManifest(objs)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := chart.Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range applied {
		got = append(got, o.Kind+"/"+o.Namespace+"/"+o.Name)
	}
	want := []string{"ConfigMap/kube-system/membrane-envoy", "DaemonSet/kube-system/membrane-envoy"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("applied %v, want %v", got, want)
	}
	// The rendered chart does hold the components the harness runs itself.
	for _, kind := range []string{"DaemonSet/membrane-agent", "Deployment/membrane-operator"} {
		found := false
		for _, o := range objs {
			found = found || o.Kind+"/"+o.Name == kind
		}
		if !found {
			t.Errorf("the rendered chart has no %s", kind)
		}
	}
}
