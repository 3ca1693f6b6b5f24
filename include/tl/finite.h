/*
 * finite.h - the first NaN or Inf in a float32 vector, fast.
 *
 * Every receiver checks that the tensors it is given are finite (protocol.md
 * §4), and the optimizer checks gradients before it steps: one OR-reduction
 * over the exponent bits, vectorized and compiled for AVX-512 and AVX2 too
 * (simd.h), then a scan only where something was found.
 */
#ifndef TL_FINITE_H
#define TL_FINITE_H

#include <stddef.h>

/* Whether float bits u (a uint32_t) are NaN or Inf: exponent all ones. For
 * fused loops that read the bits anyway (memcpy, no type punning). Test each
 * value on its own: the OR of two finite values' bits can have an all-ones
 * exponent (3.0f | 1.0f). */
#define TL_NONFINITE_BITS(u) (((u)&0x7f800000u) == 0x7f800000u)

/* Index of the first element of x[0, n) that is NaN or Inf, or n if none.
 * x needs no alignment (the values may sit in a frame's payload). */
size_t tl_first_nonfinite(const void *x, size_t n);

#endif
