package policy

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// Resolver holds policies compiled against a set of identities: selectors
// resolved to identity sets, CIDR identities allocated. It is immutable and
// safe for concurrent use; build a new one when policies or identities
// change.
type Resolver struct {
	cfg   Config
	ids   []Identity // by ID
	cidrs []CIDRIdentity
	// names are the learned DNS names, cidrByPrefix the CIDR identities.
	names        []LearnedName
	fqdnSince    map[string]time.Time
	cidrByPrefix map[netip.Prefix]identity.ID
	rules        []compiledRule
	problems     []error
	// peerMatches are the identities of ids each scoped peer selector
	// (by matcher.key) matches: one selector, many rules. A Repository
	// hands them to the next Resolver while the identities are the same.
	peerMatches map[string][]identity.ID
}

type compiledRule struct {
	subject        matcher
	subjectKey     string // subject.key()
	enforceIngress bool
	enforceEgress  bool
	peerRules      []compiledPeerRule
	problems       []error // reported with the endpoints the rule selects
	// ruleProblems are reported by Problems; an unusable rule (an invalid
	// endpoint selector) selects nothing and is left out.
	ruleProblems []error
	unusable     bool
	// version names this compilation in a Repository (0: none), which
	// keeps what endpoints got from it while it is unchanged.
	version uint64
	// idDeps is what of the identity set the compilation and its
	// expansions depend on.
	idDeps identityDeps
}

// identityDeps is what of the identity set a compiled rule depends on:
// the identities its peer selectors match, or (all) every identity.
type identityDeps struct {
	// peers are the rule's peer selectors, scoped as compiled.
	peers []matcher
	// all: the rule depends on every identity (the cluster entity, or
	// an egress named port, resolved against the peers' named ports).
	all bool
}

// dependsOn reports whether an identity with labels l (as it was or is
// now) can change what the rule compiles or expands to.
func (d *identityDeps) dependsOn(l identity.Labels) bool {
	if d.all {
		return true
	}
	for _, m := range d.peers {
		if m.matches(l) {
			return true
		}
	}
	return false
}

type compiledPeerRule struct {
	origin string
	dir    Direction
	deny   bool
	peers  []identity.ID // sorted, unique; [0] is every peer
	ports  []PortRule
	auth   bool
	fqdns  []FQDN
	// authFail: authentication never succeeds (test-always-fail).
	authFail bool
	// idDeps is what of the identity set peers depends on.
	idDeps identityDeps
}

// Resolve is New(policies, ids, cfg).Resolve(ep).
func Resolve(ep Endpoint, policies []Policy, ids IdentitySet, cfg Config) Result {
	return New(policies, ids, cfg).Resolve(ep)
}

// New compiles policies against identities. Every policy counts for the CIDR
// identities, even those selecting no endpoint of the node, so all Results
// agree on them.
func New(policies []Policy, ids IdentitySet, cfg Config) *Resolver {
	r := newResolver(policies, ids, cfg)
	for _, p := range policies {
		for i, rule := range p.Rules {
			r.add(r.compileRule(p, i, rule))
		}
	}
	return r
}

// newResolver is a Resolver without rules: the identities, the CIDR
// identities and the learned names the rules are compiled against.
func newResolver(policies []Policy, ids IdentitySet, cfg Config) *Resolver {
	r := &Resolver{cfg: cfg, ids: slices.Clone(ids.Identities), names: slices.Clone(ids.Names), fqdnSince: ids.FQDNSince, peerMatches: map[string][]identity.ID{}}
	slices.SortFunc(r.ids, func(a, b Identity) int { return cmp.Compare(a.ID, b.ID) })

	var prefixes []netip.Prefix
	for _, p := range policies {
		for _, rule := range p.Rules {
			for _, list := range [][]PeerRule{rule.Ingress, rule.IngressDeny, rule.Egress, rule.EgressDeny} {
				for _, pr := range list {
					for _, c := range pr.CIDRs {
						prefixes = append(prefixes, c.CIDR)
						prefixes = append(prefixes, c.Except...)
					}
				}
			}
		}
	}
	prefixes = append(prefixes, fqdnPrefixes(policies, ids.Names, ids.FQDNSince)...)
	r.cidrs = allocateCIDRs(prefixes, ids.CIDRs)
	r.cidrByPrefix = make(map[netip.Prefix]identity.ID, len(r.cidrs))
	for _, c := range r.cidrs {
		r.cidrByPrefix[c.Prefix] = c.ID
	}
	return r
}

