package accesslog

import (
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/xds/mtls"
)

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func TestConvert(t *testing.T) {
	start := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	entry := func(route string, code uint32, details string) *datav3.HTTPAccessLogEntry {
		return &datav3.HTTPAccessLogEntry{
			CommonProperties: &datav3.AccessLogCommon{
				DownstreamRemoteAddress: sockAddr("10.0.1.7", 51234),
				DownstreamLocalAddress:  sockAddr("::ffff:10.0.2.5", 3000),
				StartTime:               timestamppb.New(start),
				Duration:                durationpb.New(23 * time.Millisecond),
				RouteName:               route,
			},
			ProtocolVersion: datav3.HTTPAccessLogEntry_HTTP11,
			Request:         &datav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_DELETE, Authority: "payment:8080", Path: "/api/v1/payments/123?force=1"},
			Response:        &datav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseCodeDetails: details},
		}
	}
	want := flow.HTTPLog{
		Time: start, Source: netip.MustParseAddrPort("10.0.1.7:51234"), Destination: netip.MustParseAddrPort("10.0.2.5:3000"),
		Direction: flow.Ingress, Protocol: "HTTP/1.1", Method: "DELETE", Host: "payment:8080", Path: "/api/v1/payments/123",
		Code: 403, Duration: 23 * time.Millisecond, Denied: true,
	}
	got, err := Convert(entry("ingress/10.0.2.5:3000", 403, "rbac_access_denied_matched_policy[none]"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got, cmpopts.EquateComparable(netip.AddrPort{})); d != "" {
		t.Errorf("denied ingress request (-want +got):\n%s", d)
	}

	// An upstream's own 403 is no policy denial; an egress chain's route
	// name gives the direction.
	got, err = Convert(entry("egress/10.0.1.7:3000", 403, "via_upstream"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Denied || got.Direction != flow.Egress {
		t.Errorf("upstream 403 on an egress chain: denied %v, direction %s", got.Denied, got.Direction)
	}

	bad := entry("ingress/x", 200, "via_upstream")
	bad.CommonProperties.DownstreamRemoteAddress = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/x"}}}
	if _, err := Convert(bad); err == nil {
		t.Error("an entry without a socket address converted")
	}
}

// A gateway listener's entry is the request the gateway sent: from its
// upstream connection's local address (the node's ingress address) to the
// backend; one without an upstream keeps the client and gateway address.
func TestConvertGateway(t *testing.T) {
	e := &datav3.HTTPAccessLogEntry{
		CommonProperties: &datav3.AccessLogCommon{
			DownstreamRemoteAddress: sockAddr("198.18.0.1", 40000),
			DownstreamLocalAddress:  sockAddr("198.18.0.200", 80),
			UpstreamLocalAddress:    sockAddr("10.244.1.1", 41000),
			UpstreamRemoteAddress:   sockAddr("10.244.2.7", 3000),
			RouteName:               "egress/shop",
		},
		ProtocolVersion: datav3.HTTPAccessLogEntry_HTTP11,
		Request:         &datav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_GET, Authority: "shop.example", Path: "/items"},
		Response:        &datav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
	}
	got, err := ConvertGateway(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != netip.MustParseAddrPort("10.244.1.1:41000") || got.Destination != netip.MustParseAddrPort("10.244.2.7:3000") ||
		got.Direction != flow.Ingress || got.Code != 200 || got.Path != "/items" {
		t.Errorf("gateway entry: %+v", got)
	}
	// A policy listener's entry names the connecting peer, not the
	// address an X-Forwarded-For header gave.
	e.CommonProperties.DownstreamDirectRemoteAddress = sockAddr("10.244.1.1", 41000)
	if got, err := Convert(e); err != nil || got.Source != netip.MustParseAddrPort("10.244.1.1:41000") {
		t.Errorf("policy entry with a forwarded address: source %v, %v", got.Source, err)
	}
	e.CommonProperties.DownstreamDirectRemoteAddress = nil
	e.CommonProperties.UpstreamLocalAddress, e.CommonProperties.UpstreamRemoteAddress = nil, nil
	got, err = ConvertGateway(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != netip.MustParseAddrPort("198.18.0.1:40000") || got.Destination != netip.MustParseAddrPort("198.18.0.200:80") {
		t.Errorf("gateway entry without upstream: %+v", got)
	}
}

// TestConvertAuthenticated: a mutual-TLS tunnel's CONNECT is the connection
// to the address it names, with both SPIFFE IDs.
func TestConvertAuthenticated(t *testing.T) {
	san := func(uri string) *datav3.TLSProperties_CertificateProperties {
		return &datav3.TLSProperties_CertificateProperties{SubjectAltName: []*datav3.TLSProperties_CertificateProperties_SubjectAltName{
			{San: &datav3.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: uri}},
		}}
	}
	e := &datav3.HTTPAccessLogEntry{
		CommonProperties: &datav3.AccessLogCommon{
			DownstreamRemoteAddress:       sockAddr("10.0.1.7", 0),
			DownstreamDirectRemoteAddress: sockAddr("198.18.3.11", 41000), // the source node's proxy
			DownstreamLocalAddress:        sockAddr("198.18.3.12", 15008),
			RouteName:                     "10.0.2.5:8080",
			TlsProperties: &datav3.TLSProperties{
				PeerCertificateProperties:  san("spiffe://cluster.local/ns/shop/sa/frontend"),
				LocalCertificateProperties: san("spiffe://cluster.local/ns/shop/sa/backend"),
			},
		},
		ProtocolVersion: datav3.HTTPAccessLogEntry_HTTP2,
		Request:         &datav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_CONNECT, Authority: "10.0.2.5:8080"},
		Response:        &datav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200)},
	}
	got, err := Convert(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source.Addr() != netip.MustParseAddr("10.0.1.7") || got.Destination != netip.MustParseAddrPort("10.0.2.5:8080") || got.Direction != flow.Ingress ||
		got.SourceID != "spiffe://cluster.local/ns/shop/sa/frontend" || got.DestinationID != "spiffe://cluster.local/ns/shop/sa/backend" {
		t.Errorf("authenticated CONNECT: %+v", got)
	}
	f := flow.FromHTTPLog(got, "n2", nil)
	if f.Auth == nil || f.Auth.SourceID != got.SourceID || f.Auth.DestinationID != got.DestinationID {
		t.Errorf("flow: %+v", f.Auth)
	}
	// A bad authority is an error, not a flow to nowhere.
	e.Request.Authority = "backend"
	if _, err := Convert(e); err == nil {
		t.Error("a CONNECT without an address was converted")
	}
}

