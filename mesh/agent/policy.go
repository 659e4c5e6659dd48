package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/tools/cache"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/agentapi"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/flow/bpfevent"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/policy"
)

// resyncInterval regenerates every endpoint even without a change, so an
// interface that appeared after its pod's last update is still found.
const resyncInterval = 30 * time.Second

// endpoints keeps the node's pods' policy datapath (ipcache, endpoint and
// policy maps, tc programs on their host-side veths) equal to what the
// cluster's policies resolve to, and turns the datapath's flow events into
// flows.
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

	// Written by the regeneration loop only.
	ipcache    map[netip.Prefix]bpfpolicy.Identity
	programmed map[int]programmed // by ifindex
	cidrs      []policy.CIDRIdentity

	// Read by the API and the event converter.
	mu      sync.RWMutex
	view    []agentapi.EndpointEntry
	results map[string]agentapi.PolicyEntry // by namespace/pod
	enrich  atomic.Pointer[flow.MapEnricher]
}

// programmed is what one interface's endpoint has in the maps.
type programmed struct {
	ep    bpfpolicy.Endpoint
	rules []bpfpolicy.Rule
	// attached: this process attached the programs (restored entries are
	// attached again once, which also checks their links).
	attached bool
}

func newEndpoints(log *slog.Logger, node string, dp *bpfpolicy.Datapath, src *k8s.PolicySource, flows *flow.Store, m *policyMetrics) (*endpoints, error) {
	dump, err := dp.Dump()
	if err != nil {
		return nil, fmt.Errorf("read pinned policy maps: %w", err)
	}
	e := &endpoints{
		log: log, node: node, dp: dp, src: src, flows: flows, metrics: m,
		ipcache:    map[netip.Prefix]bpfpolicy.Identity{},
		programmed: map[int]programmed{},
		results:    map[string]agentapi.PolicyEntry{},
	}
	for _, c := range dump.IPCache {
		e.ipcache[c.Prefix] = c.Identity
	}
	for _, ep := range dump.Endpoints {
		e.programmed[ep.Ifindex] = programmed{ep: ep.Endpoint}
	}
	empty := flow.MapEnricher{}
	e.enrich.Store(&empty)
	log.Info("policy datapath restored", "ipcache", len(dump.IPCache), "endpoints", len(dump.Endpoints), "policyEntries", len(dump.Policy))
	return e, nil
}

// run regenerates after every change until ctx is done, closing ready
// after the first time. The caller has waited for the source's informers.
func (e *endpoints) run(ctx context.Context, ready chan<- struct{}) {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	sweep := true // look for leftover attachments: at start and on resyncs
	for first := true; ; first = false {
		if err := e.regenerate(ctx, sweep); err != nil {
			e.metrics.regenerations.WithLabelValues("error").Inc()
			e.log.Error("regenerate endpoint policy", "error", err)
		} else {
			e.metrics.regenerations.WithLabelValues("ok").Inc()
		}
		if first {
			close(ready)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.src.Changed():
			sweep = false
		case <-t.C:
			sweep = true
		}
	}
}

