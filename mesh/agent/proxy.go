package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/gateway/nack"
	gwtranslate "github.com/membrane-mesh/membrane/gateway/translate"
	"github.com/membrane-mesh/membrane/mesh/api/v1alpha1"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/tproxy"
	"github.com/membrane-mesh/membrane/xds/accesslog"
	"github.com/membrane-mesh/membrane/xds/server"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// accessLogCluster is the bootstrap's static cluster of the node's Envoy
// that reaches this agent: ADS and the access-log service share it.
const accessLogCluster = "membrane-agent"

// proxy is the agent's side of the node's L7 proxy: the TPROXY plumbing
// that delivers redirected connections to Envoy, the ADS and access-log
// services Envoy connects to, and the translation of the endpoints' L7
// rules into Envoy's configuration. It reports what Envoy rejects on the
// Node (see v1alpha1.AnnotationProxyRejected).
type proxy struct {
	log    *slog.Logger
	cfg    Config
	client kubernetes.Interface
	xds    *server.Server
	als    *accesslog.Receiver
	// tr translates the configurations, rebuilding only what changed
	// (the regeneration loop's).
	tr *translate.Translator
	// last is the L7 configuration last published, with its policies'
	// contributions (the regeneration loop's, as is lastAuth).
	last        *translate.Node
	lastOrigins map[string]string
	lastAuth    *authState
	// authMetrics count authenticated connections; nil: not counted.
	authMetrics *authMetrics
	// waits counts and times the holds (see settle); nil: not counted.
	// onReady is called when held ports become ready, outside the
	// regeneration loop. Both set before run.
	waits   *proxyWaits
	onReady func()
	// holding wakes run when a publication holds ports (their deadline).
	holding chan struct{}
	// status is the xDS server's (xds.Status).
	status func() server.Status
	// groups keeps the published groups across restarts; restored are
	// those a previous run of the agent published last, whose labels the
	// first publication continues (the regeneration loop's).
	groups   groupSaver
	restored []translate.Group

	// pub serializes publications: the L7 policy resources and the
	// gateway resources share one snapshot.
	pub      sync.Mutex
	l7Res    translate.Resources
	gatewayR gwtranslate.Resources

	mu sync.Mutex
	// l7Origins are the origins of the L7 part published last.
	l7Origins origins
	// published holds the origins of the newest published configuration,
	// of the one in force and of the last published one that was in force
	// whole, by version: which policies a rejection is about.
	published map[string]origins
	inForce   string // the last published version Envoy ran whole
	reported  string // the annotation value last written ("" none)
	// ports are the redirected ports of the L7 configuration published
	// last, ready those of them the datapath may redirect to (see held),
	// heldSince when the others began to wait (zero: none waits).
	ports, ready map[redirected]bool
	heldSince    time.Time
	// stall keeps holds from waiting for an Envoy that did not answer.
	stall stallGate
}

// origins are where a published configuration came from.
type origins struct {
	policies map[string]string   // policy → fingerprint of its contribution
	routes   map[string][]string // route configuration → its policies
}

func newProxy(log *slog.Logger, cfg Config, client kubernetes.Interface, flows *flow.Store, enrich flow.Enricher) *proxy {
	p := &proxy{
		log: log, cfg: cfg, client: client,
		xds:       server.New(log, cfg.NodeName),
		tr:        translate.NewTranslator(),
		published: map[string]origins{},
		holding:   make(chan struct{}, 1),
	}
	p.status = p.xds.Status
	p.groups = groupSaver{path: cfg.proxyGroupsFile(), wake: make(chan struct{}, 1)}
	if p.groups.path != "" {
		gs, err := loadProxyGroups(p.groups.path)
		if err != nil {
			log.Warn("the L7 chains shared by groups of pods get new names: the node's Envoy drains their connections once", "error", err)
		}
		p.restored, p.groups.saved = gs, gs
	}
	p.als = accesslog.New(log, func(l flow.HTTPLog) {
		// One count per tunnel (its CONNECT), not per request inside.
		if l.SourceID != "" && l.Method == "CONNECT" && p.authMetrics != nil {
			p.authMetrics.count(l)
		}
		flows.Add(flow.FromHTTPLog(l, cfg.NodeName, enrich))
	})
	return p
}

