package translate

import (
	"errors"
	"net/netip"
	"regexp/syntax"
	"slices"
	"strings"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// rbacHTTPFilter is the RBAC filter of one direction of a chain. Its own
// configuration allows nothing: the rules come with the route, as the
// filter's per-route configuration (rbacPerRoute), so a route that has none
// is closed rather than open.
func rbacHTTPFilter(dir Direction) (*hcmv3.HttpFilter, error) {
	cfg, err := marshalAny(&rbacv3.RBAC{
		Rules: &rbacconfigv3.RBAC{Action: rbacconfigv3.RBAC_ALLOW},
		// Separate the stats of the two RBAC filters of a chain that has
		// both (http.<chain>.rbac.ingress.allowed, …).
		RulesStatPrefix: string(dir) + ".",
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{
		Name:       RBACFilterPrefix + string(dir),
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg},
	}, nil
}

// rbacPerRoute enforces one side's rules: an ALLOW RBAC with one policy
// per rule, named after the rule's place in the input. No rule means no
// policy, which Envoy reads as "deny every request".
//
// Ingress peers are the connection's direct remote address (the client pod:
// the transparent proxy sees its real address). Egress peers are the
// connection's destination (restored by the original_dst listener filter);
// the chain already matched the local pod as the source.
func rbacPerRoute(dir Direction, rules []namedRule, rx *regexes) (*anypb.Any, error) {
	policies := make(map[string]*rbacconfigv3.Policy, len(rules))
	for _, r := range rules {
		policies[r.name] = rbacPolicy(dir, r.Rule, rx)
	}
	return marshalAny(&rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{
		Rules: &rbacconfigv3.RBAC{
			Action:   rbacconfigv3.RBAC_ALLOW,
			Policies: policies,
		},
		RulesStatPrefix: string(dir) + ".",
	}})
}

func rbacPolicy(dir Direction, r Rule, rx *regexes) *rbacconfigv3.Policy {
	requests := make([]*rbacconfigv3.Permission, 0, len(r.HTTP))
	for _, h := range r.HTTP {
		requests = append(requests, httpPermission(h, rx))
	}
	request := anyOf(requests)
	peers := peerPrefixes(r.Peers)
	if dir == Ingress || len(peers) == 0 {
		principals := []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}}
		if len(peers) > 0 {
			principals = principals[:0]
			for _, p := range peers {
				principals = append(principals, &rbacconfigv3.Principal{
					Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr(p)},
				})
			}
		}
		return &rbacconfigv3.Policy{Permissions: orList(request), Principals: principals}
	}
	dests := make([]*rbacconfigv3.Permission, 0, len(peers))
	for _, p := range peers {
		dests = append(dests, &rbacconfigv3.Permission{
			Rule: &rbacconfigv3.Permission_DestinationIp{DestinationIp: cidr(p)},
		})
	}
	return &rbacconfigv3.Policy{
		Permissions: orList(allOf([]*rbacconfigv3.Permission{anyOf(dests), request})),
		Principals:  []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_Any{Any: true}}},
	}
}

// httpPermission is the AND of an HTTP rule's matchers (any request when
// it has none).
func httpPermission(h HTTPRule, rx *regexes) *rbacconfigv3.Permission {
	var all []*rbacconfigv3.Permission
	header := func(name, re string) {
		var alts []*rbacconfigv3.Permission
		for _, m := range rx.matchers(re) {
			alts = append(alts, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: &routev3.HeaderMatcher{
				Name:                 name,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m},
			}}})
		}
		all = append(all, anyOf(alts))
	}
	if h.Method != "" {
		header(":method", h.Method)
	}
	if h.Path != "" {
		// url_path is :path without the query string (and fragment).
		var alts []*rbacconfigv3.Permission
		for _, m := range rx.matchers(h.Path) {
			alts = append(alts, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{
				UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}},
			}})
		}
		all = append(all, anyOf(alts))
	}
	if h.Host != "" {
		header(":authority", h.Host)
	}
	for _, hd := range h.Headers {
		name := strings.ToLower(hd.Name)
		if name == "host" {
			// Envoy keeps the HTTP/1.1 Host header as :authority.
			name = ":authority"
		}
		m := &routev3.HeaderMatcher{Name: name}
		if hd.Value == "" {
			m.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		} else {
			m.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: hd.Value},
			}}
		}
		all = append(all, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: m}})
	}
	return allOf(all)
}

