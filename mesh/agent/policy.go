package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/auth"
	"github.com/membrane-mesh/membrane/mesh/datapath"
	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/endpoint/hostlinks"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/flow/bpfevent"
	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/l7"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// resyncInterval regenerates every endpoint even without a change, so an
// interface that appeared after its pod's last update is still found.
const resyncInterval = 30 * time.Second

// endpoints keeps the node's pods' policy datapath (ipcache, endpoint and
// policy maps, tc programs on their host-side veths) equal to what the
// cluster's policies resolve to, and turns the datapath's flow events into
// flows. It wires the pipeline's stages: endpoint discovery
// (mesh/endpoint), the ipcache (mesh/ipcache), the resolver (mesh/policy),
// the L7 translation (xds/l7) and the datapath writer (mesh/datapath).
type endpoints struct {
	log     *slog.Logger
	node    string
	dp      *bpfpolicy.Datapath
	src     *k8s.PolicySource
	flows   *flow.Store
	metrics *policyMetrics
	// proxy gets the endpoints' L7 rules; nil without an L7 proxy.
	proxy     *proxy
	proxyPort uint16
	// auth is the node's mutual authentication; nil without identities
	// (rules requiring it drop what they match).
	auth *mutualAuth
	// dnsProxyPort is the DNS proxy's port (0: none); names are the names
	// it learned (nil: none).
	dnsProxyPort uint16
	names        func() []policy.LearnedName
	// fqdnSince is when each toFQDNs selector appeared (see
	// policy.IdentitySet.FQDNSince); those of the first regeneration are
	// trusted with what the node learned before (an agent restart).
	fqdnSince map[string]time.Time
	// selectorAdded is when a toFQDNs selector last appeared (UnixNano):
	// addresses learned before need a regeneration when renewed.
	selectorAdded atomic.Int64
	// requests ask the regeneration loop for a regeneration and wait for
	// it (see regenerateNow).
	requests chan chan struct{}
	// wanted: regenerate soon (requestRegeneration).
	wanted chan struct{}
	// proxyReady: the node proxy runs the ports the last regeneration
	// held endpoints for (proxyRan).
	proxyReady chan struct{}
	// inits are new interfaces to program with the init identity.
	inits chan initRequest

	// Used by the regeneration loop only.
	discovery endpoint.Discovery
	writer    *datapath.Writer
	cidrs     []policy.CIDRIdentity
	// repo keeps the compiled policies and the endpoints' Results across
	// regenerations: a change costs in proportion to what it touches.
	repo *policy.Repository
	// waitingForProxy counts the endpoints the last regeneration held for
	// the proxy (see proxy.held); heldChange is when the oldest change
	// they hold back was seen; held are those endpoints with the policy
	// to program once the proxy runs their ports, heldFinal what to
	// publish after (nil: nothing).
	waitingForProxy int
	heldChange      time.Time
	held            []endpointProgram
	heldFinal       func()

	// Read by the API and the event converter.
	mu      sync.RWMutex
	view    []agentapi.EndpointEntry
	results map[string]agentapi.PolicyEntry // by namespace/pod
	byIP    map[netip.Addr]policy.Result    // local endpoints by address
	ipc     ipcache.Map
	enrich  atomic.Pointer[flow.MapEnricher]
	// once is true after the first regeneration.
	once atomic.Bool
}

func newEndpoints(log *slog.Logger, node string, dp *bpfpolicy.Datapath, src *k8s.PolicySource, flows *flow.Store, m *policyMetrics) (*endpoints, error) {
	w, err := datapath.New(log, dp)
	if err != nil {
		return nil, err
	}
	e := &endpoints{
		log: log, node: node, dp: dp, src: src, flows: flows, metrics: m,
		discovery:  endpoint.Discovery{Node: node, Links: hostlinks.New()},
		writer:     w,
		repo:       policy.NewRepository(),
		results:    map[string]agentapi.PolicyEntry{},
		requests:   make(chan chan struct{}),
		wanted:     make(chan struct{}, 1),
		proxyReady: make(chan struct{}, 1),
		inits:      make(chan initRequest),
	}
	empty := flow.MapEnricher{}
	e.enrich.Store(&empty)
	return e, nil
}

