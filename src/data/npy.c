/* npy.c - .npy reader (versions 1.0, 2.0, 3.0) and the x.npy / y.npy data set.
 *
 * The header dict is parsed as the small Python literal numpy writes: keys
 * and strings in single or double quotes (no escapes), True/False, and a
 * tuple of non-negative integers. The file is mapped read-only and the array
 * is used in place; only a misaligned array (a header length that is not a
 * multiple of the element size, which numpy never writes) is copied. The
 * data is little-endian, and so must the host be.
 */
#include "tl/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/le.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "npy.c reads little-endian data in place");

#define HEADER_MAX 65536 /* longest header dict accepted (numpy itself stops at 10,000) */

static const struct {
    const char *code; /* descr without its byte-order character */
    tl_npy_dtype dtype;
    size_t size;
} dtypes[] = {
    {"f4", TL_NPY_F32, 4}, {"u1", TL_NPY_U8, 1},  {"i1", TL_NPY_I8, 1},
    {"i2", TL_NPY_I16, 2}, {"u2", TL_NPY_U16, 2}, {"i4", TL_NPY_I32, 4},
    {"u4", TL_NPY_U32, 4}, {"i8", TL_NPY_I64, 8}, {"u8", TL_NPY_U64, 8},
};

/* The header dict being parsed. */
typedef struct hdr {
    const char *p, *end, *path;
} hdr;

/* Skips blanks (spaces and tabs) in the header. */
static void skip_ws(hdr *h) {
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t')) h->p++;
}

/* Consumes the character c (after blanks) or fails. */
static int expect(hdr *h, char c) {
    skip_ws(h);
    if (h->p >= h->end || *h->p != c)
        return tl_error(TL_EFORMAT, "%s: bad header: expected '%c'", h->path, c);
    h->p++;
    return 0;
}

