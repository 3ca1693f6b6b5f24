/*
 * rng.h - MT19937 and numpy's legacy RandomState shuffle, bit for bit.
 *
 * tl_rng reproduces numpy.random.RandomState(seed): MT19937 seeded with
 * init_genrand(seed) (seed taken mod 2^32), 32-bit outputs. tl_rng_shuffle
 * reproduces RandomState.shuffle on a 1-d array: Fisher-Yates from the end,
 * j = bounded draw in [0, i] by masked rejection on 32-bit outputs.
 * Consecutive calls continue the same stream, as in numpy.
 *
 *     tl_rng r; tl_rng_seed(&r, 1);
 *     for (i = 0; i < n; i++) p[i] = i;
 *     tl_rng_shuffle(&r, p, n);      // == numpy: rs = RandomState(1); rs.shuffle(p)
 *
 * tl_rng_uniform gives floats for parameter initialisation (our own use; not
 * a numpy or torch stream).
 */
#ifndef TL_RNG_H
#define TL_RNG_H

#include <stddef.h>
#include <stdint.h>

#define TL_MT_N 624

typedef struct tl_rng {
    uint32_t mt[TL_MT_N];
    int mti;
} tl_rng;

void tl_rng_seed(tl_rng *r, uint32_t seed);
uint32_t tl_rng_u32(tl_rng *r);
/* Uniform integer in [0, max], numpy's legacy random_interval (masked rejection). */
uint64_t tl_rng_interval(tl_rng *r, uint64_t max);
/* numpy RandomState.shuffle of a 1-d array of n entries. */
void tl_rng_shuffle(tl_rng *r, uint64_t *a, size_t n);
/* Float uniform in [lo, hi), from 24 random bits. */
float tl_rng_uniform(tl_rng *r, float lo, float hi);

/* PyTorch's Tensor.uniform_(from, to) on a CPU float tensor, one element:
 * 24 low bits of one 32-bit output x, then (x / 2^24) * (to - from) + from with
 * to - from in float and the rest in double, rounded to float. With
 * tl_rng_seed(r, s) this is the stream of torch.manual_seed(s). */
float tl_rng_torch_uniform(tl_rng *r, float from, float to);

#endif
