package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
	"github.com/membrane-mesh/membrane/mesh/identity"
)

// DNS-aware policy.
//
// toFQDNs selectors match peers by the names the node's DNS proxy learned:
// every address learned for a name a selector matches (IdentitySet.Names)
// gets a CIDR identity for its /32, like a CIDR rule's prefix, and the
// selector's peers are those identities. An address nobody learned is
// world, which a toFQDNs rule does not match.
//
// DNS rules (toPorts[].rules.dns) redirect the rule's ports to the DNS
// proxy (Config.DNSProxyPort), which lets a question through when one of
// the rule's names or patterns matches it (Result.DNS).

// LearnedName is a DNS name and the IPv4 addresses the DNS proxy learned
// for it that are still valid. A name may come in several entries with
// different Learned times.
type LearnedName struct {
	Name string       `json:"name"`
	IPs  []netip.Addr `json:"ips"`
	// Learned is when the last answer holding IPs arrived; zero: always
	// trusted.
	Learned time.Time `json:"learned,omitzero"`
}

// Trust is not retroactive: a policy's toFQDNs selector admits a learned
// name only if the answer arrived at or after the time the selector
// appeared in that policy on the node (IdentitySet.FQDNSince, by
// SinceKey; no time: always). An address the pods looked up before a
// policy selected its name is allowed once a new answer brings it.

// SinceKey is the key of IdentitySet.FQDNSince for selector f of policy p.
func SinceKey(p Policy, f FQDN) string { return p.String() + ": " + f.String() }

// admits reports whether selector m (appeared at since) trusts n.
func admits(m matchpattern.Matcher, since time.Time, n LearnedName) bool {
	return !n.Learned.Before(since) && m.Match(n.Name)
}

// DNSRule lets questions on a redirected DNS port through: from the
// endpoint to one of RemoteIdentities (0: every server), for a name one of
// Names matches.
type DNSRule struct {
	Direction        Direction     `json:"direction"`
	Proto            Proto         `json:"proto"`
	Port             uint16        `json:"port"`
	EndPort          uint16        `json:"endPort,omitempty"`
	RemoteIdentities []identity.ID `json:"remoteIdentities"`
	Names            []FQDN        `json:"names"`
	Origins          []string      `json:"origins,omitempty"`
}

// Covers reports whether the rule is about questions to a server of
// identity remote on proto/port; its Names then decide.
func (r DNSRule) Covers(remote identity.ID, proto Proto, port uint16) bool {
	lo, hi := r.Port, max(r.EndPort, r.Port)
	if r.Port == 0 {
		lo, hi = 0, 65535
	}
	if port < lo || port > hi || r.Proto != Any && r.Proto != proto {
		return false
	}
	return r.RemoteIdentities[0] == 0 || slices.Contains(r.RemoteIdentities, remote)
}

func (f FQDN) String() string {
	if f.MatchName != "" {
		return "matchName: " + f.MatchName
	}
	return "matchPattern: " + f.MatchPattern
}

// Matcher compiles the selector; with both fields given, matchName wins
// (the converters refuse that). Compiling a pattern is costly: keep the
// matcher.
func (f FQDN) Matcher() (matchpattern.Matcher, error) {
	if f.MatchName != "" {
		return matchpattern.CompileName(f.MatchName)
	}
	return matchpattern.Compile(f.MatchPattern)
}

// fqdnPrefixes returns the /32 of every learned address a toFQDNs
// selector of policies admits.
func fqdnPrefixes(policies []Policy, names []LearnedName, since map[string]time.Time) []netip.Prefix {
	type selector struct {
		m     matchpattern.Matcher
		since time.Time
	}
	var ms []selector
	for _, p := range policies {
		for _, rule := range p.Rules {
			for _, list := range [][]PeerRule{rule.Egress, rule.EgressDeny} {
				for _, pr := range list {
					for _, s := range pr.FQDNs {
						if m, err := s.Matcher(); err == nil {
							ms = append(ms, selector{m, since[SinceKey(p, s)]})
						}
					}
				}
			}
		}
	}
	if len(ms) == 0 {
		return nil
	}
	var out []netip.Prefix
	for _, n := range names {
		if !slices.ContainsFunc(ms, func(s selector) bool { return admits(s.m, s.since, n) }) {
			continue
		}
		for _, ip := range n.IPs {
			if ip.Is4() {
				out = append(out, netip.PrefixFrom(ip, 32))
			}
		}
	}
	return out
}

// fqdnPeers resolves a rule's toFQDNs selectors to the CIDR identities of
// the addresses learned for the names they match.
func (r *Resolver) fqdnPeers(p Policy, sels []FQDN) ([]identity.ID, []error) {
	var ids []identity.ID
	var problems []error
	for i, s := range sels {
		m, err := s.Matcher()
		if err != nil {
			problems = append(problems, fmt.Errorf("toFQDNs[%d]: %w (matches no peer)", i, err))
			continue
		}
		since := r.fqdnSince[SinceKey(p, s)]
		for _, n := range r.names {
			if !admits(m, since, n) {
				continue
			}
			for _, ip := range n.IPs {
				if id, ok := r.cidrByPrefix[netip.PrefixFrom(ip, 32)]; ok {
					ids = append(ids, id)
				}
			}
		}
	}
	return ids, problems
}

// dnsRules returns the rules the DNS proxy enforces on redirected flows:
// the DNS rules of every DNS redirect for its peer, and "every name" for
// peers an allow without DNS rules lets through on a redirected port (as
// l7 does for HTTP).
func (b *builder) dnsRules() []DNSRule {
	groups := groupRedirects(b.contribs, func(c contrib) bool { return c.dns != nil },
		func(c contrib) []FQDN { return c.dns }, []FQDN{{MatchPattern: "*"}}, true)
	if len(groups) == 0 {
		return nil
	}
	out := make([]DNSRule, 0, len(groups))
	for _, g := range groups {
		out = append(out, DNSRule{Direction: g.dir, Proto: g.proto, Port: g.port, EndPort: g.end,
			RemoteIdentities: g.remotes, Names: g.rules, Origins: g.origins})
	}
	return out
}
