/* dataset.c - data sets from IDX, NumPy, CSV and partition directories: load,
 * save, subset, split, gather, fingerprint. */
#include "tl/dataset.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/csv.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/idx.h"
#include "tl/le.h"
#include "tl/norm.h"
#include "tl/npy.h"
#include "tl/rng.h"

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
static int load_idx(const char *dir, const char *split, tl_dataset *out) {
    tl_idx im = {0}, lb = {0};
    char *im_path = NULL, *lb_path = NULL;
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = find_file(dir, split, "images", "idx3", &im_path)) < 0) goto cleanup;
    if ((rc = find_file(dir, split, "labels", "idx1", &lb_path)) < 0) goto cleanup;
    if ((rc = tl_idx_read(im_path, &im)) < 0) goto cleanup;
    if (im.rank != 3) {
        rc = tl_error(TL_EFORMAT, "%s: images must have rank 3 (n, rows, cols), not %d", im_path,
                      im.rank);
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
    out->rank = 3;
    out->shape[0] = 1, out->shape[1] = out->rows, out->shape[2] = out->cols;
    im.data = lb.data = NULL;
cleanup:
    tl_idx_free(&im);
    tl_idx_free(&lb);
    free(im_path);
    free(lb_path);
    return rc;
}

/* 1 when path exists and is a directory (dir) or a regular file (!dir). */
static int is_kind(const char *path, int dir) {
    struct stat st;
    if (stat(path, &st) < 0) return 0;
    return dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

/* Sets d's sample shape: rank 1 {features} or rank 3 {C, H, W}; rows and cols
 * get the 2-D view (1, dim) or (C*H, W). */
static int set_shape(tl_dataset *d, int rank, const uint64_t *shape, const char *what) {
    uint64_t dim = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] == 0 || shape[i] > UINT32_MAX || dim * shape[i] > UINT32_MAX)
            return tl_error(TL_ERANGE, "%s: sample shape too large", what);
        dim *= shape[i];
        d->shape[i] = (uint32_t)shape[i];
    }
    d->rank = rank;
    d->dim = (size_t)dim;
    d->rows = rank == 1 ? 1 : d->shape[0] * d->shape[1];
    d->cols = rank == 1 ? d->shape[0] : d->shape[2];
    return 0;
}

#define NAMES_FILE "classes.txt"
#define NAMES_MAX_BYTES (1 << 20)

/* Reads dir/classes.txt, if there is one, into d->class_names: one name a
 * line, in class order (what save_names writes); d->classes becomes their
 * number. No file: nothing (integer labels). TL_EFORMAT naming the file for
 * no name, more than TL_DATASET_MAX_CLASSES, a label without a name, or an
 * oversized file; TL_EIO; TL_ENOMEM. */
static int load_names(const char *dir, tl_dataset *d) {
    char path[4200];
    snprintf(path, sizeof path, "%s/" NAMES_FILE, dir);
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    char *text = malloc(NAMES_MAX_BYTES + 1);
    if (!text) {
        fclose(f);
        return tl_error(TL_ENOMEM, "%s: out of memory", path);
    }
    size_t len = fread(text, 1, NAMES_MAX_BYTES + 1, f);
    int err = ferror(f);
    fclose(f);
    int rc = 0, n = 0;
    char **names = calloc(TL_DATASET_MAX_CLASSES, sizeof *names);
    if (err) rc = tl_error(TL_EIO, "%s: cannot read", path);
    else if (len > NAMES_MAX_BYTES) rc = tl_error(TL_EFORMAT, "%s: over 1 MiB", path);
    else if (!names) rc = tl_error(TL_ENOMEM, "%s: out of memory", path);
    for (size_t at = 0; rc == 0 && at < len; n++) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (n == TL_DATASET_MAX_CLASSES)
            rc = tl_error(TL_EFORMAT, "%s: more than %d class names", path, TL_DATASET_MAX_CLASSES);
        else if (!(names[n] = strndup(text + at, end - at)))
            rc = tl_error(TL_ENOMEM, "%s: out of memory", path);
        at = end + 1;
    }
    if (rc == 0 && n == 0) rc = tl_error(TL_EFORMAT, "%s: no class name", path);
    for (size_t i = 0; rc == 0 && i < d->n; i++)
        if (d->labels[i] >= n)
            rc = tl_error(TL_EFORMAT, "%s: %d class names, but label %d in row %zu", path, n,
                          d->labels[i], i);
    free(text);
    if (rc < 0) {
        for (int i = 0; i < n && names; i++) free(names[i]);
        free(names);
        return rc;
    }
    d->class_names = names;
    d->classes = n;
    return 0;
}

