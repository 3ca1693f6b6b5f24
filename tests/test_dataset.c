/* test_dataset.c - MNIST-layout data sets: load/save, error paths, gather
 * numerics, subset, fingerprint, and the real Fashion-MNIST if installed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/idx.h"
#include "tl/norm.h"
#include "tl/npy.h"

#include "harness.h"

/* A small data set: n images of r x c, pixel (i*13 + j*7) & 255, label i % 3. */
static tl_dataset make_ds(size_t n, uint32_t r, uint32_t c) {
    tl_dataset d = {.n = n, .rows = r, .cols = c, .dim = (size_t)r * c};
    d.images = malloc(n * d.dim);
    d.labels = malloc(n);
    for (size_t i = 0; i < n; i++) {
        d.labels[i] = (uint8_t)(i % 3);
        for (size_t j = 0; j < d.dim; j++)
            d.images[i * d.dim + j] = (uint8_t)((i * 13 + j * 7) & 255);
    }
    d.classes = n >= 3 ? 3 : (int)n;
    return d;
}

/* Writes one IDX file (raw or gz) of the given shape, bytes i & 255. */
static void put_idx(const char *path, int rank, const uint32_t *dims, int gz) {
    tl_idx t = {.rank = rank, .count = 1};
    for (int i = 0; i < rank; i++) t.dims[i] = dims[i], t.count *= dims[i];
    t.data = malloc(t.count);
    for (size_t i = 0; i < t.count; i++) t.data[i] = (uint8_t)(i % 5);
    assert_int_equal(tl_idx_write(path, &t, gz), 0);
    tl_idx_free(&t);
}

static void assert_same(const tl_dataset *a, const tl_dataset *b) {
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->classes, b->classes);
    assert_memory_equal(a->images, b->images, a->n * a->dim);
    assert_memory_equal(a->labels, b->labels, a->n);
}

static void test_save_load(void **state) {
    tl_dataset d = make_ds(7, 3, 4), e;
    const char *dir = tpath("a/b/c"); /* parents created */
    assert_int_equal(tl_dataset_save(dir, "train", &d), 0);
    assert_int_equal(tl_dataset_load(dir, "train", &e), 0);
    assert_same(&d, &e);
    assert_int_equal(tl_dataset_fingerprint(&d), tl_dataset_fingerprint(&e));
    assert_int_equal(tl_dataset_has_split(dir, "train"), 1);
    assert_int_equal(tl_dataset_has_split(dir, "t10k"), 0);
    tl_dataset_free(&e);
    /* saving again over an existing directory works */
    assert_int_equal(tl_dataset_save(dir, "t10k", &d), 0);
    assert_int_equal(tl_dataset_load(dir, "t10k", &e), 0);
    assert_same(&d, &e);
    tl_dataset_free(&e);
    tl_dataset_free(&e); /* twice is safe */
    tl_dataset_free(NULL);
    tl_dataset_free(&d);
}

static void test_load_raw(void **state) {
    const char *dir = tpath("raw");
    mkdir(dir, 0777);
    char p[300];
    uint32_t di[3] = {4, 2, 2}, dl[1] = {4};
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", dir);
    put_idx(p, 3, di, 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", dir);
    put_idx(p, 1, dl, 0);
    tl_dataset d;
    assert_int_equal(tl_dataset_load(dir, "train", &d), 0);
    assert_int_equal(d.n, 4);
    assert_int_equal(d.dim, 4);
    assert_int_equal(d.classes, 4); /* labels 0,1,2,3 */
    assert_int_equal(d.images[5], 0);
    tl_dataset_free(&d);
    /* the .gz file wins when both exist */
    uint32_t dl2[1] = {4};
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    put_idx(p, 1, dl2, 1);
    assert_int_equal(tl_dataset_load(dir, "train", &d), 0);
    tl_dataset_free(&d);
}

static void test_load_errors(void **state) {
    const char *dir = tpath("bad");
    mkdir(dir, 0777);
    char im[300], lb[300];
    tl_dataset d;
    /* nothing there: names the image path tried */
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EIO);
    assert_null(d.images);
    snprintf(im, sizeof im, "%s/train-images-idx3-ubyte", dir);
    assert_non_null(strstr(tl_errmsg(), im));

    /* images only: the label file is missing */
    uint32_t di[3] = {5, 2, 2};
    snprintf(im, sizeof im, "%s/train-images-idx3-ubyte.gz", dir);
    put_idx(im, 3, di, 1);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EIO);
    snprintf(lb, sizeof lb, "%s/train-labels-idx1-ubyte", dir);
    assert_non_null(strstr(tl_errmsg(), lb));
    assert_null(d.images);

    /* count mismatch */
    uint32_t dl[1] = {4};
    snprintf(lb, sizeof lb, "%s/train-labels-idx1-ubyte.gz", dir);
    put_idx(lb, 1, dl, 1);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), lb));
    assert_null(d.images);
    assert_null(d.labels);

    /* labels of rank 2 */
    uint32_t dl2[2] = {5, 1};
    put_idx(lb, 2, dl2, 1);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), lb));

    /* images of rank 2 */
    uint32_t di2[2] = {5, 4};
    put_idx(im, 2, di2, 1);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), im));

    /* a corrupt image file: the idx error comes through, naming it */
    FILE *f = fopen(im, "wb");
    fputs("\x1f\x8bnot really gzip", f);
    fclose(f);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), im));
}

