/* test_partition.c - contiguous, iid, label and Dirichlet partitions: sizes,
 * ordering, coverage, determinism, skew, and rejected arguments. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/partition.h"
#include "tl/rng.h"

/* A data set of n 1x1 images; label of row i is label(i). */
static tl_dataset make_ds(size_t n, int (*label)(size_t)) {
    tl_dataset d = {.n = n, .rows = 1, .cols = 1, .dim = 1};
    d.images = malloc(n);
    d.labels = malloc(n);
    for (size_t i = 0; i < n; i++) {
        d.images[i] = (uint8_t)i;
        d.labels[i] = (uint8_t)label(i);
        if (d.labels[i] + 1 > d.classes) d.classes = d.labels[i] + 1;
    }
    return d;
}

static int mod3(size_t i) { return (int)(i % 3); }
static int mod10(size_t i) { return (int)(i % 10); }
static int div100(size_t i) { return (int)(i / 100); }
static int mod7sq(size_t i) { return (int)((i * i) % 7); }

/* Checks the invariants of every partition: counts >= 1 summing to n, each
 * row exactly once, ascending within each node. */
static void check_valid(const tl_dataset *d, int n_nodes, const size_t *rows,
                        const size_t *counts) {
    uint8_t *seen = calloc(d->n, 1);
    size_t k = 0;
    for (int i = 0; i < n_nodes; i++) {
        assert_true(counts[i] >= 1);
        for (size_t m = 0; m < counts[i]; m++, k++) {
            assert_true(k < d->n);
            assert_true(rows[k] < d->n);
            assert_false(seen[rows[k]]);
            seen[rows[k]] = 1;
            if (m) assert_true(rows[k] > rows[k - 1]);
        }
    }
    assert_int_equal(k, d->n);
    free(seen);
}

static void test_contiguous(void **state) {
    tl_dataset d = make_ds(10, mod3);
    size_t *rows, counts[10];
    assert_int_equal(tl_partition(&d, 3, "contiguous", 1, &rows, counts), 0);
    assert_int_equal(counts[0], 4);
    assert_int_equal(counts[1], 3);
    assert_int_equal(counts[2], 3);
    for (size_t i = 0; i < 10; i++) assert_int_equal(rows[i], i); /* concatenation = identity */
    free(rows);
    /* one node, as many nodes as samples, an even split */
    static const int nodes[3] = {1, 10, 5};
    for (int t = 0; t < 3; t++) {
        assert_int_equal(tl_partition(&d, nodes[t], "contiguous", 7, &rows, counts), 0);
        check_valid(&d, nodes[t], rows, counts);
        for (int i = 0; i < nodes[t]; i++) assert_int_equal(counts[i], 10 / nodes[t]);
        for (size_t i = 0; i < 10; i++) assert_int_equal(rows[i], i);
        free(rows);
    }
    /* 11 samples over 4 nodes: 3, 3, 3, 2 */
    tl_dataset e = make_ds(11, mod3);
    assert_int_equal(tl_partition(&e, 4, "contiguous", 1, &rows, counts), 0);
    assert_int_equal(counts[0], 3), assert_int_equal(counts[2], 3), assert_int_equal(counts[3], 2);
    free(rows);
    tl_dataset_free(&e);
    tl_dataset_free(&d);
}

