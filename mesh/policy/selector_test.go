package policy

import (
	"testing"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

func TestSelectorMatches(t *testing.T) {
	pod := identity.Labels{
		"k8s:app":                         "web",
		"k8s:tier":                        "front",
		"k8s:io.kubernetes.pod.namespace": "shop",
		"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "shop",
		"k8s:io.cilium.k8s.policy.serviceaccount":                        "default",
		"reserved:special": "",
	}
	for _, c := range []struct {
		name string
		sel  Selector
		l    identity.Labels
		want bool
	}{
		{"empty selects everything", Selector{}, pod, true},
		{"empty selects even no labels", Selector{}, nil, true},
		{"plain key", Selector{MatchLabels: map[string]string{"app": "web"}}, pod, true},
		{"k8s source", Selector{MatchLabels: map[string]string{"k8s:app": "web"}}, pod, true},
		{"any source", Selector{MatchLabels: map[string]string{"any:app": "web"}}, pod, true},
		{"other value", Selector{MatchLabels: map[string]string{"app": "db"}}, pod, false},
		{"all labels must match", Selector{MatchLabels: map[string]string{"app": "web", "tier": "back"}}, pod, false},
		{"k8s source does not match reserved", Selector{MatchLabels: map[string]string{"k8s:special": ""}}, pod, false},
		{"plain key matches any source", Selector{MatchLabels: map[string]string{"special": ""}}, pod, true},
		{"reserved source", Selector{MatchLabels: map[string]string{"reserved:special": ""}}, pod, true},
		{"reserved source does not match k8s", Selector{MatchLabels: map[string]string{"reserved:app": "web"}}, pod, false},
		{"namespace label key with slash", Selector{MatchLabels: map[string]string{
			"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "shop"}}, pod, true},
		{"In", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpIn, Values: []string{"db", "web"}}}}, pod, true},
		{"In, absent", Selector{MatchExpressions: []Requirement{{Key: "role", Operator: OpIn, Values: []string{"x"}}}}, pod, false},
		{"NotIn", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: OpNotIn, Values: []string{"web"}}}}, pod, false},
		{"NotIn, absent label matches", Selector{MatchExpressions: []Requirement{{Key: "role", Operator: OpNotIn, Values: []string{"x"}}}}, pod, true},
		{"Exists", Selector{MatchExpressions: []Requirement{{Key: "k8s:tier", Operator: OpExists}}}, pod, true},
		{"Exists, empty value", Selector{MatchExpressions: []Requirement{{Key: "special", Operator: OpExists}}}, pod, true},
		{"DoesNotExist", Selector{MatchExpressions: []Requirement{{Key: "tier", Operator: OpDoesNotExist}}}, pod, false},
		{"DoesNotExist, absent", Selector{MatchExpressions: []Requirement{{Key: "role", Operator: OpDoesNotExist}}}, pod, true},
		{"labels and expressions", Selector{
			MatchLabels:      map[string]string{"app": "web"},
			MatchExpressions: []Requirement{{Key: "tier", Operator: OpNotIn, Values: []string{"front"}}}}, pod, false},
		{"invalid matches nothing", Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Equals", Values: []string{"web"}}}}, pod, false},
	} {
		if got := c.sel.Matches(c.l); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSelectorValidate(t *testing.T) {
	for _, c := range []struct {
		name  string
		sel   Selector
		valid bool
	}{
		{"empty", Selector{}, true},
		{"labels", Selector{MatchLabels: map[string]string{"k8s:app": "web"}}, true},
		{"unknown operator", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: "Gt", Values: []string{"1"}}}}, false},
		{"In without values", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpIn}}}, false},
		{"Exists with values", Selector{MatchExpressions: []Requirement{{Key: "a", Operator: OpExists, Values: []string{"x"}}}}, false},
		{"empty key", Selector{MatchLabels: map[string]string{"k8s:": "x"}}, false},
	} {
		if err := c.sel.Validate(); (err == nil) != c.valid {
			t.Errorf("%s: Validate = %v, want valid %v", c.name, err, c.valid)
		}
	}
}

