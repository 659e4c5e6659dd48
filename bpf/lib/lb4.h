/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * IPv4 load-balancing tables: services (frontend -> backend slots), backends,
 * reverse NAT (rev_nat_id -> frontend), and the per-socket reverse entries
 * that let recvmsg4/getpeername4 show the service address again.
 *
 * Every key and value has explicit padding members, so a designated
 * initializer zeroes all of its bytes (hash keys compare bytes).
 * Addresses and ports are in network byte order, as in struct bpf_sock_addr.
 *
 * The max_entries here are defaults; the loader overrides them (Options).
 * An IPv6 variant gets its own lb6.h with the same shape and *6 map names.
 */
#ifndef MEMBRANE_LIB_LB4_H
#define MEMBRANE_LIB_LB4_H

#include "common.h"

/* lb4_service.flags */
#define SVC_AFFINITY	(1 << 0)	/* sticky backend per client netns */
#define SVC_LOCAL_ONLY	(1 << 1)	/* reserved: node-local backends only */

/* lb4_key.scope: the only scope the datapath looks up today. */
#define LB_SCOPE_DEFAULT 0

struct lb4_key {
	__be32 address;		/* frontend (service) address */
	__be16 dport;		/* frontend port */
	__u8 proto;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope;		/* LB_SCOPE_* */
	__u16 backend_slot;	/* 0: the service entry; 1..count: backends */
	__u8 pad[2];
};

/*
 * Slot 0 holds the service: count, rev_nat_id, flags, affinity_timeout.
 * Slots 1..count hold one backend_id each (other fields zero).
 */
struct lb4_service {
	union {
		__u32 backend_id;	/* slot >= 1 */
		__u32 affinity_timeout;	/* slot 0: seconds */
	};
	__u16 count;		/* slot 0: number of backend slots */
	__u16 rev_nat_id;	/* slot 0 */
	__u8 flags;		/* slot 0: SVC_* */
	__u8 pad[3];
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;		/* reserved */
};

struct lb4_reverse_nat {
	__be32 address;		/* the frontend */
	__be16 port;
	__u8 pad[2];
};

struct rev_sk4_key {
	__u64 cookie;		/* bpf_get_socket_cookie() */
	__be32 address;		/* backend the socket was sent to */
	__be16 port;
	__u8 pad[2];
};

struct rev_sk4_value {
	__be32 address;		/* frontend the application asked for */
	__be16 port;
	__u16 rev_nat_id;	/* checked against the reverse NAT table */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_svc4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);	/* backend_id */
	__type(value, struct lb4_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_be4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);	/* rev_nat_id */
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_rnat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rev_sk4_key);
	__type(value, struct rev_sk4_value);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_rsk4 SEC(".maps");

/*
 * Hash map elements are recycled as soon as an update or delete frees them,
 * even while a program still holds a pointer to one: copy a value out right
 * after its lookup, so a racing update cannot change it under us.
 */
static __always_inline bool lb4_read_service(const struct lb4_key *key, struct lb4_service *out)
{
	struct lb4_service *v = bpf_map_lookup_elem(&membrane_svc4, key);

	if (!v)
		return false;
	*out = *v;
	return true;
}

static __always_inline bool lb4_read_backend(__u32 backend_id, struct lb4_backend *out)
{
	struct lb4_backend *v = bpf_map_lookup_elem(&membrane_be4, &backend_id);

	if (!v)
		return false;
	*out = *v;
	return true;
}

#endif /* MEMBRANE_LIB_LB4_H */