// installTProxy installs the TPROXY plumbing of the node's proxies: the
// L7 proxy's listener (TCP), the mutual authentication proxy's outbound
// one (TCP) and the DNS proxy's (UDP and TCP).
func installTProxy(ctx context.Context, log *slog.Logger, cfg Config) error {
	if cfg.ProxyPort == 0 && cfg.DNSProxyPort == 0 {
		return nil
	}
	tc := tproxy.NewConfig(cfg.ProxyPort)
	tc.ToProxyMark = 0
	if cfg.ProxyPort != 0 {
		tc.ToProxyMark = bpfpolicy.ToProxyMark(cfg.ProxyPort)
	}
	if cfg.DNSProxyPort != 0 {
		tc.Extra = []tproxy.Listener{{Port: cfg.DNSProxyPort, ToProxyMark: bpfpolicy.ToProxyMark(cfg.DNSProxyPort), TCP: true, UDP: true}}
	}
	if cfg.ProxyPort != 0 && cfg.MTLSOutboundPort != 0 {
		// The mutual authentication proxy's outbound listener.
		tc.Extra = append(tc.Extra, tproxy.Listener{Port: cfg.MTLSOutboundPort, ToProxyMark: bpfpolicy.ToProxyMark(cfg.MTLSOutboundPort), TCP: true})
	}
	if err := tproxy.Install(ctx, log, tc); err != nil {
		return fmt.Errorf("install the proxies' tproxy rules: %w", err)
	}
	return nil
}

// run serves Envoy until ctx is done.
func (p *proxy) run(ctx context.Context) error {
	lis, err := net.Listen("tcp", p.cfg.XDSAddr)
	if err != nil {
		return fmt.Errorf("listen on --xds-addr %s: %w", p.cfg.XDSAddr, err)
	}
	g := grpc.NewServer()
	p.xds.Register(g)
	p.als.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	p.log.Info("serving the node proxy", "xds", p.cfg.XDSAddr, "proxyPort", p.cfg.ProxyPort)
	// deadline fires when the held ports' wait times out.
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	deadline.Stop()
	arm := func() {
		if at, ok := p.holdDeadline(); ok {
			deadline.Reset(time.Until(at))
		}
	}
	for {
		select {
		case <-ctx.Done():
			g.Stop()
			<-served
			p.xds.Close()
			return nil
		case err := <-served:
			return fmt.Errorf("serve xds: %w", err)
		case <-p.xds.Changed():
			// Before report, which may call the API server.
			p.settle(time.Now(), true)
			p.report(ctx)
		case <-p.holding:
			arm()
		case <-p.groups.wake:
			p.saveGroups()
		case <-deadline.C:
			p.settle(time.Now(), true)
			arm()
		}
	}
}

// update publishes the L7 configuration of the node's endpoints. An
// endpoint port the proxy did not serve (a filter chain, or an endpoint
// in the listener's matcher) is held until Envoy runs it (see held). Most
// regenerations change no L7 rule: an unchanged configuration is not
// translated again.
func (p *proxy) update(ctx context.Context, n translate.Node, policies map[string]string, as *authState) {
	if p.last != nil && reflect.DeepEqual(*p.last, n) && maps.Equal(p.lastOrigins, policies) && sameAuth(p.lastAuth, as) {
		return
	}
	res, err := p.tr.Resources(n)
	if err != nil {
		// The resolver's rules are validated by the policies' converters:
		// what still fails here stays out, and the last configuration
		// stays in force.
		p.log.Error("translate the L7 configuration", "error", err)
		return
	}
	if as != nil {
		if err := addAuth(&res, as); err != nil {
			p.log.Error("translate the mutual authentication configuration", "error", err)
			return
		}
	}
	version, err := p.publish(ctx, &res, nil)
	if err != nil {
		p.log.Error("publish the L7 configuration", "error", err)
		return
	}
	if as != nil && p.authMetrics != nil && (p.lastAuth == nil || p.lastAuth.snap.Version != as.snap.Version) {
		p.authMetrics.secretUpdates.Inc()
	}
	routes := translate.RouteOrigins(n)
	now := time.Now()
	p.mu.Lock()
	p.published[version] = origins{policies: policies, routes: routes}
	p.l7Origins = p.published[version]
	p.ports = redirectedPorts(n)
	maps.DeleteFunc(p.ready, func(k redirected, _ bool) bool { return !p.ports[k] })
	if p.heldSince.IsZero() && len(p.heldLocked()) > 0 {
		p.heldSince = now
	}
	p.groups.next = &n
	p.mu.Unlock()
	p.last, p.lastOrigins, p.lastAuth = &n, policies, as
	if p.groups.path != "" {
		select {
		case p.groups.wake <- struct{}{}:
		default:
		}
	}
	// Without a connected Envoy nothing is held; otherwise run keeps the
	// deadline.
	p.settle(now, false)
	select {
	case p.holding <- struct{}{}:
	default:
	}
}

