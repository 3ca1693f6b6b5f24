/* st_read.c - strict safetensors reader and accessors (see safetensors.h);
 * the header's JSON is parsed by st_json.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_int.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/le.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "st_read.c assumes a little-endian host (tensor data is used in place)"
#endif

struct tl_st {
    int n;
    tl_st_tensor *t; /* n tensors in file order */
    int *by_name;    /* n indices sorted by name, for tl_st_find */
    int n_meta;
    tl_st_kv *meta;   /* n_meta pairs in file order */
    int *meta_by_key; /* n_meta indices sorted by key */
    char *arena;      /* every decoded string */
    uint8_t *data;    /* the data block (malloc'd, so 16-byte aligned) */
    void **copies;    /* aligned copies of misaligned tensors (n entries, mostly NULL) */
};

/* Number of elements of t (product of shape; 1 for rank 0). Assumes a
 * validated shape (no overflow). */
size_t tl_st_numel(const tl_st_tensor *t) {
    size_t n = 1;
    for (int k = 0; k < t->rank; k++) n *= (size_t)t->shape[k];
    return n;
}

/* Sort contexts (qsort has none, so the arrays travel with the indices). */
typedef struct idx_str {
    int idx;
    const char *s;
} idx_str;

static int cmp_idx_str(const void *a, const void *b) {
    const idx_str *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

typedef struct idx_span {
    int idx;
    uint64_t begin, end;
} idx_span;

static int cmp_idx_span(const void *a, const void *b) {
    const idx_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts n >= 1 strings (strs[i * stride] viewed as const char *) and stores
 * the sorted order in order[]; fails with TL_EFORMAT naming a duplicate. */
static int sort_unique(const char *path, int n, const char *const *strs, size_t stride, int *order,
                       const char *what) {
    idx_str *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        v[i].idx = i;
        v[i].s = *(const char *const *)((const char *)strs + (size_t)i * stride);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_idx_str);
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i - 1].s, v[i].s) == 0) {
            int rc = tl_error(TL_EFORMAT, "%s: bad safetensors header: duplicate %s '%.64s'", path,
                              what, v[i].s);
            free(v);
            return rc;
        }
        order[i] = v[i].idx;
    }
    free(v);
    return 0;
}

/* Takes the st_parser's results into a tl_st over the data block data[0..dlen)
 * (ownership of data passes to st), validating offsets, sizes, overlaps and
 * uniqueness, and making aligned copies of misaligned tensors. */
