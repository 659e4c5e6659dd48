/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Architecture-neutral stand-in for <asm/types.h>. <linux/bpf.h> pulls in
 * <linux/types.h>, which wants the host's <asm/...> headers; Debian keeps those
 * under a multiarch directory that `clang -target bpf` does not search. The
 * BPF target only needs the generic definitions, so the build stays the same
 * on every host architecture (and the generated object stays byte-identical).
 */
#ifndef MEMBRANE_ASM_TYPES_H
#define MEMBRANE_ASM_TYPES_H
#include <asm-generic/types.h>
#endif
