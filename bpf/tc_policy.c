// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-based L3/L4 policy on the host side of each pod's veth (tcx, or
 * clsact on kernels without tcx):
 *
 *   policy_from_pod  tcx ingress of the host veth: the pod's egress
 *   policy_to_pod    tcx egress of the host veth:  the pod's ingress
 *
 * Host routing (policy_host_routed, tail-called by policy_from_pod; see
 * there): a packet to another pod of the node that the source's egress
 * policy passed gets the destination's ingress policy right away, with the
 * destination's ifindex, and goes into its netns by bpf_redirect_peer,
 * skipping the node's stack; anything host routing does not take goes
 * through the node's stack to policy_to_pod as before. policy_from_uplink,
 * on the node's uplinks, does the same for packets from other nodes.
 *
 * For every IPv4 packet: parse, check the pod's source address (egress);
 * TCP of an endpoint no policy applies to then passes (the minimal path:
 * no conntrack, a trace for a SYN). Otherwise
 * look up conntrack; a packet of a tracked flow (or a reply, or an ICMP error
 * about one) passes. A new flow resolves the peer's identity in the ipcache
 * and, where the endpoint enforces that direction, looks up the policy map;
 * allowed flows get a conntrack entry. Drops and new flows emit flow events.
 * After a policy change (the agent bumps the policy revision), a tracked
 * flow's next packet in its own direction gets the same decision as a new
 * flow, and a flow the policy no longer allows is dropped both ways from
 * then on: taking access away closes connections already open, and so does
 * a port starting to require authentication for a flow that did not come
 * through the proxy. A flow keeps the path it opened on: one that went
 * directly to a port that gains L7 rules goes on directly, as in Cilium
 * (the redirect is the conntrack entry's). A flow picked up without a check
 * (EP_PICKUP) stays unchecked: its direction is unknown.
 *
 * Non-IPv4 (ARP, IPv6) passes untouched: the cluster is IPv4-only; a v6
 * variant gets its own parse/ct/ipcache maps of the same shape.
 *
 * L7 redirect (policy verdict, or the flow's conntrack entry, names a proxy
 * port), with Cilium's mark scheme for the node's nft TPROXY rules:
 *
 *   from the pod  the packet passes with mark proxy_port << 16 | 0x0200
 *   to the pod    the same mark, Ethernet addresses swapped (the destination
 *                 is the host veth's own MAC: PACKET_HOST), and redirected to
 *                 the host veth's ingress: back into the node's stack. The
 *                 hairpinned packet meets policy_from_pod, which passes it
 *                 unchecked (a pod cannot set a mark: the kernel scrubs it
 *                 when a packet leaves the pod's netns).
 *
 * Packets to the pod marked 0x0A00 come from the proxy (its upstream
 * connection, with the client's address as source): L3/L4 policy applies,
 * but a redirect verdict passes them as a plain allow.
 *
 * An endpoint with the reserved init identity (written when the pod's
 * interface is created, before the agent knows its identity and policy,
 * with both enforcement flags: tracked, never on the minimal path) drops
 * every new flow ("Policy not yet known") except those from the node.
 *
 * Mutual authentication: a new flow to the pod that an entry requiring
 * authentication matches passes only when it comes from the proxy (which
 * accepted it over mutual TLS and checked the peer's SPIFFE ID); anything
 * else, including a process of the node or a spoofed source, is dropped
 * ("Authentication required"). Such an entry with an L7 redirect is
 * dropped even from the proxy: the authenticated path does not apply L7
 * rules yet. On the source side, the agent writes egress redirect entries
 * to the proxy's authenticating listener; for endpoints not enforced at
 * egress (EP_AUTH_EGRESS) a miss passes.
 *
 * Return codes are tcx's: TCX_NEXT lets later programs (and clsact filters)
 * see an allowed packet, TCX_DROP drops, TCX_REDIRECT (bpf_redirect) hands
 * the packet to the proxy. In a clsact direct-action filter the same numbers
 * are TC_ACT_UNSPEC (continue), TC_ACT_SHOT and TC_ACT_REDIRECT.
 */
#include "lib/common.h"
#include "lib/drop_reasons.h"
#include "lib/pkt4.h"
#include "lib/identity.h"
#include "lib/endpoint.h"
#include "lib/policy.h"
#include "lib/conntrack4.h"
#include "lib/frag4.h"
#include "lib/flow_events.h"

char _license[] SEC("license") = "Dual BSD/GPL";

/*
 * Types only userspace needs (bpf2go -type mirrors them into Go): a pointer
 * that nothing uses puts them into BTF. The loader never creates its map.
 */
struct btf_exports {
	struct flow_event event;
	enum drop_reason drop_reason;
	enum flow_verdict flow_verdict;
	enum ct_status ct_status;
	enum policy_match policy_match;
	enum policy_verdict policy_verdict;
	enum trace_mode trace_mode;
	enum traffic_direction traffic_direction;
	enum reserved_identity reserved_identity;
};
const struct btf_exports *unused_btf_exports __attribute__((unused));

/* From <linux/bpf.h> of Linux 6.6+ (Debian 12's uapi headers predate tcx). */
#define TCX_NEXT	(-1)
#define TCX_DROP	2

#define PACKET_HOST	0	/* skb->pkt_type: addressed to this host */

/*
 * Cilium's skb->mark magic (bits 8-11; the proxy port in bits 16-31). Go:
 * MarkMagic* and ToProxyMark in bpf/policy/types.go.
 */
#define MARK_MAGIC_MASK		0x0F00
#define MARK_MAGIC_TO_PROXY	0x0200	/* to the L7 proxy: the nft TPROXY rules match it */
#define MARK_MAGIC_FROM_PROXY	0x0A00	/* sent by the L7 proxy */

static __always_inline __u32 to_proxy_mark(__u16 port)
{
	return ((__u32)port << 16) | MARK_MAGIC_TO_PROXY;
}

static __always_inline bool mark_is(const struct __sk_buff *skb, __u32 magic)
{
	return (skb->mark & MARK_MAGIC_MASK) == magic;
}

struct verdict_ctx {
	struct flow4 f;
	struct endpoint_info ep;
	__u32 ifindex;
	__u32 local_id;
	__u32 remote_id;
	__u16 proxy_port;
	__u8 dir;
	__u8 have_ep;
	__u8 have_ids;
	__u8 ct;		/* enum ct_status */
	__u8 match;		/* enum policy_match */
};

/* The identities of both ends: the endpoint's own, and the peer's from the ipcache. */
static __always_inline void resolve_identities(struct verdict_ctx *v)
{
	__be32 local = v->dir == DIR_EGRESS ? v->f.saddr : v->f.daddr;
	__be32 remote = v->dir == DIR_EGRESS ? v->f.daddr : v->f.saddr;

	if (v->have_ids)
		return;
	v->local_id = v->have_ep ? v->ep.identity : ipcache4_identity(local);
	v->remote_id = ipcache4_identity(remote);
	v->have_ids = 1;
}

static __always_inline void emit(struct __sk_buff *skb, struct verdict_ctx *v, __u8 verdict, __u8 reason)
{
	struct flow_event *ev;

	resolve_identities(v);
	ev = bpf_ringbuf_reserve(&membrane_events, sizeof(*ev), 0);
	if (!ev) {
		pol_count(POL_CNT_EVENTS_LOST);
		return;
	}
	ev->time_ns = bpf_ktime_get_ns();
	ev->ifindex = v->ifindex;
	if (v->dir == DIR_EGRESS) {
		ev->src_identity = v->local_id;
		ev->dst_identity = v->remote_id;
	} else {
		ev->src_identity = v->remote_id;
		ev->dst_identity = v->local_id;
	}
	ev->saddr = v->f.saddr;
	ev->daddr = v->f.daddr;
	ev->len = skb->len;
	if (v->f.proto == IPPROTO_ICMP) {
		ev->sport = 0;
		ev->dport = 0;
	} else {
		ev->sport = v->f.sport;
		ev->dport = v->f.dport;
	}
	ev->endpoint_id = v->have_ep ? v->ep.endpoint_id : 0;
	ev->proxy_port = verdict == FLOW_REDIRECTED ? v->proxy_port : 0;
	ev->direction = v->dir;
	ev->verdict = verdict;
	ev->drop_reason = reason;
	ev->proto = v->f.proto;
	ev->tcp_flags = v->f.proto == IPPROTO_TCP ? v->f.tcp_flags : 0;
	ev->ct_state = v->ct;
	ev->match = v->match;
	ev->icmp_type = v->f.icmp_type;
	ev->icmp_code = v->f.icmp_code;
	__builtin_memset(ev->pad, 0, sizeof(ev->pad));
	bpf_ringbuf_submit(ev, events_wakeup());
	pol_count(POL_CNT_EVENTS_SENT);
}

static __always_inline int drop(struct __sk_buff *skb, struct verdict_ctx *v, __u8 reason)
{
	metrics_add(v->dir, reason, skb->len);
	emit(skb, v, FLOW_DROPPED, reason);
	return TCX_DROP;
}

/* Swaps the Ethernet source and destination addresses. Returns 0 or a drop reason. */
static __always_inline int swap_macs(struct __sk_buff *skb)
{
	__u8 macs[12], swapped[12];

	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0)
		return DROP_INVALID;
	__builtin_memcpy(&swapped[0], &macs[6], 6);
	__builtin_memcpy(&swapped[6], &macs[0], 6);
	if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0)
		return DROP_WRITE_ERROR;
	return 0;
}

static __always_inline int pass(struct __sk_buff *skb, struct verdict_ctx *v)
{
	__u8 verdict = FLOW_FORWARDED;
	int ret = TCX_NEXT, reason;

	if (v->proxy_port) {
		verdict = FLOW_REDIRECTED;
		skb->mark = to_proxy_mark(v->proxy_port);
		/* To the pod: hairpin into the node's stack, where TPROXY takes it. */
		if (v->dir == DIR_INGRESS) {
			reason = swap_macs(skb);
			if (reason)
				return drop(skb, v, reason);
			ret = bpf_redirect(v->ifindex, BPF_F_INGRESS);
		}
	}
	metrics_add(v->dir, verdict == FLOW_REDIRECTED ? METRIC_REDIRECTED : METRIC_FORWARDED, skb->len);
	if (emit_traces == TRACE_ALL || (emit_traces == TRACE_NEW && v->ct == CT_NEW))
		emit(skb, v, verdict, REASON_NONE);
	return ret;
}

/*
 * The policy's decision on a flow whose opening packet v holds, where v's
 * endpoint enforces v->dir: 0 (allowed, as pd says) or the drop reason.
 */
static __always_inline int policy_decide(struct verdict_ctx *v, struct policy_decision *pd, bool from_proxy)
{
	int reason;

	resolve_identities(v);
	reason = policy_check(v->ep.endpoint_id, v->dir, v->remote_id, &v->f, pd);
	if (reason)
		return reason;
	if (pd->auth && (!from_proxy || pd->proxy_port))
		return DROP_POLICY_AUTH_REQUIRED;
	return 0;
}

/*
 * The decision on the tracked flow of v's packet (in the flow's own
 * direction) after a policy change: 0 while the policy allows it, or the
 * reason to drop it.
 */
static __always_inline int policy_recheck(struct verdict_ctx *v, bool from_proxy)
{
	struct policy_decision pd = {};
	int reason;

	if (!v->have_ep)
		return 0;
	if (v->ep.identity == ID_INIT) {
		/* As for a new flow: only the node gets in. */
		resolve_identities(v);
		return v->dir == DIR_EGRESS || v->remote_id != ID_HOST ? DROP_POLICY_INIT : 0;
	}
	if (!(v->ep.flags & (v->dir == DIR_EGRESS ? EP_ENFORCE_EGRESS : EP_ENFORCE_INGRESS)))
		return 0;
	reason = policy_decide(v, &pd, from_proxy);
	if (!reason)
		v->match = pd.match;
	return reason;
}

static __always_inline int handle_ipv4(struct __sk_buff *skb, const __u8 dir, __u32 ifindex)
{
	struct verdict_ctx v = {};
	struct ct4_result ctr = {};
	struct policy_decision pd = {};
	bool from_proxy;
	__u16 rev;
	__u64 now;
	int reason;

	/* The proxy's own packets are never redirected again. */
	from_proxy = dir == DIR_INGRESS && mark_is(skb, MARK_MAGIC_FROM_PROXY);
	v.dir = dir;
	v.ifindex = ifindex;
	v.have_ep = endpoint_lookup(v.ifindex, &v.ep);

	reason = flow4_parse(skb, &v.f);
	if (reason)
		return drop(skb, &v, reason);
	reason = frag4_handle(&v.f);
	if (reason)
		return drop(skb, &v, reason);
	if (dir == DIR_EGRESS && v.have_ep && v.ep.addr && v.f.saddr != v.ep.addr)
		return drop(skb, &v, DROP_INVALID_SIP);

	/*
	 * The minimal path: TCP of an endpoint no policy applies to, in either
	 * direction. Nothing needs conntrack (replies of its connections meet
	 * no policy either; redirects and authentication come from policy),
	 * so there is no lookup and no entry; a connection is reported by its
	 * SYN. UDP and the rest stay tracked: one event per flow needs it.
	 */
	if (v.have_ep && !(v.ep.flags & EP_TRACKED) && v.f.proto == IPPROTO_TCP && emit_traces != TRACE_ALL) {
		if ((v.f.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			v.ct = CT_NEW;
		else
			v.ct = CT_ESTABLISHED;
		return pass(skb, &v);
	}

	now = bpf_ktime_get_ns();
	rev = policy_revision();
	v.ct = ct4_lookup_tuple(&v.f, dir, v.ifindex, skb->len, now, &ctr);
	if (ctr.expired)
		pol_count(POL_CNT_CT_EXPIRED);
	if (ctr.reopened)
		pol_count(POL_CNT_CT_REOPENED);
	if (v.ct != CT_NEW) {
		v.proxy_port = from_proxy ? 0 : ctr.proxy_port;
		if (v.ct == CT_ESTABLISHED && ctr.policy_rev != rev && !ctr.picked_up) {
			ctr.denied = policy_recheck(&v, from_proxy);
			ct4_recheck(&v.f, dir, v.ifindex, rev, ctr.denied);
			pol_count(POL_CNT_CT_RECHECKED);
		}
		if (ctr.denied)
			return drop(skb, &v, ctr.denied);
		return pass(skb, &v);
	}
	if (ct4_lookup_related(skb, &v.f, dir, v.ifindex, now)) {
		pol_count(POL_CNT_CT_RELATED);
		v.ct = CT_RELATED;
		return pass(skb, &v);
	}

	/*
	 * A TCP connection that may have opened while the endpoint was
	 * untracked (the minimal path above): picked up as established in
	 * either direction, as a tracked one would have gone on.
	 */
	if (v.have_ep && (v.ep.flags & EP_PICKUP) && v.f.proto == IPPROTO_TCP && v.f.frag != FRAG_LATER &&
	    !(v.f.tcp_flags & (TCP_SYN | TCP_RST))) {
		if (ct4_create(&v.f, dir, v.ifindex, skb->len, now, 0, CT_F_PICKED_UP, rev) < 0)
			return drop(skb, &v, DROP_CT_CREATE_FAILED);
		pol_count(POL_CNT_CT_CREATED);
		pol_count(POL_CNT_CT_PICKED_UP);
		v.ct = CT_ESTABLISHED;
		return pass(skb, &v);
	}

	/* A new flow. */
	if (v.have_ep && v.ep.identity == ID_INIT) {
		/* Created at pod start, before its policy is known: only the node
		 * (probes) gets in, as policy always allows it. */
		resolve_identities(&v);
		if (dir == DIR_EGRESS || v.remote_id != ID_HOST)
			return drop(skb, &v, DROP_POLICY_INIT);
	} else if (v.have_ep && (v.ep.flags & (dir == DIR_EGRESS ? EP_ENFORCE_EGRESS : EP_ENFORCE_INGRESS))) {
		reason = policy_decide(&v, &pd, from_proxy);
		if (reason)
			return drop(skb, &v, reason);
		v.proxy_port = from_proxy ? 0 : pd.proxy_port;
		v.match = pd.match;
	} else if (v.have_ep && dir == DIR_EGRESS && (v.ep.flags & EP_AUTH_EGRESS)) {
		/* Not enforced: only the redirects to the authenticating listener. */
		resolve_identities(&v);
		if (!policy_check(v.ep.endpoint_id, dir, v.remote_id, &v.f, &pd)) {
			v.proxy_port = pd.proxy_port;
			v.match = pd.match;
		}
	}
	if (ct4_can_create(&v.f)) {
		if (ct4_create(&v.f, dir, v.ifindex, skb->len, now, v.proxy_port, 0, rev) < 0)
			return drop(skb, &v, DROP_CT_CREATE_FAILED);
		pol_count(POL_CNT_CT_CREATED);
	}
	return pass(skb, &v);
}

static __always_inline int handle(struct __sk_buff *skb, const __u8 dir)
{
	if (skb->protocol != bpf_htons(ETH_P_IP)) {
		pol_count(POL_CNT_NOT_IPV4);
		return TCX_NEXT;
	}
	return handle_ipv4(skb, dir, skb->ifindex);
}

/*
 * Host routing: a packet from a pod to another pod of this node that the
 * source's egress policy passed as is (TCX_NEXT, no mark) skips the node's
 * stack. policy_from_pod tail-calls policy_host_routed, which does what the
 * node's router and policy_to_pod on the destination's veth would have done:
 * Ethernet addresses of the destination's link (from membrane_lroute4),
 * TTL decremented, then the destination's ingress policy with its ifindex
 * (conntrack, flow events, metrics: the same as on its veth). An allowed
 * packet goes straight into the pod (bpf_redirect_peer); a drop drops; an
 * L7 redirect hairpins into the node's stack through the destination's host
 * veth, as policy_to_pod does. A tail call keeps the two policy evaluations
 * in separate programs for the verifier.
 *
 * Anything else takes the node's stack as before: destinations that are
 * not local endpoints, fragments, TTL about to expire (the router answers
 * with ICMP), marked packets, TCP a socket of the node's netns owns (the
 * proxy's transparent upstream connections, which connect from the client
 * pod's address: the stack's nft rule "socket transparent" delivers their
 * replies to the proxy), and everything when the loader turned host routing
 * off (host_routing; the map then stays unused).
 */
volatile const __u8 host_routing = 1;	/* set by the loader (Options.HostRouting) */

SEC("tc")
int policy_host_routed(struct __sk_buff *skb);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, int(struct __sk_buff *));
} membrane_hr_progs SEC(".maps") = {
	.values = { [0] = (void *)&policy_host_routed },
};

/* The local route of a packet host routing may take, or NULL. */
static __always_inline const struct local_route *host_route_lookup(struct __sk_buff *skb, struct ipv4_hdr *ip)
{
	const struct local_route *r;

	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->mark)
		return NULL;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, ip, sizeof(*ip)) < 0)
		return NULL;
	if ((ip->ver_ihl >> 4) != 4 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) || ip->ttl <= 1)
		return NULL;
	r = bpf_map_lookup_elem(&membrane_lroute4, &ip->daddr);
	if (!r || r->ifindex == skb->ifindex)
		return NULL;
	return r;
}

