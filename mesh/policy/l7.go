package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// l7 returns the rules the proxy enforces on redirected flows: the HTTP
// rules of every redirect for its peer; and "every request" (one empty
// HTTPRule) for peers that an allow without L7 rules lets through on a
// redirected port. The datapath sends those flows to the proxy as well (a
// redirect beats an allow of the same specificity, and a more specific one
// wins), and the proxy must not deny what L4 policy allows — Cilium's L7
// wildcarding.
func (b *builder) l7() []L7Rule {
	groups := groupRedirects(b.contribs, func(c contrib) bool { return c.dns == nil },
		func(c contrib) []HTTPRule { return c.http }, []HTTPRule{{}}, false)
	if len(groups) == 0 {
		return nil
	}
	out := make([]L7Rule, 0, len(groups))
	for _, g := range groups {
		out = append(out, L7Rule{Direction: g.dir, Proto: g.proto, Port: g.port, EndPort: g.end,
			RemoteIdentities: g.remotes, HTTP: g.rules, Origins: g.origins})
	}
	return out
}

// redirectGroup is one port range's proxy rules R (HTTP or DNS) and the
// peers they apply to.
type redirectGroup[R any] struct {
	dir       Direction
	proto     Proto
	port, end uint16
	rules     R
	remotes   []identity.ID
	origins   []string
}

// groupRedirects groups the redirects that ours selects by direction,
// protocol, port range and rules (rulesOf), and adds, for each allow that
// lets a redirect's peers through on some of its ports, the rules every
// for the allow's peer on those ports. anyProto: a redirect of protocol Any
// takes the allows of every protocol (DNS on UDP and TCP). The groups come
// sorted, their peers and origins compacted.
func groupRedirects[R any](contribs []contrib, ours func(contrib) bool, rulesOf func(contrib) R, every R, anyProto bool) []redirectGroup[R] {
	type groupKey struct {
		dir       Direction
		proto     Proto
		port, end uint16
		rules     string
	}
	groups := map[groupKey]*redirectGroup[R]{}
	add := func(dir Direction, proto Proto, lo, hi uint16, remote identity.ID, rules R, origin string) {
		if hi <= lo {
			hi = 0
		}
		k := groupKey{dir, proto, lo, hi, fmt.Sprintf("%#v", rules)}
		g, ok := groups[k]
		if !ok {
			g = &redirectGroup[R]{dir: dir, proto: proto, port: lo, end: hi, rules: rules}
			groups[k] = g
		}
		g.remotes = append(g.remotes, remote)
		g.origins = append(g.origins, origin)
	}
	isRedirect := func(c contrib) bool { return c.verdict == Redirect && ours(c) }
	// Most endpoints have no redirect: nothing to group.
	if !slices.ContainsFunc(contribs, isRedirect) {
		return nil
	}
	var redirects, allows []contrib
	for _, c := range contribs {
		switch {
		case isRedirect(c):
			redirects = append(redirects, c)
		case c.verdict == Allow:
			allows = append(allows, c)
		}
	}
	for _, c := range redirects {
		add(c.key.dir, c.key.proto, c.key.port, c.key.endPort, c.key.remote, rulesOf(c), c.origin)
	}
	for _, c := range redirects {
		clo, chi := portRange(c.key)
		for _, a := range allows {
			if a.key.dir != c.key.dir ||
				a.key.remote != c.key.remote && a.key.remote != 0 && c.key.remote != 0 ||
				a.key.proto != Any && !(anyProto && c.key.proto == Any) && a.key.proto != c.key.proto {
				continue
			}
			alo, ahi := portRange(a.key)
			lo, hi := max(alo, clo), min(ahi, chi)
			if lo > hi {
				continue
			}
			add(c.key.dir, c.key.proto, lo, hi, a.key.remote, every, a.origin)
		}
	}
	keys := make([]groupKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b groupKey) int {
		return cmp.Or(cmp.Compare(a.dir, b.dir), cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port),
			cmp.Compare(a.end, b.end), strings.Compare(a.rules, b.rules))
	})
	out := make([]redirectGroup[R], 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		g.remotes, g.origins = compactPeers(g.remotes, g.origins)
		out = append(out, *g)
	}
	return out
}

// compactPeers sorts and deduplicates a grouped rule's remote identities
// (0, every peer, stands alone: it covers the others) and its origins.
func compactPeers(ids []identity.ID, origins []string) ([]identity.ID, []string) {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if ids[0] == 0 {
		ids = ids[:1]
	}
	slices.Sort(origins)
	return ids, slices.Compact(origins)
}

// portRange returns the ports a key covers.
func portRange(k ruleKey) (lo, hi uint16) {
	if k.port == 0 {
		return 0, 65535
	}
	return k.port, max(k.endPort, k.port)
}