static void test_iid(void **state) {
    tl_dataset d = make_ds(10, mod3);
    size_t *rows, counts[3];
    /* numpy 1.24: RandomState(0).shuffle(arange(10)) = 2 8 4 9 1 6 7 3 0 5
     * (tests/data/numpy_shuffle.txt); blocks 4, 3, 3, each sorted */
    static const size_t want[10] = {2, 4, 8, 9, 1, 6, 7, 0, 3, 5};
    assert_int_equal(tl_partition(&d, 3, "iid", 0, &rows, counts), 0);
    assert_int_equal(counts[0], 4), assert_int_equal(counts[1], 3), assert_int_equal(counts[2], 3);
    assert_memory_equal(rows, want, sizeof want);
    free(rows);
    tl_dataset_free(&d);

    /* larger: sizes as contiguous, valid, deterministic per seed, seed matters */
    tl_dataset e = make_ds(1000, mod10);
    size_t *a, *b, *c, ca[7], cb[7], cc[7];
    assert_int_equal(tl_partition(&e, 7, "iid", 42, &a, ca), 0);
    assert_int_equal(tl_partition(&e, 7, "iid", 42, &b, cb), 0);
    assert_int_equal(tl_partition(&e, 7, "iid", 43, &c, cc), 0);
    check_valid(&e, 7, a, ca);
    for (int i = 0; i < 7; i++) assert_int_equal(ca[i], 1000 / 7 + (i < 1000 % 7));
    assert_memory_equal(a, b, 1000 * sizeof *a);
    assert_memory_not_equal(a, c, 1000 * sizeof *a);
    /* every node sees every class */
    size_t cls[7 * 10];
    tl_partition_class_counts(&e, 7, a, ca, cls);
    for (int i = 0; i < 70; i++) assert_true(cls[i] > 0);
    free(a), free(b), free(c);
    tl_dataset_free(&e);
}

static void test_label(void **state) {
    tl_dataset d = make_ds(12, mod3);
    size_t *rows, counts[4];
    /* sorted by label: 0 3 6 9 | 1 4 7 10 | 2 5 8 11 ; 3 nodes -> one class each */
    assert_int_equal(tl_partition(&d, 3, "label", 1, &rows, counts), 0);
    static const size_t want3[12] = {0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11};
    assert_memory_equal(rows, want3, sizeof want3);
    free(rows);
    /* 4 nodes of 3: {0 3 6} {9 1 4} {7 10 2} {5 8 11}, each sorted */
    assert_int_equal(tl_partition(&d, 4, "label", 1, &rows, counts), 0);
    static const size_t want4[12] = {0, 3, 6, 1, 4, 9, 2, 7, 10, 5, 8, 11};
    assert_memory_equal(rows, want4, sizeof want4);
    size_t cls[4 * 3];
    tl_partition_class_counts(&d, 4, rows, counts, cls);
    static const size_t want_cls[12] = {3, 0, 0, 1, 2, 0, 0, 2, 1, 0, 0, 3};
    assert_memory_equal(cls, want_cls, sizeof want_cls);
    free(rows);
    tl_dataset_free(&d);

    /* 1000 samples, 10 classes, 5 nodes: each node exactly 2 classes */
    tl_dataset e = make_ds(1000, mod10);
    size_t c5[5], cl[5 * 10];
    assert_int_equal(tl_partition(&e, 5, "label", 1, &rows, c5), 0);
    check_valid(&e, 5, rows, c5);
    tl_partition_class_counts(&e, 5, rows, c5, cl);
    for (int i = 0; i < 5; i++) {
        int seen = 0;
        for (int c = 0; c < 10; c++) seen += cl[i * 10 + c] > 0;
        assert_int_equal(seen, 2);
    }
    free(rows);
    tl_dataset_free(&e);
}

/* Average number of classes present per node. */
static double classes_per_node(const tl_dataset *d, int n_nodes, const size_t *rows,
                               const size_t *counts) {
    size_t *cl = calloc((size_t)n_nodes * d->classes, sizeof *cl);
    int seen = 0;
    tl_partition_class_counts(d, n_nodes, rows, counts, cl);
    for (int i = 0; i < n_nodes * d->classes; i++) seen += cl[i] > 0;
    free(cl);
    return (double)seen / n_nodes;
}

