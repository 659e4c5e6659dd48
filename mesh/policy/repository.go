package policy

import (
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Repository resolves endpoints' policies across changes with work in
// proportion to the change (Cilium's policy repository and selector cache,
// in small):
//
//   - Each distinct peer selector is matched against the identities
//     once, and again only after the identities changed: its matches
//     serve every rule with the same (scoped) selector.
//   - Update compiles only the rules that changed since the last Update
//     (by policy and rule index, compared by content), and, when
//     identities came, went or changed (a new pod's, a label change),
//     the rules whose peers can include one of them as it was or is now
//     (a peer selector matches it; the cluster entity and egress named
//     ports depend on every identity). Every rule is compiled again when
//     the rest of what rules are compiled against changed: the CIDR
//     identities, the learned DNS names or the configuration.
//   - Resolve returns the Result last built for the same compilations of
//     the rules selecting the endpoint and the same named ports (all a
//     Result depends on: endpoints alike share it); otherwise it merges
//     the rules' expansions, each computed once per compilation and set of
//     named ports (all an expansion depends on), whichever endpoints share
//     it. Where only plain allow and deny entries changed since the
//     endpoint's previous Result (no redirect, no authentication, no entry
//     for the local host) and they are the fewer, it merges again only the
//     keys the changed rules have entries for, and keeps the others.
//
// Its Results equal those of New(...).Resolve on the same input. It is not
// safe for concurrent use: one loop owns it. Results are shared between
// calls: do not modify them.
type Repository struct {
	cur   *Resolver
	rules map[ruleRef]cachedRule
	// results are the last Results, by the versions of the rules
	// selecting the endpoint and its named ports (all a Result depends
	// on under one input: endpoints with the same rules and named ports
	// share it); last is each endpoint's, by identity, namespace, labels
	// and named ports. pass counts Updates, so those no Resolve asked for
	// since the previous Update are dropped.
	results map[string]*cachedResult
	last    map[string]lastResult
	// expansions are the rules' expansions, by compilation and the
	// endpoint's named ports.
	expansions map[expansionKey]expansion
	// retired are the expansions of the compilations the last Update
	// replaced: Results built with them are patched by key.
	retired map[expansionKey]expansion
	pass    uint64
	next    uint64 // the last compilation's version
	stats   Stats
	// subjects are whether an endpoint selector (compiledRule.subjectKey)
	// selects endpoints with labels (their scoped labels' Key): neither
	// depends on anything else.
	subjects map[subjectMatch]bool
}

type subjectMatch struct{ subject, labels string }

// maxSubjects bounds subjects (those of endpoints or rules gone stay).
const maxSubjects = 1 << 16

// Stats counts a Repository's work since it was made.
type Stats struct {
	// Compiled counts rules compiled.
	Compiled int
	// Resolved counts Results built, Expanded the rules expanded for them
	// (an expansion serves every endpoint with the same named ports
	// while its rule is unchanged); Reused counts Results returned as
	// they were. Patched counts the Results built by merging again only
	// the keys of the rules that changed (among Resolved).
	Resolved, Expanded, Reused, Patched int
}

// maxPeerMatches bounds the peer selector matches kept across Updates
// (selectors of rules long gone stay until the identities change).
const maxPeerMatches = 1 << 14

type ruleRef struct {
	policy string // Kind, namespace and name (Policy.String)
	index  int
}

type cachedRule struct {
	rule Rule
	c    compiledRule
}

type lastResult struct {
	key  string // in results
	used uint64
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
	return &Repository{rules: map[ruleRef]cachedRule{}, results: map[string]*cachedResult{}, last: map[string]lastResult{}, expansions: map[expansionKey]expansion{}, subjects: map[subjectMatch]bool{}}
}

// Stats returns the work done so far.
func (r *Repository) Stats() Stats { return r.stats }

// Update makes policies, ids and cfg the current input and returns its
// Resolver (New(policies, ids, cfg), with the unchanged rules' compilations
// kept from the previous Update).
func (r *Repository) Update(policies []Policy, ids IdentitySet, cfg Config) *Resolver {
	res := newResolver(policies, ids, cfg)
	var changed []identity.Labels
	switch {
	case r.cur == nil || !sameInput(r.cur, res):
		clear(r.rules)
		clear(r.results)
		clear(r.last)
		clear(r.expansions)
	default:
		// Identities came, went or changed: compile again only the
		// rules that depend on one of them (as it was or is now).
		changed = changedIdentities(r.cur.ids, res.ids)
		// The same identities: a peer selector matches the same ones.
		if len(changed) == 0 && len(r.cur.peerMatches) <= maxPeerMatches {
			res.peerMatches = r.cur.peerMatches
		}
	}
	rules := make(map[ruleRef]cachedRule, len(r.rules))
	for _, p := range policies {
		name := p.String()
		for i, rule := range p.Rules {
			ref := ruleRef{name, i}
			c, ok := r.rules[ref]
			switch {
			case !ok || !reflect.DeepEqual(c.rule, rule):
				r.next++
				r.stats.Compiled++
				c = cachedRule{rule: rule, c: res.compileRule(p, i, rule)}
				c.c.version = r.next
			case len(changed) > 0 && slices.ContainsFunc(changed, c.c.idDeps.dependsOn):
				r.next++
				r.stats.Compiled++
				c.c = res.recompilePeers(p, rule, c.c, changed)
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
	r.retired = map[expansionKey]expansion{}
	for k, x := range r.expansions {
		if !current[k.version] {
			r.retired[k] = x
			delete(r.expansions, k)
		}
	}
	for k, c := range r.results {
		if c.used != r.pass {
			delete(r.results, k)
		}
	}
	for k, l := range r.last {
		if l.used != r.pass {
			delete(r.last, k)
		}
	}
	r.pass++
	r.cur = res
	return res
}

// Resolve returns ep's Result under the last Update's input.
func (r *Repository) Resolve(ep Endpoint) Result {
	rules := r.selected(ep)
	versions := make([]uint64, len(rules))
	for i, rule := range rules {
		versions[i] = rule.version
	}
	ports := namedPortsKey(ep)
	var kb strings.Builder
	for _, v := range versions {
		kb.WriteString(strconv.FormatUint(v, 10))
		kb.WriteByte(',')
	}
	kb.WriteString(ports)
	key := kb.String()
	epKey := strconv.FormatUint(uint64(ep.Identity), 10) + "|" + ep.Namespace + "|" + ep.Labels.Key() + ports
	prev, hadPrev := r.last[epKey]
	r.last[epKey] = lastResult{key: key, used: r.pass}
	if c := r.results[key]; c != nil {
		c.used = r.pass
		r.stats.Reused++
		return c.result
	}
	// The endpoint's previous Result, to patch.
	var c *cachedResult
	if hadPrev {
		c = r.results[prev.key]
	}
	r.stats.Resolved++
	expand := func(rule *compiledRule) expansion {
		k := expansionKey{rule.version, ports}
		x, ok := r.expansions[k]
		if !ok {
			r.stats.Expanded++
			x = r.cur.expandRule(ep, rule)
			r.expansions[k] = x
		}
		return x
	}
	var res Result
	patched := false
	if c != nil {
		res, patched = r.patch(c.result, c.versions, rules, ports, expand)
	}
	if patched {
		r.stats.Patched++
	} else {
		res = r.cur.resolve(ep, rules, expand)
	}
	r.results[key] = &cachedResult{versions: versions, result: res, used: r.pass}
	return res
}

// selected is r.cur.selected(ep), each rule's subject matched against
// the endpoint's labels once.
func (r *Repository) selected(ep Endpoint) []*compiledRule {
	labels := scopedLabels(ep)
	key := labels.Key()
	if len(r.subjects) > maxSubjects {
		clear(r.subjects)
	}
	var out []*compiledRule
	for i := range r.cur.rules {
		c := &r.cur.rules[i]
		k := subjectMatch{c.subjectKey, key}
		m, ok := r.subjects[k]
		if !ok {
			m = c.subject.matches(labels)
			r.subjects[k] = m
		}
		if m {
			out = append(out, c)
		}
	}
	return out
}

// patch rebuilds prev, the Result of the rules of versions prevVersions,
// for rules: where the rules that left or came have only plain allow and
// deny entries (no redirect, no authentication, none for the local host:
// nothing the host's exemption, L7 or DNS rules depend on) and the
// enforced directions stay, only the keys they have entries for are merged
// again. It reports false where it cannot.
func (r *Repository) patch(prev Result, prevVersions []uint64, rules []*compiledRule, ports string, expand func(*compiledRule) expansion) (Result, bool) {
	if prev.L7 != nil || prev.DNS != nil {
		return Result{}, false
	}
	var res Result
	for _, rule := range rules {
		res.EnforceIngress = res.EnforceIngress || rule.enforceIngress
		res.EnforceEgress = res.EnforceEgress || rule.enforceEgress
	}
	if res.EnforceIngress != prev.EnforceIngress || res.EnforceEgress != prev.EnforceEgress {
		return Result{}, false
	}
	now := make(map[uint64]bool, len(rules))
	for _, rule := range rules {
		now[rule.version] = true
	}
	before := make(map[uint64]bool, len(prevVersions))
	var changed []expansion
	for _, v := range prevVersions {
		before[v] = true
		if now[v] {
			continue
		}
		x, ok := r.retired[expansionKey{v, ports}]
		if !ok {
			x, ok = r.expansions[expansionKey{v, ports}]
		}
		if !ok {
			return Result{}, false
		}
		changed = append(changed, x)
	}
	xs := make([]expansion, len(rules))
	for i, rule := range rules {
		xs[i] = expand(rule)
		if !before[rule.version] {
			changed = append(changed, xs[i])
		}
	}
	// Where the changed rules hold most of the entries (an identity
	// many rules select), merging all again costs less.
	nChanged, nAll := 0, 0
	for i, rule := range rules {
		nAll += len(xs[i].contribs)
		if !before[rule.version] {
			nChanged += len(xs[i].contribs)
		}
	}
	if 2*nChanged > nAll {
		return Result{}, false
	}
	touched := map[ruleKey]bool{}
	for _, x := range changed {
		for _, c := range x.contribs {
			if c.verdict == Redirect || c.auth || c.authFail || c.key.remote == identity.Host {
				return Result{}, false
			}
			touched[c.key] = true
		}
	}
	// The contributions to the touched keys, in the order a full build
	// takes them (the host's exemption has none: its keys are the host's).
	b := builder{r: r.cur}
	for _, x := range xs {
		for _, c := range x.contribs {
			if touched[c.key] {
				b.contribs = append(b.contribs, c)
			}
		}
		b.problems = append(b.problems, x.problems...)
		res.FQDNSelectors = append(res.FQDNSelectors, x.fqdns...)
	}
	fresh := b.merge()
	res.Rules = make([]DatapathRule, 0, len(prev.Rules)+len(fresh))
	i := 0
	for _, d := range prev.Rules {
		if touched[d.key()] {
			continue
		}
		for i < len(fresh) && compareKeys(fresh[i].key(), d.key()) < 0 {
			res.Rules = append(res.Rules, fresh[i])
			i++
		}
		res.Rules = append(res.Rules, d)
	}
	res.Rules = append(res.Rules, fresh[i:]...)
	if len(res.Rules) == 0 {
		res.Rules = nil
	}
	slices.SortFunc(res.FQDNSelectors, compareFQDN)
	res.FQDNSelectors = slices.Compact(res.FQDNSelectors)
	res.CIDRIdentities = prev.CIDRIdentities // the same input: the same identities
	res.Problems = dedupErrors(b.problems)
	return res, true
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
// rules and identities aside: see changedIdentities).
func sameInput(a, b *Resolver) bool {
	return a.cfg == b.cfg &&
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

// changedIdentities returns the labels of the identities that differ
// between a and b (both sorted by ID): those added, removed, or with other
// labels or named ports (both their labels, then).
func changedIdentities(a, b []Identity) []identity.Labels {
	var out []identity.Labels
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || i < len(a) && a[i].ID < b[j].ID:
			out = append(out, a[i].Labels)
			i++
		case i == len(a) || b[j].ID < a[i].ID:
			out = append(out, b[j].Labels)
			j++
		default:
			if !sameIdentity(a[i], b[j]) {
				out = append(out, a[i].Labels, b[j].Labels)
			}
			i++
			j++
		}
	}
	return out
}