/* Loads x.npy/y.npy of dir (or of dir/<split> when that holds x.npy). */
static int load_npy(const char *dir, const char *split, tl_dataset *out) {
    char sub[4096], xp[4200];
    tl_npy_set s;
    const char *from = dir;
    memset(out, 0, sizeof *out);
    if (split) {
        snprintf(sub, sizeof sub, "%s/%s", dir, split);
        snprintf(xp, sizeof xp, "%s/x.npy", sub);
        if (is_kind(xp, 0)) from = sub;
    }
    int rc = tl_npy_load(from, &s);
    if (rc < 0) return rc;
    uint64_t shape[3] = {0};
    int rank = s.x.rank == 2 ? 1 : 3;
    for (int i = 0; i < rank; i++) shape[i] = s.x.shape[1 + i];
    snprintf(xp, sizeof xp, "%s/x.npy", from);
    if ((rc = set_shape(out, rank, shape, xp)) < 0) goto cleanup;
    out->n = s.n;
    out->classes = s.classes;
    out->dtype = s.x.dtype == TL_NPY_F32 ? TL_ELEM_F32 : TL_ELEM_U8;
    size_t bytes = s.x.count * s.x.elsize;
    void *buf = malloc(bytes);
    out->labels = malloc(s.n);
    if (!buf || !out->labels) {
        free(buf);
        rc = tl_error(TL_ENOMEM, "%s: out of memory", xp);
        goto cleanup;
    }
    memcpy(buf, s.x.data, bytes);
    if (out->dtype == TL_ELEM_F32) out->feats = buf;
    else out->images = buf;
    for (size_t i = 0; i < s.n; i++) out->labels[i] = (uint8_t)s.y[i]; /* < 256: checked */
    rc = load_names(from, out);
cleanup:
    tl_npy_set_free(&s);
    if (rc < 0) tl_dataset_free(out);
    return rc;
}

/* Loads a CSV file as float32 features of rank 1 (a .npy file given by
 * itself is refused with a pointer to its directory). */
static int load_csv(const char *path, const tl_dataset_opts *o, tl_dataset *out) {
    tl_csv_opts co = {.label = o ? o->label : NULL, .header = -1};
    tl_table t;
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    char magic[6] = {0};
    if (f) {
        size_t got = fread(magic, 1, sizeof magic, f);
        fclose(f);
        if (got == sizeof magic && memcmp(magic, "\x93NUMPY", 6) == 0)
            return tl_error(TL_EFORMAT,
                            "%s: a .npy file: give the directory that holds x.npy "
                            "and y.npy",
                            path);
    }
    if (o && o->header == 1) co.header = 1;
    if (o && o->header == -1) co.header = 0;
    int rc = tl_csv_read(path, &co, &t);
    if (rc < 0) return rc;
    uint64_t shape[3] = {t.features, 0, 0};
    if ((rc = set_shape(out, 1, shape, path)) < 0) goto cleanup;
    if (!(out->labels = malloc(t.n))) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < t.n; i++) out->labels[i] = (uint8_t)t.y[i]; /* < 256: checked */
    out->n = t.n;
    out->dtype = TL_ELEM_F32;
    out->feats = t.x, t.x = NULL;
    out->classes = t.classes;
    out->class_names = t.class_names, t.class_names = NULL;
cleanup:
    tl_table_free(&t);
    if (rc < 0) tl_dataset_free(out);
    return rc;
}

