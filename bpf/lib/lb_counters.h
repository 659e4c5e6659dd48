/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU event counters of the socket load balancer. The agent sums them
 * over CPUs and exports them as metrics. The enum is mirrored into Go by
 * bpf2go (-type lb_counter), so indices never drift.
 */
#ifndef MEMBRANE_LIB_LB_COUNTERS_H
#define MEMBRANE_LIB_LB_COUNTERS_H

#include "common.h"

enum lb_counter {
	/* connect4/sendmsg4 rewrote a service address to a backend. */
	LB_CNT_TRANSLATED = 0,
	/* recvmsg4/getpeername4 showed the service address instead of the backend. */
	LB_CNT_REV_TRANSLATED = 1,
	/* A service without backends refused a connect/sendmsg. */
	LB_CNT_NO_BACKEND = 2,
	/*
	 * Gave up after LB_SELECT_TRIES picks: the last picked slot was missing
	 * (updates racing faster than the retries) ...
	 */
	LB_CNT_SLOT_MISSING = 3,
	/* ... or the backend it named was missing. The socket stays untranslated. */
	LB_CNT_BACKEND_MISSING = 4,
	/* An affinity entry chose the backend. */
	LB_CNT_AFFINITY_HIT = 5,
	/* A reverse entry pointed at a frontend that is gone; it was dropped. */
	LB_CNT_REV_STALE = 6,
	/* A pick missed a slot or backend deleted by a racing update; picked again. */
	LB_CNT_RETRIED = 7,
	LB_CNT_MAX,
};

/*
 * Room for counters added later without changing the pinned map's layout:
 * the map survives agent upgrades.
 */
#define LB_CNT_CAPACITY 32

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, enum lb_counter);	/* also exports the enum into BTF */
	__type(value, __u64);
	__uint(max_entries, LB_CNT_CAPACITY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_lbstat SEC(".maps");

static __always_inline void lb_count(enum lb_counter c)
{
	enum lb_counter key = c;
	__u64 *v = bpf_map_lookup_elem(&membrane_lbstat, &key);

	/*
	 * sock_addr programs run with migration disabled but may be preempted
	 * by another task on the same CPU: keep the increment atomic (an
	 * uncontended add on a per-CPU slot).
	 */
	if (v)
		__sync_fetch_and_add(v, 1);
}

#endif /* MEMBRANE_LIB_LB_COUNTERS_H */
