package agent

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/dnsproxy"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/fqdn"
	"github.com/membrane-mesh/membrane/mesh/fqdn/matchpattern"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// fqdnGCInterval is how often expired names are collected (and the cache
// saved when it changed).
const fqdnGCInterval = time.Second

// dnsPolicy is the agent's side of DNS-aware policy: it answers the DNS
// proxy's policy questions from the endpoints' resolved DNS rules, learns
// the addresses of allowed answers for the names the asking pod's toFQDNs
// selectors match (regenerating the endpoints' policy before the answer
// goes on), collects names whose TTL passed and that no connection uses,
// and keeps the name cache on the node across restarts.
type dnsPolicy struct {
	log       *slog.Logger
	node      string
	cache     *fqdn.Cache
	statePath string
	eps       *endpoints
	flows     *flow.Store
	proxy     *dnsproxy.Proxy
	dirty     atomic.Bool // the cache changed since it was saved
	// ready is closed once every endpoint's policy is programmed.
	ready <-chan struct{}
	// matchers are the selectors compiled so far.
	matchersMu sync.RWMutex
	matchers   map[policy.FQDN]matchpattern.Matcher
}

func newDNSPolicy(log *slog.Logger, cfg Config, eps *endpoints, flows *flow.Store, ready <-chan struct{}) (*dnsPolicy, error) {
	path := cfg.fqdnStateFile()
	cache, err := fqdn.Load(path, fqdn.Config{MinTTL: cfg.FQDNMinTTL})
	if err != nil {
		// A damaged file must not keep the agent down: what it held is
		// learned again from the next answers.
		log.Error("start with an empty name cache", "error", err)
		cache = fqdn.New(fqdn.Config{MinTTL: cfg.FQDNMinTTL})
	}
	d := &dnsPolicy{log: log, node: cfg.NodeName, cache: cache, statePath: path, eps: eps, flows: flows, ready: ready,
		matchers: map[policy.FQDN]matchpattern.Matcher{}}
	d.proxy = dnsproxy.New(log, dnsproxy.Config{
		ListenAddr:   netip.AddrFrom4([4]byte{127, 0, 0, 1}),
		Port:         cfg.DNSProxyPort,
		DenyResponse: cfg.DNSDenyResponse,
		Mark:         bpfpolicy.MarkMagicFromProxy,
	}, d, d, d.flow)
	log.Info("name cache loaded", "file", path, "entries", len(cache.Snapshot()))
	return d, nil
}

// names is the resolver's input: every address the node's pods learned
// (IPv4 only: the datapath's), by name and time learned.
func (d *dnsPolicy) names() []policy.LearnedName {
	type key struct {
		name    string
		learned time.Time
	}
	byKey := map[key][]netip.Addr{}
	for _, e := range d.cache.Snapshot() {
		if e.IP.Is4() {
			k := key{e.Name, e.Learned}
			byKey[k] = append(byKey[k], e.IP)
		}
	}
	out := make([]policy.LearnedName, 0, len(byKey))
	for k, ips := range byKey {
		slices.SortFunc(ips, netip.Addr.Compare)
		out = append(out, policy.LearnedName{Name: k.name, IPs: slices.Compact(ips), Learned: k.learned})
	}
	slices.SortFunc(out, func(a, b policy.LearnedName) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.Learned.Compare(b.Learned))
	})
	return out
}

// Allowed implements dnsproxy.Policy: the asking pod's DNS rules for the
// server's identity and port decide. A pod whose policy has no DNS rules
// (any more: a flow redirected before a policy change) is not refused:
// L3/L4 policy let the flow through.
func (d *dnsPolicy) Allowed(ctx context.Context, r dnsproxy.Request) bool {
	if !d.wait(ctx) {
		return false
	}
	res, ok := d.eps.resultOf(r.Source.Addr().Unmap())
	if !ok {
		return false
	}
	if len(res.DNS) == 0 {
		return true
	}
	remote := d.eps.identityOf(r.Server.Addr().Unmap())
	proto := model.UDP
	if r.Protocol == dnsproxy.TCP {
		proto = model.TCP
	}
	for _, rule := range res.DNS {
		if rule.Direction == policy.Egress && rule.Covers(remote, proto, r.Server.Port()) && d.matchesAny(rule.Names, r.Name) {
			return true
		}
	}
	return false
}

// matchesAny reports whether one of sels matches name; invalid selectors
// match nothing (the policy's status says why).
func (d *dnsPolicy) matchesAny(sels []policy.FQDN, name string) bool {
	for _, s := range sels {
		d.matchersMu.RLock()
		m, ok := d.matchers[s]
		d.matchersMu.RUnlock()
		if !ok {
			m, _ = s.Matcher() // the zero Matcher matches nothing
			d.matchersMu.Lock()
			if len(d.matchers) > 10000 {
				clear(d.matchers) // selectors of policies long gone
			}
			d.matchers[s] = m
			d.matchersMu.Unlock()
		}
		if m.Match(name) {
			return true
		}
	}
	return false
}

