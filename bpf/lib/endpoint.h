/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Local endpoints (pods), keyed by the ifindex of their host-side veth: the
 * endpoint ID policy keys use, the pod's identity and address, and in which
 * directions policy is enforced.
 */
#ifndef MEMBRANE_LIB_ENDPOINT_H
#define MEMBRANE_LIB_ENDPOINT_H

#include "common.h"

/*
 * Direction of traffic relative to the endpoint (the pod): tcx ingress of the
 * host-side veth sees the pod's egress, tcx egress its ingress.
 */
enum traffic_direction {
	DIR_INGRESS = 0,	/* to the pod */
	DIR_EGRESS = 1,		/* from the pod */
};

/* endpoint_info.flags */
#define EP_ENFORCE_INGRESS	(1 << 0)	/* traffic to the pod needs an allow entry */
#define EP_ENFORCE_EGRESS	(1 << 1)	/* traffic from the pod needs an allow entry */
#define EP_AUTH_EGRESS		(1 << 2)	/* not enforced at egress, but some peers' ports require
					   authentication: look the policy up, a miss passes */
#define EP_PICKUP		(1 << 3)	/* was untracked (no flag above) since its TCP connections
					   may have opened: a TCP packet of one (no SYN, no RST)
					   that conntrack lacks is picked up, not policed */

#define EP_TRACK		(1 << 4)	/* enforces nothing, but conntrack tracks its TCP: its
					   connections through the L7 proxy go on there */

/* Any of these: conntrack tracks the endpoint's TCP too. */
#define EP_TRACKED		(EP_ENFORCE_INGRESS | EP_ENFORCE_EGRESS | EP_AUTH_EGRESS | EP_TRACK)

struct endpoint_info {
	__u32 identity;
	__be32 addr;		/* the pod's IPv4; 0: no source address check */
	__u16 endpoint_id;
	__u8 flags;		/* EP_* */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);	/* ifindex of the host-side interface */
	__type(value, struct endpoint_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_eps SEC(".maps");

/* Copies the endpoint on ifindex into *ep; false when there is none. */
static __always_inline bool endpoint_lookup(__u32 ifindex, struct endpoint_info *ep)
{
	const struct endpoint_info *e = bpf_map_lookup_elem(&membrane_eps, &ifindex);

	if (!e)
		return false;
	*ep = *e;
	return true;
}

/*
 * Local endpoints again, keyed by the pod's IPv4 (host routing): the
 * interface and the Ethernet addresses the node's router would use to
 * deliver to the pod. The agent writes an entry with the endpoint and
 * deletes it with the endpoint.
 */
struct local_route {
	__u32 ifindex;		/* the host-side veth */
	__u8 pod_mac[6];	/* destination: the pod's interface */
	__u8 host_mac[6];	/* source: the host-side veth */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);	/* the pod's IPv4 */
	__type(value, struct local_route);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} membrane_lroute4 SEC(".maps");

#endif /* MEMBRANE_LIB_ENDPOINT_H */
