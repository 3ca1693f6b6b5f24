/* dataset.c - MNIST-layout data sets: load, save, subset, gather, fingerprint. */
#include "tl/dataset.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tl/error.h"
#include "tl/idx.h"

/* Largest label + 1 over n labels (0 when n == 0). */
static int count_classes(const uint8_t *labels, size_t n) {
    int max = -1;
    for (size_t i = 0; i < n; i++)
        if (labels[i] > max) max = labels[i];
    return max + 1;
}

/* Finds "<dir>/<split>-<kind>-<idx>-ubyte.gz", else the raw name; *path gets a
 * malloc'd string. A missing pair names both paths tried (TL_EIO). */
static int find_file(const char *dir, const char *split, const char *kind, const char *idx,
                     char **path) {
    size_t len = strlen(dir) + strlen(split) + strlen(kind) + strlen(idx) + 32;
    char *p = malloc(len);
    struct stat st;
    *path = NULL;
    if (!p) return tl_error(TL_ENOMEM, "out of memory");
    snprintf(p, len, "%s/%s-%s-%s-ubyte.gz", dir, split, kind, idx);
    if (stat(p, &st) == 0) {
        *path = p;
        return 0;
    }
    p[strlen(p) - 3] = '\0';
    if (stat(p, &st) == 0) {
        *path = p;
        return 0;
    }
    int rc = tl_error(TL_EIO, "%s: %s file not found (tried %s.gz and %s)", dir, kind, p, p);
    free(p);
    return rc;
}

/* Loads split from the MNIST-layout directory dir itself. */
static int load_one(const char *dir, const char *split, tl_dataset *out) {
    tl_idx im = {0}, lb = {0};
    char *im_path = NULL, *lb_path = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = find_file(dir, split, "images", "idx3", &im_path)) < 0) goto cleanup;
    if ((rc = find_file(dir, split, "labels", "idx1", &lb_path)) < 0) goto cleanup;
    if ((rc = tl_idx_read(im_path, &im)) < 0) goto cleanup;
    if (im.rank != 3) {
        rc = tl_error(TL_EFORMAT, "%s: images must have rank 3 (n, rows, cols), not %d", im_path, im.rank);
        goto cleanup;
    }
    if ((rc = tl_idx_read(lb_path, &lb)) < 0) goto cleanup;
    if (lb.rank != 1) {
        rc = tl_error(TL_EFORMAT, "%s: labels must have rank 1, not %d", lb_path, lb.rank);
        goto cleanup;
    }
    if (lb.dims[0] != im.dims[0]) {
        rc = tl_error(TL_EFORMAT, "%s: %u labels for %u images in %s", lb_path, lb.dims[0],
                      im.dims[0], im_path);
        goto cleanup;
    }
    out->n = im.dims[0];
    out->rows = im.dims[1];
    out->cols = im.dims[2];
    out->dim = (size_t)im.dims[1] * im.dims[2];
    out->images = im.data;
    out->labels = lb.data;
    out->classes = count_classes(lb.data, out->n);
    im.data = lb.data = NULL;
cleanup:
    tl_idx_free(&im);
    tl_idx_free(&lb);
    free(im_path);
    free(lb_path);
    return rc;
}

/* Appends b to a (same image shape required); b is left as it was. */
static int append(tl_dataset *a, const tl_dataset *b, const char *bdir) {
    if (a->rows != b->rows || a->cols != b->cols)
        return tl_error(TL_EFORMAT, "%s: images of %ux%u, the nodes before it have %ux%u", bdir,
                        b->rows, b->cols, a->rows, a->cols);
    uint8_t *im = realloc(a->images, (a->n + b->n) * a->dim);
    if (!im) return tl_error(TL_ENOMEM, "%s: out of memory", bdir);
    a->images = im;
    uint8_t *lb = realloc(a->labels, a->n + b->n);
    if (!lb) return tl_error(TL_ENOMEM, "%s: out of memory", bdir);
    a->labels = lb;
    memcpy(a->images + a->n * a->dim, b->images, b->n * b->dim);
    memcpy(a->labels + a->n, b->labels, b->n);
    a->n += b->n;
    if (b->classes > a->classes) a->classes = b->classes;
    return 0;
}

/* Contract in dataset.h. */
int tl_dataset_load(const char *dir, const char *split, tl_dataset *out) {
    char sub[4096];
    struct stat st;
    snprintf(sub, sizeof sub, "%s/node-1", dir);
    if (stat(sub, &st) < 0 || !S_ISDIR(st.st_mode)) return load_one(dir, split, out);
    /* a partition directory: node-1, node-2, ... concatenated in node order,
     * the order of a distributed run's global index space */
    int rc = 0;
    memset(out, 0, sizeof *out);
    for (int k = 1;; k++) {
        snprintf(sub, sizeof sub, "%s/node-%d", dir, k);
        if (stat(sub, &st) < 0 || !S_ISDIR(st.st_mode)) break;
        tl_dataset part;
        if ((rc = load_one(sub, split, &part)) < 0) break;
        if (k == 1) *out = part;
        else {
            rc = append(out, &part, sub);
            tl_dataset_free(&part);
            if (rc < 0) break;
        }
    }
    if (rc < 0) tl_dataset_free(out);
    return rc;
}

