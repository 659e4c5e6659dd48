// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket load balancer (kube-proxy replacement) on cgroup sock_addr hooks.
 *
 * connect4/sendmsg4: a (service address, port, proto) lookup finds the
 * service entry (slot 0), a second lookup one of its backend slots; the
 * socket is pointed at that backend before any packet exists, so there is no
 * per-packet NAT. The pair (socket, backend) -> service is remembered so that
 * recvmsg4/getpeername4 show the application the address it asked for.
 *
 * IPv4 only for now: the sock4_* functions take the v4 tables; v6 variants
 * (lb6.h, sock6_*, connect6/...) follow the same shape.
 */
#include "lib/common.h"
#include "lib/lb4.h"
#include "lib/lb4_affinity.h"
#include "lib/lb_counters.h"

char _license[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader (VariableSpec.Set), never by recompiling. */

/* Honour SVC_AFFINITY on services. */
volatile const __u8 enable_affinity = 1;
/*
 * The kernel has bpf_set_retval() for connect4/sendmsg4 (5.18+), so a service
 * without backends refuses with ECONNREFUSED rather than EPERM. When 0 the
 * verifier prunes the call as dead code, so older kernels load the program.
 */
volatile const __u8 have_set_retval = 1;

static __always_inline int sock_refuse(void)
{
	if (have_set_retval)
		bpf_set_retval(-ECONNREFUSED);
	return SYS_REJECT;
}

static __always_inline void
sock4_remember_rev(struct bpf_sock_addr *ctx, const struct lb4_backend *backend,
		   const struct lb4_key *frontend, __u16 rev_nat_id)
{
	struct rev_sk4_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = backend->address,
		.port = backend->port,
	};
	struct rev_sk4_value val = {
		.address = frontend->address,
		.port = frontend->dport,
		.rev_nat_id = rev_nat_id,
	};
	struct rev_sk4_value *cur;

	/* A UDP socket sending to a service again: keep the entry as it is. */
	cur = bpf_map_lookup_elem(&membrane_rsk4, &key);
	if (cur && cur->address == val.address && cur->port == val.port &&
	    cur->rev_nat_id == val.rev_nat_id)
		return;
	bpf_map_update_elem(&membrane_rsk4, &key, &val, BPF_ANY);
}

/*
 * A connect racing with an update of the service may hold a stale count and
 * pick a slot (or a backend) the agent has just deleted. It then reads the
 * service entry again and picks anew, a few times, before giving up
 * (untranslated, counted). A bounded loop: the verifier accepts it since 5.3.
 */
#define LB_SELECT_TRIES 3

enum lb_pick {
	LB_PICKED,	/* *backend is set */
	LB_NOT_SERVICE,	/* not (or no longer) a service: leave the socket alone */
	LB_EMPTY,	/* the service has no backends: refuse */
	LB_GAVE_UP,	/* every pick raced with an update: leave the socket alone */
};

/*
 * Reads the service entry (slot 0) of key into *svc. An entry without
 * backends is read a second time before the caller refuses the connect: a
 * racing update may have recycled the element between lookup and copy.
 */
static __always_inline enum lb_pick lb4_read_frontend(struct lb4_key *key, struct lb4_service *svc)
{
	key->backend_slot = 0;
	if (!lb4_read_service(key, svc))
		return LB_NOT_SERVICE;
	if (svc->count)
		return LB_PICKED;
	if (!lb4_read_service(key, svc))
		return LB_NOT_SERVICE;
	return svc->count ? LB_PICKED : LB_EMPTY;
}

/* Picks a random backend slot of *svc, re-reading *svc after a miss. */
static __always_inline enum lb_pick
lb4_select_backend(struct lb4_key *key, struct lb4_service *svc, __u32 *backend_id,
		   struct lb4_backend *backend)
{
	enum lb_counter miss = LB_CNT_SLOT_MISSING;
	struct lb4_service slot;
	enum lb_pick ret;

	for (int try = 0; try < LB_SELECT_TRIES; try++) {
		if (try > 0) {
			lb_count(LB_CNT_RETRIED);
			ret = lb4_read_frontend(key, svc);
			if (ret != LB_PICKED)
				return ret;
		}
		key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
		if (!lb4_read_service(key, &slot)) {
			miss = LB_CNT_SLOT_MISSING;
			continue;
		}
		if (lb4_read_backend(slot.backend_id, backend)) {
			*backend_id = slot.backend_id;
			return LB_PICKED;
		}
		miss = LB_CNT_BACKEND_MISSING;
	}
	lb_count(miss);
	return LB_GAVE_UP;
}

