// Package fqdn keeps what DNS-aware policy needs to remember: per source
// endpoint (pod IP), the DNS names it looked up through the DNS proxy and
// the IPs the allowed answers held, each kept until its TTL (at least
// Config.MinTTL) has passed and no connection uses it any more. The agent
// allows a pod the IPs of the names its toFQDNs selectors match; the cache
// survives agent restarts through Save and Load.
//
// Trust is not retroactive: an entry learned before a toFQDNs selector
// began to apply to its source must not be allowed by that selector until
// a new answer renews it. Entry.Learned (renewed by every answer holding
// the IP) is what the agent compares with the time the selector appeared.
//
// The cache is pure: no sockets, no datapath; the clock is injected.
package fqdn

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
)

// DefaultMaxIPsPerName bounds the IPs one source keeps for one name.
const DefaultMaxIPsPerName = 100

// Config configures a Cache.
type Config struct {
	// MinTTL is the shortest time an IP is kept after an answer
	// (--tofqdns-min-ttl); a longer record TTL wins.
	MinTTL time.Duration
	// MaxIPsPerName bounds the IPs kept per source and name; when an
	// answer brings more, those expiring first are dropped. 0 means
	// DefaultMaxIPsPerName.
	MaxIPsPerName int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Entry is one learned IP of one name for one source.
type Entry struct {
	// Source is the IP of the pod that asked.
	Source netip.Addr `json:"source"`
	// Name is canonical: lower case, with the trailing dot.
	Name string     `json:"name"`
	IP   netip.Addr `json:"ip"`
	// Learned is when the last answer holding IP arrived.
	Learned time.Time `json:"learned"`
	// Expires is when the TTL (at least MinTTL) of the last answer ends;
	// the entry stays after that while a connection uses IP.
	Expires time.Time `json:"expires"`
	// TTL is the time left until Expires when the entry was read (0 once
	// expired). Not persisted.
	TTL time.Duration `json:"-"`
}

// Change is what one answer changed.
type Change struct {
	Source netip.Addr
	Name   string
	// Added are the IPs the source did not have for Name before, sorted.
	Added []netip.Addr
	// Evicted are IPs dropped for Name to stay within MaxIPsPerName.
	Evicted []netip.Addr
}

type ipState struct {
	learned, expires time.Time
}

// Cache is the name cache. It is safe for concurrent use.
type Cache struct {
	minTTL time.Duration
	maxIPs int
	now    func() time.Time

	mu sync.Mutex
	// names[source][name][ip]
	names map[netip.Addr]map[string]map[netip.Addr]ipState
}

// New returns an empty cache.
func New(c Config) *Cache {
	if c.MaxIPsPerName <= 0 {
		c.MaxIPsPerName = DefaultMaxIPsPerName
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Cache{minTTL: c.MinTTL, maxIPs: c.MaxIPsPerName, now: c.Now, names: map[netip.Addr]map[string]map[netip.Addr]ipState{}}
}

// Update records that src was told ips for name, valid for ttl. An IP it
// already had is renewed (its expiry never moves earlier). Invalid IPs are
// ignored; IPv4-mapped IPv6 addresses are stored as IPv4.
func (c *Cache) Update(src netip.Addr, name string, ips []netip.Addr, ttl time.Duration) Change {
	src = src.Unmap()
	name = matchpattern.Canonical(name)
	ch := Change{Source: src, Name: name}
	if !src.IsValid() || len(ips) == 0 {
		return ch
	}
	now := c.now()
	expires := now.Add(max(ttl, c.minTTL))

	c.mu.Lock()
	defer c.mu.Unlock()
	byName := c.names[src]
	if byName == nil {
		byName = map[string]map[netip.Addr]ipState{}
		c.names[src] = byName
	}
	set := byName[name]
	if set == nil {
		set = map[netip.Addr]ipState{}
		byName[name] = set
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.IsValid() {
			continue
		}
		st, ok := set[ip]
		if !ok {
			ch.Added = append(ch.Added, ip)
		}
		st.learned = now
		if expires.After(st.expires) {
			st.expires = expires
		}
		set[ip] = st
	}
	if over := len(set) - c.maxIPs; over > 0 {
		victims := make([]netip.Addr, 0, len(set))
		for ip := range set {
			victims = append(victims, ip)
		}
		slices.SortFunc(victims, func(a, b netip.Addr) int {
			return cmp.Or(set[a].expires.Compare(set[b].expires), a.Compare(b))
		})
		for _, ip := range victims[:over] {
			delete(set, ip)
			ch.Evicted = append(ch.Evicted, ip)
		}
		ch.Added = slices.DeleteFunc(ch.Added, func(ip netip.Addr) bool { return slices.Contains(ch.Evicted, ip) })
	}
	slices.SortFunc(ch.Added, netip.Addr.Compare)
	slices.SortFunc(ch.Evicted, netip.Addr.Compare)
	return ch
}

// Lookup returns what src has for name, sorted by IP.
func (c *Cache) Lookup(src netip.Addr, name string) []Entry {
	src, name = src.Unmap(), matchpattern.Canonical(name)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Entry
	for ip, st := range c.names[src][name] {
		out = append(out, entry(src, name, ip, st, now))
	}
	sortEntries(out)
	return out
}

// Select returns what src has for the names match accepts (e.g. a
// toFQDNs selector's matchpattern.Matcher.Match), sorted by name and IP.
func (c *Cache) Select(src netip.Addr, match func(name string) bool) []Entry {
	src = src.Unmap()
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Entry
	for name, set := range c.names[src] {
		if !match(name) {
			continue
		}
		for ip, st := range set {
			out = append(out, entry(src, name, ip, st, now))
		}
	}
	sortEntries(out)
	return out
}

// Snapshot returns every entry, sorted by source, name and IP.
func (c *Cache) Snapshot() []Entry {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Entry
	for src, byName := range c.names {
		for name, set := range byName {
			for ip, st := range set {
				out = append(out, entry(src, name, ip, st, now))
			}
		}
	}
	sortEntries(out)
	return out
}

// Expire removes the entries that expired at now and whose IP inUse says
// no connection uses (nil: none is used), and returns them sorted. An
// expired entry in use stays, and is checked again on the next call.
func (c *Cache) Expire(now time.Time, inUse func(netip.Addr) bool) []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	used := map[netip.Addr]bool{} // ask once per IP
	var out []Entry
	for src, byName := range c.names {
		for name, set := range byName {
			for ip, st := range set {
				if st.expires.After(now) {
					continue
				}
				u, asked := used[ip]
				if !asked {
					u = inUse != nil && inUse(ip)
					used[ip] = u
				}
				if u {
					continue
				}
				delete(set, ip)
				out = append(out, entry(src, name, ip, st, now))
			}
			if len(set) == 0 {
				delete(byName, name)
			}
		}
		if len(byName) == 0 {
			delete(c.names, src)
		}
	}
	sortEntries(out)
	return out
}

// Forget removes everything src learned (its pod is gone) and returns it
// sorted.
func (c *Cache) Forget(src netip.Addr) []Entry {
	src = src.Unmap()
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Entry
	for name, set := range c.names[src] {
		for ip, st := range set {
			out = append(out, entry(src, name, ip, st, now))
		}
	}
	delete(c.names, src)
	sortEntries(out)
	return out
}

// Sources returns the sources that have entries, sorted.
func (c *Cache) Sources() []netip.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]netip.Addr, 0, len(c.names))
	for src := range c.names {
		out = append(out, src)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func entry(src netip.Addr, name string, ip netip.Addr, st ipState, now time.Time) Entry {
	return Entry{Source: src, Name: name, IP: ip, Learned: st.learned, Expires: st.expires, TTL: max(st.expires.Sub(now), 0)}
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		return cmp.Or(a.Source.Compare(b.Source), cmp.Compare(a.Name, b.Name), a.IP.Compare(b.IP))
	})
}
