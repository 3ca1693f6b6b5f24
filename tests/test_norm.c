/* test_norm.c - the normalization descriptor: parsing, per-feature statistics
 * (add, combine over partitions, finish), and the gather that applies it,
 * bit-identical to tl_dataset_gather in the scalar case. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/norm.h"
#include "tl/rng.h"

/* n float32 samples of f features, value(i, j); label i % 3. */
static tl_dataset make_f32(size_t n, size_t f, float (*value)(size_t, size_t)) {
    tl_dataset d = {.n = n,
                    .dim = f,
                    .rows = 1,
                    .cols = (uint32_t)f,
                    .dtype = TL_ELEM_F32,
                    .rank = 1,
                    .shape = {(uint32_t)f},
                    .classes = 3};
    d.feats = malloc(n * f * sizeof *d.feats);
    d.labels = malloc(n);
    for (size_t i = 0; i < n; i++) {
        d.labels[i] = (uint8_t)(i % 3);
        for (size_t j = 0; j < f; j++) d.feats[i * f + j] = value(i, j);
    }
    return d;
}

static float small_int(size_t i, size_t j) { return (float)((int)((i * 31 + j * 17) % 23) - 11); }

static tl_rng g_rng;
static float random_real(size_t i, size_t j) {
    /* wide range, far from zero mean in feature 0 */
    float u = tl_rng_uniform(&g_rng, -1.0f, 1.0f);
    return j == 0 ? 1000.0f + u : u * (float)(j * j + 1) * 37.5f;
}

static void test_parse(void **state) {
    tl_norm n;
    assert_int_equal(tl_norm_parse("none", &n), 0);
    assert_int_equal(n.kind, TL_NORM_NONE);
    assert_int_equal(tl_norm_parse("standardize", &n), 0);
    assert_int_equal(n.kind, TL_NORM_FEATURE);
    assert_int_equal(n.dim, 0);
    assert_int_equal(tl_norm_parse("0.1307,0.3081", &n), 0);
    assert_int_equal(n.kind, TL_NORM_SCALAR);
    assert_true(n.mean == 0.1307f && n.std == 0.3081f);
    static const char *bad[] = {"",      "standard", "0.5",   "0.5,", "0.5,0",    "0.5,-1",
                                "nan,1", "1,inf",    "1,2,3", "1;2",  "0.5,1e-50"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tl_norm_parse(bad[i], &n), TL_EINVAL);
        assert_non_null(strstr(tl_errmsg(), "MEAN,STD"));
    }
}

/* Stats of the whole == the sum of the stats of 3 partitions: exactly for
 * small integers (every partial sum is exact in double), within 1e-12
 * relative for arbitrary floats. */
