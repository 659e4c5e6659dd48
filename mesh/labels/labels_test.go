package labels

import "testing"

func TestMatches(t *testing.T) {
	pod := map[string]string{"k8s:app": "web", "k8s:tier": "back", "reserved:special": ""}
	list := []string{"k8s:app=web", "k8s:tier=back", "reserved:special"}
	for _, c := range []struct {
		name string
		sel  Selector
		want bool
	}{
		{"empty selects everything", nil, true},
		{"plain key", Selector{NewRequirement("app", In, "web")}, true},
		{"any source", Selector{NewRequirement("any:app", In, "db", "web")}, true},
		{"k8s source", Selector{NewRequirement("k8s:app", In, "web")}, true},
		{"other source", Selector{NewRequirement("reserved:app", In, "web")}, false},
		{"other value", Selector{NewRequirement("app", In, "db")}, false},
		{"not in", Selector{NewRequirement("app", NotIn, "db")}, true},
		{"not in, value present", Selector{NewRequirement("app", NotIn, "web")}, false},
		{"exists, empty value", Selector{NewRequirement("special", Exists)}, true},
		{"exists, other source", Selector{NewRequirement("k8s:special", Exists)}, false},
		{"does not exist", Selector{NewRequirement("debug", DoesNotExist)}, true},
		{"all must hold", Selector{NewRequirement("app", In, "web"), NewRequirement("tier", In, "front")}, false},
		{"unknown operator", Selector{NewRequirement("app", "Like", "web")}, false},
	} {
		if got := c.sel.Matches(FromMap(pod)); got != c.want {
			t.Errorf("%s: map: got %v, want %v", c.name, got, c.want)
		}
		if got := c.sel.Matches(FromList(list)); got != c.want {
			t.Errorf("%s: list: got %v, want %v", c.name, got, c.want)
		}
	}
}