// add appends a compiled rule (or, for an unusable one, its problems).
func (r *Resolver) add(c compiledRule) {
	r.problems = append(r.problems, c.ruleProblems...)
	if !c.unusable {
		r.rules = append(r.rules, c)
	}
}

// Problems returns what made rules unusable as a whole (e.g. an invalid
// endpoint selector): they select no endpoint, so no Result reports them.
func (r *Resolver) Problems() []error { return slices.Clone(r.problems) }

// CIDRIdentities returns the node's CIDR identities, sorted by prefix.
func (r *Resolver) CIDRIdentities() []CIDRIdentity { return slices.Clone(r.cidrs) }

// compileRule compiles rule i of p.
func (r *Resolver) compileRule(p Policy, i int, rule Rule) compiledRule {
	origin := fmt.Sprintf("%s rules[%d]", p, i)
	subject, err := compileSelector(rule.EndpointSelector)
	if err != nil {
		return compiledRule{unusable: true, ruleProblems: []error{fmt.Errorf("%s: endpointSelector: %w", origin, err)}}
	}
	c := compiledRule{
		enforceIngress: len(rule.Ingress)+len(rule.IngressDeny) > 0,
		enforceEgress:  len(rule.Egress)+len(rule.EgressDeny) > 0,
	}
	c.subject, err = scopeSubject(subject, p.Namespace)
	c.subjectKey = c.subject.key()
	if err != nil {
		c.ruleProblems = append(c.ruleProblems, fmt.Errorf("%s: %w", origin, err))
	}
	for _, l := range []struct {
		name string
		dir  Direction
		deny bool
		list []PeerRule
	}{
		{"ingress", Ingress, false, rule.Ingress},
		{"ingressDeny", Ingress, true, rule.IngressDeny},
		{"egress", Egress, false, rule.Egress},
		{"egressDeny", Egress, true, rule.EgressDeny},
	} {
		for j, pr := range l.list {
			o := fmt.Sprintf("%s %s[%d]", origin, l.name, j)
			peers, matchers, problems := r.peers(p, pr)
			deps := identityDeps{peers: matchers, all: slices.Contains(pr.Entities, EntityCluster) ||
				l.dir == Egress && !l.deny && hasNamedPort(pr.ToPorts)}
			c.idDeps.peers = append(c.idDeps.peers, matchers...)
			c.idDeps.all = c.idDeps.all || deps.all
			for _, err := range problems {
				c.problems = append(c.problems, fmt.Errorf("%s: %w", o, err))
			}
			if pr.AuthRequired && !l.deny && !r.cfg.MutualAuth {
				c.problems = append(c.problems, fmt.Errorf("%s: %w", o, errAuthUnavailable))
			}
			c.peerRules = append(c.peerRules, compiledPeerRule{
				origin: o, dir: l.dir, deny: l.deny, peers: peers, ports: pr.ToPorts, auth: pr.AuthRequired, fqdns: pr.FQDNs,
				authFail: pr.AuthRequired && pr.AuthAlwaysFail, idDeps: deps,
			})
		}
	}
	return c
}