// redirected is an endpoint port the datapath redirects to the proxy.
type redirected struct {
	dir  translate.Direction
	ep   netip.Addr
	port uint16
}

func redirectedPorts(n translate.Node) map[redirected]bool {
	out := make(map[redirected]bool, len(n.Ports))
	for _, pt := range n.Ports {
		out[redirected{pt.Direction, pt.Endpoint, pt.Port}] = true
	}
	return out
}

// prepare returns n, and what to publish until the maps are written (n
// with the chains it drops: see withDroppedChains), both labelled so that
// their groups keep the chains of the configuration published last where
// they continue them (translate.InheritLabels): a policy joining or
// leaving a group's set renames no chain, and Envoy drains none.
//
// The first configuration continues the groups a previous run of the
// agent published last (see groupSaver), as Envoy may still run them.
func (p *proxy) prepare(n translate.Node) (next, publish translate.Node, dropped bool) {
	if p.last == nil {
		if len(p.restored) > 0 {
			n.GroupLabels = translate.InheritLabels(p.restored, n)
		}
		return n, n, false
	}
	if reflect.DeepEqual(p.last.Ports, n.Ports) {
		// Nothing changed (most regenerations).
		n.GroupLabels = p.last.GroupLabels
		return n, n, false
	}
	publish, dropped = p.withDroppedChains(n)
	labels := translate.InheritLabels(translate.Groups(*p.last), publish)
	n.GroupLabels, publish.GroupLabels = labels, labels
	return n, publish, dropped
}

// withDroppedChains returns n with the ports of the configuration
// published last that n no longer has, and whether there were any. Kept
// published until the datapath stops redirecting to them, they close no
// connection redirected meanwhile.
func (p *proxy) withDroppedChains(n translate.Node) (translate.Node, bool) {
	if p.last == nil {
		return n, false
	}
	has := redirectedPorts(n)
	var dropped []translate.Port
	for _, pt := range p.last.Ports {
		if !has[redirected{pt.Direction, pt.Endpoint, pt.Port}] {
			dropped = append(dropped, pt)
		}
	}
	if len(dropped) == 0 {
		return n, false
	}
	n.Ports = append(slices.Clone(n.Ports), dropped...)
	return n, true
}

// proxyAckTimeout bounds how long an endpoint waits for the node's Envoy
// to run its new filter chains before the datapath redirects to them.
const proxyAckTimeout = 2 * time.Second

// Outcomes of a hold (membrane_proxy_waits_total).
const (
	waitReady        = "ready"
	waitRejected     = "rejected"
	waitNotConnected = "not-connected"
	waitTimeout      = "timeout"
	waitSkipped      = "skipped"
)

// proxyWaits are the metrics of the holds.
type proxyWaits struct {
	total   *prometheus.CounterVec // by outcome
	seconds prometheus.Histogram
}

