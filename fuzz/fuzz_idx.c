/* fuzz_idx.c - libFuzzer target for the IDX reader (tl_idx_read_mem).
 *
 * The input is an IDX file, raw or gzip. A file that loads must be
 * consistent: rank 1..4, nonzero dims whose product is count, and count
 * readable bytes at data (every byte is read so ASan sees a bad buffer). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tl/idx.h"

#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tl_idx t;
    if (tl_idx_read_mem(data, size, "fuzz", &t) == 0) {
        CHECK(t.rank >= 1 && t.rank <= TL_IDX_MAX_RANK);
        size_t n = 1;
        for (int i = 0; i < t.rank; i++) {
            CHECK(t.dims[i] > 0);
            n *= t.dims[i];
        }
        CHECK(n == t.count && t.data != NULL);
        unsigned sum = 0;
        for (size_t i = 0; i < t.count; i++) sum += t.data[i];
        volatile unsigned sink = sum;
        (void)sink;
    } else {
        CHECK(t.data == NULL); /* left empty on failure */
    }
    tl_idx_free(&t);
    return 0;
}
