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
	type groupKey struct {
		dir       Direction
		proto     Proto
		port, end uint16
		http      string
	}
	groups := map[groupKey]*L7Rule{}
	add := func(dir Direction, proto Proto, lo, hi uint16, remote identity.ID, http []HTTPRule, origin string) {
		if hi <= lo {
			hi = 0
		}
		k := groupKey{dir, proto, lo, hi, fmt.Sprintf("%#v", http)}
		g, ok := groups[k]
		if !ok {
			g = &L7Rule{Direction: dir, Proto: proto, Port: lo, EndPort: hi, HTTP: http}
			groups[k] = g
		}
		g.RemoteIdentities = append(g.RemoteIdentities, remote)
		g.Origins = append(g.Origins, origin)
	}
	// Most endpoints have no redirect: nothing to group.
	if !slices.ContainsFunc(b.contribs, func(c contrib) bool { return c.verdict == Redirect && c.dns == nil }) {
		return nil
	}
	var redirects, allows []contrib
	for _, c := range b.contribs {
		switch {
		case c.verdict == Redirect && c.dns == nil:
			redirects = append(redirects, c)
		case c.verdict == Allow:
			allows = append(allows, c)
		}
	}
	for _, c := range redirects {
		add(c.key.dir, c.key.proto, c.key.port, c.key.endPort, c.key.remote, c.http, c.origin)
	}
	for _, c := range redirects {
		clo, chi := portRange(c.key)
		for _, a := range allows {
			if a.key.dir != c.key.dir ||
				a.key.remote != c.key.remote && a.key.remote != 0 && c.key.remote != 0 ||
				a.key.proto != Any && a.key.proto != c.key.proto {
				continue
			}
			alo, ahi := portRange(a.key)
			lo, hi := max(alo, clo), min(ahi, chi)
			if lo > hi {
				continue
			}
			add(c.key.dir, c.key.proto, lo, hi, a.key.remote, []HTTPRule{{}}, a.origin)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	keys := make([]groupKey, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b groupKey) int {
		return cmp.Or(cmp.Compare(a.dir, b.dir), cmp.Compare(a.proto, b.proto), cmp.Compare(a.port, b.port),
			cmp.Compare(a.end, b.end), strings.Compare(a.http, b.http))
	})
	out := make([]L7Rule, 0, len(keys))
	for _, k := range keys {
		g := groups[k]
		g.RemoteIdentities, g.Origins = compactPeers(g.RemoteIdentities, g.Origins)
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
