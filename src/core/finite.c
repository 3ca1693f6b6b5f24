/* finite.c - the first NaN or Inf in a float32 vector (finite.h). */
#include "tl/finite.h"

#include <stdint.h>
#include <string.h>

#include "tl/simd.h"

TL_CLONES static uint32_t any_nonfinite(const uint8_t *p, size_t n) {
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + 4 * i, sizeof u);
        bad |= TL_NONFINITE_BITS(u);
    }
    return bad;
}

size_t tl_first_nonfinite(const void *x, size_t n) {
    enum { CHUNK = 4096 };
    const uint8_t *p = x;
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        const size_t k = n - i0 < CHUNK ? n - i0 : CHUNK;
        if (!any_nonfinite(p + 4 * i0, k)) continue;
        for (size_t i = i0; i < i0 + k; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, sizeof u);
            if (TL_NONFINITE_BITS(u)) return i;
        }
    }
    return n;
}
