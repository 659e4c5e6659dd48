/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 fragments: only the first fragment of a datagram carries the L4
 * header. Its ports are remembered by (addresses, IP ID, protocol) so later
 * fragments are tracked and checked as the same flow; a later fragment whose
 * first one was not seen (reordering, or evicted) is dropped ("First logical
 * datagram fragment not found").
 */
#ifndef MEMBRANE_LIB_FRAG4_H
#define MEMBRANE_LIB_FRAG4_H

#include "common.h"
#include "drop_reasons.h"
#include "pkt4.h"

struct frag4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag4_ports {
	__be16 sport;
	__be16 dport;
	__be16 policy_port;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag4_key);
	__type(value, struct frag4_ports);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_frag4 SEC(".maps");

static __always_inline void frag4_key_of(struct frag4_key *k, const struct flow4 *f)
{
	k->saddr = f->saddr;
	k->daddr = f->daddr;
	k->id = f->ip_id;
	k->proto = f->proto;
}

/* Remembers a first fragment's ports; fills a later fragment's. Returns 0 or a drop reason. */
static __always_inline int frag4_handle(struct flow4 *f)
{
	struct frag4_key key = {};
	const struct frag4_ports *p;

	if (f->frag == FRAG_NONE)
		return 0;
	frag4_key_of(&key, f);
	if (f->frag == FRAG_FIRST) {
		struct frag4_ports v = {
			.sport = f->sport,
			.dport = f->dport,
			.policy_port = f->policy_port,
		};

		/* On failure later fragments are dropped; the first goes on. */
		bpf_map_update_elem(&membrane_frag4, &key, &v, BPF_ANY);
		return 0;
	}
	p = bpf_map_lookup_elem(&membrane_frag4, &key);
	if (!p)
		return DROP_FRAG_NOT_FOUND;
	f->sport = p->sport;
	f->dport = p->dport;
	f->policy_port = p->policy_port;
	return 0;
}

#endif /* MEMBRANE_LIB_FRAG4_H */