static void test_combine(void **state) {
    for (int kind = 0; kind < 2; kind++) {
        tl_rng_seed(&g_rng, 11);
        tl_dataset d = make_f32(301, 4, kind == 0 ? small_int : random_real);
        tl_norm_stats whole, part[3], total;
        assert_int_equal(tl_norm_stats_init(&whole, 4), 0);
        assert_int_equal(tl_norm_stats_add(&whole, &d, NULL, d.n), 0);
        /* three partitions of different sizes: rows 0..99, then the odd and
         * the even rows of 100..300 */
        size_t *rows = malloc(d.n * sizeof *rows), cnt[3] = {0};
        for (int p = 0; p < 3; p++) {
            size_t k = 0;
            for (size_t i = 0; i < d.n; i++)
                if (p == 0 ? i < 100 : i >= 100 && (int)(i % 2) == p - 1) rows[k++] = i;
            cnt[p] = k;
            assert_int_equal(tl_norm_stats_init(&part[p], 4), 0);
            assert_int_equal(tl_norm_stats_add(&part[p], &d, rows, k), 0);
        }
        assert_int_equal(cnt[0] + cnt[1] + cnt[2], d.n);
        assert_int_equal(tl_norm_stats_init(&total, 4), 0);
        for (int p = 2; p >= 0; p--) assert_int_equal(tl_norm_stats_combine(&total, &part[p]), 0);
        assert_int_equal(total.count, whole.count);
        for (int j = 0; j < 4; j++) {
            if (kind == 0) {
                assert_true(total.sum[j] == whole.sum[j]);
                assert_true(total.sumsq[j] == whole.sumsq[j]);
            } else {
                assert_true(fabs(total.sum[j] - whole.sum[j]) <= 1e-12 * fabs(whole.sum[j]));
                assert_true(fabs(total.sumsq[j] - whole.sumsq[j]) <= 1e-12 * whole.sumsq[j]);
            }
        }
        /* finish: population mean / std against a two-pass computation */
        tl_norm nm;
        assert_int_equal(tl_norm_finish(&total, &nm), 0);
        assert_int_equal(nm.kind, TL_NORM_FEATURE);
        assert_int_equal(nm.dim, 4);
        for (int j = 0; j < 4; j++) {
            double m = 0, v = 0;
            for (size_t i = 0; i < d.n; i++) m += d.feats[i * 4 + j];
            m /= (double)d.n;
            for (size_t i = 0; i < d.n; i++) {
                double e = d.feats[i * 4 + j] - m;
                v += e * e;
            }
            v /= (double)d.n; /* population, not n - 1 */
            assert_true(fabs(nm.mean_f[j] - m) <= 1e-6 * (fabs(m) + 1e-30));
            assert_true(fabs(nm.std_f[j] - sqrt(v)) <= 1e-5 * sqrt(v));
        }
        tl_norm_free(&nm);
        tl_norm_free(&nm); /* twice is safe */
        for (int p = 0; p < 3; p++) tl_norm_stats_free(&part[p]);
        tl_norm_stats_free(&total);
        tl_norm_stats_free(&whole);
        free(rows);
        tl_dataset_free(&d);
    }
    /* mismatched dims, no rows */
    tl_norm_stats a, b;
    tl_norm nm;
    assert_int_equal(tl_norm_stats_init(&a, 3), 0);
    assert_int_equal(tl_norm_stats_init(&b, 4), 0);
    assert_int_equal(tl_norm_stats_combine(&a, &b), TL_EINVAL);
    assert_int_equal(tl_norm_finish(&a, &nm), TL_EINVAL);
    assert_null(nm.mean_f);
    tl_dataset d = make_f32(2, 4, small_int);
    assert_int_equal(tl_norm_stats_add(&a, &d, NULL, 2), TL_EINVAL);
    tl_norm_stats c;
    assert_int_equal(tl_norm_stats_init(&c, 0), TL_EINVAL);
    tl_norm_stats_free(&a);
    tl_norm_stats_free(&b);
    tl_norm_stats_free(NULL);
    tl_dataset_free(&d);
}

static float constant_ish(size_t i, size_t j) {
    /* 0.1f and 3.3e7f + 0.1: sums that round; then 0,1,0,1,... */
    return j == 0 ? 0.1f : j == 1 ? 3.3e7f + 0.1f : (float)(i % 2);
}

/* A constant feature gets std 1 (zero variance, or within rounding of it). */
static void test_constant(void **state) {
    tl_dataset d = make_f32(100001, 3, constant_ish);
    tl_norm_stats s;
    tl_norm nm;
    assert_int_equal(tl_norm_stats_init(&s, 3), 0);
    assert_int_equal(tl_norm_stats_add(&s, &d, NULL, d.n), 0);
    assert_int_equal(tl_norm_finish(&s, &nm), 0);
    assert_true(nm.std_f[0] == 1.0f);
    assert_true(nm.std_f[1] == 1.0f);
    assert_true(nm.mean_f[0] == 0.1f && nm.mean_f[1] == 3.3e7f + 0.1f);
    assert_true(fabsf(nm.std_f[2] - 0.5f) < 1e-3f); /* 0,1,0,1,...: about 0.5 */
    float x[3];
    tl_dataset_gather_norm(&d, NULL, 1, &nm, x, NULL);
    assert_true(x[0] == 0.0f && x[1] == 0.0f);
    tl_norm_free(&nm);
    /* a non-finite sum (float32 values cannot overflow a double's sum of
     * squares, so force one) is refused */
    s.sum[2] = INFINITY;
    assert_int_equal(tl_norm_finish(&s, &nm), TL_ENUMERIC);
    tl_norm_stats_free(&s);
    tl_dataset_free(&d);
}

