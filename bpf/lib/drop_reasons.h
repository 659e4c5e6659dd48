/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Drop reasons of flow events and metrics. The numbers are Cilium's
 * (bpf/lib/common.h, pkg/monitor/api/drop.go, Hubble's flow.DropReason), so
 * tools that know Cilium's codes read ours. Codes below DROP_MIN are not
 * drops. The enum is mirrored into Go by bpf2go (-type drop_reason); Go's
 * names and descriptions live in bpf/policy/reasons.go, kept in step by a test.
 */
#ifndef MEMBRANE_LIB_DROP_REASONS_H
#define MEMBRANE_LIB_DROP_REASONS_H

enum drop_reason {
	REASON_NONE = 0,		/* not dropped */
	DROP_MIN = 130,
	DROP_INVALID_SIP = 132,		/* "Invalid source ip": a pod sent from an address not its own */
	DROP_POLICY = 133,		/* "Policy denied": no allow entry matched */
	DROP_INVALID = 134,		/* "Invalid packet": bad IPv4 header */
	DROP_CT_INVALID_HDR = 135,	/* "CT: Truncated or invalid header": L4 header cut short */
	DROP_CT_UNKNOWN_PROTO = 137,	/* "CT: Unknown L4 protocol" (reserved: others are tracked without ports) */
	DROP_UNKNOWN_L3 = 139,		/* "Unsupported L3 protocol" (reserved: non-IPv4 passes) */
	DROP_WRITE_ERROR = 141,		/* "Error writing to packet": the L7 redirect could not rewrite it */
	DROP_CT_CREATE_FAILED = 155,	/* "CT: Map insertion failed" */
	DROP_FRAG_NOSUPPORT = 157,	/* "IP fragmentation not supported" (reserved) */
	DROP_NAT_NO_MAPPING = 167,	/* "No mapping for NAT masquerade" (reserved: no NAT here yet) */
	DROP_FRAG_NOT_FOUND = 175,	/* "First logical datagram fragment not found" */
	DROP_POLICY_DENY = 181,		/* "Policy denied by denylist": a deny entry matched */
	DROP_POLICY_AUTH_REQUIRED = 189, /* "Authentication required" */
	DROP_POLICY_INIT = 250,		/* "Policy not yet known (init identity)": not Cilium's; a new
					   endpoint drops new flows until the agent wrote its policy */
};

#endif /* MEMBRANE_LIB_DROP_REASONS_H */