static void test_gather(void **state) {
    tl_dataset d = make_ds(6, 16, 16); /* 256 pixels: every byte value appears */
    const float mean = 0.1307f, std = 0.3081f;
    size_t rows[3] = {4, 0, 4};
    float *x = malloc(3 * d.dim * sizeof *x);
    int32_t y[3];
    tl_dataset_gather(&d, rows, 3, mean, std, x, y);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(y[i], d.labels[rows[i]]);
        for (size_t j = 0; j < d.dim; j++) {
            /* the float32 expression, one rounding per operation */
            volatile float v = (float)d.images[rows[i] * d.dim + j];
            v = v / 255.0f;
            v = v - mean;
            v = v / std;
            float got = x[i * d.dim + j];
            assert_memory_equal(&got, (const void *)&v, sizeof(float));
        }
    }
    /* known endpoints */
    volatile float lo = (0.0f - mean) / std, hi = (1.0f - mean) / std;
    tl_dataset_gather(&d, NULL, 1, mean, std, x, NULL); /* rows NULL: 0..n-1 */
    for (size_t j = 0; j < d.dim; j++) {
        if (d.images[j] == 0) assert_true(x[j] == lo);
        if (d.images[j] == 255) assert_true(x[j] == hi);
    }
    /* identity normalization gives byte/255 */
    tl_dataset_gather(&d, rows + 1, 1, 0.0f, 1.0f, x, NULL);
    for (size_t j = 0; j < d.dim; j++) assert_true(x[j] == (float)d.images[j] / 255.0f);
    free(x);
    tl_dataset_free(&d);
}

