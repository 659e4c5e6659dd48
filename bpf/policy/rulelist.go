package policy

import (
	"fmt"
	"slices"
)

// ruleList is a validated, unchanging copy of the rules of a
// SetEndpointPolicy call. Endpoints given equal rules share one, and the
// entries a list makes, or that change from one list to another, are
// computed once for all of them: with EndpointId 0 in their keys, the
// endpoint's own ID going in when they are written (keys differ by nothing
// else between endpoints).
type ruleList struct {
	rules []Rule
	// sorted: in compareRules' order, so that a change from another
	// sorted list is computed by (direction, remote identity) group.
	sorted bool
	// owner is the endpoint ID the keys name (ownerKey is the first that
	// does), 0 when every key leaves it to the caller.
	owner    EndpointID
	ownerKey PolicyKey
}

// newRuleList validates rules and copies them.
func newRuleList(rules []Rule) (*ruleList, error) {
	l := &ruleList{rules: slices.Clone(rules), sorted: slices.IsSortedFunc(rules, compareRules)}
	for _, r := range rules {
		if id := r.Key.EndpointID; id != 0 && l.owner == 0 {
			l.owner, l.ownerKey = id, r.Key
		}
		// validate with the one ID a key may name: a key naming another
		// fails.
		if err := r.Key.validate(max(l.owner, 1)); err != nil {
			return nil, err
		}
		if _, err := r.Entry.value(); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Key, err)
		}
	}
	return l, nil
}

// usableBy checks that the list's keys may be endpoint id's.
func (l *ruleList) usableBy(id EndpointID) error {
	if l.owner != 0 && l.owner != id {
		return fmt.Errorf("policy key %s: of endpoint %d, not %d: %w", l.ownerKey, l.owner, id, ErrInvalid)
	}
	return nil
}

// entryPlan is what a SetEndpointPolicy call writes for an endpoint whose
// entries are those of one list (from; nil: unknown) and are to be those of
// another, in keys with EndpointId 0.
type entryPlan struct {
	// none: the lists make the same entries.
	none bool
	// want are the entries to hold: all of them (whole), or those of the
	// groups whose rules differ, and maybe the keys of those groups'
	// entries before, which go where want does not have them.
	whole bool
	want  map[policyPolicyKey]policyPolicyEntry
	maybe []policyPolicyKey
	err   error
}

// listChange is a memo key: a change from one list to another.
type listChange struct{ from, to *ruleList }

// maxLists and maxPlans bound the lists and plans kept for sharing: a
// regeneration of the agent writes a few distinct policies, and changes
// (one per distinct old and new policy).
const (
	maxLists = 64
	maxPlans = 64
)

// rulesHash hashes what slices.Equal compares of rules: a cheap mix that
// finds the candidate slices.Equal then checks.
func rulesHash(rules []Rule) uint64 {
	const prime = 0x100000001b3
	h := uint64(0xcbf29ce484222325)
	for i := range rules {
		hi, lo := ruleOrder(&rules[i])
		h = (h ^ hi) * prime
		h = (h ^ lo ^ uint64(rules[i].Key.EndpointID)<<48) * prime
	}
	return h
}

// plan returns the plan from one list to another, computed once for every
// endpoint making the same change.
func (m *Maps) plan(from, to *ruleList) *entryPlan {
	if from != nil && (!from.sorted || !to.sorted) {
		from = nil // written whole, whatever it was
	}
	c := listChange{from, to}
	if p, ok := m.plans[c]; ok {
		return p
	}
	if len(m.plans) >= maxPlans {
		clear(m.plans)
	}
	p := newPlan(from, to)
	m.plans[c] = p
	return p
}

func newPlan(from, to *ruleList) *entryPlan {
	p := &entryPlan{}
	if from == nil {
		p.whole = true
		p.want, p.err = allEntries(to.rules)
		return p
	}
	groups, affected := changedGroups(from.rules, to.rules)
	switch {
	case len(groups) == 0:
		p.none = true
	case 2*affected <= len(from.rules)+len(to.rules):
		p.want, p.maybe, p.err = groupEntries(from.rules, to.rules, groups)
	default:
		p.whole = true
		p.want, p.err = allEntries(to.rules)
	}
	return p
}

// forEndpoint returns k (EndpointId 0) as endpoint id's key.
func forEndpoint(k policyPolicyKey, id EndpointID) policyPolicyKey {
	k.EndpointId = uint16(id)
	return k
}

// anyEndpoint returns endpoint k with EndpointId 0.
func anyEndpoint(k policyPolicyKey) policyPolicyKey {
	k.EndpointId = 0
	return k
}
