// Package lbipam assigns Services of type LoadBalancer their addresses
// from MembraneLoadBalancerIPPools, purely: the same pools and Services
// give the same assignment, an address once assigned stays while its
// Service exists and its pool still offers it, and no address is given
// twice. It also finds what each pool's status should say: overlaps with
// another pool, exhaustion, unreadable blocks.
package lbipam

import (
	"cmp"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Range is an inclusive IPv4 range.
type Range struct{ First, Last netip.Addr }

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether r and o share an address.
func (r Range) Overlaps(o Range) bool { return !r.Last.Less(o.First) && !o.Last.Less(r.First) }

// Size is the number of addresses of r.
func (r Range) Size() int64 {
	f, l := r.First.As4(), r.Last.As4()
	a := new(big.Int).SetBytes(f[:])
	b := new(big.Int).SetBytes(l[:])
	return new(big.Int).Sub(b, a).Int64() + 1
}

func (r Range) String() string { return r.First.String() + "-" + r.Last.String() }

// ParseCIDR reads an IPv4 CIDR: its network and broadcast addresses are
// left out when it has more than two addresses.
func ParseCIDR(s string) (Range, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() {
		return Range{}, fmt.Errorf("cidr %q: want an IPv4 prefix such as 198.18.1.192/27", s)
	}
	p = p.Masked()
	first := p.Addr()
	last := first
	for n := first.Next(); n.IsValid() && p.Contains(n); n = n.Next() {
		last = n
	}
	if p.Bits() < 31 {
		first, last = first.Next(), last.Prev()
	}
	return Range{first, last}, nil
}

// ParseRange reads first and last IPv4 addresses, first not above last.
func ParseRange(start, stop string) (Range, error) {
	f, err1 := netip.ParseAddr(strings.TrimSpace(start))
	l, err2 := netip.ParseAddr(strings.TrimSpace(stop))
	if err1 != nil || err2 != nil || !f.Is4() || !l.Is4() || l.Less(f) {
		return Range{}, fmt.Errorf("range %q-%q: want IPv4 start and stop, start not above stop", start, stop)
	}
	return Range{f, l}, nil
}

// Pool is what the assignment needs of one pool.
type Pool struct {
	Name     string
	Created  int64
	Ranges   []Range
	Selector labels.Selector // nil: every Service
	Disabled bool
}

// Claim is what the assignment needs of one Service (or Gateway).
type Claim struct {
	// Key names the claim ("namespace/name" of a Service).
	Key    string
	Labels labels.Set
	// Current is the address it has (from its status), if any.
	Current netip.Addr
	// Requested is the address its spec asks for, if any.
	Requested netip.Addr
	// Created orders claims: older ones get their addresses first.
	Created int64
}

// PoolStatus is what a pool's status should say.
type PoolStatus struct {
	// ConflictsWith names the older pool this one overlaps ("": none).
	ConflictsWith string
	// Exhausted: a matching claim found no free address.
	Exhausted bool
	Total     int64
	Used      int64
}

// Result is an assignment.
type Result struct {
	// Addresses: the address of each claim that got one.
	Addresses map[string]netip.Addr
	// Problems: why the others did not.
	Problems map[string]string
	Pools    map[string]*PoolStatus
}

// Assign gives every claim an address from a pool whose selector matches
// it: the requested one if a matching pool holds it and it is free; else
// the current one likewise; else the lowest free address of the first
// matching enabled pool (by name). A pool overlapping an older one (by
// creation, then name) hands out nothing.
func Assign(pools []Pool, claims []Claim) Result {
	res := Result{Addresses: map[string]netip.Addr{}, Problems: map[string]string{}, Pools: map[string]*PoolStatus{}}
	pools = slices.Clone(pools)
	slices.SortFunc(pools, func(a, b Pool) int { return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.Name, b.Name)) })
	var usable []Pool
	for i, p := range pools {
		st := &PoolStatus{}
		for _, r := range p.Ranges {
			st.Total += r.Size()
		}
		res.Pools[p.Name] = st
	older:
		for _, o := range pools[:i] {
			for _, r := range p.Ranges {
				for _, or := range o.Ranges {
					if r.Overlaps(or) {
						st.ConflictsWith = o.Name
						break older
					}
				}
			}
		}
		if st.ConflictsWith == "" {
			usable = append(usable, p)
		}
	}
	slices.SortFunc(usable, func(a, b Pool) int { return cmp.Compare(a.Name, b.Name) })
	matching := func(c Claim) []Pool {
		var out []Pool
		for _, p := range usable {
			if p.Selector == nil || p.Selector.Matches(c.Labels) {
				out = append(out, p)
			}
		}
		return out
	}
	holder := func(ps []Pool, a netip.Addr) *Pool {
		for i, p := range ps {
			for _, r := range p.Ranges {
				if r.Contains(a) {
					return &ps[i]
				}
			}
		}
		return nil
	}
	claims = slices.Clone(claims)
	slices.SortFunc(claims, func(a, b Claim) int { return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.Key, b.Key)) })
	used := map[netip.Addr]bool{}
	take := func(c Claim, p *Pool, a netip.Addr) {
		used[a] = true
		res.Addresses[c.Key] = a
		res.Pools[p.Name].Used++
	}
	var pending []Claim
	for _, c := range claims {
		ps := matching(c)
		if c.Requested.IsValid() {
			p := holder(ps, c.Requested)
			switch {
			case p == nil:
				res.Problems[c.Key] = fmt.Sprintf("requested address %s is in no pool that selects it", c.Requested)
			case used[c.Requested]:
				res.Problems[c.Key] = fmt.Sprintf("requested address %s is in use", c.Requested)
			default:
				take(c, p, c.Requested)
			}
			continue
		}
		if c.Current.IsValid() && !used[c.Current] {
			if p := holder(ps, c.Current); p != nil {
				take(c, p, c.Current)
				continue
			}
		}
		pending = append(pending, c)
	}
	for _, c := range pending {
		ps := matching(c)
		done := false
		var enabled []string
		for i, p := range ps {
			if p.Disabled {
				continue
			}
			enabled = append(enabled, p.Name)
			for _, r := range p.Ranges {
				for a := r.First; a.IsValid() && r.Contains(a); a = a.Next() {
					if !used[a] {
						take(c, &ps[i], a)
						done = true
						break
					}
				}
				if done {
					break
				}
			}
			if done {
				break
			}
		}
		switch {
		case done:
		case len(enabled) == 0:
			res.Problems[c.Key] = "no enabled MembraneLoadBalancerIPPool without conflicts selects it"
		default:
			for _, n := range enabled {
				res.Pools[n].Exhausted = true
			}
			res.Problems[c.Key] = fmt.Sprintf("every address of the pools %s is in use", strings.Join(enabled, ", "))
		}
	}
	return res
}
