/*
 * simd.h - TL_CLONES: compile a hot loop for several instruction sets.
 *
 * A function marked TL_CLONES is compiled three times, for AVX-512, AVX2 and
 * the build's baseline (-march=x86-64-v2 by default), and the dynamic loader
 * picks the best the CPU has (GNU ifunc): the portable build then runs it as
 * fast as a native one. Use it only on loops whose results are the same bits
 * on every path: elementwise, no reductions over floats to reorder (a*b+c
 * stays two roundings: -ffp-contract=off holds inside the clones too); vector
 * sqrt, division and conversions are IEEE exact like the scalar ones. A build
 * that already targets AVX-512 (-DTL_NATIVE=ON) needs no clones; other
 * compilers get one plain version.
 */
#ifndef TL_SIMD_H
#define TL_SIMD_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__) && \
    !defined(__AVX512F__)
#define TL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TL_CLONES
#endif

#endif
