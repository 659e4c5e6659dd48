/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ethernet + IPv4 + L4 header parsing for tc programs into a flow4: the
 * conntrack tuple, the port policy matches on, TCP flags, ICMP type/code and
 * fragment state. Headers are copied with bpf_skb_load_bytes, so nothing
 * depends on how much of the packet is linear. Own minimal header structs:
 * <linux/ip.h> and friends need the host's <asm/byteorder.h>.
 */
#ifndef MEMBRANE_LIB_PKT4_H
#define MEMBRANE_LIB_PKT4_H

#include "common.h"
#include "drop_reasons.h"

#define ETH_HLEN	14
#define ETH_P_IP	0x0800

#ifndef IPPROTO_ICMP
#define IPPROTO_ICMP	1
#endif
#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP	132
#endif

#define IP_MF		0x2000
#define IP_OFFSET	0x1fff

#define TCP_FIN		0x01
#define TCP_SYN		0x02
#define TCP_RST		0x04
#define TCP_PSH		0x08
#define TCP_ACK		0x10

#define ICMP_ECHOREPLY		0
#define ICMP_DEST_UNREACH	3
#define ICMP_ECHO		8
#define ICMP_TIME_EXCEEDED	11
#define ICMP_PARAMETERPROB	12

struct ipv4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

enum frag_state {
	FRAG_NONE = 0,
	FRAG_FIRST = 1,		/* offset 0, more fragments: carries the L4 header */
	FRAG_LATER = 2,		/* offset > 0: no L4 header, ports from membrane_frag4 */
};

struct flow4 {
	__be32 saddr;
	__be32 daddr;
	/*
	 * The conntrack tuple's ports: TCP/UDP/SCTP ports; ICMP echo request
	 * (id, 0), echo reply (0, id), so a reply's reverse is the request's
	 * tuple; other protocols 0.
	 */
	__be16 sport;
	__be16 dport;
	/* What policy matches as "port": the destination port; ICMP: the type. */
	__be16 policy_port;
	__be16 ip_id;
	__u32 l4_off;		/* from the start of the frame */
	__u32 ip_end;		/* end of the IPv4 packet (frames may be padded) */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 frag;		/* enum frag_state */
	__u8 pad[3];
};

static __always_inline bool icmp_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

/*
 * Reads the L4 header at f->l4_off into f (TCP, UDP, SCTP ports; ICMP).
 * Returns 0 or a drop reason.
 */
static __always_inline bool l4_fits(const struct flow4 *f, __u32 len)
{
	return f->l4_off + len <= f->ip_end;
}

static __always_inline int flow4_parse_l4(struct __sk_buff *skb, struct flow4 *f)
{
	switch (f->proto) {
	case IPPROTO_TCP: {
		__u8 hdr[14];	/* ports, seq, ack, data offset, flags */

		if (!l4_fits(f, 20) || bpf_skb_load_bytes(skb, f->l4_off, hdr, sizeof(hdr)) < 0)
			return DROP_CT_INVALID_HDR;
		__builtin_memcpy(&f->sport, &hdr[0], 2);
		__builtin_memcpy(&f->dport, &hdr[2], 2);
		f->tcp_flags = hdr[13];
		f->policy_port = f->dport;
		return 0;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		__be16 ports[2];

		if (!l4_fits(f, 8) || bpf_skb_load_bytes(skb, f->l4_off, ports, sizeof(ports)) < 0)
			return DROP_CT_INVALID_HDR;
		f->sport = ports[0];
		f->dport = ports[1];
		f->policy_port = f->dport;
		return 0;
	}
	case IPPROTO_ICMP: {
		__u8 hdr[8];	/* type, code, checksum, id, sequence */
		__be16 id;

		if (!l4_fits(f, 8) || bpf_skb_load_bytes(skb, f->l4_off, hdr, sizeof(hdr)) < 0)
			return DROP_CT_INVALID_HDR;
		f->icmp_type = hdr[0];
		f->icmp_code = hdr[1];
		__builtin_memcpy(&id, &hdr[4], 2);
		if (hdr[0] == ICMP_ECHO)
			f->sport = id;
		else if (hdr[0] == ICMP_ECHOREPLY)
			f->dport = id;
		f->policy_port = bpf_htons(hdr[0]);
		return 0;
	}
	}
	return 0;
}

/*
 * Parses the IPv4 packet of an Ethernet frame (the caller checked
 * skb->protocol). Returns 0 or a drop reason. A FRAG_LATER packet leaves the
 * ports for the caller to find.
 */
static __always_inline int flow4_parse(struct __sk_buff *skb, struct flow4 *f)
{
	struct ipv4_hdr ip;
	__u32 ihl, tot_len;
	__u16 frag;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return DROP_INVALID;
	ihl = (__u32)(ip.ver_ihl & 0x0f) * 4;
	tot_len = bpf_ntohs(ip.tot_len);
	if ((ip.ver_ihl >> 4) != 4 || ihl < sizeof(ip) || (tot_len && tot_len < ihl))
		return DROP_INVALID;
	/* BIG TCP (GSO packets over 64 KiB) leaves tot_len 0: the skb's length counts. */
	f->ip_end = tot_len ? ETH_HLEN + tot_len : skb->len;
	f->saddr = ip.saddr;
	f->daddr = ip.daddr;
	f->proto = ip.protocol;
	f->ip_id = ip.id;
	f->l4_off = ETH_HLEN + ihl;
	frag = bpf_ntohs(ip.frag_off);
	if (frag & IP_OFFSET) {
		f->frag = FRAG_LATER;
		return 0;
	}
	if (frag & IP_MF)
		f->frag = FRAG_FIRST;
	return flow4_parse_l4(skb, f);
}

/*
 * The flow an ICMP error is about: the IPv4 header and first 8 bytes of the
 * packet that caused it, quoted after the 8-byte ICMP header. Returns false
 * when they are not there.
 */
static __always_inline bool flow4_parse_icmp_inner(struct __sk_buff *skb, const struct flow4 *outer,
						   struct flow4 *inner)
{
	struct ipv4_hdr ip;
	__u32 off = outer->l4_off + 8;
	__be16 ports[2];
	__u32 ihl;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
		return false;
	ihl = (__u32)(ip.ver_ihl & 0x0f) * 4;
	if ((ip.ver_ihl >> 4) != 4 || ihl < sizeof(ip))
		return false;
	inner->saddr = ip.saddr;
	inner->daddr = ip.daddr;
	inner->proto = ip.protocol;
	off += ihl;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return false;
		inner->sport = ports[0];
		inner->dport = ports[1];
		return true;
	case IPPROTO_ICMP: {
		__u8 hdr[8];
		__be16 id;

		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)) < 0)
			return false;
		__builtin_memcpy(&id, &hdr[4], 2);
		if (hdr[0] == ICMP_ECHO)
			inner->sport = id;
		else if (hdr[0] == ICMP_ECHOREPLY)
			inner->dport = id;
		else
			return false;
		return true;
	}
	}
	return true;
}

#endif /* MEMBRANE_LIB_PKT4_H */