// synced waits for the source's informers.
func (e *endpoints) synced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), e.src.Synced()...)
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
	res := policy.New(st.Policies, policy.IdentitySet{Identities: st.Identities, CIDRs: e.cidrs}, policy.Config{ProxyPort: e.proxyPort})
	e.cidrs = res.CIDRIdentities()
	var errs []error
	for _, p := range res.Problems() {
		e.log.Warn("policy rule not applied", "problem", p)
	}
	want := desiredIPCache(st, e.node, e.cidrs)
	errs = append(errs, e.applyIPCache(want)...)

	ifaces, err := hostInterfaces()
	if err != nil {
		return err
	}
	var (
		view    []agentapi.EndpointEntry
		results = map[string]agentapi.PolicyEntry{}
		keep    = map[int]bool{}
		// Pods of one identity and container ports share their policy:
		// resolve it once.
		resolved = map[string]policy.Result{}
		resolve  = func(pod k8s.Pod) policy.Result {
			key := resolveKey(pod)
			r, ok := resolved[key]
			if !ok {
				r = res.Resolve(policy.Endpoint{Identity: pod.Identity, Labels: pod.Labels, Namespace: pod.Namespace, NamedPorts: pod.NamedPorts})
				resolved[key] = r
			}
			return r
		}
	)
	if e.proxy != nil {
		// Envoy gets the L7 rules before the datapath redirects to them.
		var l7 []l7Endpoint
		for _, pod := range st.Pods {
			if pod.Node == e.node && pod.Identity != 0 && pod.IP.IsValid() {
				if r := resolve(pod); len(r.L7) > 0 {
					l7 = append(l7, l7Endpoint{name: pod.Namespace + "/" + pod.Name, ip: pod.IP, rules: r.L7})
				}
			}
		}
		n, origins, problems := l7Config(e.proxyPort, l7, want)
		for _, p := range problems {
			e.log.Warn("L7 rule not applied", "problem", p)
		}
		e.proxy.update(ctx, n, origins)
	}
	for _, pod := range st.Pods {
		if pod.Node != e.node {
			continue
		}
		entry := agentapi.EndpointEntry{Namespace: pod.Namespace, Pod: pod.Name, IP: pod.IP, Identity: uint32(pod.Identity), Labels: flow.SortedLabels(pod.Labels)}
		iface, ok := ifaces[pod.IP]
		switch {
		case !ok:
			entry.State = agentapi.StateWaitingForInterface
		case pod.Identity == 0:
			entry.State = agentapi.StateWaitingForIdentity
			entry.Ifindex, entry.Interface = iface.index, iface.name
			if p, ok := e.programmed[iface.index]; ok && p.ep.Addr == pod.IP {
				// Its labels changed: the previous identity's policy stays
				// enforced until the new identity exists.
				keep[iface.index] = true
				entry.ID, entry.Identity = uint16(p.ep.ID), uint32(p.ep.Identity)
				entry.EnforceIngress, entry.EnforceEgress, entry.Rules = p.ep.EnforceIngress, p.ep.EnforceEgress, len(p.rules)
			}
		default:
			entry.Ifindex, entry.Interface = iface.index, iface.name
			keep[iface.index] = true
			r := resolve(pod)
			ep := bpfpolicy.Endpoint{
				ID: e.endpointID(iface.index, pod.IP), Identity: bpfpolicy.Identity(pod.Identity), Addr: pod.IP,
				EnforceIngress: r.EnforceIngress, EnforceEgress: r.EnforceEgress,
			}
			entry.ID = uint16(ep.ID)
			entry.EnforceIngress, entry.EnforceEgress = r.EnforceIngress, r.EnforceEgress
			entry.Rules = len(r.Rules)
			entry.State = agentapi.StateReady
			if err := e.program(iface.index, ep, datapathRules(r.Rules)); err != nil {
				entry.State, entry.Error = agentapi.StateError, err.Error()
				errs = append(errs, fmt.Errorf("endpoint %s/%s: %w", pod.Namespace, pod.Name, err))
			}
			pe := agentapi.PolicyEntry{Endpoint: entry, Result: r}
			for _, p := range r.Problems {
				pe.Problems = append(pe.Problems, p.Error())
			}
			results[pod.Namespace+"/"+pod.Name] = pe
		}
		view = append(view, entry)
	}
	errs = append(errs, e.removeStale(keep, sweep)...)
	enforced := time.Now()
	e.metrics.regenerationSeconds.Observe(enforced.Sub(start).Seconds())
	if !st.ChangedAt.IsZero() {
		e.metrics.changeToEnforced.Observe(enforced.Sub(st.ChangedAt).Seconds())
	}
	e.metrics.invalidPolicies.Set(float64(len(e.src.Invalid())))
	e.metrics.endpoints.Reset()
	for _, v := range view {
		e.metrics.endpoints.WithLabelValues(v.State).Inc()
	}
	e.mu.Lock()
	e.view, e.results = view, results
	e.mu.Unlock()
	enr := enricher(st)
	e.enrich.Store(&enr)
	return errors.Join(errs...)
}

