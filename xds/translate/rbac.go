package translate

import (
	"net/netip"
	"regexp/syntax"
	"slices"
	"strings"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacHTTPFilter enforces one side's rules: an ALLOW RBAC with one policy
// per rule, named after the rule's place in the input. No rule means no
// policy, which Envoy reads as "deny every request".
//
// Ingress peers are the connection's direct remote address (the client pod:
// the transparent proxy sees its real address). Egress peers are the
// connection's destination (restored by the original_dst listener filter);
// the chain already matched the local pod as the source.
func rbacHTTPFilter(s *side) (*hcmv3.HttpFilter, error) {
	policies := make(map[string]*rbacconfigv3.Policy, len(s.rules))
	for _, r := range s.rules {
		policies[r.name] = rbacPolicy(s.dir, r.Rule)
	}
	cfg, err := marshalAny(&rbacv3.RBAC{
		Rules: &rbacconfigv3.RBAC{
			Action:   rbacconfigv3.RBAC_ALLOW,
			Policies: policies,
		},
		// Separate the stats of the two RBAC filters of a chain that has
		// both (http.<chain>.rbac.ingress.allowed, …).
		RulesStatPrefix: string(s.dir) + ".",
	})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{
		Name:       rbacFilter,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: cfg},
	}, nil
}

func rbacPolicy(dir Direction, r Rule) *rbacconfigv3.Policy {
	requests := make([]*rbacconfigv3.Permission, 0, len(r.HTTP))
	for _, h := range r.HTTP {
		requests = append(requests, httpPermission(h))
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
func httpPermission(h HTTPRule) *rbacconfigv3.Permission {
	var all []*rbacconfigv3.Permission
	header := func(m *routev3.HeaderMatcher) {
		all = append(all, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_Header{Header: m}})
	}
	if h.Method != "" {
		header(regexHeader(":method", h.Method))
	}
	if h.Path != "" {
		// url_path is :path without the query string (and fragment).
		all = append(all, &rbacconfigv3.Permission{Rule: &rbacconfigv3.Permission_UrlPath{
			UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: regexString(h.Path)}},
		}})
	}
	if h.Host != "" {
		header(regexHeader(":authority", h.Host))
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
		header(m)
	}
	return allOf(all)
}

func regexHeader(name, re string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name:                 name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regexString(re)},
	}
}

// regexString matches the whole value against re (Envoy's safe_regex is a
// full match, as the input model's regexes are). A regex that is only a
// literal becomes an exact match: cheaper, and free of Envoy's limit on a
// regex's program size, which a long literal path alone can exceed.
func regexString(re string) *matcherv3.StringMatcher {
	if lit, ok := literal(re); ok {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: lit}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: re},
	}}
}

// literal returns the string re matches when it matches only that one,
// case-sensitively.
func literal(re string) (string, bool) {
	r, err := syntax.Parse(re, syntax.Perl)
	if err != nil || r.Op != syntax.OpLiteral || r.Flags&syntax.FoldCase != 0 {
		return "", false
	}
	return string(r.Rune), true
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
