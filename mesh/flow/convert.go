package flow

import (
	"strconv"

	"github.com/membrane-mesh/membrane/mesh/model"

	"github.com/membrane-mesh/membrane/bpf/policy"
)

// FromEvent converts an event of the policy datapath, seen on node, into a
// Flow. enrich (may be nil) resolves the addresses to endpoints. This is
// the only place that knows bpf/policy.
func FromEvent(ev policy.FlowEvent, node string, enrich Enricher) Flow {
	f := Flow{
		Time:      ev.Time,
		Node:      node,
		Type:      TypeTrace,
		Verdict:   verdict(ev.Verdict),
		Direction: direction(ev.Direction),
		IsReply:   ev.CTState == policy.CTReply,
		CTState:   ev.CTState.String(),
		Bytes:     ev.Length,
		IP:        IP{Source: ev.Src.Addr(), Destination: ev.Dst.Addr()},
		L4:        L4{Protocol: protocol(ev.Proto)},
	}
	if ev.Match != policy.MatchNone {
		f.PolicyMatch = ev.Match.String()
	}
	switch ev.Verdict {
	case policy.Dropped:
		f.Type = TypeDrop
		f.DropReason = &DropReason{Code: uint8(ev.DropReason), Name: ev.DropReason.Name(), Description: ev.DropReason.String()}
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
	f.Source = resolve(enrich, f.IP.Source, uint32(ev.SrcIdentity))
	f.Destination = resolve(enrich, f.IP.Destination, uint32(ev.DstIdentity))
	// The datapath saw the packet on the local endpoint's interface: the
	// source of egress, the destination of ingress traffic.
	if ev.Direction == policy.Egress {
		f.Source.ID = uint16(ev.EndpointID)
	} else {
		f.Destination.ID = uint16(ev.EndpointID)
	}
	return f
}

func protocol(p policy.Proto) Protocol {
	switch p {
	case policy.TCP:
		return TCP
	case policy.UDP:
		return UDP
	case policy.SCTP:
		return SCTP
	case policy.ICMP:
		return ICMPv4 // the datapath is IPv4-only
	}
	return Protocol("proto-" + strconv.Itoa(int(p)))
}

func verdict(v policy.FlowVerdict) Verdict {
	switch v {
	case policy.Forwarded:
		return Forwarded
	case policy.Dropped:
		return Dropped
	case policy.Redirected:
		return Redirected
	}
	return Verdict(v.String())
}

func direction(d policy.Direction) Direction {
	switch d {
	case policy.Ingress:
		return Ingress
	case policy.Egress:
		return Egress
	}
	return Direction(d.String())
}

// tcpFlags converts the datapath's TCP flags: both are the header's bits.
func tcpFlags(f policy.TCPFlags) model.TCPFlags { return model.TCPFlags(f) }
