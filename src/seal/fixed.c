/* fixed.c - float32 <-> 64-bit fixed-point ring (see fixed.h). */
#include "tl/fixed.h"

#include <math.h>
#include <string.h>

#include "tl/error.h"
#include "tl/simd.h"

#define SCALE 0x1p32 /* 2^TL_FIXED_FRAC_BITS */
#define UNSCALE 0x1p-32f
#define TERM_LIMIT (INT64_C(1) << 52) /* |q| of one encoded value stays below */

_Static_assert(TL_FIXED_FRAC_BITS == 32, "SCALE and UNSCALE assume 32 fractional bits");
/* integer forms, so that every compiler takes them as constant expressions:
 * TL_FIXED_MAX_ABS is 2^20 */
_Static_assert((int64_t)TL_FIXED_MAX_ABS == INT64_C(1) << 20 &&
                   (INT64_C(1) << (20 + TL_FIXED_FRAC_BITS)) == TERM_LIMIT,
               "range and limit agree");
_Static_assert(TERM_LIMIT <= (INT64_C(1) << 62) / TL_FIXED_MAX_TERMS, "a full sum cannot wrap");

/* The vector paths convert between int64 and double without the AVX-512DQ
 * instructions, by the "magic number" 1.5 * 2^52: for an integer-valued or
 * not |v| < 2^51, the double v + MAGIC lies in [2^52, 2^53), where doubles
 * are exactly the integers, so the addition rounds v to the nearest integer,
 * ties to even (MAGIC is even), just as rint(); and the bits of that double,
 * minus MAGIC's bits, are that integer. Conversely an int64 |v| < 2^51 plus
 * MAGIC's bits, read as a double, minus MAGIC, is v as a double, exactly.
 * Values beyond 2^51 in magnitude (|x| >= 2^19 encoded, or decoded sums that
 * large) take the scalar loops, which give the same bits. */
#define MAGIC 0x1.8p52
#define MAGIC_BITS UINT64_C(0x4338000000000000)
#define FAST_ENC_BITS 0x49000000u /* 2^19 as float bits: |x| below, |x * 2^32| < 2^51 */
#define FAST_DEC (INT64_C(1) << 51)

static inline uint64_t dbits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double bitsd(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* The first element of x that cannot be encoded, reported. */
static int encode_error(const float *x, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]) || isinf(x[i]))
            return tl_error(TL_ENUMERIC, "%s: element %zu is %g, not a finite number", what, i,
                            (double)x[i]);
        if (!(fabsf(x[i]) < (float)TL_FIXED_MAX_ABS))
            return tl_error(TL_ERANGE,
                            "%s: element %zu is %.9g, outside the fixed-point range |x| < 2^20",
                            what, i, (double)x[i]);
    }
    return tl_error(TL_ERANGE, "%s: out of the fixed-point range", what); /* not reached */
}

/* The vector path; nonzero if some |x| >= 2^19 (or NaN), which it wrote as 0. */
TL_CLONES static int encode_fast(const float *restrict x, size_t n, uint64_t *restrict q) {
    int slow = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        /* |x| < 2^19 on the bits (NaN and Inf are above), so that the loop
         * has no float compare and selects integers: it vectorizes */
        uint32_t ok = (u & 0x7fffffffu) < FAST_ENC_BITS;
        slow |= (int)!ok;
        u &= 0u - ok;
        float a;
        memcpy(&a, &u, sizeof a);
        q[i] = dbits((double)a * SCALE + MAGIC) - MAGIC_BITS;
    }
    return slow;
}

/* The scalar path for any value; nonzero if some |x| >= 2^20 or NaN/Inf. */
static int encode_slow(const float *x, size_t n, uint64_t *q) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float a = x[i];
        int out = !(fabsf(a) < (float)TL_FIXED_MAX_ABS); /* also NaN */
        bad |= out;
        a = out ? 0.0f : a;
        /* a * 2^32 is exact in double; rint rounds to nearest, ties to even,
         * and the result (|.| < 2^52) converts to int64 exactly. */
        q[i] = (uint64_t)(int64_t)rint((double)a * SCALE);
    }
    return bad;
}

int tl_fixed_encode(const float *x, size_t n, uint64_t *q, const char *what) {
    if (encode_fast(x, n, q) && encode_slow(x, n, q))
        return encode_error(x, n, what ? what : "fixed point");
    return 0;
}

/* The vector path; nonzero if some |q| >= 2^51 (then x is to be redone). */
TL_CLONES static int decode_fast(const uint64_t *restrict q, size_t n, float *restrict x) {
    int slow = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)q[i];
        int ok = v < FAST_DEC && v > -FAST_DEC;
        slow |= !ok;
        /* v as a double exactly, then one rounding to float (as (float)v);
         * the scaling by 2^-32 is exact (|v| >= 1 keeps it from subnormals) */
        x[i] = (float)(bitsd(q[i] + MAGIC_BITS) - MAGIC) * UNSCALE;
    }
    return slow;
}

int tl_fixed_decode(const uint64_t *q, size_t n, int terms, float *x, const char *what) {
    if (terms < 1 || terms > TL_FIXED_MAX_TERMS)
        return tl_error(TL_EINVAL, "fixed point: %d terms (1..%d)", terms, TL_FIXED_MAX_TERMS);
    if (!decode_fast(q, n, x)) return 0;
    const int64_t lim = TERM_LIMIT * terms;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)q[i];
        bad |= v >= lim || v <= -lim;
        /* int64 -> float is one correct rounding; the scaling by 2^-32 is exact */
        x[i] = (float)v * UNSCALE;
    }
    if (!bad) return 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)q[i];
        if (v >= lim || v <= -lim)
            return tl_error(TL_ERANGE,
                            "%s: element %zu decodes to %.6g, beyond what a sum of %d values "
                            "within |x| < 2^20 can reach (a wrong mask or a corrupted vector)",
                            what ? what : "fixed point", i, (double)v * 0x1p-32, terms);
    }
    return TL_ERANGE; /* not reached */
}

void tl_ring_add(uint64_t *acc, const uint64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] += v[i];
}