static void test_subset(void **state) {
    tl_dataset d = make_ds(10, 2, 3), s;
    size_t rows[4] = {9, 3, 3, 6};
    assert_int_equal(tl_dataset_subset(&d, rows, 4, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.dim, 6);
    assert_int_equal(s.rows, 2);
    assert_int_equal(s.cols, 3);
    assert_int_equal(s.classes, 1); /* labels 9%3, 3%3, ... are all 0 */
    for (int i = 0; i < 4; i++) {
        assert_memory_equal(s.images + i * 6, d.images + rows[i] * 6, 6);
        assert_int_equal(s.labels[i], d.labels[rows[i]]);
    }
    tl_dataset_free(&s);
    size_t bad[2] = {1, 10};
    assert_int_equal(tl_dataset_subset(&d, bad, 2, &s), TL_EINVAL);
    assert_null(s.images);
    assert_int_equal(tl_dataset_subset(&d, rows, 0, &s), TL_EINVAL);
    tl_dataset_free(&d);
}

static void test_fingerprint(void **state) {
    tl_dataset d = make_ds(5, 4, 4);
    uint64_t f0 = tl_dataset_fingerprint(&d);
    assert_true(f0 == tl_dataset_fingerprint(&d));
    d.images[37] ^= 1;
    uint64_t f1 = tl_dataset_fingerprint(&d);
    assert_true(f1 != f0);
    d.images[37] ^= 1;
    assert_true(tl_dataset_fingerprint(&d) == f0);
    d.labels[4] ^= 1;
    assert_true(tl_dataset_fingerprint(&d) != f0);
    d.labels[4] ^= 1;
    d.rows = 2, d.cols = 8; /* same bytes, other shape */
    assert_true(tl_dataset_fingerprint(&d) != f0);
    d.rows = 4, d.cols = 4;
    /* FNV-1a 64 of a known input: a 1-sample 1x1 data set, label 0, pixel 0 */
    tl_dataset one = make_ds(1, 1, 1);
    uint8_t bytes[18] = {1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 18; i++) h = (h ^ bytes[i]) * 0x100000001b3ull;
    assert_true(tl_dataset_fingerprint(&one) == h);
    tl_dataset_free(&one);
    tl_dataset_free(&d);
}

/* Fashion-MNIST is required (harness.h): missing, this case fails. */
static void test_fashion_mnist(void **state) {
    harness_init("test_dataset", 0, 0);
    if (require_fmnist() < 0) fail();
    tl_dataset d;
    static const struct {
        const char *split;
        size_t n;
    } want[2] = {{"train", 60000}, {"t10k", 10000}};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tl_dataset_load(fmnist_dir(), want[k].split, &d), 0);
        assert_int_equal(d.n, want[k].n);
        assert_int_equal(d.rows, 28);
        assert_int_equal(d.cols, 28);
        assert_int_equal(d.dim, 784);
        assert_int_equal(d.classes, 10);
        assert_int_equal(d.dtype, TL_ELEM_U8);
        assert_int_equal(d.rank, 3);
        assert_int_equal(d.shape[0], 1), assert_int_equal(d.shape[1], 28);
        assert_int_equal(d.shape[2], 28);
        assert_null(d.feats);
        assert_null(d.class_names);
        size_t hist[10] = {0};
        for (size_t i = 0; i < d.n; i++) hist[d.labels[i]]++;
        for (int c = 0; c < 10; c++) assert_int_equal(hist[c], want[k].n / 10); /* balanced */
        tl_dataset_free(&d);
    }
}

/* Writes text to path. */
static void put_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A float32 data set of n samples of rank 1 {f}: value (i * 7 + j * 3) % 11
 * - 4.25 (exact in float), label i % 4. */
static tl_dataset make_f32(size_t n, uint32_t f) {
    tl_dataset d = {.n = n,
                    .dim = f,
                    .rows = 1,
                    .cols = f,
                    .dtype = TL_ELEM_F32,
                    .rank = 1,
                    .shape = {f, 0, 0}};
    d.feats = malloc(n * f * sizeof *d.feats);
    d.labels = malloc(n);
    for (size_t i = 0; i < n; i++) {
        d.labels[i] = (uint8_t)(i % 4);
        for (size_t j = 0; j < f; j++) d.feats[i * f + j] = (float)((i * 7 + j * 3) % 11) - 4.25f;
    }
    d.classes = n >= 4 ? 4 : (int)n;
    return d;
}

static void assert_same_f32(const tl_dataset *a, const tl_dataset *b) {
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->cols, b->cols);
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->rank, b->rank);
    assert_memory_equal(a->shape, b->shape, sizeof a->shape);
    assert_int_equal(a->classes, b->classes);
    if (a->dtype == TL_ELEM_F32) assert_memory_equal(a->feats, b->feats, a->n * a->dim * 4);
    else assert_memory_equal(a->images, b->images, a->n * a->dim);
    assert_memory_equal(a->labels, b->labels, a->n);
}

/* A CSV file becomes float32 features of rank 1 with its class names, and a
 * standardized gather gives the hand-computed values. */