// run regenerates after every change until ctx is done, closing ready
// after the first time. The caller has waited for the source's informers.
func (e *endpoints) run(ctx context.Context, ready chan<- struct{}) {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	sweep := true // look for leftover attachments: at start and on resyncs
	var waiting []chan struct{}
	// full: regenerate; else only program the endpoints the last
	// regeneration held for the proxy, which runs their ports now.
	full := true
	for first := true; ; first = false {
		var identities <-chan struct{} // nil: never
		if e.auth != nil {
			identities = e.auth.svids.Changed()
		}
		var err error
		if full {
			err = e.regenerate(ctx, sweep)
		} else {
			err = e.programHeld()
		}
		full = true
		if err != nil {
			e.metrics.regenerations.WithLabelValues("error").Inc()
			e.log.Error("regenerate endpoint policy", "error", err)
		} else {
			e.metrics.regenerations.WithLabelValues("ok").Inc()
		}
		// A request is served once nothing waits for the proxy: the
		// programming that ends a hold follows it (proxy.onReady asks
		// for it).
		if e.waitingForProxy == 0 {
			for _, w := range waiting {
				close(w)
			}
			waiting = waiting[:0]
		}
		if first {
			e.once.Store(true)
			close(ready)
		}
		select {
		case <-ctx.Done():
			return
		case r := <-e.inits:
			// Written at once; the regeneration that follows writes
			// its real policy if the pod is known.
			e.serveInit(r)
			sweep = false
		case <-e.src.Changed():
			sweep = false
		case <-identities:
			sweep = false
		case <-e.wanted:
			sweep = false
		case <-e.proxyReady:
			sweep = false
			// Programming the held endpoints is the regeneration that
			// ends the hold, when no other change waits (a regeneration
			// would also write them).
			full = len(e.held) == 0 || len(e.proxy.held()) > 0 ||
				len(e.src.Changed()) > 0 || len(identities) > 0 || len(e.wanted) > 0
		case w := <-e.requests:
			sweep = false
			waiting = append(waiting, w)
			// Every request waiting now is served by one regeneration.
			for more := true; more; {
				select {
				case w := <-e.requests:
					waiting = append(waiting, w)
				default:
					more = false
				}
			}
		case <-t.C:
			sweep = true
		}
	}
}

// regenerateNow returns after a regeneration that started after the call
// (or when ctx is done): what changed before the call is programmed then.
func (e *endpoints) regenerateNow(ctx context.Context) error {
	w := make(chan struct{})
	select {
	case e.requests <- w:
	case <-ctx.Done():
		return fmt.Errorf("wait for the policy regeneration: %w", ctx.Err())
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the policy regeneration: %w", ctx.Err())
	}
}

// requestRegeneration asks for a regeneration soon, without waiting.
func (e *endpoints) requestRegeneration() {
	select {
	case e.wanted <- struct{}{}:
	default:
	}
}

// proxyRan tells the regeneration loop that the node proxy runs the ports
// endpoints were held for (proxy.onReady), without waiting.
func (e *endpoints) proxyRan() {
	select {
	case e.proxyReady <- struct{}{}:
	default:
	}
}

// synced reports whether the endpoints were regenerated once.
func (e *endpoints) synced() bool { return e.once.Load() }

// resultOf returns the resolved policy of the local endpoint with address ip.
func (e *endpoints) resultOf(ip netip.Addr) (policy.Result, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.byIP[ip]
	return r, ok
}

// identityOf returns ip's identity in the ipcache (longest prefix match).
func (e *endpoints) identityOf(ip netip.Addr) identity.ID {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for bits := 32; bits >= 0 && ip.Is4(); bits-- {
		if id, ok := e.ipc[netip.PrefixFrom(ip, bits).Masked()]; ok {
			return id
		}
	}
	return identity.World
}

// Endpoint returns the flow endpoint owning ip (flow.Enricher).
func (e *endpoints) Endpoint(ip netip.Addr) (flow.Endpoint, bool) {
	return e.enrich.Load().Endpoint(ip)
}