// stringMatchers are matchers whose OR matches exactly the values re
// matches whole (Envoy's safe_regex is a full match, as the input model's
// regexes are): plain ones (exact, prefix, suffix, contains) when re is a
// few literal alternatives, each with ".*" before and/or after ("GET",
// "GET|HEAD", "/api/v1/.*", ".*\.example\.com"); else the regex itself.
// Envoy compiles every regex on its own, and a node has thousands: plain
// matchers cost less memory and time, and are free of Envoy's limit on a
// regex's program size, which a long literal path alone can exceed.
func stringMatchers(re string) []*matcherv3.StringMatcher {
	if ms := plainMatchers(re); ms != nil {
		return ms
	}
	return []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: re},
	}}}
}

// maxAlternatives bounds the alternatives plainMatchers expands a regex to.
const maxAlternatives = 8

// plainMatchers are the plain matchers for re (see stringMatchers); nil
// when there are none. No value they are used on (a method, a path, a
// header value) holds a newline, so "." is any character there.
func plainMatchers(re string) []*matcherv3.StringMatcher {
	var strs []string
	lit, lead, trail, ok := quickLiteral(re)
	if ok {
		strs = []string{lit}
	} else {
		r, err := syntax.Parse(re, syntax.Perl)
		if err != nil {
			return nil
		}
		parts := []*syntax.Regexp{r}
		if r.Op == syntax.OpConcat {
			parts = r.Sub
		}
		lead = len(parts) > 0 && anyString(parts[0])
		if lead {
			parts = parts[1:]
		}
		trail = len(parts) > 0 && anyString(parts[len(parts)-1])
		if trail {
			parts = parts[:len(parts)-1]
		}
		strs = []string{""}
		for _, p := range parts {
			alts, ok := finite(p)
			if !ok {
				return nil
			}
			if strs = product(strs, alts); strs == nil {
				return nil
			}
		}
		slices.Sort(strs)
		strs = slices.Compact(strs)
	}
	out := make([]*matcherv3.StringMatcher, 0, len(strs))
	for _, s := range strs {
		if s == "" {
			return nil // an empty value, or any: leave it to the regex
		}
		var m matcherv3.StringMatcher
		switch {
		case lead && trail:
			m.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: s}
		case lead:
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: s}
		case trail:
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: s}
		default:
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: s}
		}
		out = append(out, &m)
	}
	return out
}

// quickLiteral recognizes, without parsing, the most common regexes: a
// literal, with ".*" before and/or after, and no other special character.
// (A ".*" so recognized cannot be escaped: the backslash would be one.)
func quickLiteral(re string) (lit string, lead, trail, ok bool) {
	lit, lead = strings.CutPrefix(re, ".*")
	lit, trail = strings.CutSuffix(lit, ".*")
	if lit == "" || hasRegexMeta(lit) {
		return "", false, false, false
	}
	return lit, lead, trail, true
}

// hasRegexMeta reports whether s has a character that is not literal in a
// regex (a byte loop: this runs over every path of a node).
func hasRegexMeta(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$':
			return true
		}
	}
	return false
}

// anyString reports whether r is ".*".
func anyString(r *syntax.Regexp) bool {
	return r.Op == syntax.OpStar && (r.Sub[0].Op == syntax.OpAnyCharNotNL || r.Sub[0].Op == syntax.OpAnyChar)
}

