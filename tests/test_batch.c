/* test_batch.c - virtual batches: numpy order, node split, epochs, checkpoints, plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/batch.h"
#include "tl/error.h"

#ifndef TL_TEST_DATA
#define TL_TEST_DATA "tests/data"
#endif

/* Reads the 64 values of the fixture line starting with prefix (e.g.
 * "seed 1 n 60000 call 1 head:") into v. */
static void fixture_line(const char *prefix, uint64_t v[64]) {
    FILE *f = fopen(TL_TEST_DATA "/numpy_shuffle.txt", "r");
    assert_non_null(f);
    static char line[1 << 16];
    size_t plen = strlen(prefix);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, prefix, plen) != 0) continue;
        char *p = line + plen;
        for (int i = 0; i < 64; i++) {
            char *end;
            v[i] = strtoull(p, &end, 10);
            assert_true(end != p);
            p = end;
        }
        found = 1;
        break;
    }
    fclose(f);
    if (!found) fail_msg("fixture line '%s' not found", prefix);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One node of 60000, seed 1, B 64: batch 0 of epochs 0 and 1 and the short last
 * batch equal numpy's permutation (the fixture's head and tail lines). */
static void test_numpy_batches(void **state) {
    (void)state;
    uint64_t counts[1] = {60000};
    tl_batcher *b;
    assert_int_equal(tl_batcher_new(counts, 1, 64, 1, 1, &b), 0);
    assert_int_equal(tl_batcher_total(b), 60000);
    assert_int_equal(tl_batcher_batches(b), 938);
    assert_int_equal(tl_batcher_epoch(b), 0);
    for (int call = 1; call <= 3; call++) {
        uint64_t head[64], tail[64];
        char prefix[64];
        snprintf(prefix, sizeof prefix, "seed 1 n 60000 call %d head:", call);
        fixture_line(prefix, head);
        snprintf(prefix, sizeof prefix, "seed 1 n 60000 call %d tail:", call);
        fixture_line(prefix, tail);
        qsort(head, 64, sizeof head[0], cmp_u64);
        qsort(tail + 32, 32, sizeof tail[0], cmp_u64); /* p[59968..60000) = last batch */

        tl_batcher_start_epoch(b);
        assert_int_equal(tl_batcher_epoch(b), call);
        tl_batch bt;
        tl_batcher_get(b, 0, &bt);
        assert_int_equal(bt.n, 64);
        assert_int_equal(bt.epoch, call - 1);
        assert_int_equal(bt.index, 0);
        assert_int_equal(bt.n_parts, 1);
        assert_int_equal(bt.parts[0].node, 0);
        assert_int_equal(bt.parts[0].first, 0);
        assert_int_equal(bt.parts[0].count, 64);
        for (int i = 0; i < 64; i++) {
            assert_int_equal(bt.global[i], head[i]);
            assert_int_equal(bt.local[i], head[i]);
        }
        tl_batcher_get(b, 937, &bt);
        assert_int_equal(bt.n, 32);
        assert_int_equal(bt.index, 937);
        for (int i = 0; i < 32; i++) assert_int_equal(bt.global[i], tail[32 + i]);
    }
    tl_batcher_free(b);
}

/* Checks every batch of the current epoch against an independently drawn
 * permutation p: global = sorted(p[kB..]), parts ascending and contiguous,
 * global = offset + local, locals ascending within a node, the epoch covers
 * 0..N-1 exactly once. */
