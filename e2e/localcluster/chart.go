package localcluster

import (
	_ "embed"
)

//go:embed addons/membrane.values.yaml
var chartValues []byte

// chartNamespace is where the chart's namespaced objects go.
const chartNamespace = "kube-system"