// TestScopePeer checks Cilium's scoping of fromEndpoints/toEndpoints.
func TestScopePeer(t *testing.T) {
	in := func(ns string, extra map[string]string) identity.Labels {
		l := identity.Labels{identity.NamespaceLabel: ns, "k8s:app": "x"}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	team := map[string]string{"k8s:io.cilium.k8s.namespace.labels.team": "ops"}
	reserved := identity.Labels{"reserved:host": ""}
	for _, c := range []struct {
		name      string
		sel       Selector
		namespace string // "" clusterwide
		l         identity.Labels
		want      bool
	}{
		{"namespaced: own namespace", Selector{}, "a", in("a", nil), true},
		{"namespaced: other namespace", Selector{}, "a", in("b", nil), false},
		{"namespaced: labels, other namespace", Selector{MatchLabels: map[string]string{"app": "x"}}, "a", in("b", nil), false},
		{"namespaced: explicit k8s: namespace", Selector{MatchLabels: map[string]string{"k8s:io.kubernetes.pod.namespace": "b"}}, "a", in("b", nil), true},
		{"namespaced: explicit any: namespace", Selector{MatchLabels: map[string]string{"any:io.kubernetes.pod.namespace": "b"}}, "a", in("b", nil), true},
		{"namespaced: explicit plain namespace", Selector{MatchLabels: map[string]string{"io.kubernetes.pod.namespace": "b"}}, "a", in("b", nil), true},
		{"namespaced: namespace expression", Selector{MatchExpressions: []Requirement{{Key: "k8s:io.kubernetes.pod.namespace", Operator: OpNotIn, Values: []string{"a"}}}}, "a", in("b", nil), true},
		{"namespaced: namespace labels cross namespaces", Selector{MatchLabels: team}, "a", in("b", team), true},
		{"namespaced: namespace labels, not matching", Selector{MatchLabels: team}, "a", in("a", nil), false},
		{"namespaced: reserved source is not the namespace key", Selector{MatchLabels: map[string]string{"reserved:io.kubernetes.pod.namespace": "b"}}, "a", in("b", map[string]string{"reserved:io.kubernetes.pod.namespace": "b"}), false},
		{"clusterwide: every namespace", Selector{}, "", in("b", nil), true},
		{"clusterwide: endpoints only", Selector{}, "", reserved, false},
		{"clusterwide: endpoints only, with labels", Selector{MatchLabels: map[string]string{"host": ""}}, "", reserved, false},
		{"clusterwide: explicit namespace", Selector{MatchLabels: map[string]string{"k8s:io.kubernetes.pod.namespace": "b"}}, "", in("c", nil), false},
		{"clusterwide: namespace DoesNotExist is taken literally", Selector{MatchExpressions: []Requirement{{Key: "io.kubernetes.pod.namespace", Operator: OpDoesNotExist}}}, "", reserved, true},
	} {
		m, err := compileSelector(c.sel)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := scopePeer(m, c.namespace).matches(c.l); got != c.want {
			t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestScopeSubject(t *testing.T) {
	for _, c := range []struct {
		name    string
		sel     Selector
		l       identity.Labels
		want    bool
		problem bool
	}{
		{"own namespace", Selector{}, identity.Labels{identity.NamespaceLabel: "a"}, true, false},
		{"other namespace", Selector{}, identity.Labels{identity.NamespaceLabel: "b"}, false, false},
		{"naming its namespace", Selector{MatchLabels: map[string]string{"io.kubernetes.pod.namespace": "a"}}, identity.Labels{identity.NamespaceLabel: "a"}, true, false},
		{"naming another namespace", Selector{MatchLabels: map[string]string{"io.kubernetes.pod.namespace": "b"}}, identity.Labels{identity.NamespaceLabel: "b"}, false, true},
		{"an expression its namespace satisfies", Selector{MatchExpressions: []Requirement{{Key: "k8s:io.kubernetes.pod.namespace", Operator: OpIn, Values: []string{"a", "b"}}}}, identity.Labels{identity.NamespaceLabel: "a"}, true, false},
		{"an expression excluding its namespace", Selector{MatchExpressions: []Requirement{{Key: "k8s:io.kubernetes.pod.namespace", Operator: OpNotIn, Values: []string{"a"}}}}, identity.Labels{identity.NamespaceLabel: "a"}, false, true},
	} {
		m, err := compileSelector(c.sel)
		if err != nil {
			t.Fatal(err)
		}
		m, err = scopeSubject(m, "a")
		if (err != nil) != c.problem {
			t.Errorf("%s: problem %v, want %v", c.name, err, c.problem)
		}
		if got := m.matches(c.l); got != c.want {
			t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
		}
	}
}
