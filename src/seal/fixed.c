/* fixed.c - float32 <-> 64-bit fixed-point ring (see fixed.h). */
#include "tl/fixed.h"

#include <math.h>

#include "tl/error.h"

#define SCALE 0x1p32  /* 2^TL_FIXED_FRAC_BITS */
#define UNSCALE 0x1p-32f
#define TERM_LIMIT (INT64_C(1) << 52) /* |q| of one encoded value stays below */

_Static_assert(TL_FIXED_FRAC_BITS == 32, "SCALE and UNSCALE assume 32 fractional bits");
/* integer forms, so that every compiler takes them as constant expressions:
 * TL_FIXED_MAX_ABS is 2^20 */
_Static_assert((int64_t)TL_FIXED_MAX_ABS == INT64_C(1) << 20 &&
                   (INT64_C(1) << (20 + TL_FIXED_FRAC_BITS)) == TERM_LIMIT,
               "range and limit agree");
_Static_assert(TERM_LIMIT <= (INT64_C(1) << 62) / TL_FIXED_MAX_TERMS, "a full sum cannot wrap");

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

int tl_fixed_encode(const float *x, size_t n, uint64_t *q, const char *what) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float a = x[i];
        int out = !(fabsf(a) < (float)TL_FIXED_MAX_ABS); /* also NaN */
        bad |= out;
        a = out ? 0.0f : a; /* a select, so the loop vectorizes */
        /* a * 2^32 is exact in double; rint rounds to nearest, ties to even,
         * and the result (|.| < 2^52) converts to int64 exactly. */
        q[i] = (uint64_t)(int64_t)rint((double)a * SCALE);
    }
    return bad ? encode_error(x, n, what ? what : "fixed point") : 0;
}

int tl_fixed_decode(const uint64_t *q, size_t n, int terms, float *x, const char *what) {
    if (terms < 1 || terms > TL_FIXED_MAX_TERMS)
        return tl_error(TL_EINVAL, "fixed point: %d terms (1..%d)", terms, TL_FIXED_MAX_TERMS);
    const int64_t lim = TERM_LIMIT * terms;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = (int64_t)q[i];
        bad |= v >= lim || v <= -lim;
        /* int64 -> float is one correct rounding; the scaling by 2^-32 is exact
         * (|v| >= 1 keeps it far from subnormals). */
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

void tl_ring_sub(uint64_t *acc, const uint64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) acc[i] -= v[i];
}