// runEvents turns the datapath's events into flows until ctx is done.
func (e *endpoints) runEvents(ctx context.Context) error {
	r, err := e.dp.Events()
	if err != nil {
		return fmt.Errorf("open flow events: %w", err)
	}
	defer r.Close()
	return r.Run(ctx, func(ev bpfpolicy.FlowEvent) {
		e.flows.Add(bpfevent.Flow(ev, e.node, e))
	})
}

// regenerate programs the ipcache and every local endpoint from the
// current state, then removes what is no longer wanted; with sweep, also
// programs attached to interfaces it does not know.
func (e *endpoints) regenerate(ctx context.Context, sweep bool) error {
	st, err := e.src.State()
	if err != nil {
		return err
	}
	start := time.Now()
	ph := phaseClock{last: start}
	ids := policy.IdentitySet{Identities: st.Identities, CIDRs: e.cidrs}
	if e.names != nil {
		ids.Names = e.names()
		e.fqdnSince = selectorsSince(e.fqdnSince, st.Policies, start)
		ids.FQDNSince = e.fqdnSince
		for _, t := range e.fqdnSince {
			if t.Equal(start) {
				e.selectorAdded.Store(start.UnixNano())
				break
			}
		}
	}
	res := e.repo.Update(st.Policies, ids, policy.Config{ProxyPort: e.proxyPort, DNSProxyPort: e.dnsProxyPort, MutualAuth: e.auth != nil})
	e.cidrs = res.CIDRIdentities()
	ph.lap(phaseResolve)
	var errs []error
	for _, p := range res.Problems() {
		e.log.Warn("policy rule not applied", "problem", p)
	}
	want := ipcache.Build(ipcache.Input{Node: e.node, Nodes: st.Nodes, APIServer: st.APIServer, Pods: st.Pods, CIDRs: e.cidrs})
	errs = append(errs, e.writer.SetIPCache(want)...)
	ph.lap(phaseIPCache)

	if sweep {
		e.discovery.Invalidate()
	}
	locals, err := e.discovery.Local(st.Pods)
	if err != nil {
		return err
	}
	ph.lap(phaseDiscover)
	var (
		view    []agentapi.EndpointEntry
		results = map[string]agentapi.PolicyEntry{}
		byIP    = map[netip.Addr]policy.Result{}
		keep    = map[int]bool{}
		// Pods of one identity and container ports share their policy:
		// resolve it once.
		resolved = map[string]policy.Result{}
		resolve  = func(pod endpoint.Pod) policy.Result {
			key := pod.ResolveKey()
			r, ok := resolved[key]
			if !ok {
				r = e.repo.Resolve(pod.PolicyEndpoint())
				resolved[key] = r
			}
			return r
		}
	)
	var (
		plan    auth.Plan
		authCfg *authState
		// final publishes the L7 configuration without the chains it
		// dropped, once the maps are written; nil: nothing dropped.
		final func()
		// held are the redirected ports Envoy may not run yet; holding
		// counts the endpoints that keep their previous policy until it
		// does, pending is what to program for them then.
		held    map[redirected]bool
		holding int
		pending []endpointProgram
	)
	if e.auth != nil && e.proxy != nil {
		var as authState
		plan, as = e.auth.plan(e.node, st, resolve)
		authCfg = &as
		for _, p := range plan.Problems {
			e.log.Warn("mutual authentication not applied", "problem", p)
		}
	}
	if e.proxy != nil {
		// Envoy runs the L7 rules before the datapath redirects to them,
		// and keeps them until it no longer does.
		var l7eps []l7.Endpoint
		for _, l := range locals {
			if l.Identity != 0 && l.IP.IsValid() {
				if r := resolve(l.Pod); len(r.L7) > 0 {
					l7eps = append(l7eps, l7.Endpoint{Name: l.Namespace + "/" + l.Name, IP: l.IP, Rules: r.L7})
				}
			}
		}
		opts := l7.Options{ProxyPort: e.proxyPort, AccessLogCluster: accessLogCluster, UpstreamMark: bpfpolicy.MarkMagicFromProxy}
		n, origins, problems := l7.Config(opts, l7eps, want)
		for _, p := range problems {
			e.log.Warn("L7 rule not applied", "problem", p)
		}
		// Chains the configuration drops stay published until the datapath
		// no longer redirects to them (below).
		n, publish, dropped := e.proxy.prepare(n)
		e.proxy.update(ctx, publish, origins, authCfg)
		held = e.proxy.held()
		if dropped {
			final = func() { e.proxy.update(ctx, n, origins, authCfg) }
		}
		ph.lap(phaseProxy)
	}
	for _, l := range locals {
		pod, iface := l.Pod, l.Interface
		entry := agentapi.EndpointEntry{Namespace: pod.Namespace, Pod: pod.Name, IP: pod.IP, Identity: uint32(pod.Identity), Labels: flow.SortedLabels(pod.Labels)}
		switch {
		case !l.HasInterface:
			entry.State = agentapi.StateWaitingForInterface
		case pod.Identity == 0:
			entry.State = agentapi.StateWaitingForIdentity
			entry.Ifindex, entry.Interface = iface.Index, iface.Name
			// Its labels changed: the previous identity's policy stays
			// enforced until the new identity exists.
			e.keepProgrammed(&entry, keep, iface.Index, pod.IP)
		default:
			entry.Ifindex, entry.Interface = iface.Index, iface.Name
			r := resolve(pod)
			authEgress := plan.Egress[pod.IP]
			// The entries programmed, mutual authentication's included
			// (policy get shows these).
			r.Rules = withAuthEgress(withAuthIngress(r.Rules, plan.Ingress[pod.IP]), authEgress)
			h := endpointProgram{entry: entry, ifindex: iface.Index, result: r, ep: datapath.Endpoint{
				Addr: pod.IP, Identity: pod.Identity,
				EnforceIngress: r.EnforceIngress, EnforceEgress: r.EnforceEgress, AuthEgress: len(authEgress) > 0,
				Rules: r.Rules,
			}}
			key := pod.Namespace + "/" + pod.Name
			if redirectsTo(r.Rules, pod.IP, e.proxyPort, held) {
				// Its previous policy stays until Envoy runs its new
				// ports: then it is programmed (programHeld).
				holding++
				pending = append(pending, h)
				entry.State = agentapi.StateWaitingForProxy
				if e.keepProgrammed(&entry, keep, iface.Index, pod.IP) {
					if pe, ok := e.results[key]; ok {
						pe.Endpoint = entry
						results[key], byIP[pod.IP] = pe, e.byIP[pod.IP]
					}
				}
				break
			}
			keep[iface.Index] = true
			pe, err := e.program(h)
			if err != nil {
				errs = append(errs, err)
			}
			entry = pe.Endpoint
			results[key], byIP[pod.IP] = pe, r
		}
		view = append(view, entry)
	}
	ph.lap(phaseEndpoints)
	// Interfaces the CNI plugin announced whose pod is not known yet keep
	// their init identity while the interface is there.
	if inits := e.writer.Init(); len(inits) > 0 {
		present, err := e.discovery.Interfaces()
		if err != nil {
			return err
		}
		for ifindex, addr := range inits {
			if !keep[ifindex] && present[addr].Index == ifindex {
				keep[ifindex] = true
			}
		}
	}
	errs = append(errs, e.writer.Prune(keep, sweep)...)
	// Connections already open meet the change once it is whole.
	if err := e.writer.Revise(); err != nil {
		errs = append(errs, err)
	}
	enforced := ph.lap(phasePrune)
	// A held endpoint may still redirect to a dropped chain.
	if final != nil && holding == 0 {
		final()
		ph.lap(phaseProxy)
	}
	e.metrics.regenerationSeconds.Observe(ph.last.Sub(start).Seconds())
	e.metrics.observePhases(&ph)
	e.log.Debug("policy regenerated", "took", enforced.Sub(start), "phases", &ph, "sweep", sweep, "waitingForProxy", holding)
	e.recordEnforced(st.ChangedAt, enforced, holding > 0)
	e.metrics.invalidPolicies.Set(float64(len(e.src.Invalid())))
	e.countStates(view)
	e.waitingForProxy, e.held, e.heldFinal = holding, pending, nil
	if holding > 0 {
		e.heldFinal = final
	}
	e.mu.Lock()
	e.view, e.results, e.byIP, e.ipc = view, results, byIP, want
	e.mu.Unlock()
	enr := enricher(st)
	e.enrich.Store(&enr)
	return errors.Join(errs...)
}