// Learned implements dnsproxy.Observer: the answer's IPv4 addresses for a
// name the pod's toFQDNs selectors match go into the cache; new ones are
// programmed (ipcache and policy) before it returns.
func (d *dnsPolicy) Learned(ctx context.Context, a dnsproxy.Answer) error {
	if !d.wait(ctx) {
		return fmt.Errorf("learn %s: %w", a.Name, ctx.Err())
	}
	src := a.Source.Addr().Unmap()
	res, ok := d.eps.resultOf(src)
	if !ok || !d.matchesAny(res.FQDNSelectors, a.Name) {
		return nil
	}
	var ips []netip.Addr
	for _, ip := range a.IPs {
		if ip = ip.Unmap(); ip.Is4() {
			ips = append(ips, ip)
		}
	}
	if len(ips) == 0 {
		return nil
	}
	// An address learned before a selector appeared is trusted by it from
	// this answer on (see policy.LearnedName): that too needs programming.
	renewsOld := false
	added := d.eps.selectorAdded.Load()
	for _, e := range d.cache.Lookup(src, a.Name) {
		renewsOld = renewsOld || e.Learned.UnixNano() < added
	}
	ch := d.cache.Update(src, a.Name, ips, a.TTL)
	d.dirty.Store(true)
	if len(ch.Added) == 0 && len(ch.Evicted) == 0 && !renewsOld {
		return nil
	}
	if err := d.eps.regenerateNow(ctx); err != nil {
		return fmt.Errorf("allow %s for %s: %w", a.Name, src, err)
	}
	return nil
}

// wait returns once the endpoints' policy is known (true), or when ctx is
// done (false): questions that arrive while the agent starts wait for it.
func (d *dnsPolicy) wait(ctx context.Context) bool {
	select {
	case <-d.ready:
		return true
	case <-ctx.Done():
		return false
	}
}

// flow turns the proxy's answers into flows.
func (d *dnsPolicy) flow(a dnsproxy.Answer) {
	l := flow.DNSLog{
		Time: time.Now().Add(-a.Duration), Source: a.Source, Destination: a.Server,
		Protocol: flow.UDP, Query: a.Name, QTypes: []string{a.TypeName()}, RCode: a.RCodeName(),
		IPs: a.IPs, TTL: a.TTL, Verdict: flow.Verdict(a.Verdict), Reason: a.Reason, Duration: a.Duration,
	}
	if a.Protocol == dnsproxy.TCP {
		l.Protocol = flow.TCP
	}
	d.flows.Add(flow.FromDNSLog(l, d.node, d.eps))
}

// run serves the proxy and collects expired names until ctx is done.
func (d *dnsPolicy) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- d.proxy.Run(ctx) }()
	t := time.NewTicker(fqdnGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.save()
			return <-errc
		case err := <-errc:
			d.save()
			if err != nil {
				return fmt.Errorf("DNS proxy: %w", err)
			}
			return nil
		case <-t.C:
			d.collect(ctx)
			d.save()
		}
	}
}

// collect removes the names whose TTL passed and whose addresses no
// connection uses, and the names of pods that are gone; the endpoints'
// policy follows.
func (d *dnsPolicy) collect(ctx context.Context) {
	// The connections are read only when an entry expired.
	var (
		used    map[netip.Addr]bool
		read    bool
		readErr error
	)
	inUse := func(ip netip.Addr) bool {
		if !read {
			read = true
			used, readErr = liveAddrs(d.eps.dp)
			if readErr != nil {
				d.log.Error("read connections for the name cache", "error", readErr)
			}
		}
		// Unknown connections: every address counts as used until next time.
		return readErr != nil || used[ip]
	}
	removed := d.cache.Expire(time.Now(), inUse)
	for _, src := range d.cache.Sources() {
		if _, ok := d.eps.resultOf(src); !ok && d.eps.synced() {
			removed = append(removed, d.cache.Forget(src)...)
		}
	}
	if len(removed) == 0 {
		return
	}
	d.dirty.Store(true)
	for _, e := range removed {
		d.log.Debug("name expired", "source", e.Source, "name", e.Name, "ip", e.IP)
	}
	d.eps.requestRegeneration()
}

// liveAddrs are the addresses of the connections that still exist.
func liveAddrs(dp *bpfpolicy.Datapath) (map[netip.Addr]bool, error) {
	conns, err := dp.DumpConntrack()
	if err != nil {
		return nil, err
	}
	used := map[netip.Addr]bool{}
	for _, c := range conns {
		if connLive(c) {
			used[c.Dst.Addr()] = true
			used[c.Src.Addr()] = true
		}
	}
	return used, nil
}

// connLive reports whether a conntrack entry is a connection that still
// exists: not closed, and idle for less than its lifetime.
func connLive(c bpfpolicy.Conn) bool {
	lifetime := bpfpolicy.DefaultCTTimeoutOther
	if c.Proto == bpfpolicy.TCP {
		f := c.OrigFlags | c.ReplyFlags
		switch {
		case f&bpfpolicy.RST != 0 || c.OrigFlags&bpfpolicy.FIN != 0 && c.ReplyFlags&bpfpolicy.FIN != 0:
			return false
		case c.ReplySeen:
			lifetime = bpfpolicy.DefaultCTTimeoutTCP
		default:
			lifetime = bpfpolicy.DefaultCTTimeoutSYN
		}
	}
	return c.Idle < lifetime
}

func (d *dnsPolicy) save() {
	if !d.dirty.Swap(false) {
		return
	}
	if err := d.cache.Save(d.statePath); err != nil {
		d.dirty.Store(true)
		d.log.Error("save the name cache", "error", err)
	}
}

// fqdnCache is the API's view of the name cache.
func (a *Agent) fqdnCache() agentapi.FQDNCacheList {
	out := agentapi.FQDNCacheList{Node: a.cfg.NodeName, Enabled: a.dns != nil, Entries: []agentapi.FQDNRecord{}}
	if a.dns == nil {
		return out
	}
	for _, e := range a.dns.cache.Snapshot() {
		r := agentapi.FQDNRecord{Source: e.Source, Name: e.Name, IP: e.IP, Learned: e.Learned, Expires: e.Expires,
			TTLSeconds: int64(e.TTL / time.Second)}
		if ep, ok := a.eps.Endpoint(e.Source); ok {
			r.Namespace, r.Pod = ep.Namespace, ep.PodName
		}
		out.Entries = append(out.Entries, r)
	}
	return out
}
