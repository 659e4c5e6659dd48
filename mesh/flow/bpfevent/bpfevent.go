// Package bpfevent turns the policy datapath's flow events into flows. It
// is the only part of the flow packages that knows bpf/policy, so clients
// of the observe API (the CLI) do not link the datapath.
package bpfevent

import (
	"strconv"

	"github.com/membrane-mesh/membrane/bpf/policy"
	"github.com/membrane-mesh/membrane/mesh/flow"
	"github.com/membrane-mesh/membrane/mesh/model"
)

// Flow converts an event of the policy datapath, seen on node, into a
// flow. enrich (may be nil) resolves the addresses to endpoints.
func Flow(ev policy.FlowEvent, node string, enrich flow.Enricher) flow.Flow {
	f := flow.Flow{
		Time:      ev.Time,
		Node:      node,
		Type:      flow.TypeTrace,
		Verdict:   verdict(ev.Verdict),
		Direction: direction(ev.Direction),
		IsReply:   ev.CTState == policy.CTReply,
		CTState:   ev.CTState.String(),
		Bytes:     ev.Length,
		IP:        flow.IP{Source: ev.Src.Addr(), Destination: ev.Dst.Addr()},
		L4:        flow.L4{Protocol: protocol(ev.Proto)},
	}
	if ev.Match != policy.MatchNone {
		f.PolicyMatch = ev.Match.String()
	}
	switch ev.Verdict {
	case policy.Dropped:
		f.Type = flow.TypeDrop
		f.DropReason = &flow.DropReason{Code: uint8(ev.DropReason), Name: ev.DropReason.Name(), Description: ev.DropReason.String()}
	case policy.Redirected:
		f.TracePoint = "to-proxy"
		f.ProxyPort = ev.ProxyPort
	case policy.Forwarded:
		if ev.Direction == policy.Ingress {
			f.TracePoint = "to-endpoint"
		} else {
			f.TracePoint = "to-stack"
		}
	}
	switch ev.Proto {
	case policy.TCP, policy.UDP, policy.SCTP:
		f.L4.SourcePort, f.L4.DestinationPort = ev.Src.Port(), ev.Dst.Port()
	case policy.ICMP:
		f.L4.ICMPType, f.L4.ICMPCode = ev.ICMPType, ev.ICMPCode
	}
	if ev.Proto == policy.TCP {
		f.L4.TCPFlags = tcpFlags(ev.TCPFlags)
	}
	f.Source = flow.Resolve(enrich, f.IP.Source, uint32(ev.SrcIdentity))
	f.Destination = flow.Resolve(enrich, f.IP.Destination, uint32(ev.DstIdentity))
	// The datapath saw the packet on the local endpoint's interface: the
	// source of egress, the destination of ingress traffic.
	if ev.Direction == policy.Egress {
		f.Source.ID = uint16(ev.EndpointID)
	} else {
		f.Destination.ID = uint16(ev.EndpointID)
	}
	return f
}

func protocol(p policy.Proto) flow.Protocol {
	switch p {
	case policy.TCP:
		return flow.TCP
	case policy.UDP:
		return flow.UDP
	case policy.SCTP:
		return flow.SCTP
	case policy.ICMP:
		return flow.ICMPv4 // the datapath is IPv4-only
	}
	return flow.Protocol("proto-" + strconv.Itoa(int(p)))
}

func verdict(v policy.FlowVerdict) flow.Verdict {
	switch v {
	case policy.Forwarded:
		return flow.Forwarded
	case policy.Dropped:
		return flow.Dropped
	case policy.Redirected:
		return flow.Redirected
	}
	return flow.Verdict(v.String())
}

func direction(d policy.Direction) flow.Direction {
	switch d {
	case policy.Ingress:
		return flow.Ingress
	case policy.Egress:
		return flow.Egress
	}
	return flow.Direction(d.String())
}

// tcpFlags converts the datapath's TCP flags: both are the header's bits.
func tcpFlags(f policy.TCPFlags) model.TCPFlags { return model.TCPFlags(f) }
