// Package mtls translates a node's mutual-authentication plan into Envoy
// resources (pure, golden-tested like xds/translate): the outbound listener
// the datapath redirects authenticated connections to, the mutual-TLS
// tunnels to the destination nodes' proxies, the inbound listener that
// terminates them, and the SDS secrets holding the node's X.509-SVIDs and
// the trust bundle.
//
// The wire protocol is HBONE-like: the source node's Envoy opens TLS 1.3 to
// the destination node's Envoy on the tunnel port, presenting the source
// workload's SVID and sending the destination workload's identity as SNI
// (see ServerName), so the destination presents that workload's SVID, which
// the source verifies against the trust bundle and the expected SPIFFE ID.
// Inside, one HTTP/2 CONNECT stream per connection names the original
// destination (:authority and the x-membrane-destination header) and the
// client's pod address (x-forwarded-for). The destination Envoy authorizes
// the peer certificate's SPIFFE ID (and the client address against that
// identity's pods) per destination, then connects to the pod from the
// client's address with the proxy's socket mark, which the destination
// datapath requires for ports whose rules require authentication. Its
// routes and their RBAC policies are a route configuration per local
// identity (RDS): pods coming and going change no filter chain.
//
// A port that also has L7 rules (Inbound.L7) composes with one proxy pass
// at each end: the source proxy only tunnels bytes, and the destination's
// CONNECT route hands the stream, instead of delivering it, to an internal
// listener (L7Listener: a user-space socket of the same Envoy, which needs
// the bootstrap extension envoy.bootstrap.internal_listener) with filter
// state shared with it: the destination, the client's address and the two
// SPIFFE IDs. There the original_dst listener filter restores the
// destination and the client's address as the connection's, an HTTP
// connection manager (HTTP/1.1 or HTTP/2, as the L7 path's) applies the
// port's HTTP rules with Envoy's RBAC filter, the L7 path's matching
// (translate.HTTPPermissions) with, as each rule's principals, the peer's
// SPIFFE ID (filter state) and the pod addresses of its identity, and
// forwards the requests that pass from the client's address with the
// proxy's socket mark; the others get 403. Its access log
// (L7AccessLogName) has one entry per request with both SPIFFE IDs.
package mtls

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/membrane-mesh/membrane/xds/translate"
)

// DefaultIdleTimeout is Config.IdleTimeout's default: Envoy's TCP proxy
// default, which the destination's CONNECT streams would otherwise cut
// at their HTTP default of 5 minutes.
const DefaultIdleTimeout = time.Hour

// Config is one node's mutual-authentication proxy configuration.
type Config struct {
	// OutboundPort is the transparent listener (on 127.0.0.1) the datapath
	// redirects authenticated connections from local pods to.
	OutboundPort uint16 `json:"outboundPort"`
	// TunnelPort is where the node's Envoy accepts mutual TLS from the
	// other nodes' (and its own) Envoy, on every address (e.g. 15008).
	TunnelPort uint16 `json:"tunnelPort"`
	// UpstreamMark is the socket mark of the inbound side's connections to
	// local pods (the datapath's from-proxy mark).
	UpstreamMark uint32 `json:"upstreamMark"`
	// AccessLogCluster names the access-log service cluster; "" disables
	// access logging.
	AccessLogCluster string `json:"accessLogCluster,omitempty"`
	// IdleTimeout closes an authenticated connection that carried no byte
	// either way for this long, on both nodes (the source's TCP proxy and
	// the destination's CONNECT stream); 0: DefaultIdleTimeout.
	IdleTimeout time.Duration `json:"idleTimeout,omitempty"`
	// Outbound are the authenticated connections local pods may open.
	Outbound []Outbound `json:"outbound,omitempty"`
	// Inbound are the local pods' ports that require authentication.
	Inbound []Inbound `json:"inbound,omitempty"`
}

// Outbound is one local pod's authenticated path to one remote pod port.
type Outbound struct {
	Source   netip.Addr  `json:"source"`
	SourceID spiffeid.ID `json:"sourceID"`
	// Destination is the remote pod; Port 0 is every port.
	Destination   netip.Addr  `json:"destination"`
	Port          uint16      `json:"port,omitempty"`
	DestinationID spiffeid.ID `json:"destinationID"`
	// Node is the address of the destination node's proxy.
	Node netip.Addr `json:"node"`
}

// Inbound is one local pod port requiring authentication.
type Inbound struct {
	Destination netip.Addr `json:"destination"`
	// Port 0 is every port.
	Port          uint16      `json:"port,omitempty"`
	DestinationID spiffeid.ID `json:"destinationID"`
	// Peers are the allowed clients; none allows nothing.
	Peers []Peer `json:"peers,omitempty"`
	// L7, when set, are the destination's HTTP rules on the port: the
	// tunnel's stream is parsed as HTTP and each request must be allowed
	// by one of them (Port must not be 0). Entries of the same destination
	// and port without L7 add their peers as allowed every request.
	L7 *L7 `json:"l7,omitempty"`
}

