package lbipam

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// Ledger remembers the newest assignment for controllers that assign from
// an informer cache. The status an earlier pass wrote may not be in the
// cache yet: a pass that read the older status as each claim's current
// address could give an address in use to another claim (two objects
// created together), and the next pass would then move one of them. The
// claims the newest assignment gave an address keep it as their current
// one instead. One Ledger serves every controller that computes the same
// assignment; it is safe for concurrent use.
type Ledger struct {
	mu   sync.Mutex
	last map[string]netip.Addr
}

// Assign is the package's Assign with the newest assignment's address as
// each claim's current one (where it gave the claim one), remembering the
// result.
func (l *Ledger) Assign(pools []Pool, claims []Claim) Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	claims = slices.Clone(claims)
	for i := range claims {
		if a, ok := l.last[claims[i].Key]; ok {
			claims[i].Current = a
		}
	}
	res := Assign(pools, claims)
	l.last = maps.Clone(res.Addresses)
	return res
}