// recordEnforced records, at the end of a regeneration at at, the change seen
// at changed (zero: none) as enforced unless endpoints are held for the
// proxy: a change is enforced once none is.
func (e *endpoints) recordEnforced(changed, at time.Time, holding bool) {
	if !e.heldChange.IsZero() && (changed.IsZero() || e.heldChange.Before(changed)) {
		changed = e.heldChange
	}
	switch {
	case holding:
		e.heldChange = changed
	case !changed.IsZero():
		e.heldChange = time.Time{}
		e.metrics.changeToEnforced.Observe(at.Sub(changed).Seconds())
	}
}

// countStates sets the endpoints metric from view.
func (e *endpoints) countStates(view []agentapi.EndpointEntry) {
	e.metrics.endpoints.Reset()
	for _, v := range view {
		e.metrics.endpoints.WithLabelValues(v.State).Inc()
	}
}

// endpointProgram is what a regeneration programs for an endpoint (now, or
// once the node proxy runs its new ports): its entry as the API shows it
// before, its interface, and the policy to write there.
type endpointProgram struct {
	entry   agentapi.EndpointEntry
	ifindex int
	ep      datapath.Endpoint
	result  policy.Result
}

// program writes h's policy and returns its entry as the API shows it (an
// error names the endpoint).
func (e *endpoints) program(h endpointProgram) (agentapi.PolicyEntry, error) {
	entry := h.entry
	id, err := e.writer.Program(h.ifindex, h.ep)
	entry.ID = uint16(id)
	entry.EnforceIngress, entry.EnforceEgress = h.result.EnforceIngress, h.result.EnforceEgress
	entry.Rules = len(h.result.Rules)
	entry.State = agentapi.StateReady
	if err != nil {
		entry.State, entry.Error = agentapi.StateError, err.Error()
		err = fmt.Errorf("endpoint %s/%s: %w", entry.Namespace, entry.Pod, err)
		// Its interface may be gone: look again next time.
		e.discovery.Invalidate()
	}
	pe := agentapi.PolicyEntry{Endpoint: entry, Result: h.result}
	for _, p := range h.result.Problems {
		pe.Problems = append(pe.Problems, p.Error())
	}
	return pe, err
}