static void test_dirichlet(void **state) {
    tl_dataset d = make_ds(1000, mod10);
    size_t *a, *b, *c, ca[5], cb[5], cc[5];
    static const char *schemes[] = {"dirichlet:0.1",    "dirichlet:1",     "dirichlet:100",
                                    "dirichlet:1e-300", "dirichlet:1e300", "dirichlet:0.5"};
    for (int s = 0; s < 6; s++) {
        for (uint32_t seed = 0; seed < 4; seed++) {
            assert_int_equal(tl_partition(&d, 5, schemes[s], seed, &a, ca), 0);
            check_valid(&d, 5, a, ca);
            assert_int_equal(tl_partition(&d, 5, schemes[s], seed, &b, cb), 0);
            assert_memory_equal(ca, cb, sizeof ca); /* deterministic per seed */
            assert_memory_equal(a, b, 1000 * sizeof *a);
            free(a), free(b);
        }
    }
    assert_int_equal(tl_partition(&d, 5, "dirichlet:0.5", 1, &a, ca), 0);
    assert_int_equal(tl_partition(&d, 5, "dirichlet:0.5", 2, &c, cc), 0);
    assert_memory_not_equal(a, c, 1000 * sizeof *a);
    free(a), free(c);

    /* skew: small alpha concentrates classes, large alpha spreads them */
    assert_int_equal(tl_partition(&d, 5, "dirichlet:0.05", 3, &a, ca), 0);
    assert_true(classes_per_node(&d, 5, a, ca) < 5.0);
    free(a);
    assert_int_equal(tl_partition(&d, 5, "dirichlet:1000", 3, &a, ca), 0);
    assert_true(classes_per_node(&d, 5, a, ca) == 10.0);
    for (int i = 0; i < 5; i++) assert_true(ca[i] >= 180 && ca[i] <= 220); /* ~200 each */
    free(a);

    /* every node >= 1 even when the draws leave nodes empty: as many nodes as samples */
    tl_dataset e = make_ds(50, mod3);
    size_t *r, ce[50];
    assert_int_equal(tl_partition(&e, 50, "dirichlet:0.01", 9, &r, ce), 0);
    check_valid(&e, 50, r, ce);
    for (int i = 0; i < 50; i++) assert_int_equal(ce[i], 1);
    free(r);
    assert_int_equal(tl_partition(&e, 20, "dirichlet:0.01", 9, &r, ce), 0);
    check_valid(&e, 20, r, ce);
    free(r);
    tl_dataset_free(&e);

    /* uneven, gappy classes (labels 0..6 with some absent counts) */
    tl_dataset g = make_ds(200, mod7sq); /* squares mod 7: only 0, 1, 2, 4 */
    size_t cg[6];
    assert_int_equal(tl_partition(&g, 6, "dirichlet:0.3", 5, &r, cg), 0);
    check_valid(&g, 6, r, cg);
    free(r);
    tl_dataset_free(&g);
    tl_dataset_free(&d);
}

/* The gamma sampler behind the weights: with 2 nodes, node 0's share of a
 * class is Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)). */
static void test_dirichlet_distribution(void **state) {
    tl_dataset d = make_ds(200 * 100, div100); /* 200 classes of 100 */
    static const double alphas[3] = {0.1, 1.0, 10.0};
    for (int t = 0; t < 3; t++) {
        char scheme[32];
        size_t *rows, counts[2], cl[2 * 200];
        snprintf(scheme, sizeof scheme, "dirichlet:%g", alphas[t]);
        assert_int_equal(tl_partition(&d, 2, scheme, 11, &rows, counts), 0);
        tl_partition_class_counts(&d, 2, rows, counts, cl);
        double sum = 0, sq = 0;
        for (int c = 0; c < 200; c++) {
            double f = cl[c] / 100.0;
            sum += f, sq += f * f;
        }
        double mean = sum / 200, var = sq / 200 - mean * mean;
        double want = 1.0 / (4.0 * (2.0 * alphas[t] + 1.0));
        assert_true(mean > 0.4 && mean < 0.6);
        assert_true(var > 0.7 * want && var < 1.3 * want);
        free(rows);
    }
    tl_dataset_free(&d);
}

static void test_rejects(void **state) {
    tl_dataset d = make_ds(10, mod3);
    size_t *rows = (size_t *)&d, counts[11];
    // clang-format off
    static const char *bad[] = {"",           "foo",          "IID",           "contiguous ",
                                "dirichlet",  "dirichlet:",   "dirichlet:0",   "dirichlet:-1",
                                "dirichlet:abc", "dirichlet:1x", "dirichlet:nan", "dirichlet:inf",
                                "dirichlet: 1", "dirichlet:1e-400", "label:3"};
    // clang-format on
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(tl_partition(&d, 3, bad[i], 1, &rows, counts), TL_EINVAL);
        assert_null(rows);
        assert_non_null(strstr(tl_errmsg(), bad[i]));
        assert_int_equal(tl_partition_check_scheme(bad[i]), TL_EINVAL);
    }
    assert_int_equal(tl_partition(&d, 3, NULL, 1, &rows, counts), TL_EINVAL);
    static const char *good[] = {"contiguous",    "iid",         "label",
                                 "dirichlet:0.5", "dirichlet:2", "dirichlet:1e-3"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_int_equal(tl_partition_check_scheme(good[i]), 0);
    /* node counts outside 1..n */
    static const int nodes[3] = {0, -1, 11};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_partition(&d, nodes[i], "contiguous", 1, &rows, counts), TL_EINVAL);
        assert_null(rows);
        assert_non_null(strstr(tl_errmsg(), "nodes"));
    }
    tl_dataset_free(&d);
}