static int finish(st_parser *p, uint8_t *data, size_t dlen, tl_st *st) {
    int rc;
    idx_span *sp = NULL;
    st->data = data;
    st->arena = p->arena;
    p->arena = NULL;
    st->n = p->n_t;
    st->t = p->t;
    p->t = NULL;
    st->n_meta = p->n_meta;
    st->meta = p->meta;
    p->meta = NULL;
    st->by_name = malloc((size_t)(st->n ? st->n : 1) * sizeof *st->by_name);
    st->meta_by_key = malloc((size_t)(st->n_meta ? st->n_meta : 1) * sizeof *st->meta_by_key);
    st->copies = calloc((size_t)(st->n ? st->n : 1), sizeof *st->copies);
    sp = malloc((size_t)(st->n ? st->n : 1) * sizeof *sp);
    if (!st->by_name || !st->meta_by_key || !st->copies || !sp) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", p->path);
        goto cleanup;
    }
    for (int i = 0; i < st->n; i++) {
        const tl_st_tensor *t = &st->t[i];
        uint64_t b = p->span[i].begin, e = p->span[i].end;
        int ok;
        if (b > e) {
            rc = tl_error(TL_EFORMAT,
                          "%s: tensor '%.64s': data_offsets [%llu, %llu] end before they begin",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e);
            goto cleanup;
        }
        if (e > dlen) {
            rc = tl_error(TL_EFORMAT,
                          "%s: tensor '%.64s': data_offsets [%llu, %llu] run past the data block "
                          "(%zu bytes; file truncated?)",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e, dlen);
            goto cleanup;
        }
        size_t bytes = tl__st_checked_bytes(t->dtype, t->rank, t->shape, &ok);
        if (!ok || bytes != e - b) {
            rc = tl_error(TL_EFORMAT,
                          "%s: tensor '%.64s': data_offsets [%llu, %llu] span %llu bytes but %s of "
                          "its shape needs %s%zu",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)(e - b), tl__st_dtype_name(t->dtype),
                          ok ? "" : "more than ", ok ? bytes : SIZE_MAX);
            goto cleanup;
        }
        sp[i].idx = i;
        sp[i].begin = b;
        sp[i].end = e;
    }
    /* Overlaps: sorted by begin, every non-empty tensor starts at or after the
     * furthest end of the non-empty ones before it. */
    qsort(sp, (size_t)st->n, sizeof *sp, cmp_idx_span);
    uint64_t reach = 0;
    int reach_idx = -1;
    for (int i = 0; i < st->n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (reach_idx >= 0 && sp[i].begin < reach) {
            rc = tl_error(TL_EFORMAT, "%s: tensors '%.64s' and '%.64s' overlap in the data block",
                          p->path, st->t[reach_idx].name, st->t[sp[i].idx].name);
            goto cleanup;
        }
        reach = sp[i].end;
        reach_idx = sp[i].idx;
    }
    if (st->n > 0 && (rc = sort_unique(p->path, st->n, &st->t[0].name, sizeof st->t[0], st->by_name,
                                       "tensor name")) < 0)
        goto cleanup;
    if (st->n_meta > 0 &&
        (rc = sort_unique(p->path, st->n_meta, &st->meta[0].key, sizeof st->meta[0],
                          st->meta_by_key, "metadata key")) < 0)
        goto cleanup;
    /* Data pointers: into the block, or an aligned copy if misaligned. */
    for (int i = 0; i < st->n; i++) {
        tl_st_tensor *t = &st->t[i];
        size_t b = (size_t)p->span[i].begin, bytes = (size_t)(p->span[i].end - p->span[i].begin);
        if (b % tl__st_dtype_size(t->dtype) == 0) {
            t->data = data + b;
        } else {
            st->copies[i] = malloc(bytes ? bytes : 1);
            if (!st->copies[i]) {
                rc = tl_error(TL_ENOMEM, "%s: out of memory", p->path);
                goto cleanup;
            }
            memcpy(st->copies[i], data + b, bytes);
            t->data = st->copies[i];
        }
    }
    rc = 0;
cleanup:
    free(sp);
    return rc;
}

/* Parses header hdr[0..hlen) over the data block data[0..dlen) into a new
 * tl_st. Takes ownership of data (freed on failure). */
static int load(const char *path, const uint8_t *hdr, size_t hlen, uint8_t *data, size_t dlen,
                tl_st **out) {
    int rc;
    st_parser p = {0};
    tl_st *st = NULL;
    p.path = path;
    p.s = hdr;
    p.n = hlen;
    p.cap = hlen + 1;
    p.arena = malloc(p.cap);
    st = calloc(1, sizeof *st);
    if (!p.arena || !st) {
        free(data);
        rc = tl_error(TL_ENOMEM, "%s: out of memory for a %zu-byte header", path, hlen);
        goto cleanup;
    }
    if ((rc = tl__st_parse_header(&p)) < 0) {
        free(data);
        goto cleanup;
    }
    rc = finish(&p, data, dlen, st);
    if (rc < 0) goto cleanup;
    *out = st;
    st = NULL;
cleanup:
    free(p.arena);
    free(p.t);
    free(p.span);
    free(p.meta);
    tl_st_free(st);
    return rc;
}

/* Checks the header length h against the limit and the total size. */
static int check_header_len(const char *path, uint64_t h, uint64_t size) {
    if (h > TL_ST_MAX_HEADER)
        return tl_error(TL_EFORMAT,
                        "%s: safetensors header length %llu exceeds the limit of %u bytes", path,
                        (unsigned long long)h, (unsigned)TL_ST_MAX_HEADER);
    if (h > size - 8)
        return tl_error(TL_EFORMAT,
                        "%s: safetensors header length %llu runs past the end of the file "
                        "(%llu bytes; truncated?)",
                        path, (unsigned long long)h, (unsigned long long)size);
    return 0;
}

/* Parses a safetensors image held in memory (copied; buf may be freed after). */
int tl_st_read_mem(const uint8_t *buf, size_t len, tl_st **out) {
    const char *path = "<memory>";
    int rc;
    *out = NULL;
    if (len < 8)
        return tl_error(TL_EFORMAT, "%s: %zu bytes is too short for a safetensors file", path, len);
    uint64_t h = tl_le_load64(buf);
    if ((rc = check_header_len(path, h, len)) < 0) return rc;
    size_t dlen = len - 8 - (size_t)h;
    uint8_t *data = malloc(dlen ? dlen : 1);
    if (!data)
        return tl_error(TL_ENOMEM, "%s: out of memory for %zu bytes of tensor data", path, dlen);
    memcpy(data, buf + 8 + h, dlen);
    return load(path, buf + 8, (size_t)h, data, dlen, out);
}

