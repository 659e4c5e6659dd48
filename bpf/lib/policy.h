/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The identity-based L3/L4 policy map and its lookup.
 *
 * One LPM trie for all endpoints, keyed like Cilium's policy map with the
 * endpoint in front: (endpoint id, direction, remote identity) are always
 * matched in full; protocol and destination port are the prefix that can be
 * cut short:
 *
 *   prefixlen 64        L3 only: every protocol and port
 *   prefixlen 72        protocol, every port
 *   prefixlen 80 + p    protocol, ports matching the first p bits (1..16):
 *                       a port range is stored as its aligned power-of-two blocks
 *
 * Remote identity 0 means any peer; those entries are matched by a second
 * lookup. Precedence (the agent's writer keeps the map so that it holds):
 *  1. Any deny entry matching the packet, in either lookup, drops it. Within
 *     one lookup the longest match decides, so the writer marks every entry
 *     that lies inside a deny entry as denying too (POLICY_F_DERIVED_DENY).
 *  2. No entry in either lookup: dropped ("Policy denied").
 *  3. Auth: any matching entry requiring authentication (POLICY_F_AUTH,
 *     POLICY_F_DERIVED_AUTH likewise inherited from covering entries) sets
 *     the decision's auth: the caller lets only the node proxy's own
 *     connections (which it authenticated with mutual TLS) through, and
 *     drops everything else ("Authentication required").
 *  4. Otherwise the more specific of the two matches (longer protocol/port
 *     prefix) gives the verdict; on a tie a redirect beats a plain allow, then
 *     the identity-specific entry wins.
 */
#ifndef MEMBRANE_LIB_POLICY_H
#define MEMBRANE_LIB_POLICY_H

#include "common.h"
#include "drop_reasons.h"
#include "pkt4.h"

#define POLICY_PREFIX_FIXED	64	/* endpoint_id, direction, pad0, identity */
#define POLICY_PREFIX_FULL	96

struct policy_key {
	__u32 prefixlen;
	__u16 endpoint_id;
	__u8 direction;		/* enum traffic_direction */
	__u8 pad0;
	__u32 identity;		/* remote identity; 0: any */
	__u8 proto;		/* 0 only with prefixlen 64 */
	__u8 pad1;
	__be16 dport;		/* destination port; ICMP: the type */
};

enum policy_verdict {
	POLICY_NONE = 0,
	POLICY_ALLOW = 1,
	POLICY_DENY = 2,
	POLICY_REDIRECT = 3,	/* allow, to the L7 proxy on proxy_port */
};

/* policy_entry.flags */
#define POLICY_F_AUTH		(1 << 0)	/* this entry requires authentication */
#define POLICY_F_DERIVED_DENY	(1 << 1)	/* lies inside a deny entry: denies */
#define POLICY_F_DERIVED_AUTH	(1 << 2)	/* lies inside an auth-requiring entry */

struct policy_entry {
	__u16 proxy_port;	/* POLICY_REDIRECT */
	__u8 verdict;		/* enum policy_verdict: the entry's own */
	__u8 flags;		/* POLICY_F_* */
	__u8 l4_prefix;		/* prefixlen - 64: how much of (proto, port) the key matches */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_entry);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_policy SEC(".maps");

/*
 * The policy revision: the agent bumps it once a change to the policy,
 * ipcache or endpoint maps is written whole (Maps.Revise), and a tracked
 * flow last checked at another revision is checked again (conntrack4.h).
 * Not pinned: a new load starts over, and every flow is checked once more.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} membrane_polrev SEC(".maps");

/* The policy revision, cut to conntrack's 16 bits. */
static __always_inline __u16 policy_revision(void)
{
	__u32 zero = 0;
	const __u32 *rev = bpf_map_lookup_elem(&membrane_polrev, &zero);

	return rev ? (__u16)*rev : 0;
}

/* Which parts of the winning entry's key were specific (Cilium's match types). */
enum policy_match {
	MATCH_NONE = 0,		/* no lookup (not enforced, or established) */
	MATCH_L3_ONLY = 1,	/* identity, any protocol/port */
	MATCH_L3_L4 = 2,	/* identity, protocol and port */
	MATCH_L4_ONLY = 3,	/* any identity, protocol and port */
	MATCH_ALL = 4,		/* any identity, any protocol/port */
	MATCH_L3_PROTO = 5,	/* identity and protocol, any port */
	MATCH_PROTO_ONLY = 6,	/* any identity, protocol, any port */
};

struct policy_decision {
	__u16 proxy_port;	/* non-zero: redirect */
	__u8 match;		/* enum policy_match */
	__u8 auth;		/* only authenticated connections may pass */
};

static __always_inline bool policy_entry_denies(const struct policy_entry *e)
{
	return e->verdict == POLICY_DENY || (e->flags & POLICY_F_DERIVED_DENY);
}

static __always_inline bool policy_entry_needs_auth(const struct policy_entry *e)
{
	return e->flags & (POLICY_F_AUTH | POLICY_F_DERIVED_AUTH);
}

static __always_inline __u8 policy_match_type(const struct policy_entry *e, bool any_identity)
{
	if (e->l4_prefix == 0)
		return any_identity ? MATCH_ALL : MATCH_L3_ONLY;
	if (e->l4_prefix <= 8)
		return any_identity ? MATCH_PROTO_ONLY : MATCH_L3_PROTO;
	return any_identity ? MATCH_L4_ONLY : MATCH_L3_L4;
}

/*
 * Looks up the policy of endpoint ep_id for a new flow f in direction dir
 * with the peer remote_id. Returns 0 (allowed; *d says how) or the drop
 * reason. Values are copied out at once: a racing update may free them.
 */
static __always_inline int policy_check(__u16 ep_id, __u8 dir, __u32 remote_id,
					const struct flow4 *f, struct policy_decision *d)
{
	struct policy_key key = {
		.prefixlen = POLICY_PREFIX_FULL,
		.endpoint_id = ep_id,
		.direction = dir,
		.identity = remote_id,
		.proto = f->proto,
		.dport = f->policy_port,
	};
	struct policy_entry by_id = {}, by_any = {};
	const struct policy_entry *e, *win;
	bool have_id = false, have_any = false, win_any;

	if (remote_id != ID_ANY) {
		e = bpf_map_lookup_elem(&membrane_policy, &key);
		if (e) {
			by_id = *e;
			have_id = true;
		}
	}
	key.identity = ID_ANY;
	e = bpf_map_lookup_elem(&membrane_policy, &key);
	if (e) {
		by_any = *e;
		have_any = true;
	}

	if ((have_id && policy_entry_denies(&by_id)) || (have_any && policy_entry_denies(&by_any)))
		return DROP_POLICY_DENY;
	if (!have_id && !have_any)
		return DROP_POLICY;
	d->auth = (have_id && policy_entry_needs_auth(&by_id)) || (have_any && policy_entry_needs_auth(&by_any));

	if (!have_any)
		win_any = false;
	else if (!have_id)
		win_any = true;
	else if (by_id.l4_prefix != by_any.l4_prefix)
		win_any = by_any.l4_prefix > by_id.l4_prefix;
	else
		win_any = by_any.verdict == POLICY_REDIRECT && by_id.verdict != POLICY_REDIRECT;
	win = win_any ? &by_any : &by_id;

	d->proxy_port = win->verdict == POLICY_REDIRECT ? win->proxy_port : 0;
	d->match = policy_match_type(win, win_any);
	return 0;
}

#endif /* MEMBRANE_LIB_POLICY_H */