// recompilePeers returns old, the compilation of rule i of p against
// other identities, compiled against r's: the peers of the peer rules
// that depend on one of the identities that changed (changed: their
// labels as they were and are) are resolved again, the rest is kept
// (nothing else of a compilation depends on the identities).
func (r *Resolver) recompilePeers(p Policy, rule Rule, old compiledRule, changed []identity.Labels) compiledRule {
	c := old
	c.version = 0
	c.peerRules = slices.Clone(old.peerRules)
	n := 0
	for _, list := range [][]PeerRule{rule.Ingress, rule.IngressDeny, rule.Egress, rule.EgressDeny} {
		for _, pr := range list {
			cp := &c.peerRules[n]
			n++
			if slices.ContainsFunc(changed, cp.idDeps.dependsOn) {
				cp.peers, _, _ = r.peers(p, pr)
			}
		}
	}
	return c
}

// errAuthUnavailable is reported for every allow rule that requires
// authentication where the cluster runs without mutual authentication: the
// datapath drops what such entries match.
var errAuthUnavailable = errors.New(`authentication: mutual authentication is off in this cluster (authentication.mutual.enabled): ` +
	`the traffic this rule allows is dropped ("Authentication required")`)

// reservedInCluster returns the reserved identities the cluster entity
// includes.
func reservedInCluster() []identity.ID {
	return []identity.ID{identity.Host, identity.Unmanaged, identity.Health, identity.Init, identity.RemoteNode, identity.KubeAPIServer, identity.Ingress}
}

// hasNamedPort reports whether a port of ports is given by name.
func hasNamedPort(ports []PortRule) bool {
	for _, pr := range ports {
		for _, p := range pr.Ports {
			if p.Name != "" {
				return true
			}
		}
	}
	return false
}

