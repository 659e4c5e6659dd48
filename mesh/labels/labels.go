// Package labels matches security labels against label selectors: the one
// implementation behind the policy resolver's endpoint selectors
// (mesh/policy) and `membrane observe`'s label filters (mesh/flow).
//
// A label is "source:key" with a value (Cilium's form, e.g. "k8s:app=web",
// "reserved:world"). A requirement names a key with a source ("k8s:app")
// or without one ("app", or "any:app"), which matches a label of every
// source with that key.
package labels

import (
	"iter"
	"slices"
	"strings"
)

// Label is one security label.
type Label struct {
	Source string
	Key    string
	Value  string
}

// Operator is a requirement's operator (Kubernetes').
type Operator string

// Operators.
const (
	In           Operator = "In"
	NotIn        Operator = "NotIn"
	Exists       Operator = "Exists"
	DoesNotExist Operator = "DoesNotExist"
)

// Requirement is one term of a selector. Source "" matches every source;
// Values are sorted (NewRequirement sorts them).
type Requirement struct {
	Source   string
	Key      string
	Operator Operator
	Values   []string
}

// NewRequirement makes a requirement on key ("source:key", "any:key" or
// "key") with a sorted copy of values.
func NewRequirement(key string, op Operator, values ...string) Requirement {
	src, k := SplitKey(key)
	vals := slices.Clone(values)
	slices.Sort(vals)
	return Requirement{Source: src, Key: k, Operator: op, Values: vals}
}

// SplitKey separates a selector key into source and key; "any" and no
// source both give the source "".
func SplitKey(k string) (source, key string) {
	src, rest, ok := strings.Cut(k, ":")
	if !ok {
		return "", k
	}
	if src == "any" {
		src = ""
	}
	return src, rest
}

// Matches reports whether the labels satisfy the requirement.
func (r Requirement) Matches(ls iter.Seq[Label]) bool {
	present, in := false, false
	for l := range ls {
		if l.Key != r.Key || (r.Source != "" && l.Source != r.Source) {
			continue
		}
		present = true
		if _, found := slices.BinarySearch(r.Values, l.Value); found {
			in = true
		}
	}
	switch r.Operator {
	case In:
		return in
	case NotIn:
		return !in
	case Exists:
		return present
	case DoesNotExist:
		return !present
	}
	return false
}

// Selector is a list of requirements that must all hold; the empty
// selector selects everything.
type Selector []Requirement

// Matches reports whether the labels satisfy every requirement.
func (s Selector) Matches(ls iter.Seq[Label]) bool {
	for _, r := range s {
		if !r.Matches(ls) {
			return false
		}
	}
	return true
}

// FromMap reads labels keyed "source:key" (mesh/identity's Labels).
func FromMap(m map[string]string) iter.Seq[Label] {
	return func(yield func(Label) bool) {
		for k, v := range m {
			src, key := splitSource(k)
			if !yield(Label{Source: src, Key: key, Value: v}) {
				return
			}
		}
	}
}

// FromList reads labels written "source:key=value", or "source:key" for
// an empty value (mesh/flow's Endpoint.Labels).
func FromList(l []string) iter.Seq[Label] {
	return func(yield func(Label) bool) {
		for _, s := range l {
			k, v, _ := strings.Cut(s, "=")
			src, key := splitSource(k)
			if !yield(Label{Source: src, Key: key, Value: v}) {
				return
			}
		}
	}
}

// splitSource splits a label's "source:key"; a key without a source has
// the source "".
func splitSource(k string) (source, key string) {
	if s, n, ok := strings.Cut(k, ":"); ok {
		return s, n
	}
	return "", k
}