/* Reads exactly len bytes from fd: 0, TL_EIO on error, TL_EFORMAT at an early
 * end of file. */
static int read_exact(int fd, void *buf, size_t len, const char *path) {
    size_t got;
    int rc = tl_file_read_full(fd, buf, len, &got, path);
    if (rc == 0 && got < len)
        rc = tl_error(TL_EFORMAT, "%s: file ended early (truncated while reading?)", path);
    return rc;
}

/* Loads a safetensors file: header into a temporary buffer, data block into
 * its own allocation (so tensor data is aligned whatever the header length). */
int tl_st_read(const char *path, tl_st **out) {
    int rc, fd = -1;
    uint8_t lenbuf[8], *hdr = NULL, *data = NULL;
    struct stat sb;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) < 0) {
        rc = tl_error(TL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = tl_error(TL_EIO, "%s: not a regular file", path);
        goto cleanup;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        rc = tl_error(TL_EFORMAT, "%s: %llu bytes is too short for a safetensors file", path,
                      (unsigned long long)size);
        goto cleanup;
    }
    if ((rc = read_exact(fd, lenbuf, 8, path)) < 0) goto cleanup;
    uint64_t h = tl_le_load64(lenbuf);
    if ((rc = check_header_len(path, h, size)) < 0) goto cleanup;
    uint64_t dlen64 = size - 8 - h;
    if (dlen64 > SIZE_MAX - 1) {
        rc = tl_error(TL_ERANGE, "%s: file too large", path);
        goto cleanup;
    }
    size_t dlen = (size_t)dlen64;
    hdr = malloc(h ? (size_t)h : 1);
    data = malloc(dlen ? dlen : 1);
    if (!hdr || !data) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory for a %llu-byte file", path,
                      (unsigned long long)size);
        goto cleanup;
    }
    if ((rc = read_exact(fd, hdr, (size_t)h, path)) < 0 ||
        (rc = read_exact(fd, data, dlen, path)) < 0)
        goto cleanup;
    rc = load(path, hdr, (size_t)h, data, dlen, out);
    data = NULL; /* owned by load now */
cleanup:
    if (fd >= 0) close(fd);
    free(hdr);
    free(data);
    return rc;
}

/* Tensors in the file. */
int tl_st_count(const tl_st *st) { return st->n; }

/* Tensor i in file order, or NULL if i is out of range. */
const tl_st_tensor *tl_st_get(const tl_st *st, int i) {
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

/* Binary search of key among n entries whose sorted order is order[] and whose
 * strings are reached through strs/stride. Returns the entry index or -1. */
static int lookup(const int *order, int n, const char *const *strs, size_t stride,
                  const char *key) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const char *s = *(const char *const *)((const char *)strs + (size_t)order[mid] * stride);
        int c = strcmp(key, s);
        if (c == 0) return order[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

/* The tensor called name, or NULL. O(log n). */
const tl_st_tensor *tl_st_find(const tl_st *st, const char *name) {
    if (st->n == 0) return NULL;
    int i = lookup(st->by_name, st->n, &st->t[0].name, sizeof st->t[0], name);
    return i < 0 ? NULL : &st->t[i];
}

/* The metadata value of key, or NULL. */
const char *tl_st_meta(const tl_st *st, const char *key) {
    if (st->n_meta == 0) return NULL;
    int i = lookup(st->meta_by_key, st->n_meta, &st->meta[0].key, sizeof st->meta[0], key);
    return i < 0 ? NULL : st->meta[i].value;
}

/* Metadata entries. */
int tl_st_meta_count(const tl_st *st) { return st->n_meta; }

/* Metadata entry i in file order, or NULL if out of range. */
const tl_st_kv *tl_st_meta_get(const tl_st *st, int i) {
    return i >= 0 && i < st->n_meta ? &st->meta[i] : NULL;
}

/* Frees st and everything it owns. NULL-safe. */
void tl_st_free(tl_st *st) {
    if (!st) return;
    if (st->copies)
        for (int i = 0; i < st->n; i++) free(st->copies[i]);
    free(st->copies);
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st->meta_by_key);
    free(st->arena);
    free(st->data);
    free(st);
}
