/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Definitions every membrane BPF program shares. Only uapi headers and
 * libbpf's bpf_helpers.h/bpf_endian.h: no vmlinux.h, no CO-RE.
 */
#ifndef MEMBRANE_LIB_COMMON_H
#define MEMBRANE_LIB_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Verdicts of cgroup sock_addr programs. */
#define SYS_REJECT	0
#define SYS_PROCEED	1

/* From <linux/in.h> and <asm-generic/errno.h>, which drag in libc-ish headers. */
#define IPPROTO_TCP	6
#define IPPROTO_UDP	17
#define ECONNREFUSED	111

#define NSEC_PER_SEC	1000000000ULL

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)

#endif /* MEMBRANE_LIB_COMMON_H */
