/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Architecture-neutral stand-in for <asm/posix_types.h>; see types.h. */
#ifndef MEMBRANE_ASM_POSIX_TYPES_H
#define MEMBRANE_ASM_POSIX_TYPES_H
#include <asm-generic/posix_types.h>
#endif
