package membrane

import (
	"encoding/json"
	"os"
	"slices"
	"sort"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestSchemaClosed checks that values.schema.json closes every object it
// describes by name (additionalProperties: false), so a misspelt key fails
// at any depth, and that values.yaml and the schema name the same keys.
// Maps (nodeSelector, resources.requests) are described by the type of
// their values instead.
func TestSchemaClosed(t *testing.T) {
	raw, err := os.ReadFile("values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	rawValues, err := os.ReadFile("values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(rawValues, &values); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, s map[string]any, v any)
	walk = func(path string, s map[string]any, v any) {
		if items, ok := s["items"].(map[string]any); ok {
			walk(path+"[]", items, nil)
		}
		props, ok := s["properties"].(map[string]any)
		if !ok {
			return
		}
		if s["additionalProperties"] != false {
			t.Errorf("%s: want additionalProperties: false", path)
		}
		vm, isMap := v.(map[string]any)
		for _, k := range sortedKeys(props) {
			var sub any
			if isMap {
				var has bool
				if sub, has = vm[k]; !has && slices.Contains(requiredOf(s), k) {
					t.Errorf("%s.%s: in the schema's required list, not in values.yaml", path, k)
				}
			}
			walk(path+"."+k, props[k].(map[string]any), sub)
		}
		if isMap {
			for k := range vm {
				if _, ok := props[k]; !ok {
					t.Errorf("%s.%s: in values.yaml, not in the schema", path, k)
				}
			}
		}
	}
	walk("(root)", schema, values)
}

func requiredOf(s map[string]any) []string {
	var out []string
	if r, ok := s["required"].([]any); ok {
		for _, k := range r {
			out = append(out, k.(string))
		}
	}
	sort.Strings(out)
	return out
}