static void test_csv_source(void **state) {
    const char *path = tpath("t.csv");
    /* a: 1..4 (mean 2.5, population var 1.25); b: constant 7 (std 1);
     * c: 0 0 10 10 (mean 5, std 5); the label column named in the middle */
    put_text(path, "a,kind,b,c\n1,dog,7,0\n2,cat,7,0\n3,dog,7,10\n4,emu,7,10\n");
    tl_dataset_opts o = {.label = "kind"};
    tl_dataset d;
    assert_int_equal(tl_dataset_open(path, "train", &o, &d), 0);
    assert_int_equal(d.n, 4);
    assert_int_equal(d.dim, 3);
    assert_int_equal(d.dtype, TL_ELEM_F32);
    assert_int_equal(d.rank, 1);
    assert_int_equal(d.shape[0], 3);
    assert_int_equal(d.rows, 1), assert_int_equal(d.cols, 3);
    assert_null(d.images);
    assert_int_equal(d.classes, 3);
    assert_string_equal(d.class_names[0], "cat"); /* sorted */
    assert_string_equal(d.class_names[1], "dog");
    assert_string_equal(d.class_names[2], "emu");
    static const uint8_t want_y[4] = {1, 0, 1, 2};
    assert_memory_equal(d.labels, want_y, 4);
    /* the split is ignored for a file: "t10k" loads the same data */
    tl_dataset e;
    assert_int_equal(tl_dataset_open(path, "t10k", &o, &e), 0);
    assert_same_f32(&d, &e);
    tl_dataset_free(&e);

    tl_norm_stats st;
    tl_norm nm;
    assert_int_equal(tl_norm_stats_init(&st, d.dim), 0);
    assert_int_equal(tl_norm_stats_add(&st, &d, NULL, d.n), 0);
    assert_int_equal(tl_norm_finish(&st, &nm), 0);
    float x[12];
    int32_t y[4];
    tl_dataset_gather_norm(&d, NULL, 4, &nm, x, y);
    volatile float s_a = (float)sqrt(1.25);
    for (int i = 0; i < 4; i++) {
        volatile float a = (float)(i + 1) - 2.5f;
        a = a / s_a;
        assert_true(x[i * 3 + 0] == a);
        assert_true(x[i * 3 + 1] == 0.0f);
        assert_true(x[i * 3 + 2] == (i < 2 ? -1.0f : 1.0f));
        assert_int_equal(y[i], want_y[i]);
    }
    assert_true(nm.std_f[1] == 1.0f); /* constant feature */
    tl_norm_free(&nm);
    tl_norm_stats_free(&st);

    /* a bad cell is the reader's error, naming file, line and column */
    put_text(path, "1,2,0\n3,x,1\n");
    assert_int_equal(tl_dataset_open(path, "train", NULL, &e), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "t.csv:2:2"));
    assert_null(e.feats);
    /* header: -1 forbids one, so a text first row is a bad cell */
    put_text(path, "p,q,r\n1,2,0\n");
    tl_dataset_opts nohead = {.header = -1};
    assert_int_equal(tl_dataset_open(path, "train", &nohead, &e), TL_EFORMAT);
    assert_int_equal(tl_dataset_open(path, "train", NULL, &e), 0); /* detected */
    assert_int_equal(e.n, 1);
    tl_dataset_free(&e);
    tl_dataset_free(&d);
}

/* A NumPy directory: float32 [N, F] and uint8 [N, C, H, W], loaded as they
 * are, saved and loaded back exactly (as .npy: not one-channel images). */
