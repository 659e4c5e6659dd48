// Package l7 translates the L7 rules the policy resolver found for this
// node's endpoints, with the ipcache's addresses of their peers, into the
// node proxy's model (xds/translate.Node). It is pure and golden-tested:
// testdata/<case>.in.yaml → <case>.out.yaml (go test ./xds/l7 -update).
package l7

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/membrane-mesh/membrane/mesh/identity"
	"github.com/membrane-mesh/membrane/mesh/ipcache"
	"github.com/membrane-mesh/membrane/mesh/policy"
	"github.com/membrane-mesh/membrane/xds/translate"
)

// MaxPortRange is the widest port range L7 rules are expanded over (one
// filter chain per port).
const MaxPortRange = 64

// Options are the node proxy's fixed settings.
type Options struct {
	// ProxyPort is the transparent listener's port.
	ProxyPort uint16 `json:"proxyPort"`
	// AccessLogCluster is the bootstrap's cluster of the access-log service.
	AccessLogCluster string `json:"accessLogCluster,omitempty"`
	// UpstreamMark marks the proxy's upstream connections.
	UpstreamMark uint32 `json:"upstreamMark,omitempty"`
}

// Endpoint is one local endpoint's L7 rules.
type Endpoint struct {
	Name  string          `json:"name"` // namespace/pod
	IP    netip.Addr      `json:"ip"`
	Rules []policy.L7Rule `json:"rules"`
}

// Config is the node's L7 configuration: each local endpoint's L7 rules,
// with the remote identities' addresses as peers and the policies they
// come from (Port.Origins: which policies a rejection of a route
// configuration is about), and for every policy that contributed, a
// fingerprint of what it contributed (origins: which of them changed). Rules that cannot
// be proxied are left out and reported in problems.
func Config(o Options, eps []Endpoint, ipc ipcache.Map) (n translate.Node, origins map[string]string, problems []error) {
	byIdentity := ipc.ByIdentity()
	n = translate.Node{ProxyPort: o.ProxyPort, AccessLogCluster: o.AccessLogCluster, UpstreamMark: o.UpstreamMark}
	parts := map[string][]string{}
	for _, ep := range eps {
		for _, r := range ep.Rules {
			if r.EndPort > r.Port && int(r.EndPort-r.Port) >= MaxPortRange {
				problems = append(problems, fmt.Errorf("%s: L7 rules on ports %d-%d: ranges over %d ports are not proxied", ep.Name, r.Port, r.EndPort, MaxPortRange))
				continue
			}
			peers, all := Peers(r.RemoteIdentities, byIdentity)
			dir := translate.Ingress
			if r.Direction == policy.Egress {
				dir = translate.Egress
			}
			var from []string
			for _, o := range r.Origins {
				name, _, _ := strings.Cut(o, " rules[")
				from = append(from, name)
			}
			slices.Sort(from)
			from = slices.Compact(from)
			for port := r.Port; ; port++ {
				pt := translate.Port{Direction: dir, Endpoint: ep.IP, Port: port, Origins: from}
				if all || len(peers) > 0 {
					pt.Rules = []translate.Rule{{Peers: peers, HTTP: HTTPRules(r.HTTP)}}
				}
				n.Ports = append(n.Ports, pt)
				if port >= r.EndPort {
					break
				}
			}
			fp, err := json.Marshal(struct {
				Endpoint netip.Addr
				Rule     policy.L7Rule
			}{ep.IP, r})
			if err != nil {
				problems = append(problems, err)
				continue
			}
			for _, o := range r.Origins {
				name, _, _ := strings.Cut(o, " rules[")
				parts[name] = append(parts[name], string(fp))
			}
		}
	}
	origins = map[string]string{}
	for name, ps := range parts {
		slices.Sort(ps)
		origins[name] = strings.Join(slices.Compact(ps), "\n")
	}
	return n, origins, problems
}

// Peers are the addresses of the remote identities; all when one of them
// is identity 0 (every peer). An identity without addresses adds none: a
// rule without peers (and not all) lets nobody in.
func Peers(ids []identity.ID, byIdentity map[identity.ID][]netip.Prefix) (peers []netip.Prefix, all bool) {
	for _, id := range ids {
		if id == 0 {
			return nil, true
		}
		peers = append(peers, byIdentity[id]...)
	}
	return peers, false
}

// HTTPRules converts the resolver's HTTP rules. A header match with a
// mismatch action does not deny, so it is no requirement.
func HTTPRules(rs []policy.HTTPRule) []translate.HTTPRule {
	out := make([]translate.HTTPRule, 0, len(rs))
	for _, r := range rs {
		h := translate.HTTPRule{Method: r.Method, Path: r.Path, Host: r.Host}
		for _, m := range r.Headers {
			if m.Mismatch == "" {
				h.Headers = append(h.Headers, translate.Header{Name: m.Name, Value: m.Value})
			}
		}
		out = append(out, h)
	}
	return out
}
