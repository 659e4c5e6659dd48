/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Security identities and the IPv4 ipcache (address -> identity).
 * Reserved identities use Cilium's numbers; the operator allocates the rest
 * (>= 256). Identity 0 never names a peer: in policy keys it means "any".
 */
#ifndef MEMBRANE_LIB_IDENTITY_H
#define MEMBRANE_LIB_IDENTITY_H

#include "common.h"

enum reserved_identity {
	ID_ANY = 0,		/* policy keys only */
	ID_HOST = 1,
	ID_WORLD = 2,
	ID_UNMANAGED = 3,
	ID_HEALTH = 4,
	ID_INIT = 5,
	ID_REMOTE_NODE = 6,
	ID_KUBE_APISERVER = 7,
};

/* LPM trie key: prefixlen, then the address bits (network order). */
struct ipcache4_key {
	__u32 prefixlen;	/* 0..32 */
	__be32 addr;
};

struct ipcache_entry {
	__u32 identity;
	__u8 flags;		/* reserved (e.g. encryption, tunnel) */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache4_key);
	__type(value, struct ipcache_entry);
	__uint(max_entries, 512000);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_ipc4 SEC(".maps");

/* The identity of addr: its longest matching prefix; no match is world. */
static __always_inline __u32 ipcache4_identity(__be32 addr)
{
	struct ipcache4_key key = { .prefixlen = 32, .addr = addr };
	const struct ipcache_entry *e = bpf_map_lookup_elem(&membrane_ipc4, &key);
	__u32 id;

	if (!e)
		return ID_WORLD;
	id = e->identity;
	return id ? id : ID_WORLD;
}

#endif /* MEMBRANE_LIB_IDENTITY_H */