/*
 * Whether a TCP socket of the node's netns (the skb's) would receive the
 * packet as addressed: a proxy's transparent socket bound to a pod's
 * address, or anything else the stack should see. Unknown: true.
 */
static __always_inline bool node_socket_owns(struct __sk_buff *skb, const struct ipv4_hdr *ip)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__be16 ports[2];

	if (ip->protocol != IPPROTO_TCP)
		return false;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + (ip->ver_ihl & 0x0f) * 4, ports, sizeof(ports)) < 0)
		return true;
	t.ipv4.saddr = ip->saddr;
	t.ipv4.daddr = ip->daddr;
	t.ipv4.sport = ports[0];
	t.ipv4.dport = ports[1];
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

SEC("tc")
int policy_from_pod(struct __sk_buff *skb)
{
	struct ipv4_hdr ip;
	int ret;

	/* Hairpinned to the proxy by policy_to_pod: checked there already. */
	if (mark_is(skb, MARK_MAGIC_TO_PROXY)) {
		pol_count(POL_CNT_PROXY_HAIRPIN);
		return TCX_NEXT;
	}
	ret = handle(skb, DIR_EGRESS);
	if (host_routing && ret == TCX_NEXT && host_route_lookup(skb, &ip) && !node_socket_owns(skb, &ip))
		bpf_tail_call(skb, &membrane_hr_progs, 0);
	return ret;
}