// newProxyWaits registers membrane_proxy_waits_total and
// membrane_proxy_wait_seconds.
func newProxyWaits(reg prometheus.Registerer) *proxyWaits {
	w := &proxyWaits{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "proxy", Name: "waits_total",
			Help: "Waits of endpoints for the node proxy to run their new redirected ports, by how they ended " +
				"(ready, rejected, not-connected, timeout, skipped: the proxy ran nothing since a timeout).",
		}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "membrane", Subsystem: "proxy", Name: "wait_seconds",
			Help:    "How long endpoints waited for the node proxy to run their new redirected ports (from the publication to its end).",
			Buckets: policyLatencyBuckets(),
		}),
	}
	reg.MustRegister(w.total, w.seconds)
	return w
}

// held returns the redirected ports of the published configuration the
// datapath must not redirect to yet, as Cilium waits for its proxy's ACK
// before writing an endpoint's redirects: a connection redirected to a
// chain Envoy does not run yet would be closed. The endpoints with such
// ports keep their previous policy meanwhile; the others are written at
// once (see settle for how a hold ends).
func (p *proxy) held() map[redirected]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldLocked()
}

func (p *proxy) heldLocked() map[redirected]bool {
	var out map[redirected]bool
	for k := range p.ports {
		if !p.ready[k] {
			if out == nil {
				out = map[redirected]bool{}
			}
			out[k] = true
		}
	}
	return out
}

// holdDeadline is when the held ports' wait times out (false: none waits).
func (p *proxy) holdDeadline() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.heldSince.Add(proxyAckTimeout), !p.heldSince.IsZero()
}

// settle ends the hold, if any, when the datapath may redirect to the held
// ports: Envoy runs the newest configuration; it rejected it (the
// rejection is reported on the Node); no Envoy is connected (one that
// connects gets the newest); or Envoy did not answer within
// proxyAckTimeout. After a timeout, holds do not wait until Envoy has run
// a newer configuration (stallGate): an Envoy that is connected but stuck
// would otherwise hold every endpoint that gets a new port for the whole
// timeout. With wake, onReady asks for the regeneration that writes the
// endpoints held.
func (p *proxy) settle(now time.Time, wake bool) {
	st := p.status()
	p.mu.Lock()
	outcome, waited := p.settleLocked(st, now)
	p.mu.Unlock()
	switch outcome {
	case "":
		return
	case waitTimeout:
		p.log.Warn("redirecting to the node proxy before it runs the new configuration; not waiting for it again until it runs a newer one",
			"waited", waited)
	case waitRejected:
		p.log.Warn("redirecting to the node proxy, which rejected the new configuration", "waited", waited, "error", st.Rejected.Error)
	case waitSkipped:
		p.log.Debug("not waiting for the node proxy: it has run nothing since it last did not answer in time")
	}
	if p.waits != nil {
		p.waits.total.WithLabelValues(outcome).Inc()
		p.waits.seconds.Observe(waited.Seconds())
	}
	if wake && p.onReady != nil {
		p.onReady()
	}
}

// settleLocked is settle's decision, the server's status being st: how
// the hold ended ("": it goes on) and how long it waited.
func (p *proxy) settleLocked(st server.Status, now time.Time) (outcome string, waited time.Duration) {
	if p.heldSince.IsZero() {
		return "", 0
	}
	waited = now.Sub(p.heldSince)
	switch {
	case st.InSync():
		outcome = waitReady
	case !st.Connected:
		outcome = waitNotConnected
	case st.Rejected != nil && st.Rejected.Version == st.Published:
		outcome = waitRejected
	case !p.stall.wait(st):
		outcome = waitSkipped
	case waited >= proxyAckTimeout:
		p.stall.timedOut(st)
		outcome = waitTimeout
	default:
		return "", waited
	}
	p.ready, p.heldSince = maps.Clone(p.ports), time.Time{}
	return outcome, waited
}

// stallGate decides whether a regeneration waits for the node's Envoy: not
// while the Envoy whose wait last timed out has run no configuration since.
// Versions cannot tell: they are digests of the configuration, which can
// come back to one Envoy ran before (a rule removed and added again), so
// the gate keeps the server's counts of streams and accepted
// configurations.
type stallGate struct {
	stalled bool
	at      stallMark
}

// stallMark is which Envoy (its ADS stream) ran which accepted
// configuration.
type stallMark struct{ streams, accepted int }

func markOf(st server.Status) stallMark { return stallMark{st.Streams, st.Accepted} }

