/* check.h - what the fuzz targets share: CHECK, an assertion that is never
 * compiled out (release builds define NDEBUG), and touch(), which reads memory
 * so that the sanitizers see any out-of-bounds view. */
#ifndef TL_FUZZ_CHECK_H
#define TL_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* Reads every byte of p[0..n) into a sum the optimizer cannot drop. */
static inline void touch(const void *p, size_t n) {
    const uint8_t *b = p;
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) sum += b[i];
    volatile unsigned sink = sum;
    (void)sink;
}

#endif