// resolveKey is what a pod's resolved policy depends on: its identity (its
// labels, namespace included) and its named ports.
func resolveKey(pod k8s.Pod) string {
	names := slices.Sorted(maps.Keys(pod.NamedPorts))
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(pod.Identity), 10))
	for _, n := range names {
		np := pod.NamedPorts[n]
		fmt.Fprintf(&b, " %s=%d/%d", n, np.Port, np.Proto)
	}
	return b.String()
}

// program writes an endpoint: with enforcement growing, its rules go in
// before its flags; with enforcement shrinking, after, so no moment
// enforces a direction without its rules. Then its programs are attached.
func (e *endpoints) program(ifindex int, ep bpfpolicy.Endpoint, rules []bpfpolicy.Rule) error {
	old, had := e.programmed[ifindex]
	if had && old.ep == ep && slices.Equal(old.rules, rules) {
		return nil
	}
	if had && old.ep.ID != ep.ID {
		if err := e.dp.SetEndpointPolicy(old.ep.ID, nil); err != nil {
			return err
		}
	}
	shrinking := had && (old.ep.EnforceIngress && !ep.EnforceIngress || old.ep.EnforceEgress && !ep.EnforceEgress)
	if shrinking {
		if err := e.dp.UpsertEndpoint(ifindex, ep); err != nil {
			return err
		}
	}
	if err := e.dp.SetEndpointPolicy(ep.ID, rules); err != nil {
		return err
	}
	if !shrinking {
		if err := e.dp.UpsertEndpoint(ifindex, ep); err != nil {
			return err
		}
	}
	if !had || !old.attached {
		if err := e.dp.Attach(ifindex); err != nil {
			return err
		}
	}
	e.programmed[ifindex] = programmed{ep: ep, rules: rules, attached: true}
	return nil
}

// endpointID keeps the ID an interface had for the same address (also
// across agent restarts), or takes the lowest free one.
func (e *endpoints) endpointID(ifindex int, addr netip.Addr) bpfpolicy.EndpointID {
	if p, ok := e.programmed[ifindex]; ok && p.ep.Addr == addr && p.ep.ID != 0 {
		return p.ep.ID
	}
	used := map[bpfpolicy.EndpointID]bool{}
	for _, p := range e.programmed {
		used[p.ep.ID] = true
	}
	for id := bpfpolicy.EndpointID(1); id != 0; id++ {
		if !used[id] {
			return id
		}
	}
	return 0 // 65535 local endpoints: UpsertEndpoint reports it
}

