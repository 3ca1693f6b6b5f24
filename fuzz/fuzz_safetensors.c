/* fuzz_safetensors.c - libFuzzer target for the safetensors reader
 * (tl_st_read_mem).
 *
 * The input is a safetensors file. When it loads, every tensor's name,
 * shape and data bytes and every metadata entry is read (so ASan catches a
 * dangling or short pointer), lookups by name must find each tensor and key,
 * and tensor data must be aligned for its dtype as the header promises. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/safetensors.h"

#include "check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tl_st *st;
    if (tl_st_read_mem(data, size, &st) < 0) {
        CHECK(st == NULL);
        return 0;
    }
    int n = tl_st_count(st);
    CHECK(n >= 0);
    for (int i = 0; i < n; i++) {
        const tl_st_tensor *t = tl_st_get(st, i);
        CHECK(t && t->name);
        touch(t->name, strlen(t->name) + 1);
        CHECK(t->dtype == TL_ST_F32 || t->dtype == TL_ST_I64);
        CHECK(t->rank >= 0 && t->rank <= TL_ST_MAX_RANK);
        size_t numel = 1;
        for (int d = 0; d < t->rank; d++) {
            CHECK(t->shape[d] >= 0);
            numel *= (size_t)t->shape[d];
        }
        CHECK(numel == tl_st_numel(t));
        size_t esize = t->dtype == TL_ST_F32 ? 4 : 8;
        if (numel > 0) {
            CHECK(t->data != NULL);
            CHECK((uintptr_t)t->data % esize == 0);
            touch(t->data, numel * esize);
        }
        CHECK(tl_st_find(st, t->name) == t);
    }
    CHECK(tl_st_get(st, n) == NULL && tl_st_get(st, -1) == NULL);
    int nm = tl_st_meta_count(st);
    CHECK(nm >= 0);
    for (int i = 0; i < nm; i++) {
        const tl_st_kv *kv = tl_st_meta_get(st, i);
        CHECK(kv && kv->key && kv->value);
        touch(kv->key, strlen(kv->key) + 1);
        touch(kv->value, strlen(kv->value) + 1);
        CHECK(tl_st_meta(st, kv->key) == kv->value);
    }
    CHECK(tl_st_meta_get(st, nm) == NULL);
    tl_st_free(st);
    return 0;
}
