/* st_write.c - safetensors writer: the header's JSON and an atomic write
 * through file.h (see safetensors.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_int.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/le.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

/* Appends n bytes (remembers an allocation failure instead of reporting it). */
static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Appends s as a JSON string literal (quotes, escapes of '"', '\\' and control
 * characters; other bytes as they are). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c == '\n') {
            sb_put(b, "\\n", 2);
        } else if (c == '\t') {
            sb_put(b, "\\t", 2);
        } else if (c == '\r') {
            sb_put(b, "\\r", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Whether s is well-formed UTF-8. */
static int valid_utf8(const char *s) {
    const uint8_t *u = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = tl__st_utf8_len(u + i, n - i);
        if (len == 0) return 0;
        i += len;
    }
    return 1;
}

/* Validates the writer's arguments: TL_EINVAL naming the first problem. */
static int check_write_args(const char *path, const tl_st_tensor *t, int n, const tl_st_kv *meta,
                            int n_meta) {
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && !meta))
        return tl_error(TL_EINVAL, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n; i++) {
        int ok;
        if (!t[i].name || !valid_utf8(t[i].name) || strcmp(t[i].name, "__metadata__") == 0)
            return tl_error(TL_EINVAL, "%s: tensor %d has a bad name", path, i);
        if (tl__st_dtype_size(t[i].dtype) == 0)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has an unknown dtype", path, t[i].name);
        if (t[i].rank < 0 || t[i].rank > TL_ST_MAX_RANK)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has rank %d", path, t[i].name, t[i].rank);
        for (int k = 0; k < t[i].rank; k++)
            if (t[i].shape[k] < 0)
                return tl_error(TL_EINVAL, "%s: tensor '%s' has a negative dimension", path,
                                t[i].name);
        size_t bytes = tl__st_checked_bytes(t[i].dtype, t[i].rank, t[i].shape, &ok);
        if (!ok) return tl_error(TL_EINVAL, "%s: tensor '%s' is too large", path, t[i].name);
        if (bytes > 0 && !t[i].data)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has no data", path, t[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return tl_error(TL_EINVAL, "%s: duplicate tensor name '%s'", path, t[i].name);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value || !valid_utf8(meta[i].key) ||
            !valid_utf8(meta[i].value))
            return tl_error(TL_EINVAL, "%s: metadata entry %d is missing or not UTF-8", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                return tl_error(TL_EINVAL, "%s: duplicate metadata key '%s'", path, meta[i].key);
    }
    return 0;
}

/* Builds the header JSON (metadata first, then the tensors in order, data
 * offsets contiguous), padded with spaces to a multiple of 8 bytes. */
static int build_header(const char *path, const tl_st_tensor *t, int n, const tl_st_kv *meta,
                        int n_meta, sbuf *h, uint64_t *data_len) {
    char num[64];
    uint64_t off = 0;
    sb_str(h, "{");
    if (n_meta > 0) {
        sb_str(h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i) sb_str(h, ",");
            sb_json_str(h, meta[i].key);
            sb_str(h, ":");
            sb_json_str(h, meta[i].value);
        }
        sb_str(h, "}");
    }
    for (int i = 0; i < n; i++) {
        int ok;
        size_t bytes = tl__st_checked_bytes(t[i].dtype, t[i].rank, t[i].shape, &ok);
        if (n_meta > 0 || i > 0) sb_str(h, ",");
        sb_json_str(h, t[i].name);
        sb_str(h, ":{\"dtype\":\"");
        sb_str(h, tl__st_dtype_name(t[i].dtype));
        sb_str(h, "\",\"shape\":[");
        for (int k = 0; k < t[i].rank; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
            sb_str(h, num);
        }
        if (off > UINT64_MAX - bytes) return tl_error(TL_EINVAL, "%s: tensors too large", path);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(h, num);
        off += bytes;
    }
    sb_str(h, "}");
    while (h->len % 8 != 0) sb_str(h, " ");
    if (h->oom) return tl_error(TL_ENOMEM, "%s: out of memory building the header", path);
    if (h->len > TL_ST_MAX_HEADER)
        return tl_error(TL_EINVAL, "%s: header of %zu bytes exceeds the format's limit", path,
                        h->len);
    *data_len = off;
    return 0;
}

/* Serializes the file into one malloc'd buffer (*out, *len bytes; caller
 * frees): the same bytes tl_st_write puts in a file. */
int tl_st_write_mem(const tl_st_tensor *tensors, int n, const tl_st_kv *meta, int n_meta,
                    uint8_t **out, size_t *len) {
    int rc;
    sbuf h = {0};
    uint64_t data_len;
    const char *what = "safetensors buffer";
    *out = NULL;
    *len = 0;
    if ((rc = check_write_args(what, tensors, n, meta, n_meta)) < 0) return rc;
    if ((rc = build_header(what, tensors, n, meta, n_meta, &h, &data_len)) < 0) goto cleanup;
    if (data_len > SIZE_MAX - 8 - h.len) {
        rc = tl_error(TL_ERANGE, "%s: too large for memory", what);
        goto cleanup;
    }
    uint8_t *buf = malloc(8 + h.len + (size_t)data_len);
    if (!buf) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", what);
        goto cleanup;
    }
    tl_le_store64(buf, (uint64_t)h.len);
    memcpy(buf + 8, h.p, h.len);
    size_t off = 8 + h.len;
    for (int i = 0; i < n; i++) {
        int ok;
        size_t bytes = tl__st_checked_bytes(tensors[i].dtype, tensors[i].rank, tensors[i].shape,
                                            &ok);
        if (bytes > 0) memcpy(buf + off, tensors[i].data, bytes);
        off += bytes;
    }
    *out = buf;
    *len = off;
cleanup:
    free(h.p);
    return rc;
}

/* Writes the file atomically through file.h (a temporary with a random name
 * in path's directory, fsync, rename over path, which replaces a link planted
 * at path instead of following it); on any failure path is left as it was. */
int tl_st_write(const char *path, const tl_st_tensor *tensors, int n, const tl_st_kv *meta,
                int n_meta) {
    int rc;
    sbuf h = {0};
    uint64_t data_len;
    uint8_t lenbuf[8];
    tl_file_w w;
    if ((rc = check_write_args(path, tensors, n, meta, n_meta)) < 0) return rc;
    if ((rc = build_header(path, tensors, n, meta, n_meta, &h, &data_len)) < 0) goto cleanup;
    if ((rc = tl_file_begin(&w, path, 0644, 0)) < 0) goto cleanup;
    tl_le_store64(lenbuf, (uint64_t)h.len);
    rc = tl_file_write(&w, lenbuf, 8);
    if (rc == 0) rc = tl_file_write(&w, h.p, h.len);
    for (int i = 0; rc == 0 && i < n; i++) {
        int ok;
        size_t bytes = tl__st_checked_bytes(tensors[i].dtype, tensors[i].rank, tensors[i].shape,
                                            &ok);
        if (bytes > 0) rc = tl_file_write(&w, tensors[i].data, bytes);
    }
    (void)data_len;
    if (rc == 0) rc = tl_file_commit(&w);
    else tl_file_abort(&w);
cleanup:
    free(h.p);
    return rc;
}