/* A quoted string (no escapes) into out (at most cap-1 characters). */
static int parse_str(hdr *h, char *out, size_t cap) {
    skip_ws(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return tl_error(TL_EFORMAT, "%s: bad header: expected a quoted string", h->path);
    char q = *h->p++;
    const char *s = h->p;
    while (h->p < h->end && *h->p != q && *h->p != '\\') h->p++;
    if (h->p >= h->end || *h->p != q || (size_t)(h->p - s) >= cap)
        return tl_error(TL_EFORMAT, "%s: bad header: bad or overlong string", h->path);
    memcpy(out, s, (size_t)(h->p - s));
    out[h->p - s] = 0;
    h->p++;
    return 0;
}

/* The header dict: descr, fortran_order and shape, each exactly once. */
static int parse_dict(hdr *h, char *descr, size_t cap, int *fortran, tl_npy *a) {
    int seen = 0, rc;
    char key[32];
    if ((rc = expect(h, '{')) < 0) return rc;
    for (;;) {
        skip_ws(h);
        if (h->p < h->end && *h->p == '}') break;
        if ((rc = parse_str(h, key, sizeof key)) < 0 || (rc = expect(h, ':')) < 0) return rc;
        skip_ws(h);
        if (!strcmp(key, "descr") && !(seen & 1)) {
            if (h->p < h->end && *h->p == '[')
                return tl_error(TL_EFORMAT, "%s: structured dtypes are not supported", h->path);
            if ((rc = parse_str(h, descr, cap)) < 0) return rc;
            seen |= 1;
        } else if (!strcmp(key, "fortran_order") && !(seen & 2)) {
            size_t left = (size_t)(h->end - h->p);
            if (left >= 4 && !memcmp(h->p, "True", 4)) *fortran = 1, h->p += 4;
            else if (left >= 5 && !memcmp(h->p, "False", 5)) *fortran = 0, h->p += 5;
            else
                return tl_error(TL_EFORMAT, "%s: bad header: fortran_order is not True or False",
                                h->path);
            seen |= 2;
        } else if (!strcmp(key, "shape") && !(seen & 4)) {
            if ((rc = expect(h, '(')) < 0) return rc;
            a->rank = 0;
            for (;;) {
                skip_ws(h);
                if (h->p < h->end && *h->p == ')') break;
                if (h->p >= h->end || (unsigned)(*h->p - '0') >= 10)
                    return tl_error(TL_EFORMAT, "%s: bad header: shape is not a tuple of integers",
                                    h->path);
                uint64_t v = 0;
                for (; h->p < h->end && (unsigned)(*h->p - '0') < 10; h->p++) {
                    if (v > TL_NPY_MAX_BYTES)
                        return tl_error(TL_ERANGE, "%s: a dimension is too large", h->path);
                    v = v * 10 + (uint64_t)(*h->p - '0');
                }
                if (a->rank == TL_NPY_MAX_RANK)
                    return tl_error(TL_EFORMAT, "%s: rank over %d", h->path, TL_NPY_MAX_RANK);
                a->shape[a->rank++] = v;
                skip_ws(h);
                if (h->p < h->end && *h->p == ',') h->p++;
                else if (h->p < h->end && *h->p != ')')
                    return tl_error(TL_EFORMAT, "%s: bad header: shape is not a tuple of integers",
                                    h->path);
            }
            h->p++;
            seen |= 4;
        } else {
            return tl_error(TL_EFORMAT, "%s: bad header: unexpected or repeated key '%s'", h->path,
                            key);
        }
        skip_ws(h);
        if (h->p < h->end && *h->p == ',') h->p++;
        else if (h->p >= h->end || *h->p != '}')
            return tl_error(TL_EFORMAT, "%s: bad header: expected ',' or '}'", h->path);
    }
    h->p++; /* '}' */
    skip_ws(h);
    if (h->p != h->end - 1 || *h->p != '\n')
        return tl_error(TL_EFORMAT, "%s: bad header: text after the dict or no final newline",
                        h->path);
    if (seen != 7)
        return tl_error(TL_EFORMAT, "%s: bad header: missing %s", h->path,
                        !(seen & 1)   ? "'descr'"
                        : !(seen & 2) ? "'fortran_order'"
                                      : "'shape'");
    return 0;
}

/* Sets a->dtype and a->elsize from descr, or fails with the reason. */
static int parse_descr(const char *path, const char *descr, tl_npy *a) {
    char order = descr[0];
    if (descr[0] == 'O' || (order && descr[1] == 'O'))
        return tl_error(TL_EFORMAT, "%s: object arrays ('%s') are not supported", path, descr);
    for (size_t i = 0; order && i < sizeof dtypes / sizeof *dtypes; i++) {
        if (strcmp(descr + 1, dtypes[i].code)) continue;
        if (dtypes[i].size > 1 && order == '>')
            return tl_error(TL_EFORMAT, "%s: big-endian data ('%s') is not supported", path, descr);
        if (dtypes[i].size > 1 ? order != '<' : !strchr("<|>=", order)) break;
        a->dtype = dtypes[i].dtype, a->elsize = dtypes[i].size;
        return 0;
    }
    return tl_error(TL_EFORMAT,
                    "%s: unsupported dtype '%s' (supported: float32 '<f4', uint8 '|u1', and "
                    "little-endian integers)",
                    path, descr);
}

void tl_npy_free(tl_npy *a) {
    if (!a) return;
    if (a->map_) {
        if (a->map_len_) munmap(a->map_, a->map_len_);
        else free(a->map_);
    }
    memset(a, 0, sizeof *a);
}

int tl_npy_read(const char *path, tl_npy *a) {
    struct stat st;
    uint8_t *map = MAP_FAILED;
    size_t len = 0, off, hlen;
    int fd = -1, rc, fortran = 0;
    char descr[32];
    memset(a, 0, sizeof *a);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = tl_error(TL_EIO, "%s: not a regular file", path);
        goto cleanup;
    }
    len = (size_t)st.st_size;
    if (len < 10) {
        rc = tl_error(TL_EFORMAT, "%s: not a .npy file (%zu bytes)", path, len);
        goto cleanup;
    }
    if ((map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        rc = tl_error(TL_EIO, "%s: cannot map: %s", path, strerror(errno));
        goto cleanup;
    }
    if (memcmp(map, "\x93NUMPY", 6) != 0) {
        rc = tl_error(TL_EFORMAT, "%s: not a .npy file (bad magic)", path);
        goto cleanup;
    }
    if (map[6] < 1 || map[6] > 3 || map[7] != 0) {
        rc = tl_error(TL_EFORMAT, "%s: unsupported .npy version %d.%d", path, map[6], map[7]);
        goto cleanup;
    }
    if (map[6] == 1) {
        hlen = tl_le_load16(map + 8);
        off = 10 + hlen;
    } else {
        if (len < 12) {
            rc = tl_error(TL_EFORMAT, "%s: truncated header", path);
            goto cleanup;
        }
        hlen = tl_le_load32(map + 8);
        off = 12 + hlen;
    }
    if (hlen > HEADER_MAX || off > len) {
        rc = tl_error(TL_EFORMAT, "%s: header length %zu is %s", path, hlen,
                      hlen > HEADER_MAX ? "too large" : "past the end of the file");
        goto cleanup;
    }
    hdr h = {(const char *)map + off - hlen, (const char *)map + off, path};
    if ((rc = parse_dict(&h, descr, sizeof descr, &fortran, a)) < 0) goto cleanup;
    if ((rc = parse_descr(path, descr, a)) < 0) goto cleanup;
    if (fortran) {
        rc = tl_error(TL_EFORMAT,
                      "%s: Fortran order is not supported (save a C-ordered array: "
                      "numpy.ascontiguousarray)",
                      path);
        goto cleanup;
    }
    if (a->rank == 0) {
        rc = tl_error(TL_EFORMAT, "%s: a scalar (shape ()) is not an array of samples", path);
        goto cleanup;
    }
    a->count = 1;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] == 0) {
            rc = tl_error(TL_EFORMAT, "%s: dimension %d is zero", path, i);
            goto cleanup;
        }
        if (a->shape[i] > TL_NPY_MAX_BYTES / a->elsize / a->count) {
            rc = tl_error(TL_ERANGE, "%s: more than %zu bytes of data", path,
                          (size_t)TL_NPY_MAX_BYTES);
            goto cleanup;
        }
        a->count *= (size_t)a->shape[i];
    }
    if (len - off != a->count * a->elsize) {
        rc = tl_error(TL_EFORMAT, "%s: %s: %zu bytes of data, the shape needs %zu", path,
                      len - off < a->count * a->elsize ? "truncated" : "trailing bytes", len - off,
                      a->count * a->elsize);
        goto cleanup;
    }
    if (off % a->elsize) { /* misaligned: copy */
        void *b = malloc(a->count * a->elsize);
        if (!b) {
            rc = tl_error(TL_ENOMEM, "%s: out of memory", path);
            goto cleanup;
        }
        memcpy(b, map + off, a->count * a->elsize);
        munmap(map, len);
        map = MAP_FAILED;
        a->map_ = b, a->map_len_ = 0, a->data = b;
    } else {
        a->map_ = map, a->map_len_ = len, a->data = map + off;
        map = MAP_FAILED;
    }
    rc = 0;
