package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// DropReason says why the datapath dropped a packet. The numbers are
// Cilium's drop reasons (as in Hubble's flow.DropReason).
type DropReason uint8

// Drop reasons the policy programs emit (and a few reserved for stages to
// come). They mirror enum drop_reason of bpf/lib/drop_reasons.h.
const (
	DropNone                      DropReason = DropReason(policyDropReasonREASON_NONE)
	DropInvalidSourceIP           DropReason = DropReason(policyDropReasonDROP_INVALID_SIP)
	DropPolicyDenied              DropReason = DropReason(policyDropReasonDROP_POLICY)
	DropInvalidPacket             DropReason = DropReason(policyDropReasonDROP_INVALID)
	DropCTInvalidHeader           DropReason = DropReason(policyDropReasonDROP_CT_INVALID_HDR)
	DropCTUnknownProto            DropReason = DropReason(policyDropReasonDROP_CT_UNKNOWN_PROTO)
	DropUnsupportedL3             DropReason = DropReason(policyDropReasonDROP_UNKNOWN_L3)
	DropWriteError                DropReason = DropReason(policyDropReasonDROP_WRITE_ERROR)
	DropCTMapInsertionFailed      DropReason = DropReason(policyDropReasonDROP_CT_CREATE_FAILED)
	DropFragmentationNotSupported DropReason = DropReason(policyDropReasonDROP_FRAG_NOSUPPORT)
	DropNATNoMapping              DropReason = DropReason(policyDropReasonDROP_NAT_NO_MAPPING)
	DropFragmentNotFound          DropReason = DropReason(policyDropReasonDROP_FRAG_NOT_FOUND)
	DropPolicyDenyList            DropReason = DropReason(policyDropReasonDROP_POLICY_DENY)
	DropAuthRequired              DropReason = DropReason(policyDropReasonDROP_POLICY_AUTH_REQUIRED)
	DropPolicyInit                DropReason = DropReason(policyDropReasonDROP_POLICY_INIT)
)

// dropMin: codes below are not drops (Cilium's DROP_MIN).
const dropMin = DropReason(policyDropReasonDROP_MIN)

type reasonInfo struct {
	name string // Hubble's flow.DropReason name
	desc string // Cilium's description (pkg/monitor/api)
}

