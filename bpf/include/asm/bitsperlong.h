/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Architecture-neutral stand-in for <asm/bitsperlong.h>; see types.h. BPF is 64-bit. */
#ifndef MEMBRANE_ASM_BITSPERLONG_H
#define MEMBRANE_ASM_BITSPERLONG_H
#define __BITS_PER_LONG 64
#include <asm-generic/bitsperlong.h>
#endif
