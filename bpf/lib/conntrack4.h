/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 connection tracking for the policy programs.
 *
 * An entry is keyed by the tuple of the packet that opened the flow, the
 * direction it went (relative to the endpoint) and the interface. A packet
 * matching the key is the flow going on (established); one matching the
 * reversed tuple in the opposite direction on the same interface is a reply.
 * Both pass without a policy lookup while the policy stays as it was: each
 * entry keeps the policy revision (policy.h) its flow was last checked at,
 * and the flow's next packet in its own direction after a change is checked
 * again. A flow the policy no longer allows keeps its entry with the drop
 * reason, and every packet of it, either way, is dropped until the policy
 * allows it again or the entry expires (Cilium consults the policy for every
 * packet of a flow; this is the same verdict, looked up once per change).
 * Entries expire lazily: a lookup treats an entry idle for longer than
 * its lifetime as missing (and deletes it); the LRU map evicts the rest.
 *
 * Lifetimes (seconds; set by the loader, Options.CT*Timeout):
 *   TCP before any reply (SYN sent)   ct_lifetime_syn    60
 *   TCP once the peer answered        ct_lifetime_tcp    21600 (6h)
 *   TCP after RST or FIN both ways    ct_lifetime_close  10
 *   UDP, ICMP, other protocols        ct_lifetime_other  60
 */
#ifndef MEMBRANE_LIB_CONNTRACK4_H
#define MEMBRANE_LIB_CONNTRACK4_H

#include "common.h"
#include "endpoint.h"
#include "pkt4.h"

volatile const __u32 ct_lifetime_syn = 60;
volatile const __u32 ct_lifetime_tcp = 21600;
volatile const __u32 ct_lifetime_close = 10;
volatile const __u32 ct_lifetime_other = 60;

struct ct4_key {
	__be32 saddr;		/* of the packet that opened the flow */
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 ifindex;		/* host-side interface */
	__u8 proto;
	__u8 direction;		/* enum traffic_direction of the opening packet */
	__u8 pad[2];
};

/*
 * ct4_entry.state: byte 0 TCP flags seen from the opener, byte 1 from the
 * peer, byte 2 CT_F_*, byte 3 the drop reason of a flow the policy no longer
 * allows (0: allowed).
 */
#define CT_STATE_ORIG_SHIFT	0
#define CT_STATE_REPLY_SHIFT	8
#define CT_STATE_DENIED_SHIFT	24
#define CT_F_REPLY_SEEN		(1 << 16)	/* the peer answered */
#define CT_F_PICKED_UP		(1 << 17)	/* opened by a packet of a running connection
						   (no SYN), which no policy checked */