// dropReasons names Cilium's drop reasons, so codes of other Cilium-derived
// stages print sensibly too.
var dropReasons = map[DropReason]reasonInfo{
	130: {"INVALID_SOURCE_MAC", "Invalid source mac"},
	131: {"INVALID_DESTINATION_MAC", "Invalid destination mac"},
	132: {"INVALID_SOURCE_IP", "Invalid source ip"},
	133: {"POLICY_DENIED", "Policy denied"},
	134: {"INVALID_PACKET_DROPPED", "Invalid packet"},
	135: {"CT_TRUNCATED_OR_INVALID_HEADER", "CT: Truncated or invalid header"},
	136: {"CT_MISSING_TCP_ACK_FLAG", "CT: Missing TCP ACK flag"},
	137: {"CT_UNKNOWN_L4_PROTOCOL", "CT: Unknown L4 protocol"},
	138: {"CT_CANNOT_CREATE_ENTRY_FROM_PACKET", "CT: Can't create entry from packet"},
	139: {"UNSUPPORTED_L3_PROTOCOL", "Unsupported L3 protocol"},
	140: {"MISSED_TAIL_CALL", "Missed tail call"},
	141: {"ERROR_WRITING_TO_PACKET", "Error writing to packet"},
	142: {"UNKNOWN_L4_PROTOCOL", "Unknown L4 protocol"},
	143: {"UNKNOWN_ICMPV4_CODE", "Unknown ICMPv4 code"},
	144: {"UNKNOWN_ICMPV4_TYPE", "Unknown ICMPv4 type"},
	145: {"UNKNOWN_ICMPV6_CODE", "Unknown ICMPv6 code"},
	146: {"UNKNOWN_ICMPV6_TYPE", "Unknown ICMPv6 type"},
	147: {"ERROR_RETRIEVING_TUNNEL_KEY", "Error retrieving tunnel key"},
	148: {"ERROR_RETRIEVING_TUNNEL_OPTIONS", "Error retrieving tunnel options"},
	149: {"INVALID_GENEVE_OPTION", "Invalid Geneve option"},
	150: {"UNKNOWN_L3_TARGET_ADDRESS", "Unknown L3 target address"},
	151: {"STALE_OR_UNROUTABLE_IP", "Stale or unroutable IP"},
	152: {"NO_MATCHING_LOCAL_CONTAINER_FOUND", "No matching local container found"},
	153: {"ERROR_WHILE_CORRECTING_L3_CHECKSUM", "Error while correcting L3 checksum"},
	154: {"ERROR_WHILE_CORRECTING_L4_CHECKSUM", "Error while correcting L4 checksum"},
	155: {"CT_MAP_INSERTION_FAILED", "CT: Map insertion failed"},
	156: {"INVALID_IPV6_EXTENSION_HEADER", "Invalid IPv6 extension header"},
	157: {"IP_FRAGMENTATION_NOT_SUPPORTED", "IP fragmentation not supported"},
	158: {"SERVICE_BACKEND_NOT_FOUND", "Service backend not found"},
	160: {"NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT", "No tunnel/encapsulation endpoint (datapath BUG!)"},
	162: {"REACHED_EDT_RATE_LIMITING_DROP_HORIZON", "Reached EDT rate-limiting drop horizon"},
	163: {"UNKNOWN_CONNECTION_TRACKING_STATE", "Unknown connection tracking state"},
	164: {"LOCAL_HOST_IS_UNREACHABLE", "Local host is unreachable"},
	165: {"NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION", "No configuration available to perform policy decision"},
	166: {"UNSUPPORTED_L2_PROTOCOL", "Unsupported L2 protocol"},
	167: {"NO_MAPPING_FOR_NAT_MASQUERADE", "No mapping for NAT masquerade"},
	168: {"UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE", "Unsupported protocol for NAT masquerade"},
	169: {"FIB_LOOKUP_FAILED", "FIB lookup failed"},
	170: {"ENCAPSULATION_TRAFFIC_IS_PROHIBITED", "Encapsulation traffic is prohibited"},
	171: {"INVALID_IDENTITY", "Invalid identity"},
	172: {"UNKNOWN_SENDER", "Unknown sender"},
	173: {"NAT_NOT_NEEDED", "NAT not needed"},
	174: {"IS_A_CLUSTERIP", "Is a ClusterIP"},
	175: {"FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND", "First logical datagram fragment not found"},
	176: {"FORBIDDEN_ICMPV6_MESSAGE", "Forbidden ICMPv6 message"},
	177: {"DENIED_BY_LB_SRC_RANGE_CHECK", "Denied by LB src range check"},
	178: {"SOCKET_LOOKUP_FAILED", "Socket lookup failed"},
	179: {"SOCKET_ASSIGN_FAILED", "Socket assign failed"},
	180: {"PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL", "Proxy redirection not supported for protocol"},
	181: {"POLICY_DENY", "Policy denied by denylist"},
	182: {"VLAN_FILTERED", "VLAN traffic disallowed by VLAN filter"},
	183: {"INVALID_VNI", "Incorrect VNI from VTEP"},
	184: {"INVALID_TC_BUFFER", "Failed to update or lookup TC buffer"},
	185: {"NO_SID", "No SID was found for the IP address"},
	186: {"MISSING_SRV6_STATE", "SRv6 state was removed during tail call"},
	187: {"NAT46", "L3 translation from IPv4 to IPv6 failed (NAT46)"},
	188: {"NAT64", "L3 translation from IPv6 to IPv4 failed (NAT64)"},
	189: {"AUTH_REQUIRED", "Authentication required"},
	190: {"CT_NO_MAP_FOUND", "No conntrack map found"},
	191: {"SNAT_NO_MAP_FOUND", "No nat map found"},
	192: {"INVALID_CLUSTER_ID", "Invalid ClusterID"},
	193: {"UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP", "Unsupported packet protocol for DSR encapsulation"},
	194: {"NO_EGRESS_GATEWAY", "No egress gateway found"},
	195: {"UNENCRYPTED_TRAFFIC", "Traffic is unencrypted"},
	// Not Cilium's: an endpoint with the init identity (its policy is not
	// written yet) drops new flows.
	250: {"POLICY_INIT", "Policy not yet known (init identity)"},
}

// String is Cilium's description, e.g. "Policy denied".
func (r DropReason) String() string {
	if r == DropNone {
		return "none"
	}
	if i, ok := dropReasons[r]; ok {
		return i.desc
	}
	return "drop reason " + strconv.Itoa(int(r))
}

