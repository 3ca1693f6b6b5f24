/* rng.c - MT19937 and numpy's legacy RandomState shuffle, bit for bit (see rng.h). */
#include "tl/rng.h"

#include <math.h>

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

/* Seeds r like numpy's RandomState(seed): Matsumoto-Nishimura init_genrand. */
void tl_rng_seed(tl_rng *r, uint32_t seed) {
    r->mt[0] = seed;
    for (int i = 1; i < TL_MT_N; i++) {
        uint32_t prev = r->mt[i - 1];
        r->mt[i] = 1812433253u * (prev ^ (prev >> 30)) + (uint32_t)i;
    }
    r->mti = TL_MT_N;
}

/* Regenerates the whole state block (the reference genrand_int32 refill). */
static void regenerate(tl_rng *r) {
    uint32_t *mt = r->mt;
    int k;
    uint32_t y;
    for (k = 0; k < TL_MT_N - MT_M; k++) {
        y = (mt[k] & MT_UPPER) | (mt[k + 1] & MT_LOWER);
        mt[k] = mt[k + MT_M] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    }
    for (; k < TL_MT_N - 1; k++) {
        y = (mt[k] & MT_UPPER) | (mt[k + 1] & MT_LOWER);
        mt[k] = mt[k + (MT_M - TL_MT_N)] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    }
    y = (mt[TL_MT_N - 1] & MT_UPPER) | (mt[0] & MT_LOWER);
    mt[TL_MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    r->mti = 0;
}

/* Next tempered 32-bit output of the stream. */
uint32_t tl_rng_u32(tl_rng *r) {
    if (r->mti >= TL_MT_N) regenerate(r);
    uint32_t y = r->mt[r->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* Uniform integer in [0, max] as numpy's legacy random_interval: mask = max with
 * all lower bits set, redraw until (draw & mask) <= max. Draws are 32-bit outputs
 * when max fits in 32 bits, else 64-bit values (high word first, as numpy's
 * mt19937_next64 evaluates it). */
uint64_t tl_rng_interval(tl_rng *r, uint64_t max) {
    uint64_t mask = max, value;
    if (max == 0) return 0;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    if (max <= 0xffffffffu) {
        while ((value = (tl_rng_u32(r) & mask)) > max) {
        }
    } else {
        do {
            uint64_t hi = tl_rng_u32(r);
            uint64_t lo = tl_rng_u32(r);
            value = ((hi << 32) | lo) & mask;
        } while (value > max);
    }
    return value;
}

/* numpy RandomState.shuffle of a 1-d array: for i = n-1 down to 1, swap a[i]
 * with a[interval(i)]. n = 0 or 1 draws nothing. */
void tl_rng_shuffle(tl_rng *r, uint64_t *a, size_t n) {
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)tl_rng_interval(r, i);
        uint64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Float uniform in [lo, hi) from the top 24 bits of one output; the result is
 * moved just below hi in case rounding of lo + (hi - lo) * u reaches it. */
float tl_rng_uniform(tl_rng *r, float lo, float hi) {
    float u = (float)(tl_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
    float v = lo + (hi - lo) * u;
    if (v >= hi && hi > lo) v = nextafterf(hi, lo); /* only through rounding; keeps [lo, hi) */
    return v;
}

float tl_rng_torch_uniform(tl_rng *r, float from, float to) {
    double x = (double)(tl_rng_u32(r) & 0xFFFFFFu) * (1.0 / 16777216.0);
    float span = to - from;
    return (float)(x * (double)span + (double)from);
}
