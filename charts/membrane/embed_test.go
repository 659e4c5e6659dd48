package membrane

import (
	"io/fs"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestTemplatesAreObjects checks that every document of the plain-YAML
// templates is a named Kubernetes object.
func TestTemplatesAreObjects(t *testing.T) {
	names, err := fs.Glob(Templates, "templates/*.yaml")
	if err != nil || len(names) == 0 {
		t.Fatalf("templates: %v, %v", names, err)
	}
	for _, name := range names {
		raw, err := fs.ReadFile(Templates, name)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(raw), "\n---\n") {
			var obj struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Errorf("%s: document %d: %v", name, i, err)
				continue
			}
			if obj.APIVersion == "" || obj.Kind == "" || obj.Metadata.Name == "" {
				t.Errorf("%s: document %d: want apiVersion, kind and metadata.name, got %+v", name, i, obj)
			}
		}
	}
}
