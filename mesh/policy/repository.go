package policy

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Repository resolves endpoints' policies across changes with work in
// proportion to the change (Cilium's policy repository and selector cache,
// in small):
//
//   - Update compiles only the rules that changed since the last Update
//     (by policy and rule index, compared by content); every rule is
//     compiled again when what rules are compiled against changed: the
//     identities (a new pod's, a label change), the CIDR identities, the
//     learned DNS names or the configuration.
//   - Resolve returns an endpoint's last Result while the rules selecting
//     it are the same compilations (and the endpoint the same: identity,
//     labels, namespace, named ports); otherwise it merges the rules'
//     expansions, each computed once per compilation and set of named
//     ports (all an expansion depends on), whichever endpoints share it.
//
// Its Results equal those of New(...).Resolve on the same input. It is not
// safe for concurrent use: one loop owns it. Results are shared between
// calls: do not modify them.
type Repository struct {
	cur   *Resolver
	rules map[ruleRef]cachedRule
	// results are the endpoints' last Results, by endpointKey; pass
	// counts Updates, so those no Resolve asked for since the previous
	// Update are dropped.
	results map[string]*cachedResult
	// expansions are the rules' expansions, by compilation and the
	// endpoint's named ports.
	expansions map[expansionKey]expansion
	pass       uint64
	next       uint64 // the last compilation's version
	stats      Stats
}

// Stats counts a Repository's work since it was made.
type Stats struct {
	// Compiled counts rules compiled.
	Compiled int
	// Resolved counts Results built, Expanded the rules expanded for them
	// (an expansion serves every endpoint with the same named ports
	// while its rule is unchanged); Reused counts Results returned as
	// they were.
	Resolved, Expanded, Reused int
}

type ruleRef struct {
	policy string // Kind, namespace and name (Policy.String)
	index  int
}

type cachedRule struct {
	rule Rule
	c    compiledRule
}

type cachedResult struct {
	versions []uint64 // of the rules selecting the endpoint, in order
	result   Result
	used     uint64 // the pass that last asked for it
}

type expansionKey struct {
	version    uint64
	namedPorts string
}

// NewRepository returns an empty Repository; call Update before Resolve.
func NewRepository() *Repository {
	return &Repository{rules: map[ruleRef]cachedRule{}, results: map[string]*cachedResult{}, expansions: map[expansionKey]expansion{}}
}

// Stats returns the work done so far.
func (r *Repository) Stats() Stats { return r.stats }

// Update makes policies, ids and cfg the current input and returns its
// Resolver (New(policies, ids, cfg), with the unchanged rules' compilations
// kept from the previous Update).
func (r *Repository) Update(policies []Policy, ids IdentitySet, cfg Config) *Resolver {
	res := newResolver(policies, ids, cfg)
	if r.cur == nil || !sameInput(r.cur, res) {
		clear(r.rules)
		clear(r.results)
		clear(r.expansions)
	}
	rules := make(map[ruleRef]cachedRule, len(r.rules))
	for _, p := range policies {
		name := p.String()
		for i, rule := range p.Rules {
			ref := ruleRef{name, i}
			c, ok := r.rules[ref]
			if !ok || !reflect.DeepEqual(c.rule, rule) {
				r.next++
				r.stats.Compiled++
				c = cachedRule{rule: rule, c: res.compileRule(p, i, rule)}
				c.c.version = r.next
			}
			rules[ref] = c
			res.add(c.c)
		}
	}
	r.rules = rules
	current := make(map[uint64]bool, len(rules))
	for _, c := range rules {
		current[c.c.version] = true
	}
	for k := range r.expansions {
		if !current[k.version] {
			delete(r.expansions, k)
		}
	}
	for k, c := range r.results {
		if c.used != r.pass {
			delete(r.results, k)
		}
	}
	r.pass++
	r.cur = res
	return res
}

// Resolve returns ep's Result under the last Update's input.
func (r *Repository) Resolve(ep Endpoint) Result {
	rules := r.cur.selected(ep)
	versions := make([]uint64, len(rules))
	for i, rule := range rules {
		versions[i] = rule.version
	}
	ports := namedPortsKey(ep)
	key := strconv.FormatUint(uint64(ep.Identity), 10) + "|" + ep.Namespace + "|" + ep.Labels.Key() + ports
	c := r.results[key]
	if c != nil && slices.Equal(c.versions, versions) {
		c.used = r.pass
		r.stats.Reused++
		return c.result
	}
	r.stats.Resolved++
	res := r.cur.resolve(ep, rules, func(rule *compiledRule) expansion {
		k := expansionKey{rule.version, ports}
		x, ok := r.expansions[k]
		if !ok {
			r.stats.Expanded++
			x = r.cur.expandRule(ep, rule)
			r.expansions[k] = x
		}
		return x
	})
	r.results[key] = &cachedResult{versions: versions, result: res, used: r.pass}
	return res
}

// namedPortsKey is ep's named ports, all its rules' expansions depend on.
func namedPortsKey(ep Endpoint) string {
	var b strings.Builder
	for _, n := range slices.Sorted(maps.Keys(ep.NamedPorts)) {
		np := ep.NamedPorts[n]
		b.WriteString("|" + n + "=" + strconv.Itoa(int(np.Port)) + "/" + strconv.Itoa(int(np.Proto)))
	}
	return b.String()
}

// sameInput reports whether rules compile the same against a and b (their
// rules aside).
func sameInput(a, b *Resolver) bool {
	return a.cfg == b.cfg &&
		slices.EqualFunc(a.ids, b.ids, sameIdentity) &&
		slices.Equal(a.cidrs, b.cidrs) &&
		slices.EqualFunc(a.names, b.names, func(x, y LearnedName) bool {
			return x.Name == y.Name && x.Learned.Equal(y.Learned) && slices.Equal(x.IPs, y.IPs)
		}) &&
		maps.EqualFunc(a.fqdnSince, b.fqdnSince, time.Time.Equal)
}

func sameIdentity(a, b Identity) bool {
	return a.ID == b.ID && maps.Equal(a.Labels, b.Labels) &&
		maps.EqualFunc(a.NamedPorts, b.NamedPorts, slices.Equal[[]NamedPort])
}