// programHeld ends the last regeneration once the node proxy runs the
// ports it held endpoints for: it programs them (and publishes the proxy
// configuration without the chains it dropped) without computing the rest
// again. A change since then is the next regeneration's.
func (e *endpoints) programHeld() error {
	start := time.Now()
	ph := phaseClock{last: start}
	held, final := e.held, e.heldFinal
	e.held, e.heldFinal, e.waitingForProxy = nil, nil, 0
	var errs []error
	done := make(map[string]agentapi.PolicyEntry, len(held))
	for _, h := range held {
		pe, err := e.program(h)
		if err != nil {
			errs = append(errs, err)
		}
		done[pe.Endpoint.Namespace+"/"+pe.Endpoint.Pod] = pe
	}
	if err := e.writer.Revise(); err != nil {
		errs = append(errs, err)
	}
	enforced := ph.lap(phaseEndpoints)
	if final != nil {
		final()
		ph.lap(phaseProxy)
	}
	e.metrics.regenerationSeconds.Observe(ph.last.Sub(start).Seconds())
	e.metrics.observePhases(&ph)
	e.log.Debug("held endpoints programmed", "took", enforced.Sub(start), "phases", &ph, "endpoints", len(held))
	e.recordEnforced(time.Time{}, enforced, false)
	e.mu.Lock()
	// The regeneration's maps are replaced whole by the next one: these
	// are updated in place, under the lock their readers take.
	for i, v := range e.view {
		if pe, ok := done[v.Namespace+"/"+v.Pod]; ok {
			e.view[i], e.results[v.Namespace+"/"+v.Pod], e.byIP[v.IP] = pe.Endpoint, pe, pe.Result
		}
	}
	e.countStates(e.view)
	e.mu.Unlock()
	return errors.Join(errs...)
}