// L7 are a port's HTTP rules, OR-ed; none denies every request.
type L7 struct {
	Rules []L7Rule `json:"rules,omitempty"`
}

// L7Rule allows the requests one of HTTP matches (every request when HTTP
// is empty) from its peers (none: from nobody).
type L7Rule struct {
	Peers []Peer               `json:"peers,omitempty"`
	HTTP  []translate.HTTPRule `json:"http,omitempty"`
}

// Peer is an allowed client identity.
type Peer struct {
	// ID is the SPIFFE ID the client certificate must carry; the zero ID
	// allows every identity of TrustDomain.
	ID          spiffeid.ID          `json:"id,omitzero"`
	TrustDomain spiffeid.TrustDomain `json:"trustDomain,omitzero"`
	// Sources, when not empty, restrict the client's pod address (the
	// identity's pods).
	Sources []netip.Prefix `json:"sources,omitempty"`
}

// ServerName is the SNI naming a workload identity on the tunnel: a DNS
// name derived from the SPIFFE ID (which may not fit in one).
func ServerName(id spiffeid.ID) string {
	sum := sha256.Sum256([]byte(id.String()))
	return "id-" + hex.EncodeToString(sum[:16]) + ".spiffe.membrane"
}

// Validate reports every problem of the input, each naming its field.
func (c Config) Validate() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.OutboundPort == 0 {
		fail("outboundPort", "must not be 0")
	}
	if c.TunnelPort == 0 {
		fail("tunnelPort", "must not be 0")
	}
	if c.IdleTimeout < 0 {
		fail("idleTimeout", "must not be negative, got %s", c.IdleTimeout)
	}
	if c.OutboundPort == c.TunnelPort {
		fail("tunnelPort", "must differ from outboundPort %d", c.OutboundPort)
	}
	ipv4 := func(field string, a netip.Addr) {
		if !a.Unmap().Is4() {
			fail(field, "%q is not an IPv4 address", a)
		}
	}
	id := func(field string, v spiffeid.ID) {
		if v.IsZero() {
			fail(field, "must be a SPIFFE ID")
		}
	}
	for i, o := range c.Outbound {
		f := fmt.Sprintf("outbound[%d]", i)
		ipv4(f+".source", o.Source)
		ipv4(f+".destination", o.Destination)
		ipv4(f+".node", o.Node)
		id(f+".sourceID", o.SourceID)
		id(f+".destinationID", o.DestinationID)
	}
	for i, in := range c.Inbound {
		f := fmt.Sprintf("inbound[%d]", i)
		ipv4(f+".destination", in.Destination)
		id(f+".destinationID", in.DestinationID)
		peers := func(f string, ps []Peer) {
			for j, p := range ps {
				pf := fmt.Sprintf("%s.peers[%d]", f, j)
				if p.ID.IsZero() == p.TrustDomain.IsZero() {
					fail(pf, "exactly one of id and trustDomain must be set")
				}
				for k, s := range p.Sources {
					if !s.IsValid() || !s.Addr().Unmap().Is4() {
						fail(fmt.Sprintf("%s.sources[%d]", pf, k), "%q is not an IPv4 prefix", s)
					}
				}
			}
		}
		peers(f, in.Peers)
		if in.L7 == nil {
			continue
		}
		if in.Port == 0 {
			fail(f+".l7", "HTTP rules need a port, not 0")
		}
		for j, r := range in.L7.Rules {
			rf := fmt.Sprintf("%s.l7.rules[%d]", f, j)
			peers(rf, r.Peers)
			if _, err := translate.HTTPPermissions(r.HTTP); err != nil {
				fail(rf, "%v", err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid mutual authentication configuration: %w", err)
	}
	return nil
}

// idleTimeout is IdleTimeout or its default: the source's TCP proxy
// closes an authenticated connection idle that long.
func (c Config) idleTimeout() *durationpb.Duration {
	return durationpb.New(c.idle())
}

// streamIdleTimeout is the destination's backstop for a CONNECT stream
// whose source went away without closing it: a quarter longer than the
// source's idle timeout, so that the source, which sees the last byte of
// an answer after the destination does, is the one that times an idle
// connection out (its timer would otherwise lose the race by that byte's
// trip between the nodes).
func (c Config) streamIdleTimeout() *durationpb.Duration {
	return durationpb.New(c.idle() + c.idle()/4)
}

func (c Config) idle() time.Duration {
	if c.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}
