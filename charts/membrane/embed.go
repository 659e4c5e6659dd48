// Package membrane carries the Membrane Helm chart for Go code: the chart
// itself, which the local cluster renders with the pinned helm, and its
// CustomResourceDefinitions, which it applies from here.
package membrane

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Chart holds the chart's files as helm reads them: Chart.yaml, values.yaml,
// values.schema.json, .helmignore, crds/ and templates/ (with _helpers.tpl
// and NOTES.txt).
//
//go:embed Chart.yaml values.yaml values.schema.json .helmignore crds crds-gateway all:templates
var Chart embed.FS

// CRDs holds crds/*.yaml, the CustomResourceDefinitions of membrane.io.
//
//go:embed crds/*.yaml
var CRDs embed.FS

// Extract writes the chart into dir (which must exist), for helm to read.
func Extract(dir string) error {
	return fs.WalkDir(Chart, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return fmt.Errorf("extract chart: %w", err)
			}
			return nil
		}
		raw, err := fs.ReadFile(Chart, path)
		if err != nil {
			return fmt.Errorf("extract chart: %w", err)
		}
		if err := os.WriteFile(dst, raw, 0o644); err != nil {
			return fmt.Errorf("extract chart: %w", err)
		}
		return nil
	})
}
