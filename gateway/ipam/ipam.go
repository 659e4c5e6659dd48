// Package ipam assigns Gateways their addresses from a pool (LB IPAM),
// purely: the same Gateways and pool give the same assignment, an address
// once assigned stays while its Gateway exists, and no address is given
// twice.
package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// Pool is an inclusive IPv4 range.
type Pool struct{ First, Last netip.Addr }

// ParsePool reads "a.b.c.d/n" (the network and broadcast addresses are not
// used) or "first-last".
func ParsePool(s string) (Pool, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		f, err1 := netip.ParseAddr(strings.TrimSpace(first))
		l, err2 := netip.ParseAddr(strings.TrimSpace(last))
		if err1 != nil || err2 != nil || !f.Is4() || !l.Is4() || l.Less(f) {
			return Pool{}, fmt.Errorf("address pool %q: want first-last IPv4 addresses, first not above last", s)
		}
		return Pool{f, l}, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return Pool{}, fmt.Errorf("address pool %q: want an IPv4 CIDR of at least 4 addresses or first-last", s)
	}
	p = p.Masked()
	first := p.Addr().Next()
	last := first
	for n := last.Next(); p.Contains(n.Next()); n = n.Next() {
		last = n
	}
	return Pool{first, last}, nil
}

// Contains reports whether a is in the pool.
func (p Pool) Contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(p.First) && !p.Last.Less(a)
}

func (p Pool) String() string { return p.First.String() + "-" + p.Last.String() }

// Gateway is what the assignment needs of one Gateway.
type Gateway struct {
	Name types.NamespacedName
	// Current is the address it has (from its status), if any.
	Current netip.Addr
	// Requested is the address its spec asks for, if any.
	Requested netip.Addr
	// Created orders the Gateways: older ones get their addresses first.
	Created int64
}

// Result is an assignment: an address per Gateway that got one, and why
// the others did not.
type Result struct {
	Addresses map[types.NamespacedName]netip.Addr
	Problems  map[types.NamespacedName]string
}

// Assign gives every Gateway an address: the requested one if it is in the
// pool and free, else the current one if it is in the pool and free, else
// the lowest free one.
func Assign(pool Pool, gws []Gateway) Result {
	res := Result{Addresses: map[types.NamespacedName]netip.Addr{}, Problems: map[types.NamespacedName]string{}}
	gws = slices.Clone(gws)
	slices.SortFunc(gws, func(a, b Gateway) int {
		return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.Name.String(), b.Name.String()))
	})
	used := map[netip.Addr]bool{}
	var pending []Gateway
	// Requested, then kept addresses first, in age order.
	for _, g := range gws {
		if g.Requested.IsValid() {
			switch {
			case !pool.Contains(g.Requested):
				res.Problems[g.Name] = fmt.Sprintf("requested address %s is not in the pool %s", g.Requested, pool)
			case used[g.Requested]:
				res.Problems[g.Name] = fmt.Sprintf("requested address %s is in use", g.Requested)
			default:
				used[g.Requested] = true
				res.Addresses[g.Name] = g.Requested
			}
			continue
		}
		if g.Current.IsValid() && pool.Contains(g.Current) && !used[g.Current] {
			used[g.Current] = true
			res.Addresses[g.Name] = g.Current
			continue
		}
		pending = append(pending, g)
	}
	next := pool.First
	for _, g := range pending {
		for used[next] && pool.Contains(next) {
			next = next.Next()
		}
		if !pool.Contains(next) {
			res.Problems[g.Name] = fmt.Sprintf("the address pool %s is exhausted", pool)
			continue
		}
		used[next] = true
		res.Addresses[g.Name] = next
	}
	return res
}
