package localcluster

import (
	"context"
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"

	chart "github.com/membrane-mesh/membrane/charts/membrane"
)

//go:embed addons/membrane.values.yaml
var chartValues []byte

// chartNamespace is where the chart's namespaced objects go.
const chartNamespace = "kube-system"

// renderChart renders the Membrane chart with the pinned helm and the local
// cluster's values: the one source of the node Envoys and the cluster roles
// the harness applies.
func renderChart(ctx context.Context, o Options) ([]chart.Object, error) {
	manifest, err := chart.Render(ctx, filepath.Join(o.ToolsDir, "bin", "helm"), chartNamespace, chartValues)
	if err != nil {
		return nil, fmt.Errorf("render the Membrane chart: %w", err)
	}
	return chart.Objects(manifest)
}

// chartObject returns the rendered object of kind and name.
func chartObject(objs []chart.Object, kind, name string) (chart.Object, error) {
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o, nil
		}
	}
	return chart.Object{}, fmt.Errorf("the rendered Membrane chart has no %s %s", kind, name)
}

// envoyManifest is the node Envoys' part of the chart: the bootstrap
// ConfigMap and the DaemonSet, one manifest.
func envoyManifest(objs []chart.Object) (string, error) {
	var docs []string
	for _, kind := range []string{"ConfigMap", "DaemonSet"} {
		o, err := chartObject(objs, kind, envoyDaemonSet)
		if err != nil {
			return "", err
		}
		docs = append(docs, o.YAML)
	}
	return strings.Join(docs, "\n---\n"), nil
}