/*
 * Points the socket at a backend when its destination is a service.
 * Returns 0 to let the call proceed (translated or not), or -ECONNREFUSED
 * when the service has no backends.
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct lb4_affinity_key aff_key = {};
	struct lb4_backend backend;
	struct lb4_service svc;
	bool picked = false;
	bool affinity = false;
	__u32 backend_id = 0;
	enum lb_pick ret;
	struct lb4_key key;
	__u64 now = 0;
	__u8 proto;

	switch (ctx->protocol) {
	case IPPROTO_TCP:
		proto = IPPROTO_TCP;
		break;
	case IPPROTO_UDP:
		proto = IPPROTO_UDP;
		break;
	default:
		return 0;
	}

	key = (struct lb4_key){
		.address = ctx->user_ip4,
		.dport = (__be16)ctx->user_port,
		.proto = proto,
		.scope = LB_SCOPE_DEFAULT,
	};
	ret = lb4_read_frontend(&key, &svc);
	if (ret == LB_NOT_SERVICE)
		return 0;
	if (ret == LB_EMPTY)
		goto no_backend;

	if (enable_affinity && (svc.flags & SVC_AFFINITY)) {
		affinity = true;
		now = bpf_ktime_get_ns();
		aff_key.netns_cookie = bpf_get_netns_cookie(ctx);
		aff_key.rev_nat_id = svc.rev_nat_id;
		backend_id = lb4_affinity_backend(&aff_key, svc.affinity_timeout, now);
		if (backend_id && lb4_read_backend(backend_id, &backend)) {
			picked = true;
			lb_count(LB_CNT_AFFINITY_HIT);
		}
	}

	if (!picked) {
		ret = lb4_select_backend(&key, &svc, &backend_id, &backend);
		if (ret == LB_EMPTY)
			goto no_backend;
		if (ret != LB_PICKED)
			return 0;
	}

	if (affinity)
		lb4_affinity_remember(&aff_key, backend_id, now);
	key.backend_slot = 0;
	sock4_remember_rev(ctx, &backend, &key, svc.rev_nat_id);

	ctx->user_ip4 = backend.address;
	ctx->user_port = backend.port;
	lb_count(LB_CNT_TRANSLATED);
	return 0;

no_backend:
	lb_count(LB_CNT_NO_BACKEND);
	return -ECONNREFUSED;
}

/*
 * Shows the service address instead of the backend's when this socket was
 * pointed at that backend by sock4_xlate_fwd and the service still exists.
 */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_reverse_nat rev_nat;
	struct rev_sk4_value val;
	void *p;
	struct rev_sk4_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};

	p = bpf_map_lookup_elem(&membrane_rsk4, &key);
	if (!p)
		return;
	val = *(struct rev_sk4_value *)p;
	p = bpf_map_lookup_elem(&membrane_rnat4, &val.rev_nat_id);
	if (p)
		rev_nat = *(struct lb4_reverse_nat *)p;
	if (!p || rev_nat.address != val.address || rev_nat.port != val.port) {
		lb_count(LB_CNT_REV_STALE);
		bpf_map_delete_elem(&membrane_rsk4, &key);
		return;
	}
	ctx->user_ip4 = val.address;
	ctx->user_port = val.port;
	lb_count(LB_CNT_REV_TRANSLATED);
}

SEC("cgroup/connect4")
int lb4_connect(struct bpf_sock_addr *ctx)
{
	if (sock4_xlate_fwd(ctx) == -ECONNREFUSED)
		return sock_refuse();
	return SYS_PROCEED;
}

/* Unconnected UDP: sendto()/sendmsg() with a destination address. */
SEC("cgroup/sendmsg4")
int lb4_sendmsg(struct bpf_sock_addr *ctx)
{
	if (sock4_xlate_fwd(ctx) == -ECONNREFUSED)
		return sock_refuse();
	return SYS_PROCEED;
}

/* UDP: the source address recvfrom()/recvmsg() reports. Must return 1. */
SEC("cgroup/recvmsg4")
int lb4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

/* TCP and connected UDP: the address getpeername() reports. Must return 1. */
SEC("cgroup/getpeername4")
int lb4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}