// selectorsSince returns when each toFQDNs selector of policies appeared:
// as in since, or now for a new one; every selector gets the zero time on
// the first call (since nil), selectors no policy has any more are dropped.
func selectorsSince(since map[string]time.Time, policies []policy.Policy, now time.Time) map[string]time.Time {
	first := since == nil
	out := map[string]time.Time{}
	for _, p := range policies {
		for _, r := range p.Rules {
			for _, pr := range r.Egress {
				for _, f := range pr.FQDNs {
					k := policy.SinceKey(p, f)
					if t, ok := since[k]; ok {
						out[k] = t
					} else if !first {
						out[k] = now
					} else {
						out[k] = time.Time{}
					}
				}
			}
		}
	}
	return out
}

// enricher describes every pod and node address for flows.
func enricher(st k8s.PolicyState) flow.MapEnricher {
	m := flow.MapEnricher{}
	for _, n := range st.Nodes {
		for _, ip := range n.IPs {
			m[ip] = flow.Endpoint{PodName: n.Name}
		}
		if n.IngressIP.IsValid() {
			m[n.IngressIP] = flow.Endpoint{Identity: uint32(identity.Ingress)}
		}
	}
	for _, p := range st.Pods {
		m[p.IP] = flow.Endpoint{Identity: uint32(p.Identity), Namespace: p.Namespace, PodName: p.Name, Labels: flow.SortedLabels(p.Labels), Cluster: p.Cluster}
	}
	return m
}

// endpointList is the API's view, sorted.
func (e *endpoints) endpointList() []agentapi.EndpointEntry {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := slices.Clone(e.view)
	slices.SortFunc(out, func(a, b agentapi.EndpointEntry) int {
		return strings.Compare(a.Namespace+"/"+a.Pod, b.Namespace+"/"+b.Pod)
	})
	return out
}

// policyOf returns a local pod's resolved policy.
func (e *endpoints) policyOf(namespace, pod string) (agentapi.PolicyEntry, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	p, ok := e.results[namespace+"/"+pod]
	return p, ok
}

// keepProgrammed keeps the policy the endpoint on ifindex has, if it is
// ip's, and shows it in entry; it reports whether there was one.
func (e *endpoints) keepProgrammed(entry *agentapi.EndpointEntry, keep map[int]bool, ifindex int, ip netip.Addr) bool {
	p, ok := e.writer.Programmed(ifindex)
	if !ok || p.Endpoint.Addr != ip {
		return false
	}
	keep[ifindex] = true
	entry.ID, entry.Identity = uint16(p.Endpoint.ID), uint32(p.Endpoint.Identity)
	entry.EnforceIngress, entry.EnforceEgress, entry.Rules = p.Endpoint.EnforceIngress, p.Endpoint.EnforceEgress, len(p.Rules)
	return true
}

// redirectsTo reports whether rules of the endpoint at ip redirect to the
// L7 proxy on proxyPort for a port in held.
func redirectsTo(rules []policy.DatapathRule, ip netip.Addr, proxyPort uint16, held map[redirected]bool) bool {
	if len(held) == 0 {
		return false
	}
	for _, r := range rules {
		if r.Verdict != policy.Redirect || r.ProxyPort != proxyPort {
			continue
		}
		dir := translate.Ingress
		if r.Direction == policy.Egress {
			dir = translate.Egress
		}
		for port := r.Port; ; port++ {
			if held[redirected{dir, ip, port}] {
				return true
			}
			if port >= r.EndPort {
				break
			}
		}
	}
	return false
}