/* Scalar normalization of uint8 images is tl_dataset_gather, bit for bit,
 * for every byte value; NONE is byte/255; FEATURE uses each feature's pair. */
static void test_gather_u8(void **state) {
    tl_dataset d = {.n = 2, .dim = 256, .rows = 16, .cols = 16};
    d.images = malloc(512);
    d.labels = malloc(2);
    for (int i = 0; i < 512; i++) d.images[i] = (uint8_t)(i * 7);
    d.labels[0] = 1, d.labels[1] = 0;
    float a[512], b[512];
    int32_t ya[2], yb[2];
    size_t rows[2] = {1, 0};
    tl_dataset_gather(&d, rows, 2, 0.2860f, 0.3530f, a, ya);
    tl_norm sc = {.kind = TL_NORM_SCALAR, .mean = 0.2860f, .std = 0.3530f};
    tl_dataset_gather_norm(&d, rows, 2, &sc, b, yb);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(ya, yb, sizeof ya);
    for (int j = 0; j < 256; j++) { /* the documented expression */
        volatile float v = (float)d.images[256 + j];
        v = v / 255.0f;
        v = v - 0.2860f;
        v = v / 0.3530f;
        assert_memory_equal(&a[j], (const void *)&v, 4);
    }
    tl_norm none = {.kind = TL_NORM_NONE};
    tl_dataset_gather_norm(&d, NULL, 1, &none, b, NULL);
    for (int j = 0; j < 256; j++) assert_true(b[j] == (float)d.images[j] / 255.0f);
    /* per feature: stats of the scaled values, then (v - m_f) / s_f */
    tl_norm_stats s;
    tl_norm nm;
    assert_int_equal(tl_norm_stats_init(&s, 256), 0);
    assert_int_equal(tl_norm_stats_add(&s, &d, NULL, 2), 0);
    assert_int_equal(tl_norm_finish(&s, &nm), 0);
    tl_dataset_gather_norm(&d, NULL, 2, &nm, b, NULL);
    for (int j = 0; j < 256; j++) {
        /* two samples: standardized values are -1 and +1 (or 0 and 0 when equal) */
        float v0 = (float)d.images[j] / 255.0f, v1 = (float)d.images[256 + j] / 255.0f;
        if (v0 == v1) assert_true(b[j] == 0.0f && b[256 + j] == 0.0f);
        else {
            assert_true(fabsf(b[j] - (v0 < v1 ? -1.0f : 1.0f)) < 1e-5f);
            assert_true(fabsf(b[256 + j] + b[j]) < 1e-5f);
        }
        volatile float e = (v0 - nm.mean_f[j]) / nm.std_f[j];
        assert_memory_equal(&b[j], (const void *)&e, 4);
    }
    tl_norm_free(&nm);
    tl_norm_stats_free(&s);
    tl_dataset_free(&d);
}

/* Scalar and none on float32 data: (v - mean) / std and v itself. */
static void test_gather_f32(void **state) {
    tl_dataset d = make_f32(4, 5, small_int);
    float x[20];
    int32_t y[4];
    tl_norm sc = {.kind = TL_NORM_SCALAR, .mean = 0.5f, .std = 3.0f};
    tl_dataset_gather_norm(&d, NULL, 4, &sc, x, y);
    for (int i = 0; i < 20; i++) {
        volatile float e = (d.feats[i] - 0.5f) / 3.0f;
        assert_memory_equal(&x[i], (const void *)&e, 4);
    }
    for (int i = 0; i < 4; i++) assert_int_equal(y[i], i % 3);
    float z[20];
    tl_dataset_gather(&d, NULL, 4, 0.5f, 3.0f, z, NULL); /* the old gather on float32 data */
    assert_memory_equal(x, z, sizeof x);
    tl_norm none = {.kind = TL_NORM_NONE};
    tl_dataset_gather_norm(&d, NULL, 4, &none, x, NULL);
    assert_memory_equal(x, d.feats, sizeof x);
    tl_dataset_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),      cmocka_unit_test(test_combine),
        cmocka_unit_test(test_constant),   cmocka_unit_test(test_gather_u8),
        cmocka_unit_test(test_gather_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