// wait reports whether to wait, the server's status being st.
func (g *stallGate) wait(st server.Status) bool {
	if g.stalled && markOf(st) == g.at {
		return false
	}
	g.stalled = false
	return true
}

// timedOut records a wait that timed out, the server's status being st.
func (g *stallGate) timedOut(st server.Status) { g.stalled, g.at = true, markOf(st) }

// setGateway publishes the node Envoy's gateway listeners and clusters
// (gateway/node), next to the L7 policy ones.
func (p *proxy) setGateway(ctx context.Context, res gwtranslate.Resources) {
	version, err := p.publish(ctx, nil, &res)
	if err != nil {
		p.log.Error("publish the gateway configuration", "error", err)
		return
	}
	// The L7 part is the last one published: its origins are this
	// version's too.
	p.mu.Lock()
	if _, ok := p.published[version]; !ok {
		p.published[version] = p.l7Origins
	}
	p.mu.Unlock()
}

// publish replaces the L7 policy resources (l7 not nil) or the gateway
// resources (gw not nil) and publishes both in one snapshot.
func (p *proxy) publish(ctx context.Context, l7 *translate.Resources, gw *gwtranslate.Resources) (string, error) {
	p.pub.Lock()
	defer p.pub.Unlock()
	if l7 != nil {
		p.l7Res = *l7
	}
	if gw != nil {
		p.gatewayR = *gw
	}
	return p.xds.Publish(ctx, translate.Resources{
		Listeners: slices.Concat(p.l7Res.Listeners, p.gatewayR.Listeners),
		Routes:    slices.Concat(p.l7Res.Routes, p.gatewayR.Routes),
		Clusters:  slices.Concat(p.l7Res.Clusters, p.gatewayR.Clusters),
		Secrets:   slices.Concat(p.l7Res.Secrets, p.gatewayR.Secrets),
	})
}