// TestConvertTunneled: a request inside an authenticated tunnel is from the
// client the tunnel named (the internal listener's restored remote
// address) to the pod, with the SPIFFE IDs the tunnel handed over; a
// denial is the L7 policy's.
func TestConvertTunneled(t *testing.T) {
	str := func(s string) *anypb.Any {
		a, err := anypb.New(wrapperspb.String(s))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	e := &datav3.HTTPAccessLogEntry{
		CommonProperties: &datav3.AccessLogCommon{
			DownstreamRemoteAddress: sockAddr("10.0.1.7", 0),
			// The internal listener's user-space peer.
			DownstreamDirectRemoteAddress: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
				AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: mtls.L7Listener},
			}}},
			DownstreamLocalAddress: sockAddr("10.0.2.5", 8080),
			RouteName:              "mtls/10.0.2.5:8080",
			FilterStateObjects: map[string]*anypb.Any{
				mtls.PeerIDFilterState:  str("spiffe://cluster.local/ns/shop/sa/frontend"),
				mtls.LocalIDFilterState: str("spiffe://cluster.local/ns/shop/sa/backend"),
			},
		},
		ProtocolVersion: datav3.HTTPAccessLogEntry_HTTP11,
		Request:         &datav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_GET, Authority: "backend", Path: "/admin?x=1"},
		Response:        &datav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(403), ResponseCodeDetails: "rbac_access_denied_matched_policy[none]"},
	}
	got, err := ConvertTunneled(e)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source.Addr() != netip.MustParseAddr("10.0.1.7") || got.Destination != netip.MustParseAddrPort("10.0.2.5:8080") || got.Direction != flow.Ingress ||
		got.Method != "GET" || got.Path != "/admin" || got.Code != 403 || !got.Denied ||
		got.SourceID != "spiffe://cluster.local/ns/shop/sa/frontend" || got.DestinationID != "spiffe://cluster.local/ns/shop/sa/backend" {
		t.Errorf("tunneled request: %+v", got)
	}
	// Convert cannot read it: its direct peer is no socket address.
	if _, err := Convert(e); err == nil {
		t.Error("Convert read an internal listener's entry")
	}
}
