package agent

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	bpfpolicy "github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/auth"
	"github.com/membrane-mesh/membrane/mesh/endpoint"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/k8s"
	"github.com/membrane-mesh/membrane/mesh/model"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/mesh/svid"
	"github.com/membrane-mesh/membrane/xds/mtls"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// Default ports of mutual authentication (Config.MTLSOutboundPort,
// Config.MTLSTunnelPort).
const (
	DefaultMTLSOutboundPort = 15002
	DefaultMTLSTunnelPort   = 15008
)

// mutualAuth is the node's mutual authentication: the identities it holds
// and the proxy ports. nil on endpoints without a proxy or identities.
type mutualAuth struct {
	svids        svid.Source
	outboundPort uint16
	tunnelPort   uint16
	idleTimeout  time.Duration
}

// authState is one regeneration's mutual-authentication configuration.
type authState struct {
	cfg  mtls.Config
	snap svid.Snapshot
}

// wantsAuth reports whether any policy requires authentication.
func wantsAuth(ps []policy.Policy) bool {
	for _, p := range ps {
		for _, r := range p.Rules {
			for _, pr := range slices.Concat(r.Ingress, r.Egress) {
				if pr.AuthRequired {
					return true
				}
			}
		}
	}
	return false
}

// plan plans the node's mutual authentication from st, resolving pods with
// resolve (cached per regeneration).
func (m *mutualAuth) plan(node string, st k8s.PolicyState, resolve func(endpoint.Pod) policy.Result) (auth.Plan, authState) {
	snap := m.svids.Snapshot()
	out := authState{snap: snap, cfg: mtls.Config{
		OutboundPort: m.outboundPort, TunnelPort: m.tunnelPort,
		UpstreamMark: bpfpolicy.MarkMagicFromProxy, AccessLogCluster: accessLogCluster,
		IdleTimeout: m.idleTimeout,
	}}
	if snap.Bundle == nil || len(snap.Bundle.X509Authorities()) == 0 || !wantsAuth(st.Policies) {
		return auth.Plan{}, out
	}
	held := make(map[spiffeid.ID]bool, len(snap.SVIDs))
	for id := range snap.SVIDs {
		held[id] = true
	}
	byIP := map[netip.Addr]endpoint.Pod{}
	pods := make([]auth.Pod, 0, len(st.Pods))
	for _, p := range st.Pods {
		byIP[p.IP] = p
		pods = append(pods, auth.PodFrom(p.Namespace, p.Name, p.Node, p.IP, p.Identity, p.Labels))
	}
	plan := auth.New(auth.Input{
		Node: node, TrustDomain: snap.Bundle.TrustDomain(), Nodes: st.Nodes, Pods: pods, SVIDs: held,
		OutboundPort: m.outboundPort,
		Rules:        func(p auth.Pod) []policy.DatapathRule { return resolve(byIP[p.IP]).Rules },
		L7:           func(p auth.Pod) []policy.L7Rule { return resolve(byIP[p.IP]).L7 },
	})
	out.cfg.Outbound, out.cfg.Inbound = plan.Outbound, plan.Inbound
	return plan, out
}

// withAuthIngress replaces a local pod's ingress entries whose L7 rules the
// authenticated tunnel applies (auth.Plan.Ingress) by their rewritten
// allow.
func withAuthIngress(rules, replace []policy.DatapathRule) []policy.DatapathRule {
	if len(replace) == 0 {
		return rules
	}
	out := slices.Clone(rules)
	for _, w := range replace {
		for i, r := range out {
			if r.Direction == w.Direction && r.RemoteIdentity == w.RemoteIdentity && r.Proto == w.Proto &&
				r.Port == w.Port && r.EndPort == w.EndPort {
				out[i] = w
			}
		}
	}
	return out
}