/* 1 when dir is a NumPy directory for split: dir/x.npy or dir/<split>/x.npy. */
static int is_npy_dir(const char *dir, const char *split) {
    char p[4200];
    snprintf(p, sizeof p, "%s/x.npy", dir);
    if (is_kind(p, 0)) return 1;
    if (!split) return 0;
    snprintf(p, sizeof p, "%s/%s/x.npy", dir, split);
    return is_kind(p, 0);
}

/* Loads split from one directory that is not a partition directory. */
static int load_one(const char *dir, const char *split, tl_dataset *out) {
    if (is_npy_dir(dir, split)) return load_npy(dir, split, out);
    return load_idx(dir, split, out);
}

/* The sample shape of d as rank 1 or 3 (a zeroed rank means 3: {1, rows, cols}). */
static int shape_of(const tl_dataset *d, uint32_t shape[3]) {
    if (d->rank == 0) {
        shape[0] = 1, shape[1] = d->rows, shape[2] = d->cols;
        return 3;
    }
    memcpy(shape, d->shape, sizeof d->shape);
    return d->rank;
}

/* 1 for data that IDX files hold: uint8 images of one channel. */
static int is_idx_kind(const tl_dataset *d) {
    uint32_t sh[3];
    return d->dtype == TL_ELEM_U8 && shape_of(d, sh) == 3 && sh[0] == 1;
}

/* Bytes per element of d. */
static size_t elsize(const tl_dataset *d) { return d->dtype == TL_ELEM_F32 ? sizeof(float) : 1; }

/* The sample buffer of d (images or feats). */
static const uint8_t *samples(const tl_dataset *d) {
    return d->dtype == TL_ELEM_F32 ? (const uint8_t *)d->feats : d->images;
}

/* 1 when a and b have no class names, or the same ones in the same order. */
static int same_names(const tl_dataset *a, const tl_dataset *b) {
    if (!a->class_names || !b->class_names) return !a->class_names && !b->class_names;
    if (a->classes != b->classes) return 0;
    for (int c = 0; c < a->classes; c++)
        if (strcmp(a->class_names[c], b->class_names[c])) return 0;
    return 1;
}

/* Appends b to a (same element type and sample shape required); b is left as it was. */
static int append(tl_dataset *a, const tl_dataset *b, const char *bdir) {
    uint32_t sa[3], sb[3];
    int ra = shape_of(a, sa), rb = shape_of(b, sb);
    if (a->dtype != b->dtype)
        return tl_error(TL_EFORMAT, "%s: %s data, the nodes before it have %s", bdir,
                        b->dtype == TL_ELEM_F32 ? "float32" : "uint8",
                        a->dtype == TL_ELEM_F32 ? "float32" : "uint8");
    if (ra != rb || memcmp(sa, sb, sizeof sa) != 0)
        return tl_error(TL_EFORMAT, "%s: samples of %ux%u, the nodes before it have %ux%u", bdir,
                        b->rows, b->cols, a->rows, a->cols);
    if (!same_names(a, b))
        return tl_error(TL_EFORMAT,
                        "%s: its class names (" NAMES_FILE ") are not those of the nodes before it",
                        bdir);
    const size_t es = elsize(a);
    uint8_t *im = realloc(a->dtype == TL_ELEM_F32 ? (void *)a->feats : (void *)a->images,
                          (a->n + b->n) * a->dim * es);
    if (!im) return tl_error(TL_ENOMEM, "%s: out of memory", bdir);
    if (a->dtype == TL_ELEM_F32) a->feats = (float *)im;
    else a->images = im;
    uint8_t *lb = realloc(a->labels, a->n + b->n);
    if (!lb) return tl_error(TL_ENOMEM, "%s: out of memory", bdir);
    a->labels = lb;
    memcpy(im + a->n * a->dim * es, samples(b), b->n * b->dim * es);
    memcpy(a->labels + a->n, b->labels, b->n);
    a->n += b->n;
    if (b->classes > a->classes) a->classes = b->classes;
    return 0;
}