/* mkdir -p: creates dir and its missing parents (mode 0777 & ~umask). */
static int make_dirs(const char *dir) {
    char *p = strdup(dir);
    int rc = 0;
    if (!p) return tl_error(TL_ENOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            rc = tl_error(TL_EIO, "%s: cannot create directory: %s", p, strerror(errno));
            break;
        }
        *s = c;
        if (c == '\0') break;
    }
    if (rc == 0) {
        struct stat st;
        if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
            rc = tl_error(TL_EIO, "%s: not a directory", dir);
    }
    free(p);
    return rc;
}

/* Contract in dataset.h. */
int tl_dataset_save(const char *dir, const char *split, const tl_dataset *d) {
    if (d->n == 0 || d->n > UINT32_MAX || d->rows == 0 || d->cols == 0 ||
        (size_t)d->rows * d->cols != d->dim)
        return tl_error(TL_EINVAL, "%s: cannot save a data set of %zu samples of %ux%u", dir, d->n,
                        d->rows, d->cols);
    int rc = make_dirs(dir);
    if (rc < 0) return rc;
    size_t len = strlen(dir) + strlen(split) + 40;
    char *path = malloc(len);
    if (!path) return tl_error(TL_ENOMEM, "out of memory");
    tl_idx im = {.rank = 3, .dims = {(uint32_t)d->n, d->rows, d->cols}, .count = d->n * d->dim,
                 .data = d->images};
    tl_idx lb = {.rank = 1, .dims = {(uint32_t)d->n}, .count = d->n, .data = d->labels};
    snprintf(path, len, "%s/%s-images-idx3-ubyte.gz", dir, split);
    rc = tl_idx_write(path, &im, TL_IDX_GZ);
    if (rc == 0) {
        snprintf(path, len, "%s/%s-labels-idx1-ubyte.gz", dir, split);
        rc = tl_idx_write(path, &lb, TL_IDX_GZ);
    }
    free(path);
    return rc;
}

/* Contract in dataset.h. */
int tl_dataset_subset(const tl_dataset *src, const size_t *rows, size_t n, tl_dataset *out) {
    memset(out, 0, sizeof *out);
    if (n == 0) return tl_error(TL_EINVAL, "a data set subset needs at least one row");
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= src->n)
            return tl_error(TL_EINVAL, "subset row %zu out of range (data set has %zu)", rows[i], src->n);
    if (n > SIZE_MAX / (src->dim ? src->dim : 1))
        return tl_error(TL_ERANGE, "subset of %zu rows too large", n);
    out->images = malloc(n * src->dim > 0 ? n * src->dim : 1);
    out->labels = malloc(n);
    if (!out->images || !out->labels) {
        tl_dataset_free(out);
        return tl_error(TL_ENOMEM, "out of memory for a subset of %zu rows", n);
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(out->images + i * src->dim, src->images + rows[i] * src->dim, src->dim);
        out->labels[i] = src->labels[rows[i]];
    }
    out->n = n;
    out->dim = src->dim;
    out->rows = src->rows;
    out->cols = src->cols;
    out->classes = count_classes(out->labels, n);
    return 0;
}

/* Converts n bytes to normalized floats: dst[j] = ((float)src[j] / 255 - mean)
 * / std, in float32 and in that order (each operation rounds exactly, so every
 * value is the one a 256-entry table built with the same expression holds).
 * Arithmetic rather than a table lookup so that the loop vectorizes
 * (16 lanes with AVX-512): about 3x faster than the lookups. */
static void normalize_row(float *restrict dst, const uint8_t *restrict src, size_t n, float mean,
                          float std) {
    for (size_t j = 0; j < n; j++) dst[j] = ((float)src[j] / 255.0f - mean) / std;
}

/* Contract in dataset.h. */
void tl_dataset_gather(const tl_dataset *d, const size_t *rows, size_t n, float mean, float std,
                       float *x, int32_t *y) {
    for (size_t i = 0; i < n; i++) {
        size_t r = rows ? rows[i] : i;
        assert(r < d->n);
        normalize_row(x + i * d->dim, d->images + r * d->dim, d->dim, mean, std);
        if (y) y[i] = d->labels[r];
    }
}

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* FNV-1a 64 of n bytes, continuing from h. */
static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Contract in dataset.h. */
uint64_t tl_dataset_fingerprint(const tl_dataset *d) {
    uint8_t head[16];
    uint64_t n = d->n;
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)(n >> (8 * i));
    for (int i = 0; i < 4; i++) head[8 + i] = (uint8_t)(d->rows >> (8 * i));
    for (int i = 0; i < 4; i++) head[12 + i] = (uint8_t)(d->cols >> (8 * i));
    uint64_t h = fnv1a(FNV_OFFSET, head, sizeof head);
    h = fnv1a(h, d->labels, d->n);
    return fnv1a(h, d->images, d->n * d->dim);
}

/* Contract in dataset.h. */
void tl_dataset_free(tl_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}
