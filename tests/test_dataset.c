/* test_dataset.c - MNIST-layout data sets: load/save, error paths, gather
 * numerics, subset, fingerprint, and the real Fashion-MNIST if installed. */
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

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char tmpdir[64];

static int setup_all(void **state) {
    strcpy(tmpdir, "/tmp/tl_test_dataset_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_all(void **state) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* "<tmpdir>/<name>" in one of a few rotating static buffers. */
static const char *tpath(const char *name) {
    static char p[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* A small data set: n images of r x c, pixel (i*13 + j*7) & 255, label i % 3. */
static tl_dataset make_ds(size_t n, uint32_t r, uint32_t c) {
    tl_dataset d = {.n = n, .rows = r, .cols = c, .dim = (size_t)r * c};
    d.images = malloc(n * d.dim);
    d.labels = malloc(n);
    for (size_t i = 0; i < n; i++) {
        d.labels[i] = (uint8_t)(i % 3);
        for (size_t j = 0; j < d.dim; j++) d.images[i * d.dim + j] = (uint8_t)((i * 13 + j * 7) & 255);
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

static void test_fashion_mnist(void **state) {
    if (access(FMNIST "/train-images-idx3-ubyte.gz", R_OK) != 0) skip();
    tl_dataset d;
    static const struct { const char *split; size_t n; } want[2] = {{"train", 60000}, {"t10k", 10000}};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tl_dataset_load(FMNIST, want[k].split, &d), 0);
        assert_int_equal(d.n, want[k].n);
        assert_int_equal(d.rows, 28);
        assert_int_equal(d.cols, 28);
        assert_int_equal(d.dim, 784);
        assert_int_equal(d.classes, 10);
        size_t hist[10] = {0};
        for (size_t i = 0; i < d.n; i++) hist[d.labels[i]]++;
        for (int c = 0; c < 10; c++) assert_int_equal(hist[c], want[k].n / 10); /* balanced */
        tl_dataset_free(&d);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_load_raw),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_subset),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