static void test_npy_source(void **state) {
    const char *dir = tpath("np");
    mkdir(dir, 0777);
    char xp[300], yp[300];
    snprintf(xp, sizeof xp, "%s/x.npy", dir);
    snprintf(yp, sizeof yp, "%s/y.npy", dir);
    float xs[10] = {1.5f, -0.0f, 1e-40f, 3.25f, -7.0f, 2.0f, 0.1f, 0.2f, 0.3f, 1e30f};
    int64_t ys[5] = {2, 0, 1, 2, 9};
    uint64_t xsh[2] = {5, 2}, ysh[1] = {5};
    assert_int_equal(tl_npy_write(xp, TL_NPY_F32, 2, xsh, xs), 0);
    assert_int_equal(tl_npy_write(yp, TL_NPY_I64, 1, ysh, ys), 0);
    tl_dataset d, e;
    assert_int_equal(tl_dataset_load(dir, "train", &d), 0);
    assert_int_equal(d.n, 5);
    assert_int_equal(d.dtype, TL_ELEM_F32);
    assert_int_equal(d.rank, 1);
    assert_int_equal(d.dim, 2);
    assert_int_equal(d.classes, 10);
    assert_memory_equal(d.feats, xs, sizeof xs); /* bit for bit, -0 and subnormal too */
    assert_int_equal(d.labels[4], 9);
    assert_int_equal(tl_dataset_has_split(dir, "train"), 1);
    assert_int_equal(tl_dataset_has_split(dir, "t10k"), 0);
    /* save as t10k: dir2/t10k/x.npy; train and t10k coexist */
    const char *dir2 = tpath("np2");
    assert_int_equal(tl_dataset_save(dir2, "t10k", &d), 0);
    assert_int_equal(tl_dataset_has_split(dir2, "t10k"), 1);
    assert_int_equal(tl_dataset_load(dir2, "t10k", &e), 0);
    assert_same_f32(&d, &e);
    assert_true(tl_dataset_fingerprint(&d) == tl_dataset_fingerprint(&e));
    tl_dataset_free(&e);
    tl_dataset_free(&d);

    /* uint8 [3, 2, 2, 3]: rank 3 {2, 2, 3}, 2-D view 4 x 3 */
    uint8_t u[36];
    for (int i = 0; i < 36; i++) u[i] = (uint8_t)(i * 7);
    uint8_t yu[3] = {1, 0, 1};
    uint64_t ush[4] = {3, 2, 2, 3}, yush[1] = {3};
    assert_int_equal(tl_npy_write(xp, TL_NPY_U8, 4, ush, u), 0);
    assert_int_equal(tl_npy_write(yp, TL_NPY_U8, 1, yush, yu), 0);
    assert_int_equal(tl_dataset_load(dir, "train", &d), 0);
    assert_int_equal(d.dtype, TL_ELEM_U8);
    assert_int_equal(d.rank, 3);
    assert_int_equal(d.shape[0], 2), assert_int_equal(d.shape[1], 2);
    assert_int_equal(d.shape[2], 3);
    assert_int_equal(d.rows, 4), assert_int_equal(d.cols, 3), assert_int_equal(d.dim, 12);
    assert_memory_equal(d.images, u, 36);
    const char *dir3 = tpath("np3");
    assert_int_equal(tl_dataset_save(dir3, "train", &d), 0);
    snprintf(xp, sizeof xp, "%s/x.npy", dir3);
    assert_int_equal(access(xp, F_OK), 0); /* not IDX: two channels */
    assert_int_equal(tl_dataset_load(dir3, "train", &e), 0);
    assert_same_f32(&d, &e);
    tl_dataset_free(&e);
    tl_dataset_free(&d);

    /* a rejection comes through naming the file */
    float nan_x[2] = {1.0f, NAN};
    uint64_t nsh[2] = {1, 2}, nysh[1] = {1};
    snprintf(xp, sizeof xp, "%s/x.npy", dir);
    assert_int_equal(tl_npy_write(xp, TL_NPY_F32, 2, nsh, nan_x), 0);
    assert_int_equal(tl_npy_write(yp, TL_NPY_U8, 1, nysh, yu), 0);
    assert_int_equal(tl_dataset_load(dir, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), xp));
    assert_null(d.feats);
    /* the .npy file itself, not its directory: refused, saying so */
    assert_int_equal(tl_dataset_load(xp, "train", &d), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "directory that holds x.npy"));
}

/* Subset and fingerprint of float32 data. */
static void test_f32_subset_fingerprint(void **state) {
    tl_dataset d = make_f32(9, 6), s;
    size_t rows[3] = {8, 2, 8};
    assert_int_equal(tl_dataset_subset(&d, rows, 3, &s), 0);
    assert_int_equal(s.dtype, TL_ELEM_F32);
    assert_int_equal(s.rank, 1);
    assert_int_equal(s.shape[0], 6);
    assert_null(s.images);
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(s.feats + i * 6, d.feats + rows[i] * 6, 6 * sizeof(float));
        assert_int_equal(s.labels[i], d.labels[rows[i]]);
    }
    tl_dataset_free(&s);

    uint64_t f0 = tl_dataset_fingerprint(&d);
    assert_true(f0 == tl_dataset_fingerprint(&d));
    uint32_t bits;
    memcpy(&bits, &d.feats[31], 4);
    bits ^= 1; /* one ulp */
    memcpy(&d.feats[31], &bits, 4);
    assert_true(tl_dataset_fingerprint(&d) != f0);
    bits ^= 1;
    memcpy(&d.feats[31], &bits, 4);
    assert_true(tl_dataset_fingerprint(&d) == f0);
    /* same floats, sample shape 1 x 2 x 3 instead of 6 features */
    d.rank = 3, d.shape[0] = 1, d.shape[1] = 2, d.shape[2] = 3;
    assert_true(tl_dataset_fingerprint(&d) != f0);
    d.rank = 1, d.shape[0] = 6, d.shape[1] = d.shape[2] = 0;
    assert_true(tl_dataset_fingerprint(&d) == f0);
    /* the same bytes as uint8 data are another data set */
    tl_dataset u = {.n = 1, .dim = 4, .rows = 1, .cols = 4, .rank = 1, .shape = {4}};
    tl_dataset g = {
        .n = 1, .dim = 1, .rows = 1, .cols = 1, .rank = 1, .shape = {1}, .dtype = TL_ELEM_F32};
    float one = 1.0f;
    uint8_t lab = 0;
    u.images = (uint8_t *)&one, g.feats = &one, u.labels = g.labels = &lab;
    assert_true(tl_dataset_fingerprint(&u) != tl_dataset_fingerprint(&g));
    tl_dataset_free(&d);
}