/*
 * Delivers a packet that host_route_lookup gave route r for (ip is its
 * IPv4 header): the Ethernet addresses of the destination's link, TTL
 * decremented, the destination's ingress policy with its ifindex, then
 * bpf_redirect_peer. Shared by both sides of host routing.
 */
static __always_inline int host_route(struct __sk_buff *skb, struct ipv4_hdr *ip, const struct local_route *r,
				      enum pol_counter counter)
{
	struct local_route route = *r;
	__u8 macs[12];
	__u16 old_word, new_word;
	int ret;

	__builtin_memcpy(&macs[0], route.pod_mac, 6);
	__builtin_memcpy(&macs[6], route.host_mac, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0) < 0)
		return TCX_NEXT;
	/* TTL, as the router: the checksum covers it as the high byte of a word. */
	old_word = bpf_htons((__u16)ip->ttl << 8 | ip->protocol);
	new_word = bpf_htons((__u16)(ip->ttl - 1) << 8 | ip->protocol);
	ip->ttl--;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + __builtin_offsetof(struct ipv4_hdr, check), old_word, new_word, 2) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + __builtin_offsetof(struct ipv4_hdr, ttl), &ip->ttl, 1, 0) < 0)
		return TCX_DROP;

	ret = handle_ipv4(skb, DIR_INGRESS, route.ifindex);
	if (ret != TCX_NEXT)
		return ret;	/* dropped, or hairpinned to the proxy */
	pol_count(POL_CNT_HOST_ROUTED);
	if (counter != POL_CNT_HOST_ROUTED)
		pol_count(counter);
	return bpf_redirect_peer(route.ifindex, 0);
}