// report writes the rejection of the newest configuration, if any, on the
// Node, naming the policies it is about (see rejectedPolicies).
func (p *proxy) report(ctx context.Context) {
	st := p.xds.Status()
	p.mu.Lock()
	if _, ok := p.published[st.Acked]; ok {
		p.inForce = st.Acked
	}
	for v := range p.published {
		if v != st.Published && v != st.Acked && v != p.inForce {
			delete(p.published, v)
		}
	}
	var value string
	if r := st.Rejected; r != nil {
		rej := v1alpha1.ProxyRejection{Version: r.Version, Error: r.Error, At: metav1.NewTime(r.At),
			Policies: rejectedPolicies(r.Resources, p.published[r.Version], p.published[p.inForce]),
			Gateways: p.rejectedGateways(st.Refused)}
		b, err := json.Marshal(rej)
		if err != nil {
			p.mu.Unlock()
			p.log.Error("encode the proxy rejection", "error", err)
			return
		}
		value = string(b)
	}
	if value == p.reported {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if err := p.annotate(ctx, value); err != nil {
		p.log.Error("report the proxy's configuration status on the node", "error", err)
		return
	}
	p.mu.Lock()
	p.reported = value
	p.mu.Unlock()
}

// rejectedGateways attributes the refused gateway listeners to their
// Gateways (gateway/nack): the refused version is the one published last
// (a refusal lasts while it is published unchanged).
func (p *proxy) rejectedGateways(refused []server.Refusal) []v1alpha1.GatewayRejection {
	var out []v1alpha1.GatewayRejection
	for _, r := range refused {
		if r.TypeURL == resource.RouteType && strings.HasPrefix(r.Name, gwtranslate.RoutePrefix) {
			if g, ok := p.rejectedGatewayRoutes(r); ok {
				out = append(out, g)
			}
			continue
		}
		if r.TypeURL == resource.SecretType &&
			(strings.HasPrefix(r.Name, gwtranslate.CertificatePrefix) || strings.HasPrefix(r.Name, gwtranslate.ClientCAPrefix)) {
			p.pub.Lock()
			gs, err := nack.AttributeSecret(r.Name, p.gatewayR.Listeners, r.Error)
			p.pub.Unlock()
			if err != nil {
				p.log.Warn("attribute a rejected gateway certificate or client CA bundle", "secret", r.Name, "error", err)
			}
			out = append(out, gs...)
			continue
		}
		if r.TypeURL == resource.SecretType && strings.HasPrefix(r.Name, gwtranslate.CAPrefix) {
			p.pub.Lock()
			gs, err := nack.AttributeCA(r.Name, p.gatewayR.Clusters, p.gatewayR.Routes, r.Error)
			p.pub.Unlock()
			if err != nil {
				p.log.Warn("attribute a rejected BackendTLSPolicy CA bundle", "secret", r.Name, "error", err)
			}
			out = append(out, gs...)
			continue
		}
		if r.TypeURL != resource.ListenerType || !strings.HasPrefix(r.Name, gwtranslate.ListenerPrefix) {
			continue
		}
		p.pub.Lock()
		i := slices.IndexFunc(p.gatewayR.Listeners, func(l *listenerv3.Listener) bool { return l.GetName() == r.Name })
		var l *listenerv3.Listener
		if i >= 0 {
			l = p.gatewayR.Listeners[i]
		}
		p.pub.Unlock()
		if l == nil {
			continue
		}
		running, _ := p.xds.Running(r.TypeURL, r.Name).(*listenerv3.Listener)
		g, err := nack.Attribute(l, running, r.Error)
		if err != nil {
			p.log.Warn("attribute a rejected gateway listener", "listener", r.Name, "error", err)
			continue
		}
		out = append(out, g)
	}
	return out
}

// rejectedGatewayRoutes attributes a refused gateway route configuration
// (RDS) to its Gateway; false: not one published now.
func (p *proxy) rejectedGatewayRoutes(r server.Refusal) (v1alpha1.GatewayRejection, bool) {
	p.pub.Lock()
	i := slices.IndexFunc(p.gatewayR.Routes, func(rc *routev3.RouteConfiguration) bool { return rc.GetName() == r.Name })
	var rc *routev3.RouteConfiguration
	if i >= 0 {
		rc = p.gatewayR.Routes[i]
	}
	p.pub.Unlock()
	if rc == nil {
		return v1alpha1.GatewayRejection{}, false
	}
	running, _ := p.xds.Running(r.TypeURL, r.Name).(*routev3.RouteConfiguration)
	g, err := nack.AttributeRoutes(rc, running, r.Error)
	if err != nil {
		p.log.Warn("attribute a rejected gateway route configuration", "routes", r.Name, "error", err)
		return v1alpha1.GatewayRejection{}, false
	}
	return g, true
}

func (p *proxy) annotate(ctx context.Context, value string) error {
	var v any = value
	if value == "" {
		v = nil // JSON merge patch: remove
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha1.AnnotationProxyRejected: v}}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := p.client.CoreV1().Nodes().Patch(ctx, p.cfg.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch node %s: %w", p.cfg.NodeName, err)
	}
	return nil
}

// rejectedPolicies are the policies a rejection of resources (route
// configurations of rejected) is about: those of the rejected route
// configurations whose contribution differs from the configuration in
// force; all of the rejected route configurations' policies when none
// differs; the changed policies (changedPolicies) when the rejected
// resources are not route configurations.
func rejectedPolicies(resources []string, rejected, inForce origins) []string {
	changed := changedPolicies(rejected.policies, inForce.policies)
	var about []string
	for _, r := range resources {
		about = append(about, rejected.routes[r]...)
	}
	if len(about) == 0 {
		return changed
	}
	slices.Sort(about)
	about = slices.Compact(about)
	if both := slices.DeleteFunc(slices.Clone(about), func(p string) bool { return !slices.Contains(changed, p) }); len(both) > 0 {
		return both
	}
	return about
}

// changedPolicies are the policies of rejected whose contribution differs
// from inForce; every policy of rejected when none differs.
func changedPolicies(rejected, inForce map[string]string) []string {
	var out []string
	for name, fp := range rejected {
		if inForce[name] != fp {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		out = slices.Collect(maps.Keys(rejected))
	}
	slices.Sort(out)
	return out
}