/* Contract in dataset.h. */
int tl_dataset_open(const char *path, const char *split, const tl_dataset_opts *o,
                    tl_dataset *out) {
    char sub[4096];
    memset(out, 0, sizeof *out);
    if (is_kind(path, 0)) return load_csv(path, o, out);
    snprintf(sub, sizeof sub, "%s/node-1", path);
    if (!is_kind(sub, 1)) return load_one(path, split, out);
    /* a partition directory: node-1, node-2, ... concatenated in node order,
     * the order of a distributed run's global index space */
    int rc = 0;
    for (int k = 1;; k++) {
        snprintf(sub, sizeof sub, "%s/node-%d", path, k);
        if (!is_kind(sub, 1)) break;
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

/* Contract in dataset.h. */
int tl_dataset_load(const char *dir, const char *split, tl_dataset *out) {
    return tl_dataset_open(dir, split, NULL, out);
}

/* Contract in dataset.h. */
int tl_dataset_has_split(const char *path, const char *split) {
    char p[4200];
    if (is_kind(path, 0)) return strcmp(split, "train") == 0;
    snprintf(p, sizeof p, "%s/node-1", path);
    const char *dir = is_kind(p, 1) ? p : path;
    char q[4400];
    snprintf(q, sizeof q, "%s/%s/x.npy", dir, split);
    if (is_kind(q, 0)) return 1;
    snprintf(q, sizeof q, "%s/x.npy", dir);
    if (is_kind(q, 0)) return strcmp(split, "train") == 0;
    snprintf(q, sizeof q, "%s/%s-images-idx3-ubyte.gz", dir, split);
    if (is_kind(q, 0)) return 1;
    q[strlen(q) - 3] = '\0';
    return is_kind(q, 0);
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

/* Writes d's class names as dir/classes.txt, one a line in class order, each
 * ended by '\n' (atomically); without names, removes a classes.txt left
 * there, which would name another data set's classes. TL_EINVAL for a name
 * holding a newline; TL_EIO; TL_ENOMEM. */
static int save_names(const char *dir, const tl_dataset *d) {
    char path[4200];
    snprintf(path, sizeof path, "%s/" NAMES_FILE, dir);
    if (!d->class_names) {
        if (unlink(path) < 0 && errno != ENOENT)
            return tl_error(TL_EIO, "%s: cannot remove: %s", path, strerror(errno));
        return 0;
    }
    size_t len = 0;
    for (int c = 0; c < d->classes; c++) {
        if (strchr(d->class_names[c], '\n'))
            return tl_error(TL_EINVAL, "%s: class name %d holds a newline", path, c);
        len += strlen(d->class_names[c]) + 1;
    }
    char *text = malloc(len ? len : 1), *p = text;
    if (!text) return tl_error(TL_ENOMEM, "out of memory");
    for (int c = 0; c < d->classes; c++) {
        size_t l = strlen(d->class_names[c]);
        memcpy(p, d->class_names[c], l);
        p[l] = '\n';
        p += l + 1;
    }
    int rc = tl_file_write_atomic(path, text, len, 0644, 0);
    free(text);
    return rc;
}

/* Writes d as x.npy / y.npy (and its class names, classes.txt) into dir (made if missing). */
static int save_npy(const char *dir, const tl_dataset *d) {
    uint32_t sh[3];
    int rank = shape_of(d, sh), rc;
    uint64_t xshape[4] = {d->n, sh[0], sh[1], sh[2]}, yshape[1] = {d->n};
    if ((rc = make_dirs(dir)) < 0) return rc;
    size_t len = strlen(dir) + 16;
    char *path = malloc(len);
    if (!path) return tl_error(TL_ENOMEM, "out of memory");
    snprintf(path, len, "%s/x.npy", dir);
    rc = tl_npy_write(path, d->dtype == TL_ELEM_F32 ? TL_NPY_F32 : TL_NPY_U8, 1 + rank, xshape,
                      samples(d));
    if (rc == 0) {
        snprintf(path, len, "%s/y.npy", dir);
        rc = tl_npy_write(path, TL_NPY_U8, 1, yshape, d->labels);
    }
    free(path);
    return rc == 0 ? save_names(dir, d) : rc;
}

/* Contract in dataset.h. */
int tl_dataset_save(const char *dir, const char *split, const tl_dataset *d) {
    uint32_t sh[3];
    int rank = shape_of(d, sh);
    size_t dim = 1;
    for (int i = 0; i < rank; i++) dim *= sh[i];
    if (d->n == 0 || d->n > UINT32_MAX || d->rows == 0 || d->cols == 0 || dim == 0 ||
        (size_t)d->rows * d->cols != d->dim || dim != d->dim || !samples(d))
        return tl_error(TL_EINVAL, "%s: cannot save a data set of %zu samples of %ux%u", dir, d->n,
                        d->rows, d->cols);
    if (!is_idx_kind(d)) {
        if (strcmp(split, "train") == 0) return save_npy(dir, d);
        size_t len = strlen(dir) + strlen(split) + 2;
        char *sub = malloc(len);
        if (!sub) return tl_error(TL_ENOMEM, "out of memory");
        snprintf(sub, len, "%s/%s", dir, split);
        int rc = save_npy(sub, d);
        free(sub);
        return rc;
    }
    int rc = make_dirs(dir);
    if (rc < 0) return rc;
    size_t len = strlen(dir) + strlen(split) + 40;
    char *path = malloc(len);
    if (!path) return tl_error(TL_ENOMEM, "out of memory");
    tl_idx im = {.rank = 3,
                 .dims = {(uint32_t)d->n, d->rows, d->cols},
                 .count = d->n * d->dim,
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

/* Copies classes strings into *out (NULL when names is NULL). */
static int copy_names(char **names, int classes, char ***out) {
    *out = NULL;
    if (!names) return 0;
    char **c = calloc((size_t)classes, sizeof *c);
    if (!c) return tl_error(TL_ENOMEM, "out of memory for class names");
    for (int i = 0; i < classes; i++) {
        if (!(c[i] = strdup(names[i]))) {
            for (int j = 0; j < i; j++) free(c[j]);
            free(c);
            return tl_error(TL_ENOMEM, "out of memory for class names");
        }
    }
    *out = c;
    return 0;
}

/* Contract in dataset.h. */
int tl_dataset_subset(const tl_dataset *src, const size_t *rows, size_t n, tl_dataset *out) {
    memset(out, 0, sizeof *out);
    if (n == 0) return tl_error(TL_EINVAL, "a data set subset needs at least one row");
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= src->n)
            return tl_error(TL_EINVAL, "subset row %zu out of range (data set has %zu)", rows[i],
                            src->n);
    const size_t es = elsize(src), row = src->dim * es;
    if (n > SIZE_MAX / (row ? row : 1))
        return tl_error(TL_ERANGE, "subset of %zu rows too large", n);
    uint8_t *buf = malloc(n * row > 0 ? n * row : 1);
    if (src->dtype == TL_ELEM_F32) out->feats = (float *)buf;
    else out->images = buf;
    out->labels = malloc(n);
    if (!buf || !out->labels || copy_names(src->class_names, src->classes, &out->class_names) < 0) {
        tl_dataset_free(out);
        return tl_error(TL_ENOMEM, "out of memory for a subset of %zu rows", n);
    }
    const uint8_t *from = samples(src);
    for (size_t i = 0; i < n; i++) {
        memcpy(buf + i * row, from + rows[i] * row, row);
        out->labels[i] = src->labels[rows[i]];
    }
    out->n = n;
    out->dim = src->dim;
    out->rows = src->rows;
    out->cols = src->cols;
    out->dtype = src->dtype;
    out->rank = src->rank;
    memcpy(out->shape, src->shape, sizeof out->shape);
    out->classes = src->class_names ? src->classes : count_classes(out->labels, n);
    return 0;
}

/* Contract in dataset.h. */
int tl_dataset_split(const tl_dataset *d, double fraction, uint32_t seed, tl_dataset *train,
                     tl_dataset *test) {
    memset(train, 0, sizeof *train);
    memset(test, 0, sizeof *test);
    if (!(fraction > 0.0 && fraction < 1.0))
        return tl_error(TL_EINVAL, "held-out fraction %g is not in (0, 1)", fraction);
    size_t n = d->n, start[TL_DATASET_MAX_CLASSES + 1] = {0}, n_test = 0;
    uint64_t *order = malloc((n ? n : 1) * sizeof *order);
    uint8_t *to_test = calloc(n ? n : 1, 1);
    size_t *tr = malloc((n ? n : 1) * sizeof *tr), *te = malloc((n ? n : 1) * sizeof *te);
    int rc = 0;
    if (!order || !to_test || !tr || !te) {
        rc = tl_error(TL_ENOMEM, "out of memory splitting %zu rows", n);
        goto cleanup;
    }
    /* rows grouped by class, ascending within a class (a counting sort) */
    for (size_t r = 0; r < n; r++) start[d->labels[r] + 1]++;
    for (int c = 0; c < TL_DATASET_MAX_CLASSES; c++) start[c + 1] += start[c];
    size_t pos[TL_DATASET_MAX_CLASSES];
    memcpy(pos, start, sizeof pos);
    for (size_t r = 0; r < n; r++) order[pos[d->labels[r]]++] = r;
    tl_rng rng;
    tl_rng_seed(&rng, seed);
    for (int c = 0; c < TL_DATASET_MAX_CLASSES; c++) {
        size_t nc = start[c + 1] - start[c];
        if (nc == 0) continue;
        tl_rng_shuffle(&rng, order + start[c], nc);
        size_t k = (size_t)((double)nc * fraction + 0.5);
        for (size_t i = 0; i < k && i < nc; i++) to_test[order[start[c] + i]] = 1;
    }
    size_t n_train = 0;
    for (size_t r = 0; r < n; r++) {
        if (to_test[r]) te[n_test++] = r;
        else tr[n_train++] = r;
    }
    if (n_test == 0 || n_train == 0) {
        rc = tl_error(TL_EINVAL, "holding out %g of %zu rows leaves %s empty", fraction, n,
                      n_test == 0 ? "the test set" : "the training set");
        goto cleanup;
    }
    if ((rc = tl_dataset_subset(d, tr, n_train, train)) < 0) goto cleanup;
    rc = tl_dataset_subset(d, te, n_test, test);
cleanup:
    if (rc < 0) tl_dataset_free(train), tl_dataset_free(test);
    free(order);
    free(to_test);
    free(tr);
    free(te);
    return rc;
}

/* Contract in dataset.h. */
void tl_dataset_gather(const tl_dataset *d, const size_t *rows, size_t n, float mean, float std,
                       float *x, int32_t *y) {
    tl_norm nm = {.kind = TL_NORM_SCALAR, .mean = mean, .std = std};
    tl_dataset_gather_norm(d, rows, n, &nm, x, y);
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
    tl_le_store64(head, n);
    tl_le_store32(head + 8, d->rows);
    tl_le_store32(head + 12, d->cols);
    uint64_t h = fnv1a(FNV_OFFSET, head, sizeof head);
    h = fnv1a(h, d->labels, d->n);
    if (is_idx_kind(d)) return fnv1a(h, d->images, d->n * d->dim);
    uint32_t sh[3];
    uint8_t more[14] = {(uint8_t)d->dtype, (uint8_t)shape_of(d, sh)};
    for (int k = 0; k < 3; k++) tl_le_store32(more + 2 + 4 * k, sh[k]);
    h = fnv1a(h, more, sizeof more);
    return fnv1a(h, samples(d), d->n * d->dim * elsize(d)); /* little-endian host (npy.c) */
}

/* Contract in dataset.h. */
void tl_dataset_free(tl_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    free(d->feats);
    if (d->class_names)
        for (int i = 0; i < d->classes; i++) free(d->class_names[i]);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}
