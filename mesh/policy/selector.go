package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/labels"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Selector selects identities by security labels, like a Kubernetes label
// selector: every requirement must hold; the empty selector selects every
// identity.
//
// A key is "source:key" or "key": source "k8s" matches labels from
// Kubernetes ("k8s:app"), "any" or no source matches a label of any source
// with that key (Cilium's rules). Keys of the reserved source are matched
// like any other; Membrane's reserved identities have no labels, so only
// entities select them.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Requirement is one expression of a selector.
type Requirement struct {
	Key      string   `json:"key"`
	Operator Operator `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Operator is a label selector operator (mesh/labels').
type Operator = labels.Operator

// Operators (Kubernetes').
const (
	OpIn           = labels.In
	OpNotIn        = labels.NotIn
	OpExists       = labels.Exists
	OpDoesNotExist = labels.DoesNotExist
)

// Label keys the scoping rules look at (without source).
const (
	namespaceKey        = "io.kubernetes.pod.namespace"
	namespaceLabelsPref = "io.cilium.k8s.namespace.labels."
)

// Matches reports whether the labels satisfy the selector; an invalid
// selector matches nothing.
func (s Selector) Matches(l identity.Labels) bool {
	m, err := compileSelector(s)
	return err == nil && m.matches(l)
}

// Validate reports what makes the selector invalid: unknown operators,
// values with Exists/DoesNotExist, none with In/NotIn, empty keys.
func (s Selector) Validate() error {
	_, err := compileSelector(s)
	return err
}

// matcher is a compiled selector.
type matcher labels.Selector

func (m matcher) matches(l identity.Labels) bool {
	return labels.Selector(m).Matches(labels.FromMap(l))
}

// key is m written out in full (every string length-prefixed): equal keys,
// equal matchers.
func (m matcher) key() string {
	var b strings.Builder
	str := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	for _, r := range m {
		str(r.Source)
		str(r.Key)
		str(string(r.Operator))
		b.WriteString(strconv.Itoa(len(r.Values)))
		b.WriteByte('[')
		for _, v := range r.Values {
			str(v)
		}
	}
	return b.String()
}

func compileSelector(s Selector) (matcher, error) {
	var m matcher
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		r := labels.NewRequirement(k, OpIn, s.MatchLabels[k])
		if r.Key == "" {
			errs = append(errs, fmt.Errorf("matchLabels: empty key %q", k))
			continue
		}
		m = append(m, r)
	}
	for i, e := range s.MatchExpressions {
		r := labels.NewRequirement(e.Key, e.Operator, e.Values...)
		if r.Key == "" {
			errs = append(errs, fmt.Errorf("matchExpressions[%d]: empty key %q", i, e.Key))
			continue
		}
		switch e.Operator {
		case OpIn, OpNotIn:
			if len(e.Values) == 0 {
				errs = append(errs, fmt.Errorf("matchExpressions[%d]: operator %s needs values", i, e.Operator))
				continue
			}
		case OpExists, OpDoesNotExist:
			if len(e.Values) != 0 {
				errs = append(errs, fmt.Errorf("matchExpressions[%d]: operator %s takes no values", i, e.Operator))
				continue
			}
		default:
			errs = append(errs, fmt.Errorf("matchExpressions[%d]: unknown operator %q", i, e.Operator))
			continue
		}
		m = append(m, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return m, nil
}

// has reports whether a requirement is about key (any source but those
// other than k8s and any).
func (m matcher) has(pred func(key string) bool) bool {
	for _, r := range m {
		if (r.Source == "" || r.Source == "k8s") && pred(r.Key) {
			return true
		}
	}
	return false
}

// scopeSubject restricts a namespaced policy's endpoint selector to its
// namespace. Cilium overrides a different namespace given in matchLabels
// (with a warning); here the requirement is ANDed, so the rule selects
// nothing, and reported.
func scopeSubject(m matcher, namespace string) (matcher, error) {
	if namespace == "" {
		return m, nil
	}
	var err error
	own := identity.Labels{identity.NamespaceLabel: namespace}
	for _, r := range m {
		if (r.Source == "" || r.Source == "k8s") && r.Key == namespaceKey && !r.Matches(labels.FromMap(own)) {
			err = fmt.Errorf("endpointSelector: a namespaced policy selects endpoints of its namespace %q only: the rule selects nothing", namespace)
		}
	}
	out := slices.Clone(m)
	return append(out, labels.Requirement{Source: "k8s", Key: namespaceKey, Operator: OpIn, Values: []string{namespace}}), err
}

// scopePeer applies Cilium's scoping to a peer selector (fromEndpoints,
// toEndpoints): unless it names the namespace label, a clusterwide policy's
// selector requires the namespace label to exist (endpoints only, never
// reserved identities) and a namespaced policy's selector is restricted to
// the policy's namespace, except when it selects by namespace labels.
func scopePeer(m matcher, namespace string) matcher {
	if m.has(func(k string) bool { return k == namespaceKey }) {
		return m
	}
	out := slices.Clone(m)
	if namespace == "" {
		return append(out, labels.Requirement{Source: "k8s", Key: namespaceKey, Operator: OpExists})
	}
	if m.has(func(k string) bool { return strings.HasPrefix(k, namespaceLabelsPref) }) {
		return m
	}
	return append(out, labels.Requirement{Source: "k8s", Key: namespaceKey, Operator: OpIn, Values: []string{namespace}})
}