static void check_epoch(tl_batcher *b, const uint64_t *counts, int n_nodes, size_t B,
                        const uint64_t *p, int epoch) {
    uint64_t off[16];
    off[0] = 0;
    for (int i = 0; i < n_nodes; i++) off[i + 1] = off[i] + counts[i];
    uint64_t N = off[n_nodes];
    assert_int_equal(tl_batcher_total(b), N);
    size_t nb = tl_batcher_batches(b);
    assert_int_equal(nb, (N + B - 1) / B);
    unsigned char *seen = calloc(N, 1);
    uint64_t *want = malloc(B * sizeof *want);
    assert_non_null(seen);
    assert_non_null(want);
    for (size_t k = 0; k < nb; k++) {
        tl_batch bt;
        tl_batcher_get(b, k, &bt);
        size_t n = (k + 1) * B <= N ? B : (size_t)(N - k * B);
        assert_int_equal(bt.n, n);
        assert_int_equal(bt.epoch, epoch);
        assert_int_equal(bt.index, k);
        memcpy(want, p + k * B, n * sizeof *want);
        qsort(want, n, sizeof *want, cmp_u64);
        size_t sum = 0;
        assert_true(bt.n_parts >= 1);
        for (int q = 0; q < bt.n_parts; q++) {
            const tl_batch_part *pt = &bt.parts[q];
            assert_true(pt->node >= 0 && pt->node < n_nodes);
            if (q > 0) assert_true(pt->node > bt.parts[q - 1].node);
            assert_true(pt->count > 0);
            assert_int_equal(pt->first, sum);
            for (size_t i = pt->first; i < pt->first + pt->count; i++) {
                assert_true(bt.local[i] < counts[pt->node]);
                assert_int_equal(bt.global[i], off[pt->node] + bt.local[i]);
                if (i > pt->first) assert_true(bt.local[i] > bt.local[i - 1]);
            }
            sum += pt->count;
        }
        assert_int_equal(sum, n);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(bt.global[i], want[i]);
            assert_int_equal(seen[bt.global[i]], 0);
            seen[bt.global[i]] = 1;
        }
    }
    for (uint64_t i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    free(seen);
    free(want);
}

/* Several nodes (one empty), several batch sizes (short last batch, B = 1,
 * B > N for the radix path and a single batch), two epochs each. */
static void test_multi_node(void **state) {
    (void)state;
    const uint64_t counts[] = {5, 0, 17, 3, 40, 1};
    const int n_nodes = 6;
    const uint64_t N = 66;
    const size_t sizes[] = {1, 7, 8, 64, 65, 66, 1000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        tl_batcher *b;
        assert_int_equal(tl_batcher_new(counts, n_nodes, sizes[s], 3, 1, &b), 0);
        tl_rng r;
        tl_rng_seed(&r, 3);
        uint64_t p[66];
        for (int e = 0; e < 2; e++) {
            for (uint64_t i = 0; i < N; i++) p[i] = i;
            tl_rng_shuffle(&r, p, N);
            tl_batcher_start_epoch(b);
            check_epoch(b, counts, n_nodes, sizes[s], p, e);
        }
        tl_batcher_free(b);
    }
}

/* A larger case exercising the radix sort over more than one digit. */
static void test_large_batches(void **state) {
    (void)state;
    const uint64_t counts[] = {20000, 1, 15000, 0, 25000};
    tl_batcher *b;
    assert_int_equal(tl_batcher_new(counts, 5, 4096, 77, 1, &b), 0);
    uint64_t *p = malloc(60001 * sizeof *p);
    assert_non_null(p);
    tl_rng r;
    tl_rng_seed(&r, 77);
    for (uint64_t i = 0; i < 60001; i++) p[i] = i;
    tl_rng_shuffle(&r, p, 60001);
    tl_batcher_start_epoch(b);
    check_epoch(b, counts, 5, 4096, p, 0);
    free(p);
    tl_batcher_free(b);
}

/* Copies batch k's global rows into out (up to cap) and returns its size. */
static size_t batch_rows(tl_batcher *b, size_t k, uint64_t *out, size_t cap) {
    tl_batch bt;
    tl_batcher_get(b, k, &bt);
    assert_true(bt.n <= cap);
    memcpy(out, bt.global, bt.n * sizeof *out);
    return bt.n;
}