cleanup:
    if (map != MAP_FAILED) munmap(map, len);
    if (fd >= 0) close(fd);
    if (rc < 0) memset(a, 0, sizeof *a);
    return rc;
}

void tl_npy_set_free(tl_npy_set *s) {
    if (!s) return;
    tl_npy_free(&s->x);
    free(s->y);
    memset(s, 0, sizeof *s);
}

/* Label i of y as a signed 64-bit value (saturating uint64 at INT64_MAX). */
static int64_t label_at(const tl_npy *y, size_t i) {
    const uint8_t *p = (const uint8_t *)y->data + i * y->elsize;
    switch (y->dtype) {
    case TL_NPY_U8: return p[0];
    case TL_NPY_I8: return (int8_t)p[0];
    // clang-format off
    case TL_NPY_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case TL_NPY_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case TL_NPY_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case TL_NPY_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case TL_NPY_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    // clang-format on
    case TL_NPY_U64: {
        uint64_t v;
        memcpy(&v, p, 8);
        return v > INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    default: return -1; /* not an integer type: rejected before */
    }
}

int tl_npy_load(const char *dir, tl_npy_set *s) {
    char xp[4096], yp[4096];
    tl_npy y;
    int rc;
    memset(s, 0, sizeof *s);
    memset(&y, 0, sizeof y);
    snprintf(xp, sizeof xp, "%s/x.npy", dir);
    snprintf(yp, sizeof yp, "%s/y.npy", dir);
    if ((rc = tl_npy_read(xp, &s->x)) < 0) return rc;
    if (s->x.dtype != TL_NPY_F32 && s->x.dtype != TL_NPY_U8) {
        rc = tl_error(TL_EFORMAT, "%s: samples must be float32 ('<f4') or uint8 ('|u1')", xp);
        goto cleanup;
    }
    if (s->x.rank != 2 && s->x.rank != 4) {
        rc = tl_error(TL_EFORMAT, "%s: shape must be [N, features] or [N, C, H, W] (rank %d)", xp,
                      s->x.rank);
        goto cleanup;
    }
    s->n = (size_t)s->x.shape[0];
    if (s->x.dtype == TL_NPY_F32) {
        const float *v = s->x.data;
        size_t per = s->x.count / s->n;
        for (size_t i = 0; i < s->x.count; i++) {
            if (!isfinite(v[i])) {
                rc = tl_error(TL_EFORMAT, "%s: sample %zu, element %zu is %s", xp, i / per, i % per,
                              isnan(v[i]) ? "NaN" : "infinite");
                goto cleanup;
            }
        }
    }
    if ((rc = tl_npy_read(yp, &y)) < 0) goto cleanup;
    if (y.dtype == TL_NPY_F32) {
        rc = tl_error(TL_EFORMAT, "%s: labels must be integers (got float32)", yp);
        goto cleanup;
    }
    if (y.rank != 1) {
        rc = tl_error(TL_EFORMAT, "%s: labels must have shape [N] (rank %d)", yp, y.rank);
        goto cleanup;
    }
    if (y.shape[0] != s->x.shape[0]) {
        rc = tl_error(TL_EFORMAT, "%s: %llu labels for %llu samples in %s", yp,
                      (unsigned long long)y.shape[0], (unsigned long long)s->x.shape[0], xp);
        goto cleanup;
    }
    if (!(s->y = malloc(s->n * sizeof *s->y))) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", yp);
        goto cleanup;
    }
    int64_t maxv = -1;
    for (size_t i = 0; i < s->n; i++) {
        int64_t v = label_at(&y, i);
        if (v < 0) {
            rc = tl_error(TL_EFORMAT, "%s: label %zu is negative (%lld)", yp, i, (long long)v);
            goto cleanup;
        }
        if (v >= TL_DATASET_MAX_CLASSES) {
            rc = tl_error(TL_ERANGE, "%s: label %zu is %lld, over the limit of %d classes", yp, i,
                          (long long)v, TL_DATASET_MAX_CLASSES);
            goto cleanup;
        }
        s->y[i] = (int32_t)v;
        if (v > maxv) maxv = v;
    }
    s->classes = (int)maxv + 1;
    rc = 0;
cleanup:
    tl_npy_free(&y);
    if (rc < 0) tl_npy_set_free(s);
    return rc;
}