// Name is Hubble's enum name, e.g. "POLICY_DENIED".
func (r DropReason) Name() string {
	if r == DropNone {
		return "NONE"
	}
	if i, ok := dropReasons[r]; ok {
		return i.name
	}
	return "DROP_REASON_" + strconv.Itoa(int(r))
}

// FlowVerdict is what happened to the packet of a flow event (Hubble's numbers).
type FlowVerdict uint8

// Flow verdicts.
const (
	Forwarded  FlowVerdict = FlowVerdict(policyFlowVerdictFLOW_FORWARDED)
	Dropped    FlowVerdict = FlowVerdict(policyFlowVerdictFLOW_DROPPED)
	Redirected FlowVerdict = FlowVerdict(policyFlowVerdictFLOW_REDIRECTED)
)

func (v FlowVerdict) String() string {
	switch v {
	case Forwarded:
		return "FORWARDED"
	case Dropped:
		return "DROPPED"
	case Redirected:
		return "REDIRECTED"
	}
	return "VERDICT_" + strconv.Itoa(int(v))
}

// CTState is what conntrack made of a packet.
type CTState uint8

// Conntrack states.
const (
	CTNew         CTState = CTState(policyCtStatusCT_NEW)         // opened a flow (or would have, if allowed)
	CTEstablished CTState = CTState(policyCtStatusCT_ESTABLISHED) // more of a tracked flow, same direction
	CTReply       CTState = CTState(policyCtStatusCT_REPLY)       // a tracked flow's other direction
	CTRelated     CTState = CTState(policyCtStatusCT_RELATED)     // an ICMP error about a tracked flow
)

func (s CTState) String() string {
	switch s {
	case CTNew:
		return "new"
	case CTEstablished:
		return "established"
	case CTReply:
		return "reply"
	case CTRelated:
		return "related"
	}
	return "ct(" + strconv.Itoa(int(s)) + ")"
}

// PolicyMatch says how specific the policy entry deciding a new flow was
// (Cilium's match types).
type PolicyMatch uint8

// Match types.
const (
	MatchNone      PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_NONE) // no lookup: not enforced, or not a new flow
	MatchL3Only    PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_L3ONLY)
	MatchL3L4      PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_L3L4)
	MatchL4Only    PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_L4ONLY)
	MatchAll       PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_ALL)
	MatchL3Proto   PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_L3PROTO)
	MatchProtoOnly PolicyMatch = PolicyMatch(policyPolicyMatchMATCH_PROTO_ONLY)
)

func (m PolicyMatch) String() string {
	switch m {
	case MatchNone:
		return "none"
	case MatchL3Only:
		return "L3-Only"
	case MatchL3L4:
		return "L3-L4"
	case MatchL4Only:
		return "L4-Only"
	case MatchAll:
		return "all"
	case MatchL3Proto:
		return "L3-Proto"
	case MatchProtoOnly:
		return "Proto-Only"
	}
	return "match(" + strconv.Itoa(int(m)) + ")"
}

// TCPFlags are the flags of a TCP header.
type TCPFlags uint8

// TCP flags.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

func (f TCPFlags) String() string {
	if f == 0 {
		return ""
	}
	var names []string
	for i, n := range []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"} {
		if f&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, "|")
}

// TraceMode selects which forwarded packets emit a flow event; drops always do.
type TraceMode uint8

// Trace modes.
const (
	TraceNew   TraceMode = TraceMode(policyTraceModeTRACE_NEW)  // packets opening a flow (default)
	TraceAll   TraceMode = TraceMode(policyTraceModeTRACE_ALL)  // every forwarded packet (expensive)
	TraceNone  TraceMode = TraceMode(policyTraceModeTRACE_NONE) // drops only
	traceModes           = 3
)

// ParseTraceMode reads the names --flow-events takes: "connections"
// (TraceNew), "packets" (TraceAll) or "drops" (TraceNone).
func ParseTraceMode(s string) (TraceMode, error) {
	switch s {
	case "connections":
		return TraceNew, nil
	case "packets":
		return TraceAll, nil
	case "drops":
		return TraceNone, nil
	}
	return 0, fmt.Errorf("%q: want connections, packets or drops", s)
}

func (m TraceMode) String() string {
	switch m {
	case TraceNew:
		return "new"
	case TraceAll:
		return "all"
	case TraceNone:
		return "none"
	}
	return "trace(" + strconv.Itoa(int(m)) + ")"
}