/* With reshuffle off every epoch repeats epoch 0; with it on, epoch 1 differs. */
static void test_reshuffle_off(void **state) {
    (void)state;
    const uint64_t counts[] = {30, 20, 50};
    tl_batcher *off, *on;
    assert_int_equal(tl_batcher_new(counts, 3, 16, 1, 0, &off), 0);
    assert_int_equal(tl_batcher_new(counts, 3, 16, 1, 1, &on), 0);
    size_t nb = tl_batcher_batches(off);
    assert_int_equal(nb, 7);
    uint64_t first[7][16], x[16];
    tl_batcher_start_epoch(off);
    tl_batcher_start_epoch(on);
    for (size_t k = 0; k < nb; k++) {
        batch_rows(off, k, first[k], 16);
        size_t n = batch_rows(on, k, x, 16);
        assert_memory_equal(first[k], x, n * sizeof x[0]); /* same epoch 0 */
    }
    int differs = 0;
    for (int e = 1; e < 4; e++) {
        tl_batcher_start_epoch(off);
        tl_batcher_start_epoch(on);
        for (size_t k = 0; k < nb; k++) {
            size_t n = batch_rows(off, k, x, 16);
            assert_memory_equal(first[k], x, n * sizeof x[0]);
            tl_batch bt;
            tl_batcher_get(off, k, &bt);
            assert_int_equal(bt.epoch, e);
            n = batch_rows(on, k, x, 16);
            if (memcmp(first[k], x, n * sizeof x[0]) != 0) differs = 1;
        }
    }
    assert_true(differs);
    tl_batcher_free(off);
    tl_batcher_free(on);
}

/* Saving mid-run and restoring into a fresh batcher reproduces the current and
 * the following epochs' batches, with reshuffle on and off, and from epoch 0. */
static void test_save_restore(void **state) {
    (void)state;
    const uint64_t counts[] = {13, 29, 8};
    for (int reshuffle = 0; reshuffle <= 1; reshuffle++) {
        for (int at = 0; at <= 3; at++) {
            tl_batcher *a, *b;
            assert_int_equal(tl_batcher_new(counts, 3, 10, 2024, reshuffle, &a), 0);
            assert_int_equal(tl_batcher_new(counts, 3, 10, 999, reshuffle, &b), 0);
            for (int e = 0; e < at; e++) {
                tl_batcher_start_epoch(a);
                tl_batch bt;
                tl_batcher_get(a, 1, &bt); /* use it a little; must not matter */
            }
            tl_rng saved;
            int started;
            tl_batcher_save(a, &saved, &started);
            assert_int_equal(started, at);
            assert_int_equal(tl_batcher_restore(b, &saved, started), 0);
            assert_int_equal(tl_batcher_epoch(b), at);
            size_t nb = tl_batcher_batches(a);
            for (int e = at; e < at + 3; e++) {
                if (e > at || at == 0) {
                    tl_batcher_start_epoch(a);
                    tl_batcher_start_epoch(b);
                }
                for (size_t k = 0; k < nb; k++) {
                    uint64_t x[10], y[10];
                    size_t n = batch_rows(a, k, x, 10);
                    assert_int_equal(batch_rows(b, k, y, 10), n);
                    assert_memory_equal(x, y, n * sizeof x[0]);
                    tl_batch bt;
                    tl_batcher_get(b, k, &bt);
                    assert_int_equal(bt.epoch, tl_batcher_epoch(a) - 1);
                }
            }
            tl_batcher_free(a);
            tl_batcher_free(b);
        }
    }
    /* A malformed state is refused. */
    const uint64_t one[] = {10};
    tl_batcher *b;
    assert_int_equal(tl_batcher_new(one, 1, 4, 1, 1, &b), 0);
    tl_rng bad;
    tl_rng_seed(&bad, 1);
    assert_int_equal(tl_batcher_restore(b, &bad, -1), TL_EINVAL);
    bad.mti = TL_MT_N + 1;
    assert_int_equal(tl_batcher_restore(b, &bad, 1), TL_EINVAL);
    tl_batcher_free(b);
}

/* Bad arguments are refused with TL_EINVAL. */
static void test_bad_args(void **state) {
    (void)state;
    const uint64_t counts[] = {3, 4};
    const uint64_t zeros[] = {0, 0};
    const uint64_t huge[] = {UINT64_MAX, 2};
    tl_batcher *b = (tl_batcher *)1;
    assert_int_equal(tl_batcher_new(counts, 0, 4, 1, 1, &b), TL_EINVAL);
    assert_null(b);
    assert_int_equal(tl_batcher_new(counts, TL_MAX_NODES + 1, 4, 1, 1, &b), TL_EINVAL);
    assert_int_equal(tl_batcher_new(counts, 2, 0, 1, 1, &b), TL_EINVAL);
    assert_int_equal(tl_batcher_new(zeros, 2, 4, 1, 1, &b), TL_EINVAL);
    assert_int_equal(tl_batcher_new(huge, 2, 4, 1, 1, &b), TL_ERANGE);
    assert_true(strlen(tl_errmsg()) > 0);
    assert_int_equal(tl_batcher_new(counts, 2, 4, 1, 1, &b), 0);
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tl_batcher_write_plan(b, f), TL_EINVAL); /* no epoch yet */
    fclose(f);
    tl_batcher_free(b);
    tl_batcher_free(NULL);
}