/* tl_dataset_split: deterministic, disjoint, complete, stratified. */
static void test_split(void **state) {
    tl_dataset d = make_f32(103, 3), tr, te, tr2, te2;
    assert_int_equal(tl_dataset_split(&d, 0.2, 5, &tr, &te), 0);
    /* per class (26, 26, 26, 25 rows): round(0.2 * n_c) = 5 each -> 20 */
    assert_int_equal(te.n, 20);
    assert_int_equal(tr.n, 83);
    int cnt[4] = {0};
    for (size_t i = 0; i < te.n; i++) cnt[te.labels[i]]++;
    for (int c = 0; c < 4; c++) assert_int_equal(cnt[c], 5);
    /* each row exactly once (rows equal in features and label are interchangeable:
     * matched greedily) */
    uint8_t seen[103] = {0};
    const tl_dataset *parts[2] = {&tr, &te};
    for (int p = 0; p < 2; p++)
        for (size_t i = 0; i < parts[p]->n; i++) {
            int hit = -1;
            for (size_t r = 0; r < 103; r++)
                if (!seen[r] && d.labels[r] == parts[p]->labels[i] &&
                    memcmp(d.feats + r * 3, parts[p]->feats + i * 3, 12) == 0) {
                    hit = (int)r;
                    break;
                }
            assert_true(hit >= 0);
            seen[hit] = 1;
        }
    for (int r = 0; r < 103; r++) assert_int_equal(seen[r], 1);
    /* same seed: the same split; another seed: another */
    assert_int_equal(tl_dataset_split(&d, 0.2, 5, &tr2, &te2), 0);
    assert_same_f32(&te, &te2);
    assert_same_f32(&tr, &tr2);
    tl_dataset_free(&tr2), tl_dataset_free(&te2);
    assert_int_equal(tl_dataset_split(&d, 0.2, 6, &tr2, &te2), 0);
    assert_int_equal(te2.n, 20);
    assert_memory_not_equal(te.feats, te2.feats, 20 * 3 * sizeof(float));
    tl_dataset_free(&tr2), tl_dataset_free(&te2);
    tl_dataset_free(&tr), tl_dataset_free(&te);
    /* bad fractions, and a side left empty */
    assert_int_equal(tl_dataset_split(&d, 0.0, 1, &tr, &te), TL_EINVAL);
    assert_int_equal(tl_dataset_split(&d, 1.0, 1, &tr, &te), TL_EINVAL);
    assert_int_equal(tl_dataset_split(&d, NAN, 1, &tr, &te), TL_EINVAL);
    assert_int_equal(tl_dataset_split(&d, 0.001, 1, &tr, &te), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(), "test set"));
    assert_null(tr.feats), assert_null(te.feats);
    /* uint8 images split too */
    tl_dataset u = make_ds(30, 2, 2);
    assert_int_equal(tl_dataset_split(&u, 0.5, 1, &tr, &te), 0);
    assert_int_equal(tr.n + te.n, 30);
    assert_int_equal(te.n, 15);
    tl_dataset_free(&tr), tl_dataset_free(&te);
    tl_dataset_free(&u);
    tl_dataset_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_load),     cmocka_unit_test(test_load_raw),
        cmocka_unit_test(test_load_errors),   cmocka_unit_test(test_gather),
        cmocka_unit_test(test_subset),        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fashion_mnist), cmocka_unit_test(test_csv_source),
        cmocka_unit_test(test_npy_source),    cmocka_unit_test(test_f32_subset_fingerprint),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
