package bpfevent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/membrane-mesh/membrane/mesh/model"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/flow"
)

var (
	t0          = time.Date(2025, 11, 21, 16, 40, 1, 123456789, time.UTC)
	frontendIP  = netip.MustParseAddr("10.244.1.7")
	backendIP   = netip.MustParseAddr("10.244.2.9")
	externalIP  = netip.MustParseAddr("203.0.113.5")
	testEnrich  = flow.MapEnricher{frontendIP: frontend, backendIP: backend}
	frontend    = flow.Endpoint{Identity: 1234, Namespace: "default", PodName: "frontend-7c9d", Labels: []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=default"}}
	backend     = flow.Endpoint{Identity: 5678, Namespace: "default", PodName: "backend-5f7c", Labels: []string{"k8s:app=backend", "k8s:io.kubernetes.pod.namespace=default", "k8s:tier=db"}}
	frontendSrc = netip.AddrPortFrom(frontendIP, 43210)
	backendDst  = netip.AddrPortFrom(backendIP, 8080)
)

// cmpAddr compares netip.Addr values with ==.
var cmpAddr = cmpopts.EquateComparable(netip.Addr{})

func TestFlow(t *testing.T) {
	tcp := flow.L4{Protocol: flow.TCP, SourcePort: 43210, DestinationPort: 8080, TCPFlags: model.SYN}
	ip := flow.IP{Source: frontendIP, Destination: backendIP}
	withID := func(ep flow.Endpoint, id uint16) flow.Endpoint { ep.ID = id; return ep }
	for _, tc := range []struct {
		name string
		ev   policy.FlowEvent
		want flow.Flow
	}{{
		name: "ingress drop, default deny",
		ev: policy.FlowEvent{Time: t0, Ifindex: 7, EndpointID: 12, Direction: policy.Ingress, Verdict: policy.Dropped,
			DropReason: policy.DropPolicyDenied, CTState: policy.CTNew, Proto: policy.TCP, Src: frontendSrc, Dst: backendDst,
			SrcIdentity: 1234, DstIdentity: 5678, TCPFlags: policy.SYN, Length: 74},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeDrop, Verdict: flow.Dropped,
			DropReason: &flow.DropReason{Code: 133, Name: "POLICY_DENIED", Description: "Policy denied"},
			Direction:  flow.Ingress, CTState: "new", Bytes: 74, IP: ip, L4: tcp,
			Source: frontend, Destination: withID(backend, 12)},
	}, {
		name: "egress drop, denylist",
		ev: policy.FlowEvent{Time: t0, EndpointID: 3, Direction: policy.Egress, Verdict: policy.Dropped,
			DropReason: policy.DropPolicyDenyList, CTState: policy.CTNew, Match: policy.MatchL3L4, Proto: policy.TCP,
			Src: frontendSrc, Dst: backendDst, SrcIdentity: 1234, DstIdentity: 5678, TCPFlags: policy.SYN},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeDrop, Verdict: flow.Dropped,
			DropReason: &flow.DropReason{Code: 181, Name: "POLICY_DENY", Description: "Policy denied by denylist"},
			Direction:  flow.Egress, CTState: "new", PolicyMatch: "L3-L4", IP: ip, L4: tcp,
			Source: withID(frontend, 3), Destination: backend},
	}, {
		name: "authentication required",
		ev: policy.FlowEvent{Time: t0, EndpointID: 12, Direction: policy.Ingress, Verdict: policy.Dropped,
			DropReason: policy.DropAuthRequired, CTState: policy.CTNew, Proto: policy.TCP, Src: frontendSrc, Dst: backendDst,
			SrcIdentity: 1234, DstIdentity: 5678, TCPFlags: policy.SYN},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeDrop, Verdict: flow.Dropped,
			DropReason: &flow.DropReason{Code: 189, Name: "AUTH_REQUIRED", Description: "Authentication required"},
			Direction:  flow.Ingress, CTState: "new", IP: ip, L4: tcp, Source: frontend, Destination: withID(backend, 12)},
	}, {
		name: "NAT drop reason the policy programs do not emit",
		ev: policy.FlowEvent{Time: t0, EndpointID: 3, Direction: policy.Egress, Verdict: policy.Dropped,
			DropReason: policy.DropNATNoMapping, Proto: policy.UDP, Src: netip.AddrPortFrom(frontendIP, 5353),
			Dst: netip.AddrPortFrom(externalIP, 53), SrcIdentity: 1234, DstIdentity: policy.IdentityWorld},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeDrop, Verdict: flow.Dropped,
			DropReason: &flow.DropReason{Code: 167, Name: "NO_MAPPING_FOR_NAT_MASQUERADE", Description: "No mapping for NAT masquerade"},
			Direction:  flow.Egress, CTState: "new", IP: flow.IP{Source: frontendIP, Destination: externalIP},
			L4:     flow.L4{Protocol: flow.UDP, SourcePort: 5353, DestinationPort: 53},
			Source: withID(frontend, 3), Destination: flow.Endpoint{Identity: 2, Entity: "world", Labels: []string{"reserved:world"}}},
	}, {
		name: "ingress forwarded reply",
		ev: policy.FlowEvent{Time: t0, EndpointID: 3, Direction: policy.Ingress, Verdict: policy.Forwarded,
			CTState: policy.CTReply, Proto: policy.TCP, Src: backendDst, Dst: frontendSrc,
			SrcIdentity: 5678, DstIdentity: 1234, TCPFlags: policy.SYN | policy.ACK},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeTrace, TracePoint: "to-endpoint", Verdict: flow.Forwarded,
			Direction: flow.Ingress, IsReply: true, CTState: "reply", IP: flow.IP{Source: backendIP, Destination: frontendIP},
			L4:     flow.L4{Protocol: flow.TCP, SourcePort: 8080, DestinationPort: 43210, TCPFlags: model.SYN | model.ACK},
			Source: backend, Destination: withID(frontend, 3)},
	}, {
		name: "egress forwarded new flow",
		ev: policy.FlowEvent{Time: t0, EndpointID: 3, Direction: policy.Egress, Verdict: policy.Forwarded,
			CTState: policy.CTNew, Match: policy.MatchL3L4, Proto: policy.TCP, Src: frontendSrc, Dst: backendDst,
			SrcIdentity: 1234, DstIdentity: 5678, TCPFlags: policy.SYN},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeTrace, TracePoint: "to-stack", Verdict: flow.Forwarded,
			Direction: flow.Egress, CTState: "new", PolicyMatch: "L3-L4", IP: ip, L4: tcp,
			Source: withID(frontend, 3), Destination: backend},
	}, {
		name: "redirected to the proxy",
		ev: policy.FlowEvent{Time: t0, EndpointID: 12, Direction: policy.Ingress, Verdict: policy.Redirected,
			CTState: policy.CTNew, Match: policy.MatchL3L4, Proto: policy.TCP, Src: frontendSrc, Dst: backendDst,
			SrcIdentity: 1234, DstIdentity: 5678, TCPFlags: policy.SYN, ProxyPort: 15001},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeTrace, TracePoint: "to-proxy", Verdict: flow.Redirected,
			Direction: flow.Ingress, CTState: "new", PolicyMatch: "L3-L4", ProxyPort: 15001, IP: ip, L4: tcp,
			Source: frontend, Destination: withID(backend, 12)},
	}, {
		name: "ICMP from the world, not enriched",
		ev: policy.FlowEvent{Time: t0, EndpointID: 12, Direction: policy.Ingress, Verdict: policy.Forwarded,
			CTState: policy.CTNew, Proto: policy.ICMP, Src: netip.AddrPortFrom(externalIP, 0), Dst: netip.AddrPortFrom(backendIP, 0),
			SrcIdentity: policy.IdentityWorld, DstIdentity: 5678, ICMPType: 8},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeTrace, TracePoint: "to-endpoint", Verdict: flow.Forwarded,
			Direction: flow.Ingress, CTState: "new", IP: flow.IP{Source: externalIP, Destination: backendIP},
			L4:     flow.L4{Protocol: flow.ICMPv4, ICMPType: 8},
			Source: flow.Endpoint{Identity: 2, Entity: "world", Labels: []string{"reserved:world"}}, Destination: withID(backend, 12)},
	}, {
		name: "host, other protocol",
		ev: policy.FlowEvent{Time: t0, EndpointID: 12, Direction: policy.Ingress, Verdict: policy.Forwarded,
			CTState: policy.CTNew, Proto: 47, Src: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 0), Dst: netip.AddrPortFrom(backendIP, 0),
			SrcIdentity: policy.IdentityHost, DstIdentity: 5678},
		want: flow.Flow{Time: t0, Node: "node-1", Type: flow.TypeTrace, TracePoint: "to-endpoint", Verdict: flow.Forwarded,
			Direction: flow.Ingress, CTState: "new", IP: flow.IP{Source: netip.MustParseAddr("10.0.0.1"), Destination: backendIP},
			L4:     flow.L4{Protocol: "proto-47"},
			Source: flow.Endpoint{Identity: 1, Entity: "host", Labels: []string{"reserved:host"}}, Destination: withID(backend, 12)},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Flow(tc.ev, "node-1", testEnrich)
			if diff := cmp.Diff(tc.want, got, cmpAddr); diff != "" {
				t.Errorf("Flow (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFlowIdentityWins(t *testing.T) {
	// The enricher may lag behind the ipcache: the datapath's identity is
	// the one policy used.
	ev := policy.FlowEvent{Time: t0, Direction: policy.Egress, Verdict: policy.Forwarded, Proto: policy.UDP,
		Src: frontendSrc, Dst: backendDst, SrcIdentity: 999, DstIdentity: 0}
	got := Flow(ev, "n", testEnrich)
	if got.Source.Identity != 999 || got.Source.PodName != "frontend-7c9d" {
		t.Errorf("source = %+v, want identity 999 from the datapath and the pod from the enricher", got.Source)
	}
	if got.Destination.Identity != backend.Identity {
		t.Errorf("destination identity = %d, want the enricher's %d when the datapath has none", got.Destination.Identity, backend.Identity)
	}
	if f := Flow(ev, "n", nil); f.Source.PodName != "" || f.Source.Identity != 999 {
		t.Errorf("without an enricher: source = %+v", f.Source)
	}
}

// TestDatapathValuesAgree checks the one seam between the policy
// datapath's event values and the flow model: every value the datapath
// names converts to the flow value of the same meaning.
func TestDatapathValuesAgree(t *testing.T) {
	for in, want := range map[policy.FlowVerdict]flow.Verdict{policy.Forwarded: flow.Forwarded, policy.Dropped: flow.Dropped, policy.Redirected: flow.Redirected} {
		if got := verdict(in); got != want || string(got) != in.String() {
			t.Errorf("verdict(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[policy.Direction]flow.Direction{policy.Ingress: flow.Ingress, policy.Egress: flow.Egress} {
		if got := direction(in); got != want || string(got) != in.String() {
			t.Errorf("direction(%v) = %q, want %q", in, got, want)
		}
	}
	flags := map[policy.TCPFlags]model.TCPFlags{
		policy.FIN: model.FIN, policy.SYN: model.SYN, policy.RST: model.RST, policy.PSH: model.PSH,
		policy.ACK: model.ACK, policy.URG: model.URG, policy.ECE: model.ECE, policy.CWR: model.CWR,
	}
	if len(flags) != 8 {
		t.Fatalf("%d distinct datapath TCP flags, want 8", len(flags))
	}
	for in, want := range flags {
		if got := tcpFlags(in); got != want {
			t.Errorf("tcpFlags(%v) = %v, want %v", in, got, want)
		}
	}
	if got, want := tcpFlags(policy.SYN|policy.ACK), model.SYN|model.ACK; got != want {
		t.Errorf("tcpFlags(SYN|ACK) = %v, want %v", got, want)
	}
}
