/*
 * fixed.h - float32 vectors as fixed point in the ring of 64-bit integers
 * (sealed mode's masked aggregation, DESIGN §4).
 *
 * A value x is stored as q = round(x * 2^TL_FIXED_FRAC_BITS), an int64 in
 * two's complement carried as uint64, so that masks can be added and removed
 * mod 2^64 (unsigned arithmetic, no undefined overflow).
 *
 * Range and error (TL_FIXED_FRAC_BITS = 32, TL_FIXED_MAX_TERMS = 1024):
 *   - encoding accepts |x| < 2^20 (1,048,576), i.e. |q| < 2^52, and refuses
 *     anything larger, NaN or Inf with an error naming the element;
 *   - a sum of up to 1024 encoded vectors (one per node, TL_MAX_NODES) then
 *     stays below 2^62 in magnitude: it cannot wrap;
 *   - encoding rounds to nearest (ties to even): each term is off by at most
 *     2^-33 (1.2e-10) absolute, exactly 0 for |x| >= 2^-9 (a float then has no
 *     bits below 2^-32);
 *   - the ring sum of the terms is exact, and decoding rounds it once to the
 *     nearest float. So a decoded sum of k vectors differs from the exact sum
 *     of the floats by at most k * 2^-33 plus one float rounding: only by
 *     rounding, like any float sum in another order.
 * Decoding a sum of k terms refuses values of magnitude >= k * 2^52, which no
 * legitimate sum reaches: a wrong mask or a corrupted vector is near-uniform
 * in the ring and lands there with probability 1 - k * 2^-11 per element.
 *
 *     tl_fixed_encode(grad, n, q);                 // per node
 *     tl_ring_add(sum, q, n);                      // the aggregate, mod 2^64
 *     tl_fixed_decode(sum, n, k, out);             // k terms were added
 */
#ifndef TL_FIXED_H
#define TL_FIXED_H

#include <stddef.h>
#include <stdint.h>

#define TL_FIXED_FRAC_BITS 32
#define TL_FIXED_MAX_TERMS 1024
/* |x| must be below this to be encoded (2^20) */
#define TL_FIXED_MAX_ABS 1048576.0

/* q[i] = round(x[i] * 2^32) as two's complement, for i < n. On error (TL_ERANGE
 * for |x[i]| >= 2^20, TL_ENUMERIC for NaN/Inf) the message names the first
 * bad element and its value; q is then partly written. what names the vector
 * in messages (e.g. "node-side gradient"). */
int tl_fixed_encode(const float *x, size_t n, uint64_t *q, const char *what);

/* x[i] = (float)((int64)q[i] * 2^-32) for a sum of terms encoded vectors
 * (1..TL_FIXED_MAX_TERMS). TL_ERANGE naming the first element whose magnitude
 * no such sum can reach (x is then partly written); TL_EINVAL for a bad terms. */
int tl_fixed_decode(const uint64_t *q, size_t n, int terms, float *x, const char *what);

/* acc[i] += v[i] (mod 2^64). */
void tl_ring_add(uint64_t *acc, const uint64_t *v, size_t n);

#endif
