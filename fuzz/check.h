/* check.h - the fuzz targets' assertion: like assert, but never compiled out
 * (release builds define NDEBUG). */
#ifndef TL_FUZZ_CHECK_H
#define TL_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                               \
        }                                                                          \
    } while (0)

#endif