// withAuthEgress adds a pod's egress redirects to the authenticating proxy
// to its resolved rules; an allow of the same entry becomes the redirect
// (no longer requiring authentication at the source: the tunnel is it).
// Where the pod's own egress policy redirects the same entry to the L7
// proxy, that stays (the two do not compose on the source side: across
// nodes the destination drops the connection, and an egress rule requiring
// authentication drops it at the source); a deny stays.
func withAuthEgress(rules, add []policy.DatapathRule) []policy.DatapathRule {
	if len(add) == 0 {
		return rules
	}
	out := slices.Clone(rules)
	for _, a := range add {
		i := slices.IndexFunc(out, func(r policy.DatapathRule) bool {
			return r.Direction == model.Egress && r.RemoteIdentity == a.RemoteIdentity && r.Proto == a.Proto &&
				r.Port == a.Port && r.EndPort == a.EndPort
		})
		switch {
		case i < 0:
			if l7Overlaps(out, a) {
				continue
			}
			// An allow of every protocol on the ports that requires
			// authentication (an egress rule's) would make the redirect
			// require it too: split it into its UDP and SCTP parts, which
			// stay dropped.
			if j := slices.IndexFunc(out, func(r policy.DatapathRule) bool {
				return r.Direction == model.Egress && r.RemoteIdentity == a.RemoteIdentity && r.Proto == model.AnyProtocol &&
					r.Port != 0 && r.Port == a.Port && r.EndPort == a.EndPort && r.Verdict == model.Allow && r.AuthRequired
			}); j >= 0 {
				udp, sctp := out[j], out[j]
				udp.Proto, sctp.Proto = model.UDP, model.SCTP
				out[j] = udp
				out = append(out, sctp)
				a.Origins = append(slices.Clone(udp.Origins), a.Origins...)
			}
			out = append(out, a)
		case out[i].Verdict == model.Allow:
			// The tunnel is the authentication an egress rule requires.
			out[i].Verdict, out[i].ProxyPort, out[i].AuthRequired = model.Redirect, a.ProxyPort, false
			out[i].Origins = append(slices.Clone(out[i].Origins), a.Origins...)
		}
	}
	return out
}

// l7Overlaps: an egress L7 redirect of the same peer (or every peer) whose
// ports overlap a's; two redirects of one entry to different ports
// conflict in the datapath.
func l7Overlaps(rules []policy.DatapathRule, a policy.DatapathRule) bool {
	lo, hi := span(a)
	for _, r := range rules {
		if r.Direction != model.Egress || r.Verdict != model.Redirect || r.RemoteIdentity != a.RemoteIdentity {
			continue
		}
		if r.Proto != model.AnyProtocol && r.Proto != model.TCP {
			continue
		}
		rlo, rhi := span(r)
		if rlo <= hi && lo <= rhi {
			return true
		}
	}
	return false
}

func span(r policy.DatapathRule) (uint16, uint16) {
	if r.Port == 0 {
		return 0, 65535
	}
	return r.Port, max(r.Port, r.EndPort)
}

// sameAuth: equal plans and the same identities.
func sameAuth(a, b *authState) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.snap.Version == b.snap.Version && reflect.DeepEqual(a.cfg, b.cfg)
}

// addAuth adds the mutual-authentication listeners, clusters and secrets
// to res. Only the secrets the listeners and clusters name are served: in
// ADS mode the cache answers Envoy's secret requests only when they name
// every secret of the snapshot.
func addAuth(res *translate.Resources, as *authState) error {
	r, err := as.cfg.Resources()
	if err != nil {
		return err
	}
	if len(r.Listeners) == 0 && len(r.Clusters) == 0 {
		return nil
	}
	used := map[spiffeid.ID]*x509svid.SVID{}
	for _, o := range as.cfg.Outbound {
		used[o.SourceID] = as.snap.SVIDs[o.SourceID]
	}
	for _, in := range as.cfg.Inbound {
		used[in.DestinationID] = as.snap.SVIDs[in.DestinationID]
	}
	for id, s := range used {
		if s == nil {
			return fmt.Errorf("no SVID for %s", id)
		}
	}
	secrets, err := mtls.Secrets(used, as.snap.Bundle)
	if err != nil {
		return err
	}
	res.Listeners = append(res.Listeners, r.Listeners...)
	res.Routes = append(res.Routes, r.Routes...)
	res.Clusters = append(res.Clusters, r.Clusters...)
	res.Secrets = append(res.Secrets, secrets...)
	return nil
}

// authMetrics are mutual authentication's metrics. TLS handshakes and their
// failures are Envoy's own statistics (listener.0.0.0.0_15008.ssl.*).
type authMetrics struct {
	connections   *prometheus.CounterVec
	secretUpdates prometheus.Counter
}

func newAuthMetrics(reg prometheus.Registerer) *authMetrics {
	m := &authMetrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "mutual_auth", Name: "connections_total",
			Help: "Connections to local pods that arrived over mutual TLS, by outcome (allowed, denied: the peer's SPIFFE ID or address is not allowed).",
		}, []string{"outcome"}),
		secretUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "membrane", Subsystem: "mutual_auth", Name: "secret_updates_total",
			Help: "Configurations published to the node's Envoy with new SVIDs or trust bundle (issuance, renewal, CA rotation).",
		}),
	}
	reg.MustRegister(m.connections, m.secretUpdates)
	return m
}

func (m *authMetrics) count(l flow.HTTPLog) {
	outcome := "allowed"
	if l.Denied {
		outcome = "denied"
	}
	m.connections.WithLabelValues(outcome).Inc()
}
