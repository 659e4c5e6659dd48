// Package accesslog receives the node Envoy's HTTP access logs over the
// gRPC access-log service and turns each completed request into a
// flow.HTTPLog: who called whom, method, path, host, status, latency and
// whether the L7 policy denied it.
package accesslog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/xds/mtls"
)

// Receiver is the access-log service. Handle gets every HTTP entry, in
// the order Envoy sent them.
type Receiver struct {
	alsv3.UnimplementedAccessLogServiceServer
	log    *slog.Logger
	handle func(flow.HTTPLog)
}

// New returns a receiver calling handle for every HTTP request logged.
func New(log *slog.Logger, handle func(flow.HTTPLog)) *Receiver {
	return &Receiver{log: log, handle: handle}
}

// Register adds the access-log service to g.
func (r *Receiver) Register(g *grpc.Server) { alsv3.RegisterAccessLogServiceServer(g, r) }

// GatewayLogName names the access log of the node Envoy's gateway
// listeners (the policy listeners' is translate.AccessLogName).
const GatewayLogName = "membrane-gateway"

// StreamAccessLogs reads one Envoy's stream until it ends. The first
// message names the log: a gateway listener's entries are converted with
// ConvertGateway, the others with Convert.
func (r *Receiver) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	convert := Convert
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("receive access logs: %w", err)
		}
		if id := msg.GetIdentifier(); id != nil {
			switch id.GetLogName() {
			case GatewayLogName:
				convert = ConvertGateway
			case mtls.L7AccessLogName:
				convert = ConvertTunneled
			default:
				convert = Convert
			}
		}
		for _, e := range msg.GetHttpLogs().GetLogEntry() {
			l, err := convert(e)
			if err != nil {
				r.log.Debug("skipped an access log entry", "error", err)
				continue
			}
			r.handle(l)
		}
	}
}

// Convert turns one entry into an HTTPLog. The entry's route name is the
// filter chain's ("ingress/group-3fa2b1c4d5e6:8080", "egress/10.0.1.7:8080",
// "egress/…+ingress/…:8080" when both sides are local), which gives the
// direction; a combined chain counts as egress.
func Convert(e *datav3.HTTPAccessLogEntry) (flow.HTTPLog, error) {
	c := e.GetCommonProperties()
	// The peer policy saw: the downstream remote address can come from an
	// X-Forwarded-For header (a Gateway's requests carry the client's).
	peer := c.GetDownstreamDirectRemoteAddress()
	if peer == nil {
		peer = c.GetDownstreamRemoteAddress()
	}
	src, err := addrPort(peer)
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("downstream remote address: %w", err)
	}
	dst, err := addrPort(c.GetDownstreamLocalAddress())
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("downstream local address: %w", err)
	}
	l := request(e, src, dst)
	if err := authenticated(e, &l); err != nil {
		return flow.HTTPLog{}, err
	}
	return l, nil
}

// ConvertTunneled turns one entry of the requests inside mutual-TLS
// tunnels (xds/mtls's internal listener) into an ingress HTTPLog: from the
// client the tunnel named to the pod, with the tunnel's two SPIFFE IDs
// (the listener's filter state objects).
func ConvertTunneled(e *datav3.HTTPAccessLogEntry) (flow.HTTPLog, error) {
	c := e.GetCommonProperties()
	src, err := addrPort(c.GetDownstreamRemoteAddress())
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("tunneled request's client address: %w", err)
	}
	dst, err := addrPort(c.GetDownstreamLocalAddress())
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("tunneled request's destination: %w", err)
	}
	l := request(e, src, dst)
	l.Direction = flow.Ingress
	fs := c.GetFilterStateObjects()
	l.SourceID, l.DestinationID = stringObject(fs[mtls.PeerIDFilterState]), stringObject(fs[mtls.LocalIDFilterState])
	return l, nil
}

// stringObject is a logged string filter state object's value ("" when
// absent or not a string).
func stringObject(a *anypb.Any) string {
	var v wrapperspb.StringValue
	if a == nil || a.UnmarshalTo(&v) != nil {
		return ""
	}
	return v.GetValue()
}