// finite returns the strings r matches when they are at most
// maxAlternatives, matched case-sensitively.
func finite(r *syntax.Regexp) ([]string, bool) {
	if r.Flags&syntax.FoldCase != 0 {
		return nil, false
	}
	switch r.Op {
	case syntax.OpLiteral:
		return []string{string(r.Rune)}, true
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpCapture:
		return finite(r.Sub[0])
	case syntax.OpQuest:
		alts, ok := finite(r.Sub[0])
		return append(alts, ""), ok && len(alts) < maxAlternatives
	case syntax.OpCharClass:
		var out []string
		for i := 0; i+1 < len(r.Rune); i += 2 {
			for c := r.Rune[i]; c <= r.Rune[i+1]; c++ {
				if len(out) == maxAlternatives {
					return nil, false
				}
				out = append(out, string(c))
			}
		}
		return out, true
	case syntax.OpAlternate:
		var out []string
		for _, sub := range r.Sub {
			alts, ok := finite(sub)
			if !ok || len(out)+len(alts) > maxAlternatives {
				return nil, false
			}
			out = append(out, alts...)
		}
		return out, true
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range r.Sub {
			alts, ok := finite(sub)
			if !ok {
				return nil, false
			}
			if out = product(out, alts); out == nil {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}

// product is every a followed by every b; nil when over maxAlternatives.
func product(a, b []string) []string {
	if len(a)*len(b) > maxAlternatives {
		return nil
	}
	out := make([]string, 0, len(a)*len(b))
	for _, x := range a {
		for _, y := range b {
			out = append(out, x+y)
		}
	}
	return out
}

// peerPrefixes returns ps unmapped, masked, sorted and without duplicates.
func peerPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		a, bits := p.Addr(), p.Bits()
		if a.Is4In6() {
			a, bits = a.Unmap(), max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// anyOf is the OR of ps: any request when ps is empty or has "any", the
// only one when there is one.
func anyOf(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	switch {
	case len(ps) == 0 || slices.ContainsFunc(ps, (*rbacconfigv3.Permission).GetAny):
		return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
	case len(ps) == 1:
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_OrRules{
		OrRules: &rbacconfigv3.Permission_Set{Rules: ps},
	}}
}

// allOf is the AND of ps, dropping "any": any request when nothing is left,
// the only one when one is.
func allOf(ps []*rbacconfigv3.Permission) *rbacconfigv3.Permission {
	ps = slices.DeleteFunc(slices.Clone(ps), (*rbacconfigv3.Permission).GetAny)
	switch len(ps) {
	case 0:
		return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Any{Any: true}}
	case 1:
		return ps[0]
	}
	return &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_AndRules{
		AndRules: &rbacconfigv3.Permission_Set{Rules: ps},
	}}
}

// orList is p as a policy's permission list (itself OR-ed): the rules of an
// OR, or p alone.
func orList(p *rbacconfigv3.Permission) []*rbacconfigv3.Permission {
	if or := p.GetOrRules(); or != nil {
		return or.GetRules()
	}
	return []*rbacconfigv3.Permission{p}
}

// HTTPPermissions are the RBAC permissions (OR-ed, like a policy's) that
// allow the requests one of rules matches, every request when rules is
// empty: the L7 path's matching, for other translations that police HTTP
// (the mutual-TLS tunnel's). Each problem of rules names its field
// ("http[1].path: …").
func HTTPPermissions(rules []HTTPRule) ([]*rbacconfigv3.Permission, error) {
	n := Node{ProxyPort: 1, Ports: []Port{{Direction: Ingress, Endpoint: netip.AddrFrom4([4]byte{127, 0, 0, 1}), Port: 1, Rules: []Rule{{HTTP: rules}}}}}
	if err := n.Validate(); err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "ports[0].rules[0].", ""))
	}
	var rx regexes
	rx.begin()
	ps := make([]*rbacconfigv3.Permission, 0, len(rules))
	for _, h := range rules {
		ps = append(ps, httpPermission(h, &rx))
	}
	return orList(anyOf(ps)), nil
}
