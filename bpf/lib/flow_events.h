/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow events (ring buffer), per-CPU verdict metrics and event counters of
 * the policy programs. bpf2go mirrors struct flow_event and the enums into Go
 * (bpf/policy), which decodes the ring buffer.
 */
#ifndef MEMBRANE_LIB_FLOW_EVENTS_H
#define MEMBRANE_LIB_FLOW_EVENTS_H

#include "common.h"
#include "drop_reasons.h"

/* Which forwarded packets get a trace event (drops always get one). */
enum trace_mode {
	TRACE_NEW = 0,		/* packets that open a flow (conntrack: new) */
	TRACE_ALL = 1,		/* every forwarded packet */
	TRACE_NONE = 2,		/* drops only */
};

/* Set by the loader (Options.Trace). */
volatile const __u8 emit_traces = TRACE_NEW;	/* enum trace_mode */

/* Hubble's flow.Verdict numbers. */
enum flow_verdict {
	FLOW_FORWARDED = 1,
	FLOW_DROPPED = 2,
	FLOW_REDIRECTED = 5,
};

struct flow_event {
	__u64 time_ns;		/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__be32 saddr;
	__be32 daddr;
	__u32 len;		/* skb->len */
	__be16 sport;		/* TCP/UDP/SCTP */
	__be16 dport;
	__u16 endpoint_id;	/* 0: no endpoint on the interface */
	__u16 proxy_port;	/* FLOW_REDIRECTED */
	__u8 direction;		/* enum traffic_direction */
	__u8 verdict;		/* enum flow_verdict */
	__u8 drop_reason;	/* enum drop_reason; 0 unless dropped */
	__u8 proto;
	__u8 tcp_flags;
	__u8 ct_state;		/* enum ct_status */
	__u8 match;		/* enum policy_match */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_events SEC(".maps");

/*
 * Verdict metrics: index direction * 256 + code, code METRIC_FORWARDED,
 * METRIC_REDIRECTED or a drop reason.
 */
#define METRIC_FORWARDED	0
#define METRIC_REDIRECTED	1
#define METRICS_PER_DIR		256

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, 2 * METRICS_PER_DIR);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_polmet SEC(".maps");

/* Event counters; mirrored into Go (-type pol_counter). */
enum pol_counter {
	POL_CNT_NOT_IPV4 = 0,		/* passed untouched: ARP, IPv6, ... */
	POL_CNT_EVENTS_LOST = 1,	/* ring buffer full: event not sent */
	POL_CNT_CT_CREATED = 2,		/* conntrack entries created */
	POL_CNT_CT_EXPIRED = 3,		/* expired entries found and deleted by lookups */
	POL_CNT_CT_REOPENED = 4,	/* bare SYN on a closed connection: checked as new */
	POL_CNT_CT_RELATED = 5,		/* ICMP errors passed as related to a tracked flow */
	POL_CNT_PROXY_HAIRPIN = 6,	/* to the L7 proxy: hairpinned back, passed unchecked */
	POL_CNT_EVENTS_SENT = 7,	/* flow events written to the ring buffer */
	POL_CNT_CT_PICKED_UP = 8,	/* TCP connections of the untracked time picked up */
	POL_CNT_HOST_ROUTED = 9,	/* to a local pod: delivered by bpf_redirect_peer (from a pod or an uplink) */
	POL_CNT_UPLINK_ROUTED = 10,	/* of those, from another node (the node's uplink) */
	POL_CNT_CT_RECHECKED = 11,	/* tracked flows checked again after a policy change */
	POL_CNT_MAX,
};

/* Room for counters added later without changing the pinned map's layout. */
#define POL_CNT_CAPACITY 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum pol_counter);	/* also exports the enum into BTF */
	__type(value, __u64);
	__uint(max_entries, POL_CNT_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_polcnt SEC(".maps");

/*
 * Wake-ups of the reader: the kernel's adaptive default, which wakes it
 * only for an event written when it had read everything (bpf/policy
 * EventReader then waits to be woken; once events come, it reads them in
 * batches every 250 ms, not woken meanwhile), unless an eighth of the ring
 * buffer is waiting.
 */
volatile const __u32 events_wakeup_bytes = (1 << 20) / 8;	/* set by the loader: an eighth of the ring */

static __always_inline __u64 events_wakeup(void)
{
	if (bpf_ringbuf_query(&membrane_events, BPF_RB_AVAIL_DATA) >= events_wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return 0;
}

static __always_inline void pol_count(enum pol_counter c)
{
	enum pol_counter key = c;
	__u64 *v = bpf_map_lookup_elem(&membrane_polcnt, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void metrics_add(__u8 dir, __u8 code, __u32 len)
{
	__u32 key = (__u32)(dir & 1) * METRICS_PER_DIR + code;
	struct metrics_value *v = bpf_map_lookup_elem(&membrane_polmet, &key);

	/* Per-CPU, and tc runs with bottom halves off (one program per CPU at a time): plain adds. */
	if (v) {
		v->packets++;
		v->bytes += len;
	}
}

#endif /* MEMBRANE_LIB_FLOW_EVENTS_H */