/* Contract in npy.h. */
int tl_npy_write(const char *path, tl_npy_dtype dtype, int rank, const uint64_t *shape,
                 const void *data) {
    size_t elsize = 0, count = 1;
    const char *code = NULL;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == dtype) code = dtypes[i].code, elsize = dtypes[i].size;
    if (!code) return tl_error(TL_EINVAL, "%s: cannot write dtype %d", path, (int)dtype);
    if (rank < 1 || rank > TL_NPY_MAX_RANK || !data)
        return tl_error(TL_EINVAL, "%s: cannot write an array of rank %d", path, rank);
    char hdr[512];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                       elsize == 1 ? '|' : '<', code);
    for (int i = 0; i < rank; i++) {
        if (shape[i] == 0) return tl_error(TL_EINVAL, "%s: cannot write a zero dimension", path);
        if (shape[i] > TL_NPY_MAX_BYTES / elsize / count)
            return tl_error(TL_ERANGE, "%s: more than %zu bytes of data", path,
                            (size_t)TL_NPY_MAX_BYTES);
        count *= (size_t)shape[i];
        const char *fmt = rank == 1 ? "%llu," : i ? ", %llu" : "%llu"; /* (6,) and (6, 2) */
        len += snprintf(hdr + len, sizeof hdr - (size_t)len, fmt, (unsigned long long)shape[i]);
    }
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "), }");
    /* magic (6) + version (2) + length (2) + dict + spaces + '\n', to a multiple of 64 */
    size_t total = (10 + (size_t)len + 1 + 63) / 64 * 64;
    uint8_t head[640];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    tl_le_store16(head + 8, (uint16_t)(total - 10));
    memcpy(head + 10, hdr, (size_t)len);
    memset(head + 10 + len, ' ', total - 10 - (size_t)len - 1);
    head[total - 1] = '\n';

    tl_file_w w; /* atomic, never through a link planted at path (file.h) */
    int rc = tl_file_begin(&w, path, 0644, 0);
    if (rc < 0) return rc;
    rc = tl_file_write(&w, head, total);
    if (rc == 0) rc = tl_file_write(&w, data, count * elsize);
    if (rc == 0) return tl_file_commit(&w);
    tl_file_abort(&w);
    return rc;
}