// peers resolves a peer rule's peers to identities; it also returns the
// (scoped) selectors that matched them among the identities.
func (r *Resolver) peers(p Policy, pr PeerRule) ([]identity.ID, []matcher, []error) {
	namespace := p.Namespace
	var ids []identity.ID
	var matchers []matcher
	var problems []error
	for i, s := range pr.Endpoints {
		m, err := compileSelector(s)
		if err != nil {
			problems = append(problems, fmt.Errorf("endpoints[%d]: %w (matches no peer)", i, err))
			continue
		}
		m = scopePeer(m, namespace)
		matchers = append(matchers, m)
		ids = append(ids, r.matchPeers(m)...)
	}
	for _, e := range pr.Entities {
		switch e {
		case EntityAll:
			ids = append(ids, 0)
		case EntityWorld:
			ids = append(ids, identity.World)
			for _, c := range r.cidrs {
				ids = append(ids, c.ID)
			}
		case EntityCluster:
			ids = append(ids, reservedInCluster()...)
			for _, id := range r.ids {
				if id.ID != identity.World && id.ID < MinCIDRIdentity {
					ids = append(ids, id.ID)
				}
			}
		case EntityHost:
			ids = append(ids, identity.Host)
		case EntityRemoteNode:
			ids = append(ids, identity.RemoteNode)
		case EntityKubeAPIServer:
			ids = append(ids, identity.KubeAPIServer)
		case EntityHealth:
			ids = append(ids, identity.Health)
		case EntityInit:
			ids = append(ids, identity.Init)
		case EntityUnmanaged:
			ids = append(ids, identity.Unmanaged)
		case EntityIngress:
			ids = append(ids, identity.Ingress)
		default:
			problems = append(problems, fmt.Errorf("unknown entity %q (matches no peer)", e))
		}
	}
	for i, c := range pr.CIDRs {
		if !c.CIDR.IsValid() {
			problems = append(problems, fmt.Errorf("cidrs[%d]: invalid prefix (matches no peer)", i))
			continue
		}
		ids = append(ids, cidrPeers(c, r.cidrs)...)
	}
	fq, fqProblems := r.fqdnPeers(p, pr.FQDNs)
	ids = append(ids, fq...)
	problems = append(problems, fqProblems...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > 0 && ids[0] == 0 {
		ids = ids[:1] // every peer
	}
	return ids, matchers, problems
}

// matchPeers returns the identities m matches, in ID order.
func (r *Resolver) matchPeers(m matcher) []identity.ID {
	key := m.key()
	if ids, ok := r.peerMatches[key]; ok {
		return ids
	}
	var ids []identity.ID
	for _, id := range r.ids {
		if m.matches(id.Labels) {
			ids = append(ids, id.ID)
		}
	}
	ids = slices.Clip(ids) // callers append to what they get
	r.peerMatches[key] = ids
	return ids
}

// Resolve returns the endpoint's datapath rules:
//   - A direction is enforced when a rule selecting the endpoint has an
//     entry for it (allow or deny, even one without peers); only enforced
//     directions get rules. Ingress from the local host is then allowed
//     unless Config.EnforceHostIngress.
//   - Each peer rule gives one entry per (peer identity, port): identity 0
//     for every peer, proto Any with port 0 for every protocol and port.
//     Named ports resolve against the endpoint (ingress) or each peer
//     identity's named ports (egress; every known identity for a rule
//     matching every peer); what does not resolve is reported and skipped.
//   - HTTP rules make the entries Redirect to Config.ProxyPort and add L7
//     rules (see L7Rule), including "every request" for peers an allow
//     lets through on a redirected port (Cilium's L7 wildcarding).
//   - Entries with the same key merge: deny beats redirect beats allow;
//     authentication is required if any allow requires it (never on deny).
//   - toFQDNs match the CIDR identities of the addresses learned for the
//     names they select (see fqdn.go); DNS rules make the entries Redirect
//     to Config.DNSProxyPort and add DNS rules (Result.DNS), with the same
//     wildcarding as HTTP. Without a DNS proxy port, DNS rules are reported
//     and their ports allowed for every name.
//   - Not enforced yet, and reported: authentication (the entries are
//     flagged, and the datapath drops what they match).
//
// Everything is sorted, so equal inputs give equal Results.
func (r *Resolver) Resolve(ep Endpoint) Result {
	return r.resolve(ep, r.selected(ep), func(rule *compiledRule) expansion { return r.expandRule(ep, rule) })
}

// scopedLabels are the labels rules select ep by: its own, with the
// namespace label taken from Namespace if missing.
func scopedLabels(ep Endpoint) identity.Labels {
	labels := ep.Labels
	if _, ok := labels[identity.NamespaceLabel]; !ok && ep.Namespace != "" {
		labels = identity.Labels{identity.NamespaceLabel: ep.Namespace}
		for k, v := range ep.Labels {
			labels[k] = v
		}
	}
	return labels
}

// selected returns the rules selecting ep, in order.
func (r *Resolver) selected(ep Endpoint) []*compiledRule {
	labels := scopedLabels(ep)
	var out []*compiledRule
	for i := range r.rules {
		if r.rules[i].subject.matches(labels) {
			out = append(out, &r.rules[i])
		}
	}
	return out
}

// expansion is what one compiled rule gives one endpoint.
type expansion struct {
	contribs []contrib
	problems []error
	fqdns    []FQDN // toFQDNs selectors of its egress allows
}

// expandRule returns what rule gives ep.
func (r *Resolver) expandRule(ep Endpoint, rule *compiledRule) expansion {
	b := builder{r: r, ep: ep}
	b.problems = append(b.problems, rule.problems...)
	var x expansion
	for _, pr := range rule.peerRules {
		b.expand(pr)
		if pr.dir == Egress && !pr.deny {
			x.fqdns = append(x.fqdns, pr.fqdns...)
		}
	}
	x.contribs, x.problems = b.contribs, b.problems
	return x
}

// resolve builds ep's Result from the rules selecting it, expanded by
// expand.
func (r *Resolver) resolve(ep Endpoint, rules []*compiledRule, expand func(*compiledRule) expansion) Result {
	b := builder{r: r, ep: ep}
	var res Result
	xs := make([]expansion, len(rules))
	n := 1 // the local host's exemption
	for i, rule := range rules {
		xs[i] = expand(rule)
		n += len(xs[i].contribs)
	}
	b.contribs = make([]contrib, 0, n)
	for i, rule := range rules {
		res.EnforceIngress = res.EnforceIngress || rule.enforceIngress
		res.EnforceEgress = res.EnforceEgress || rule.enforceEgress
		b.contribs = append(b.contribs, xs[i].contribs...)
		b.problems = append(b.problems, xs[i].problems...)
		res.FQDNSelectors = append(res.FQDNSelectors, xs[i].fqdns...)
	}
	if res.EnforceIngress && !r.cfg.EnforceHostIngress {
		b.add(contrib{
			key:     ruleKey{dir: Ingress, remote: identity.Host},
			verdict: Allow,
			origin:  hostExemptOrigin,
		})
		// Ports requiring authentication are not open to the node's own
		// processes: they cannot authenticate as a workload. A rule that
		// allows the host on the ports without authentication (e.g. for
		// kubelet probes) keeps them open to it.
		for i, n := 0, len(b.contribs); i < n; i++ {
			c := b.contribs[i]
			if c.key.dir == Ingress && c.auth && !c.authFail && c.verdict != Deny && c.key.remote != identity.Host &&
				!b.hostAllowed(c.key) {
				b.add(contrib{
					key:     ruleKey{dir: Ingress, remote: identity.Host, proto: c.key.proto, port: c.key.port, endPort: c.key.endPort},
					verdict: Allow, auth: true,
					origin: "authentication required: the local host is not exempt",
				})
			}
		}
	}
	res.Rules = b.merge()
	res.L7 = b.l7()
	res.DNS = b.dnsRules()
	slices.SortFunc(res.FQDNSelectors, compareFQDN)
	res.FQDNSelectors = slices.Compact(res.FQDNSelectors)
	res.CIDRIdentities = slices.Clone(r.cidrs)
	res.Problems = dedupErrors(b.problems)
	return res
}

func compareFQDN(a, b FQDN) int {
	return cmp.Or(strings.Compare(a.MatchName, b.MatchName), strings.Compare(a.MatchPattern, b.MatchPattern))
}

func dedupErrors(errs []error) []error {
	if len(errs) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var out []error
	for _, e := range errs {
		if !seen[e.Error()] {
			seen[e.Error()] = true
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return out
}

// ruleKey is a datapath key (without the endpoint).
type ruleKey struct {
	dir     Direction
	remote  identity.ID
	proto   Proto
	port    uint16
	endPort uint16
}

// contrib is one rule's contribution to a key, before merging.
type contrib struct {
	key      ruleKey
	verdict  Verdict
	auth     bool
	authFail bool
	http     []HTTPRule // Redirect only
	dns      []FQDN     // Redirect to the DNS proxy only
	// proxyPort is the port of a Redirect.
	proxyPort uint16
	origin    string
}

type builder struct {
	r        *Resolver
	ep       Endpoint
	contribs []contrib
	problems []error
}

func (b *builder) add(c contrib) { b.contribs = append(b.contribs, c) }

// hostAllowed reports whether a rule allows the local host into every port
// of k without authentication.
// hostExemptOrigin is the origin of the local host's implicit allow.
const hostExemptOrigin = "configuration (enforceHostIngress false) allows the local host"

func (b *builder) hostAllowed(k ruleKey) bool {
	lo, hi := portRange(k)
	for _, c := range b.contribs {
		if c.key.dir != Ingress || c.key.remote != identity.Host || c.auth || c.verdict != Allow ||
			c.origin == hostExemptOrigin || c.key.proto != Any && c.key.proto != k.proto {
			continue
		}
		if clo, chi := portRange(c.key); clo <= lo && hi <= chi {
			return true
		}
	}
	return false
}

func (b *builder) problem(origin, format string, args ...any) {
	b.problems = append(b.problems, fmt.Errorf("%s: %s", origin, fmt.Sprintf(format, args...)))
}

// expand adds a peer rule's contributions for the endpoint.
func (b *builder) expand(pr compiledPeerRule) {
	if len(pr.peers) == 0 {
		return
	}
	verdict := Allow
	if pr.deny {
		verdict = Deny
	}
	c := contrib{verdict: verdict, auth: pr.auth && !pr.deny, authFail: pr.authFail && !pr.deny, origin: pr.origin}
	if len(pr.ports) == 0 {
		for _, id := range pr.peers {
			c.key = ruleKey{dir: pr.dir, remote: id}
			b.add(c)
		}
		return
	}
	for j, portRule := range pr.ports {
		where := fmt.Sprintf("%s.toPorts[%d]", pr.origin, j)
		if len(portRule.Ports) == 0 {
			b.problem(where, "no ports: matches no traffic")
			continue
		}
		pc := c
		if !pr.deny && len(portRule.HTTP) > 0 {
			if b.r.cfg.ProxyPort == 0 {
				b.problem(where, "HTTP rules need the L7 proxy, which is not configured (no proxy port): not allowed")
				continue
			}
			pc.verdict = Redirect
			pc.http = portRule.HTTP
			pc.proxyPort = b.r.cfg.ProxyPort
		}
		if !pr.deny && len(portRule.DNS) > 0 && len(portRule.HTTP) == 0 {
			if b.r.cfg.DNSProxyPort != 0 {
				pc.verdict = Redirect
				pc.dns = portRule.DNS
				pc.proxyPort = b.r.cfg.DNSProxyPort
			} else if !matchesEveryName(portRule.DNS) {
				b.problem(where, "DNS rules need the DNS proxy, which is not configured: the ports are allowed for every name")
			}
		}
		for k, port := range portRule.Ports {
			b.expandPort(pr, pc, fmt.Sprintf("%s.ports[%d]", where, k), port)
		}
	}
}

func matchesEveryName(sels []FQDN) bool {
	for _, s := range sels {
		if s.MatchPattern == "*" {
			return true
		}
	}
	return false
}

// expandPort adds the contributions of one port of a peer rule.
func (b *builder) expandPort(pr compiledPeerRule, c contrib, where string, port Port) {
	badL7 := false
	emit := func(remote identity.ID, proto Proto, p, end uint16) bool {
		if c.verdict == Redirect && (c.dns == nil && proto != TCP || c.dns != nil && proto != TCP && proto != UDP && proto != Any) {
			badL7 = true
			return false
		}
		c.key = ruleKey{dir: pr.dir, remote: remote, proto: proto, port: p, endPort: end}
		b.add(c)
		return true
	}
	defer func() {
		switch {
		case badL7 && c.dns != nil:
			b.problem(where, "DNS rules need protocol UDP, TCP or ANY: skipped")
		case badL7:
			b.problem(where, "HTTP rules need protocol TCP: skipped")
		}
	}()
	if port.Name == "" {
		end := port.EndPort
		switch {
		case end != 0 && port.Port == 0:
			b.problem(where, "a port range needs a port other than 0: skipped")
			return
		case end <= port.Port:
			end = 0
		}
		if c.verdict == Redirect && port.Port == 0 {
			b.problem(where, "L7 rules need a specific port, not 0: skipped")
			return
		}
		for _, id := range pr.peers {
			emit(id, port.Proto, port.Port, end)
		}
		return
	}
	if port.EndPort != 0 {
		b.problem(where, "a port range needs a numeric port, not the name %q: skipped", port.Name)
		return
	}
	name := strings.ToLower(port.Name)
	protoOK := func(np NamedPort) bool { return port.Proto == Any || port.Proto == np.Proto }
	if pr.dir == Ingress {
		np, ok := b.ep.NamedPorts[name]
		switch {
		case !ok:
			b.problem(where, "the endpoint has no port named %q: skipped", port.Name)
		case !protoOK(np):
			b.problem(where, "the endpoint's port %q is %s, not %s: skipped", port.Name, np.Proto, port.Proto)
		default:
			for _, id := range pr.peers {
				emit(id, np.Proto, np.Port, 0)
			}
		}
		return
	}
	// Egress: a named port is the peer's. Resolve it per peer identity
	// (every known identity for a rule matching every peer).
	peers := pr.peers
	if peers[0] == 0 {
		peers = nil
		for _, id := range b.r.ids {
			peers = append(peers, id.ID)
		}
	}
	found := false
	for _, id := range peers {
		i, ok := slices.BinarySearchFunc(b.r.ids, id, func(x Identity, id identity.ID) int { return cmp.Compare(x.ID, id) })
		if !ok {
			continue
		}
		for _, np := range b.r.ids[i].NamedPorts[name] {
			if protoOK(np) {
				found = emit(id, np.Proto, np.Port, 0) || found
			}
		}
	}
	if !found && !badL7 {
		proto := ""
		if port.Proto != Any {
			proto = " " + port.Proto.String()
		}
		b.problem(where, "no peer has a%s port named %q: skipped", proto, port.Name)
	}
}

// merge combines contributions per key: deny beats everything, redirect
// beats allow, authentication is required if any allow requires it.
// Contributions are taken in key order, those of one key in the order they
// came.
func (b *builder) merge() []DatapathRule {
	if len(b.contribs) == 0 {
		return nil
	}
	order := make([]int32, len(b.contribs))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(i, j int32) int { return compareKeys(b.contribs[i].key, b.contribs[j].key) })
	out := make([]DatapathRule, 0, len(order))
	// The origins of one key are consecutive: one array holds them all.
	origins := make([]string, len(order))
	start := 0
	for n, i := range order {
		c := &b.contribs[i]
		if n == 0 || out[len(out)-1].key() != c.key {
			if n > 0 {
				out[len(out)-1].Origins = origins[start:n:n]
			}
			start = n
			out = append(out, DatapathRule{
				Direction: c.key.dir, RemoteIdentity: c.key.remote, Proto: c.key.proto,
				Port: c.key.port, EndPort: c.key.endPort, Verdict: c.verdict, ProxyPort: c.proxyPort,
			})
		}
		d := &out[len(out)-1]
		switch {
		case c.verdict == Deny || d.Verdict == Deny:
			d.Verdict = Deny
		case c.verdict == Redirect:
			// A DNS redirect wins over an HTTP one of the same key.
			if d.Verdict != Redirect || c.dns != nil {
				d.ProxyPort = c.proxyPort
			}
			d.Verdict = Redirect
		}
		d.AuthRequired = d.AuthRequired || c.auth
		d.AuthAlwaysFail = d.AuthAlwaysFail || c.authFail
		origins[n] = c.origin
	}
	out[len(out)-1].Origins = origins[start:len(order):len(order)]
	for i := range out {
		d := &out[i]
		if d.Verdict == Deny {
			d.AuthRequired, d.AuthAlwaysFail = false, false
		}
		if d.Verdict != Redirect {
			d.ProxyPort = 0
		}
		if len(d.Origins) > 1 {
			slices.Sort(d.Origins)
			d.Origins = slices.Compact(d.Origins)
		}
	}
	return out
}

func (r DatapathRule) key() ruleKey {
	return ruleKey{r.Direction, r.RemoteIdentity, r.Proto, r.Port, r.EndPort}
}

func compareKeys(a, b ruleKey) int {
	switch {
	case a.dir != b.dir:
		return cmp.Compare(a.dir, b.dir)
	case a.remote != b.remote:
		return cmp.Compare(a.remote, b.remote)
	case a.proto != b.proto:
		return cmp.Compare(a.proto, b.proto)
	case a.port != b.port:
		return cmp.Compare(a.port, b.port)
	}
	return cmp.Compare(a.endPort, b.endPort)
}
