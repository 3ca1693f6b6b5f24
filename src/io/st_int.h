/*
 * st_int.h - internals shared by the safetensors reader (st_read.c), its
 * header's JSON subset (st_json.c) and the writer (st_write.c). Not part of
 * the API: include/tl/safetensors.h is.
 */
#ifndef TL_ST_INT_H
#define TL_ST_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tl/safetensors.h"

/* Per-tensor placement in the data block, kept while validating. */
typedef struct st_span {
    uint64_t begin, end;
} st_span;

/* The header parser's input, string arena and results. The caller sets path,
 * s, n (the header bytes) and arena (cap >= n + 1 bytes: decoded strings are
 * never longer than their JSON text); the parser fills t, span and meta
 * (realloc'd; the caller frees them and the arena, which the names and
 * values point into). */
typedef struct st_parser {
    const char *path;
    const uint8_t *s;
    size_t n, i;
    char *arena; /* decoded strings, NUL-terminated */
    size_t used, cap;
    /* results */
    int n_t, cap_t;
    tl_st_tensor *t;
    st_span *span;
    int n_meta, cap_meta;
    tl_st_kv *meta;
    int seen_meta;
} st_parser;

/* Parses the whole header p->s[0..n): one JSON object of tensor descriptions
 * and an optional "__metadata__" object of strings, then only whitespace.
 * 0, TL_EFORMAT naming the file, the problem and the byte position, or
 * TL_ENOMEM. */
int tl__st_parse_header(st_parser *p);

/* Length of the well-formed UTF-8 sequence at s[0..avail), or 0 if it is not
 * one (overlong forms, surrogates and code points past U+10FFFF are not). */
size_t tl__st_utf8_len(const uint8_t *s, size_t avail);

/* Bytes per element of a dtype (0 if unknown). */
static inline size_t tl__st_dtype_size(tl_st_dtype d) {
    return d == TL_ST_F32 ? 4 : d == TL_ST_I64 ? 8 : 0;
}

/* The dtype's name in a header ("?" if unknown). */
static inline const char *tl__st_dtype_name(tl_st_dtype d) {
    return d == TL_ST_F32 ? "F32" : d == TL_ST_I64 ? "I64" : "?";
}

/* Byte size of a tensor of dtype d and the given shape, or 0 with *ok = 0 if
 * it does not fit in size_t. */
static inline size_t tl__st_checked_bytes(tl_st_dtype d, int rank, const int64_t *shape, int *ok) {
    size_t n = tl__st_dtype_size(d);
    *ok = 1;
    for (int k = 0; k < rank; k++) {
        uint64_t dim = (uint64_t)shape[k];
        if (dim != 0 && n > SIZE_MAX / dim) {
            *ok = 0;
            return 0;
        }
        n *= (size_t)dim;
    }
    return n;
}

#endif