/* Float32 data partitioned and saved per node as x.npy / y.npy (what `tl
 * partition` does) loads back, as a partition directory, bit for bit: the
 * nodes' rows concatenated in node order. */
static void test_f32_save_load(void **state) {
    char dir[64] = "/tmp/tl_test_partition_XXXXXX", sub[128], cmd[128];
    assert_non_null(mkdtemp(dir));
    const size_t n = 200, f = 5;
    tl_dataset d = {
        .n = n, .dim = f, .rows = 1, .cols = f, .dtype = TL_ELEM_F32, .rank = 1, .shape = {f}};
    d.feats = malloc(n * f * sizeof *d.feats);
    d.labels = malloc(n);
    tl_rng r;
    tl_rng_seed(&r, 3);
    for (size_t i = 0; i < n * f; i++) { /* arbitrary bit patterns that are finite floats */
        uint32_t b;
        float v;
        do {
            b = tl_rng_u32(&r);
            memcpy(&v, &b, 4);
        } while (!isfinite(v));
        d.feats[i] = v;
    }
    for (size_t i = 0; i < n; i++) d.labels[i] = (uint8_t)mod7sq(i);
    d.classes = 7;
    size_t *rows, counts[3];
    assert_int_equal(tl_partition(&d, 3, "dirichlet:0.5", 9, &rows, counts), 0);
    check_valid(&d, 3, rows, counts);
    size_t off = 0;
    for (int k = 0; k < 3; k++) {
        tl_dataset part;
        snprintf(sub, sizeof sub, "%s/node-%d", dir, k + 1);
        assert_int_equal(tl_dataset_subset(&d, rows + off, counts[k], &part), 0);
        assert_int_equal(tl_dataset_save(sub, "train", &part), 0);
        tl_dataset_free(&part);
        off += counts[k];
    }
    snprintf(sub, sizeof sub, "%s/node-2/x.npy", dir);
    assert_int_equal(access(sub, R_OK), 0);
    tl_dataset all, want;
    assert_int_equal(tl_dataset_load(dir, "train", &all), 0);
    assert_int_equal(tl_dataset_subset(&d, rows, n, &want), 0);
    assert_int_equal(all.n, n);
    assert_int_equal(all.dtype, TL_ELEM_F32);
    assert_int_equal(all.rank, 1);
    assert_int_equal(all.shape[0], f);
    assert_memory_equal(all.feats, want.feats, n * f * sizeof(float));
    assert_memory_equal(all.labels, want.labels, n);
    assert_true(tl_dataset_fingerprint(&all) == tl_dataset_fingerprint(&want));
    tl_dataset_free(&all);

    /* a node of another element type: refused, naming the node */
    tl_dataset u = {.n = 2, .dim = f, .rows = 1, .cols = f, .rank = 1, .shape = {f}};
    uint8_t px[10] = {0}, lb[2] = {0, 1};
    u.images = px, u.labels = lb;
    snprintf(sub, sizeof sub, "%s/node-4", dir);
    assert_int_equal(tl_dataset_save(sub, "train", &u), 0);
    assert_int_equal(tl_dataset_load(dir, "train", &all), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), sub));
    assert_null(all.feats);
    free(rows);
    tl_dataset_free(&want);
    tl_dataset_free(&d);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contiguous),
        cmocka_unit_test(test_iid),
        cmocka_unit_test(test_label),
        cmocka_unit_test(test_dirichlet),
        cmocka_unit_test(test_dirichlet_distribution),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_f32_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