struct ct4_entry {
	__u64 created_ns;	/* bpf_ktime_get_ns() */
	__u64 last_seen_ns;	/* updated at most once a second */
	__u64 packets_orig;
	__u64 bytes_orig;
	__u64 packets_reply;
	__u64 bytes_reply;
	__u32 state;
	__u16 proxy_port;	/* redirected flow: the L7 proxy's port */
	__u16 policy_rev;	/* the policy revision the flow was last checked at */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_ct4 SEC(".maps");

enum ct_status {
	CT_NEW = 0,		/* no entry: policy decides */
	CT_ESTABLISHED = 1,	/* same direction as the opening packet */
	CT_REPLY = 2,		/* the other direction */
	CT_RELATED = 3,		/* ICMP error about a tracked flow */
};

struct ct4_result {
	__u16 proxy_port;	/* CT_ESTABLISHED: the flow's redirect */
	__u16 policy_rev;	/* CT_ESTABLISHED: the revision it was last checked at */
	__u8 denied;		/* the drop reason of a flow the policy no longer allows */
	bool picked_up;		/* CT_ESTABLISHED: CT_F_PICKED_UP */
	bool expired;		/* an expired entry was deleted */
	bool reopened;		/* a bare SYN on a closed TCP entry: deleted, new flow */
};

static __always_inline bool ct4_closing(__u32 state)
{
	__u8 orig = state >> CT_STATE_ORIG_SHIFT, reply = state >> CT_STATE_REPLY_SHIFT;

	return ((orig | reply) & TCP_RST) || ((orig & TCP_FIN) && (reply & TCP_FIN));
}

static __always_inline __u64 ct4_lifetime_ns(__u8 proto, __u32 state)
{
	__u32 s = ct_lifetime_other;

	if (proto == IPPROTO_TCP) {
		if (ct4_closing(state))
			s = ct_lifetime_close;
		else if (state & CT_F_REPLY_SEEN)
			s = ct_lifetime_tcp;
		else
			s = ct_lifetime_syn;
	}
	return (__u64)s * NSEC_PER_SEC;
}

static __always_inline bool ct4_expired(const struct ct4_entry *e, __u8 proto, __u64 now)
{
	__u64 last = e->last_seen_ns;

	return now > last && now - last > ct4_lifetime_ns(proto, e->state);
}

/*
 * A bare SYN (no ACK) on an entry whose connection has closed starts a new
 * one; so does one on a picked-up entry: a connection opening on its tuple
 * is not the one picked up, and policy decides.
 */
static __always_inline bool ct4_reopens(const struct ct4_entry *e, const struct flow4 *f)
{
	return f->proto == IPPROTO_TCP && (f->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	       (ct4_closing(e->state) || (e->state & CT_F_PICKED_UP));
}

/* Records a packet of the flow: counters, TCP flags, last seen. */
static __always_inline void ct4_touch(struct ct4_entry *e, const struct flow4 *f, bool reply,
				      __u32 len, __u64 now)
{
	__u32 add = 0;

	if (reply) {
		__sync_fetch_and_add(&e->packets_reply, 1);
		__sync_fetch_and_add(&e->bytes_reply, len);
		add = CT_F_REPLY_SEEN | ((__u32)f->tcp_flags << CT_STATE_REPLY_SHIFT);
	} else {
		__sync_fetch_and_add(&e->packets_orig, 1);
		__sync_fetch_and_add(&e->bytes_orig, len);
		add = (__u32)f->tcp_flags << CT_STATE_ORIG_SHIFT;
	}
	/* Plain read-modify-write: a racing update may lose a bit for a packet. */
	if ((e->state & add) != add)
		e->state |= add;
	if (now > e->last_seen_ns + NSEC_PER_SEC)
		e->last_seen_ns = now;
}

static __always_inline void ct4_key_of(struct ct4_key *k, const struct flow4 *f, __u8 dir,
				       __u32 ifindex, bool reverse)
{
	k->proto = f->proto;
	k->ifindex = ifindex;
	if (!reverse) {
		k->saddr = f->saddr;
		k->daddr = f->daddr;
		k->sport = f->sport;
		k->dport = f->dport;
		k->direction = dir;
	} else {
		k->saddr = f->daddr;
		k->daddr = f->saddr;
		k->sport = f->dport;
		k->dport = f->sport;
		k->direction = dir ^ 1;
	}
}

/*
 * Finds the entry for a packet going through: as the flow itself, then as a
 * reply. Returns CT_NEW when neither exists (or they expired, or a bare SYN
 * reopens a closed connection).
 */
static __always_inline enum ct_status ct4_lookup_tuple(const struct flow4 *f, __u8 dir, __u32 ifindex,
						       __u32 len, __u64 now, struct ct4_result *res)
{
	struct ct4_key key = {};
	struct ct4_entry *e;

	bool expired;

	ct4_key_of(&key, f, dir, ifindex, false);
	e = bpf_map_lookup_elem(&membrane_ct4, &key);
	if (e) {
		expired = ct4_expired(e, f->proto, now);
		if (!expired && !ct4_reopens(e, f)) {
			ct4_touch(e, f, false, len, now);
			res->proxy_port = e->proxy_port;
			res->policy_rev = e->policy_rev;
			res->denied = e->state >> CT_STATE_DENIED_SHIFT;
			res->picked_up = e->state & CT_F_PICKED_UP;
			return CT_ESTABLISHED;
		}
		res->expired |= expired;
		res->reopened |= !expired;
		bpf_map_delete_elem(&membrane_ct4, &key);
	}

	ct4_key_of(&key, f, dir, ifindex, true);
	e = bpf_map_lookup_elem(&membrane_ct4, &key);
	if (e) {
		expired = ct4_expired(e, f->proto, now);
		if (!expired && !ct4_reopens(e, f)) {
			ct4_touch(e, f, true, len, now);
			res->denied = e->state >> CT_STATE_DENIED_SHIFT;
			return CT_REPLY;
		}
		res->expired |= expired;
		res->reopened |= !expired;
		bpf_map_delete_elem(&membrane_ct4, &key);
	}
	return CT_NEW;
}

/*
 * An ICMP error is related to a tracked flow when the packet it quotes was
 * sent by this side: the quoted tuple as an opening packet of the opposite
 * direction, or as a reply to a flow opened in this direction.
 */
static __always_inline bool ct4_lookup_related(struct __sk_buff *skb, const struct flow4 *f, __u8 dir,
					       __u32 ifindex, __u64 now)
{
	struct flow4 inner = {};
	struct ct4_key key = {};
	struct ct4_entry *e;

	if (f->proto != IPPROTO_ICMP || !icmp_is_error(f->icmp_type) || f->frag != FRAG_NONE)
		return false;
	if (!flow4_parse_icmp_inner(skb, f, &inner))
		return false;

	ct4_key_of(&key, &inner, dir ^ 1, ifindex, false);
	e = bpf_map_lookup_elem(&membrane_ct4, &key);
	if (e && !ct4_expired(e, inner.proto, now))
		return true;
	ct4_key_of(&key, &inner, dir ^ 1, ifindex, true);
	e = bpf_map_lookup_elem(&membrane_ct4, &key);
	return e && !ct4_expired(e, inner.proto, now);
}

/*
 * Whether an allowed new packet opens a tracked flow: everything but a TCP
 * RST (which ends one) and ICMP other than echo requests.
 */
static __always_inline bool ct4_can_create(const struct flow4 *f)
{
	switch (f->proto) {
	case IPPROTO_TCP:
		return !(f->tcp_flags & TCP_RST);
	case IPPROTO_ICMP:
		return f->icmp_type == ICMP_ECHO;
	}
	return true;
}

static __always_inline int ct4_create(const struct flow4 *f, __u8 dir, __u32 ifindex, __u32 len,
				      __u64 now, __u16 proxy_port, __u32 flags, __u16 policy_rev)
{
	struct ct4_key key = {};
	struct ct4_entry e = {
		.created_ns = now,
		.last_seen_ns = now,
		.packets_orig = 1,
		.bytes_orig = len,
		.state = ((__u32)f->tcp_flags << CT_STATE_ORIG_SHIFT) | flags,
		.proxy_port = proxy_port,
		.policy_rev = policy_rev,
	};

	ct4_key_of(&key, f, dir, ifindex, false);
	return bpf_map_update_elem(&membrane_ct4, &key, &e, BPF_ANY);
}

/*
 * Records the verdict of the policy at revision policy_rev on the flow f
 * opened in direction dir: denied is its drop reason, 0 when it is allowed.
 */
static __always_inline void ct4_recheck(const struct flow4 *f, __u8 dir, __u32 ifindex,
					__u16 policy_rev, __u8 denied)
{
	struct ct4_key key = {};
	struct ct4_entry *e;

	ct4_key_of(&key, f, dir, ifindex, false);
	e = bpf_map_lookup_elem(&membrane_ct4, &key);
	if (!e)
		return;
	e->policy_rev = policy_rev;
	e->state = (e->state & ~(0xffU << CT_STATE_DENIED_SHIFT)) | ((__u32)denied << CT_STATE_DENIED_SHIFT);
}

#endif /* MEMBRANE_LIB_CONNTRACK4_H */
