package policy

import (
	"cmp"
	"hash/fnv"
	"net/netip"
	"slices"

	"github.com/membrane-mesh/membrane/mesh/identity"
)

// CIDR identities.
//
// Every prefix a policy names (CIDRs and their exceptions, but not /0, which
// is world) gets a node-local identity, and the ipcache maps the prefix to
// it. Because the ipcache is a longest-prefix match, an address resolves to
// the identity of the most specific prefix containing it (or to a pod or
// node identity, whose /32s are more specific still; or to world). So a
// CIDR rule P matches every CIDR identity whose prefix lies within P and not
// within one of its exceptions — not only P's own — and the world entity
// matches world and every CIDR identity: this is Cilium's selection of CIDR
// identities by their supernet labels.
//
// Numbers are derived from the prefix (FNV-1a of its text, in Cilium's local
// identity range), so they do not depend on other prefixes unless two
// collide; collisions are resolved deterministically in prefix order, and a
// previous allocation given in IdentitySet.CIDRs is kept.

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// prefixWithin reports whether inner lies within outer.
func prefixWithin(inner, outer netip.Prefix) bool {
	return inner.Addr().BitLen() == outer.Addr().BitLen() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

func hashPrefix(p netip.Prefix) identity.ID {
	h := fnv.New32a()
	h.Write([]byte(p.String()))
	return MinCIDRIdentity + identity.ID(h.Sum32())&(MaxCIDRIdentity-MinCIDRIdentity)
}

// allocateCIDRs numbers prefixes (masked, deduplicated, /0 dropped).
func allocateCIDRs(prefixes []netip.Prefix, previous []CIDRIdentity) []CIDRIdentity {
	set := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		if p.IsValid() && p.Bits() > 0 {
			set[p.Masked()] = true
		}
	}
	ordered := make([]netip.Prefix, 0, len(set))
	for p := range set {
		ordered = append(ordered, p)
	}
	slices.SortFunc(ordered, comparePrefix)

	byPrefix := map[netip.Prefix]identity.ID{}
	used := map[identity.ID]bool{}
	prev := slices.Clone(previous)
	slices.SortFunc(prev, func(a, b CIDRIdentity) int { return comparePrefix(a.Prefix, b.Prefix) })
	for _, c := range prev {
		p := c.Prefix.Masked()
		if !set[p] || c.ID < MinCIDRIdentity || c.ID > MaxCIDRIdentity || used[c.ID] {
			continue
		}
		if _, done := byPrefix[p]; done {
			continue
		}
		byPrefix[p] = c.ID
		used[c.ID] = true
	}
	out := make([]CIDRIdentity, 0, len(ordered))
	for _, p := range ordered {
		id, ok := byPrefix[p]
		if !ok {
			id = hashPrefix(p)
			for used[id] {
				id++
				if id > MaxCIDRIdentity {
					id = MinCIDRIdentity
				}
			}
			used[id] = true
		}
		out = append(out, CIDRIdentity{Prefix: p, ID: id})
	}
	return out
}

// cidrPeers returns the identities a CIDR rule matches.
func cidrPeers(r CIDRRule, all []CIDRIdentity) []identity.ID {
	outer := r.CIDR.Masked()
	var ids []identity.ID
	if outer.Bits() == 0 {
		ids = append(ids, identity.World)
	}
next:
	for _, c := range all {
		if !prefixWithin(c.Prefix, outer) {
			continue
		}
		for _, e := range r.Except {
			if prefixWithin(c.Prefix, e.Masked()) {
				continue next
			}
		}
		ids = append(ids, c.ID)
	}
	return ids
}
