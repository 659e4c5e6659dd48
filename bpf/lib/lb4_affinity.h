/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Session affinity (Kubernetes sessionAffinity: ClientIP) for the socket load
 * balancer. Sockets see no client IP before routing, so the client is its
 * network namespace: every pod has its own, and bpf_get_netns_cookie() names
 * it. An entry is reused while it is younger than the service's
 * affinity_timeout and its backend is still a backend of the service; the
 * latter is one lookup in the match table (backend_id, rev_nat_id), which the
 * agent keeps equal to the service's backend slots.
 */
#ifndef MEMBRANE_LIB_LB4_AFFINITY_H
#define MEMBRANE_LIB_LB4_AFFINITY_H

#include "common.h"
#include "lb4.h"

struct lb4_affinity_key {
	__u64 netns_cookie;
	__u16 rev_nat_id;
	__u8 pad[6];
};

struct lb4_affinity_value {
	__u32 backend_id;
	__u8 pad[4];
	__u64 last_used;	/* bpf_ktime_get_ns() */
};

struct lb4_affinity_match_key {
	__u32 backend_id;
	__u16 rev_nat_id;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_value);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_aff4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_affinity_match_key);
	__type(value, __u8);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_affm4 SEC(".maps");

/*
 * Returns the backend_id remembered for this client and service, or 0 when
 * there is none, it expired, or the backend left the service.
 */
static __always_inline __u32
lb4_affinity_backend(const struct lb4_affinity_key *key, __u32 timeout_sec, __u64 now)
{
	struct lb4_affinity_match_key match;
	struct lb4_affinity_value val, *p;

	p = bpf_map_lookup_elem(&membrane_aff4, key);
	if (!p)
		return 0;
	val = *p;	/* copy: see lb4_read_service() */
	if (now - val.last_used > (__u64)timeout_sec * NSEC_PER_SEC)
		goto stale;

	match = (struct lb4_affinity_match_key){
		.backend_id = val.backend_id,
		.rev_nat_id = key->rev_nat_id,
	};
	if (!bpf_map_lookup_elem(&membrane_affm4, &match))
		goto stale;
	return match.backend_id;
stale:
	bpf_map_delete_elem(&membrane_aff4, key);
	return 0;
}

static __always_inline void
lb4_affinity_remember(const struct lb4_affinity_key *key, __u32 backend_id, __u64 now)
{
	struct lb4_affinity_value val = {
		.backend_id = backend_id,
		.last_used = now,
	};

	bpf_map_update_elem(&membrane_aff4, key, &val, BPF_ANY);
}

#endif /* MEMBRANE_LIB_LB4_AFFINITY_H */
