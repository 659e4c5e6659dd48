package membrane

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// ReleaseName is the name Membrane's release has: the objects' names do not
// depend on it, their instance label does.
const ReleaseName = "membrane"

// Render runs `helm template` of the embedded chart with helm (a path to the
// binary) into namespace, with values (YAML, may be empty) over the chart's
// defaults, and returns the manifest. The chart's checks fail it with helm's
// message, naming the value at fault.
func Render(ctx context.Context, helm, namespace string, values []byte) (string, error) {
	dir, err := os.MkdirTemp("", "membrane-chart-")
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	defer os.RemoveAll(dir)
	chartDir := filepath.Join(dir, "membrane")
	if err := os.Mkdir(chartDir, 0o755); err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	if err := Extract(chartDir); err != nil {
		return "", err
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o600); err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	cmd := exec.CommandContext(ctx, helm, "template", ReleaseName, chartDir, "--namespace", namespace, "--values", valuesFile)
	// helm keeps its cache and config under HOME; a template run needs neither.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"), "HELM_DATA_HOME="+filepath.Join(dir, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm template: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Object is one document of a rendered manifest.
type Object struct {
	APIVersion, Kind, Namespace, Name string
	// YAML is the document, comments included.
	YAML string
}

// Objects splits a manifest into its objects; documents without content
// (only comments) are dropped, documents without kind or name are errors.
func Objects(manifest string) ([]Object, error) {
	var objs []Object
	for i, doc := range strings.Split("\n"+manifest, "\n---") {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", i, err)
		}
		if meta.APIVersion == "" && meta.Kind == "" && meta.Metadata.Name == "" {
			continue
		}
		if meta.APIVersion == "" || meta.Kind == "" || meta.Metadata.Name == "" {
			return nil, fmt.Errorf("manifest document %d: want apiVersion, kind and metadata.name, got %q, %q, %q", i, meta.APIVersion, meta.Kind, meta.Metadata.Name)
		}
		objs = append(objs, Object{APIVersion: meta.APIVersion, Kind: meta.Kind, Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name, YAML: strings.TrimPrefix(doc, "\n")})
	}
	return objs, nil
}