// request is the HTTPLog of e's request from src to dst.
func request(e *datav3.HTTPAccessLogEntry, src, dst netip.AddrPort) flow.HTTPLog {
	c := e.GetCommonProperties()
	req, resp := e.GetRequest(), e.GetResponse()
	path, _, _ := strings.Cut(req.GetPath(), "?")
	dir := flow.Ingress
	if strings.HasPrefix(c.GetRouteName(), "egress/") {
		dir = flow.Egress
	}
	l := flow.HTTPLog{
		Source: src, Destination: dst, Direction: dir,
		Protocol: protocol(e.GetProtocolVersion()),
		Method:   method(req.GetRequestMethod()),
		Host:     req.GetAuthority(),
		Path:     path,
		Code:     int(resp.GetResponseCode().GetValue()),
		Duration: c.GetDuration().AsDuration(),
		Denied:   strings.HasPrefix(resp.GetResponseCodeDetails(), "rbac_access_denied"),
	}
	if t := c.GetStartTime(); t != nil {
		l.Time = t.AsTime()
	}
	if c.GetDuration() == nil {
		l.Duration = c.GetTimeToLastDownstreamTxByte().AsDuration()
	}
	return l
}

// ConvertGateway turns one entry of a gateway listener into an HTTPLog
// of the request the gateway sent to a backend: from the upstream
// connection's local address (the node's ingress address) to the backend,
// ingress for the backend. A request that reached no backend (a redirect,
// a direct response) is logged from the client to the gateway address.
func ConvertGateway(e *datav3.HTTPAccessLogEntry) (flow.HTTPLog, error) {
	l, err := Convert(e)
	if err != nil {
		return flow.HTTPLog{}, err
	}
	l.Direction = flow.Ingress
	c := e.GetCommonProperties()
	if c.GetUpstreamRemoteAddress() == nil || c.GetUpstreamLocalAddress() == nil {
		return l, nil
	}
	src, err := addrPort(c.GetUpstreamLocalAddress())
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("upstream local address: %w", err)
	}
	dst, err := addrPort(c.GetUpstreamRemoteAddress())
	if err != nil {
		return flow.HTTPLog{}, fmt.Errorf("upstream remote address: %w", err)
	}
	l.Source, l.Destination = src, dst
	return l, nil
}

func addrPort(a *corev3.Address) (netip.AddrPort, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, errors.New("not a socket address")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

func protocol(v datav3.HTTPAccessLogEntry_HTTPVersion) string {
	switch v {
	case datav3.HTTPAccessLogEntry_HTTP10:
		return "HTTP/1.0"
	case datav3.HTTPAccessLogEntry_HTTP11:
		return "HTTP/1.1"
	case datav3.HTTPAccessLogEntry_HTTP2:
		return "HTTP/2"
	case datav3.HTTPAccessLogEntry_HTTP3:
		return "HTTP/3"
	}
	return ""
}

func method(m corev3.RequestMethod) string {
	if m == corev3.RequestMethod_METHOD_UNSPECIFIED {
		return ""
	}
	return m.String()
}

// authenticated completes the log of a mutual-TLS tunnel's CONNECT (its
// peer certificate carries a SPIFFE ID): the destination is the address it
// names, not the tunnel port, and both SPIFFE IDs are kept.
func authenticated(e *datav3.HTTPAccessLogEntry, l *flow.HTTPLog) error {
	tls := e.GetCommonProperties().GetTlsProperties()
	peer := spiffeURI(tls.GetPeerCertificateProperties())
	if peer == "" || e.GetRequest().GetRequestMethod() != corev3.RequestMethod_CONNECT {
		return nil
	}
	dst, err := netip.ParseAddrPort(e.GetRequest().GetAuthority())
	if err != nil {
		return fmt.Errorf("authenticated tunnel's destination %q: %w", e.GetRequest().GetAuthority(), err)
	}
	// The source is the client the tunnel names (the RBAC checked that it
	// is a pod of the peer's identity), not the source node's proxy that
	// connected. A refused tunnel's claim is unverified: its source is who
	// connected.
	addr := e.GetCommonProperties().GetDownstreamRemoteAddress()
	if l.Denied {
		addr = e.GetCommonProperties().GetDownstreamDirectRemoteAddress()
	}
	src, err := addrPort(addr)
	if err != nil {
		return fmt.Errorf("authenticated tunnel's client address: %w", err)
	}
	l.Source, l.Destination, l.Direction = src, dst, flow.Ingress
	l.SourceID, l.DestinationID = peer, spiffeURI(tls.GetLocalCertificateProperties())
	return nil
}

func spiffeURI(p *datav3.TLSProperties_CertificateProperties) string {
	for _, san := range p.GetSubjectAltName() {
		if u := san.GetUri(); strings.HasPrefix(u, "spiffe://") {
			return u
		}
	}
	return ""
}