/* Reads all of f into a NUL-terminated string. */
static char *slurp(FILE *f) {
    long len;
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    char *s = malloc((size_t)len + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)len, f), (size_t)len);
    s[len] = '\0';
    return s;
}

/* Validates one plan line against the grammar
 * {"epoch":E,"batch":K,"parts":[{"node":ID,"rows":[INT,...]},...]}
 * (nodes ascending, rows ascending, no spaces) and returns its number of rows,
 * or -1 if it is malformed or E, K differ from the expected ones. */
static long plan_line_rows(const char *s, long want_epoch, long want_batch) {
    long rows = 0, e, k;
    int used = 0;
    if (sscanf(s, "{\"epoch\":%ld,\"batch\":%ld,\"parts\":[%n", &e, &k, &used) != 2 || used == 0)
        return -1;
    if (e != want_epoch || k != want_batch) return -1;
    s += used;
    long prev_node = 0;
    for (int first_part = 1; *s != ']'; first_part = 0) {
        if (!first_part && *s++ != ',') return -1;
        long node;
        used = 0;
        if (sscanf(s, "{\"node\":%ld,\"rows\":[%n", &node, &used) != 1 || used == 0) return -1;
        if (node <= prev_node) return -1;
        prev_node = node;
        s += used;
        long prev = -1;
        for (int first_row = 1; *s != ']'; first_row = 0) {
            if (!first_row && *s++ != ',') return -1;
            if (*s < '0' || *s > '9') return -1;
            char *end;
            long x = strtol(s, &end, 10);
            if (x <= prev) return -1;
            prev = x;
            s = end;
            rows++;
        }
        if (strncmp(s, "]}", 2) != 0) return -1;
        s += 2;
    }
    if (strcmp(s, "]}") != 0) return -1;
    return rows;
}

/* The plan of a tiny case is exactly as expected; a bigger one is well-formed
 * line by line (nodes and rows ascending) with the expected row counts. */
static void test_plan(void **state) {
    (void)state;
    const uint64_t tiny[] = {2, 3};
    tl_batcher *b;
    assert_int_equal(tl_batcher_new(tiny, 2, 5, 1, 1, &b), 0);
    tl_batcher_start_epoch(b);
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tl_batcher_write_plan(b, f), 0);
    char *s = slurp(f);
    assert_string_equal(s, "{\"epoch\":1,\"batch\":1,\"parts\":[{\"node\":1,\"rows\":[0,1]},"
                           "{\"node\":2,\"rows\":[0,1,2]}]}\n");
    free(s);
    fclose(f);
    tl_batcher_free(b);

    const uint64_t counts[] = {100, 0, 250, 37};
    assert_int_equal(tl_batcher_new(counts, 4, 64, 5, 1, &b), 0);
    tl_batcher_start_epoch(b);
    tl_batcher_start_epoch(b);
    f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tl_batcher_write_plan(b, f), 0);
    s = slurp(f);
    long lines = 0, rows = 0;
    for (char *line = s, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        long r = plan_line_rows(line, 2, lines + 1); /* counted from 1, as the metrics */
        if (r < 0) fail_msg("malformed plan line %ld: %s", lines, line);
        assert_int_equal(r, lines < 6 ? 64 : 3); /* 387 = 6 x 64 + 3 */
        rows += r;
        lines++;
    }
    assert_int_equal(lines, 7);
    assert_int_equal(rows, 387);
    free(s);
    fclose(f);
    tl_batcher_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_batches), cmocka_unit_test(test_multi_node),
        cmocka_unit_test(test_large_batches), cmocka_unit_test(test_reshuffle_off),
        cmocka_unit_test(test_save_restore),  cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