/* Tail-called by policy_from_pod only (with its checks done). */
SEC("tc")
int policy_host_routed(struct __sk_buff *skb)
{
	const struct local_route *r;
	struct ipv4_hdr ip;

	r = host_route_lookup(skb, &ip);
	if (!r)
		return TCX_NEXT;	/* changed since the caller looked: as before */
	return host_route(skb, &ip, r, POL_CNT_HOST_ROUTED);
}

/*
 * Host routing of packets from other nodes (tcx ingress of the node's
 * uplinks, the interfaces holding the node's addresses): a packet to a pod
 * of this node gets what the node's router and policy_to_pod would have
 * given it (host_route: the destination's ingress policy with its ifindex,
 * then straight into its netns) instead of IP forwarding and the host
 * veth's egress. Everything else passes untouched to the stack: packets not
 * addressed to this host's MAC, non-IPv4, anything not to a local pod (the
 * node's own addresses: WireGuard's UDP, the proxies' tunnels, API and
 * probes), fragments, TTL about to expire, marked packets and TCP a socket
 * of the node's netns owns, as on the pod side. WireGuard's decrypted
 * packets come out of its device, where this program is not attached.
 */
SEC("tc")
int policy_from_uplink(struct __sk_buff *skb)
{
	const struct local_route *r;
	struct ipv4_hdr ip;

	if (!host_routing || skb->pkt_type != PACKET_HOST)
		return TCX_NEXT;
	r = host_route_lookup(skb, &ip);
	if (!r || node_socket_owns(skb, &ip))
		return TCX_NEXT;
	return host_route(skb, &ip, r, POL_CNT_UPLINK_ROUTED);
}

SEC("tc")
int policy_to_pod(struct __sk_buff *skb)
{
	return handle(skb, DIR_INGRESS);
}