// removeStale forgets interfaces that no longer carry a ready endpoint
// (the pod went away, or its veth did) and, with sweep, detaches leftovers.
func (e *endpoints) removeStale(keep map[int]bool, sweep bool) []error {
	var errs []error
	for ifindex, p := range e.programmed {
		if keep[ifindex] {
			continue
		}
		if err := e.dp.DeleteEndpoint(ifindex); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.ep.ID != 0 {
			if err := e.dp.SetEndpointPolicy(p.ep.ID, nil); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := e.dp.Detach(ifindex); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(e.programmed, ifindex)
		e.log.Info("endpoint removed", "ifindex", ifindex, "endpoint", p.ep.ID)
	}
	if !sweep {
		return errs
	}
	attached, err := e.dp.Attached()
	if err != nil {
		return append(errs, err)
	}
	for _, ifindex := range attached {
		if !keep[ifindex] {
			errs = append(errs, e.dp.Detach(ifindex))
		}
	}
	return errs
}

// applyIPCache writes new and changed prefixes, then deletes stale ones.
func (e *endpoints) applyIPCache(want map[netip.Prefix]bpfpolicy.Identity) []error {
	var errs []error
	for p, id := range want {
		if cur, ok := e.ipcache[p]; ok && cur == id {
			continue
		}
		if err := e.dp.UpsertIPCache(p, id); err != nil {
			errs = append(errs, err)
			continue
		}
		e.ipcache[p] = id
	}
	for p := range e.ipcache {
		if _, ok := want[p]; ok {
			continue
		}
		if err := e.dp.DeleteIPCache(p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(e.ipcache, p)
	}
	return errs
}

// desiredIPCache maps every known address to its identity: the world
// (0.0.0.0/0), the policies' CIDR identities, the nodes (this one is host,
// the others remote-node), the API server, and every pod with an identity.
// More specific sources win: a pod over a node, the API server over a node.
func desiredIPCache(st k8s.PolicyState, node string, cidrs []policy.CIDRIdentity) map[netip.Prefix]bpfpolicy.Identity {
	want := map[netip.Prefix]bpfpolicy.Identity{
		netip.PrefixFrom(netip.IPv4Unspecified(), 0): bpfpolicy.IdentityWorld,
	}
	for _, c := range cidrs {
		if c.Prefix.Addr().Is4() {
			want[c.Prefix] = bpfpolicy.Identity(c.ID)
		}
	}
	host := func(ip netip.Addr, id bpfpolicy.Identity) {
		if ip.Is4() {
			want[netip.PrefixFrom(ip, 32)] = id
		}
	}
	for _, n := range st.Nodes {
		id := bpfpolicy.IdentityRemoteNode
		if n.Name == node {
			id = bpfpolicy.IdentityHost
		}
		for _, ip := range n.IPs {
			host(ip, id)
		}
	}
	for _, ip := range st.APIServer {
		host(ip, bpfpolicy.IdentityKubeAPIServer)
	}
	for _, p := range st.Pods {
		if p.Identity != 0 {
			host(p.IP, bpfpolicy.Identity(p.Identity))
		}
	}
	return want
}

// datapathRules converts resolved rules to the policy map's.
func datapathRules(rs []policy.DatapathRule) []bpfpolicy.Rule {
	out := make([]bpfpolicy.Rule, 0, len(rs))
	for _, r := range rs {
		out = append(out, bpfpolicy.Rule{
			Key: bpfpolicy.PolicyKey{
				Direction: bpfpolicy.Direction(r.Direction), RemoteIdentity: bpfpolicy.Identity(r.RemoteIdentity),
				Proto: bpfpolicy.Proto(r.Proto), Port: r.Port, EndPort: r.EndPort,
			},
			Entry: bpfpolicy.PolicyEntry{Verdict: bpfpolicy.Verdict(r.Verdict), ProxyPort: r.ProxyPort, AuthRequired: r.AuthRequired},
		})
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
	}
	for _, p := range st.Pods {
		m[p.IP] = flow.Endpoint{Identity: uint32(p.Identity), Namespace: p.Namespace, PodName: p.Name, Labels: flow.SortedLabels(p.Labels)}
	}
	return m
}

type hostInterface struct {
	index int
	name  string
}

// hostInterfaces finds the pods' host-side veths: the interfaces of the
// node's /32 routes to pod addresses.
func hostInterfaces() (map[netip.Addr]hostInterface, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	veths := map[int]string{}
	for _, l := range links {
		if l.Type() == "veth" {
			veths[l.Attrs().Index] = l.Attrs().Name
		}
	}
	out := map[netip.Addr]hostInterface{}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == 0 {
			continue
		}
		ones, bits := r.Dst.Mask.Size()
		name, ok := veths[r.LinkIndex]
		if !ok || ones != 32 || bits != 32 {
			continue
		}
		if ip, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			out[ip] = hostInterface{index: r.LinkIndex, name: name}
		}
	}
	return out, nil
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
