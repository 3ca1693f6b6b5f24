/* test_rng.c - MT19937 / numpy legacy shuffle against numpy's own output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/rng.h"

#ifndef TL_TEST_DATA
#define TL_TEST_DATA "tests/data"
#endif

/* The reference mt19937ar.c outputs for init_genrand(5489): a known answer. */
static void test_mt_reference(void **state) {
    (void)state;
    tl_rng r;
    tl_rng_seed(&r, 5489);
    assert_int_equal(tl_rng_u32(&r), 3499211612u);
    assert_int_equal(tl_rng_u32(&r), 581869302u);
    assert_int_equal(tl_rng_u32(&r), 3890346734u);
    for (int i = 3; i < 9999; i++) tl_rng_u32(&r);
    assert_int_equal(tl_rng_u32(&r), 4123659995u); /* the 10000th output */
}

/* One (seed, n) stream being replayed from the fixture file. */
typedef struct stream {
    int active;
    uint64_t seed;
    size_t n;
    long call; /* calls done so far */
    tl_rng rng;
    uint64_t *a;
} stream;

/* Every line of numpy_shuffle.txt ('seed S n N call K[ head| tail]: v...') must
 * match; calls of the same (seed, n) continue one generator stream. */
static void test_numpy_fixture(void **state) {
    (void)state;
    const char *path = TL_TEST_DATA "/numpy_shuffle.txt";
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    assert_non_null(line);
    stream s = {0};
    int checked = 0, heads = 0, tails = 0;
    while (fgets(line, (int)cap, f)) {
        assert_non_null(strchr(line, '\n')); /* the line buffer is large enough */
        if (line[0] == '#' || line[0] == '\n') continue;
        unsigned long long seed, n;
        long call;
        int used = 0;
        char kind[8] = "";
        if (sscanf(line, "seed %llu n %llu call %ld%n", &seed, &n, &call, &used) != 3)
            fail_msg("unparsable line: %s", line);
        char *p = line + used;
        if (*p == ' ') {
            int k = 0;
            p++;
            while (*p && *p != ':' && k < 7) kind[k++] = *p++;
            kind[k] = '\0';
        }
        assert_int_equal(*p, ':');
        p++;
        if (!s.active || s.seed != seed || s.n != n) {
            free(s.a);
            s.active = 1;
            s.seed = seed;
            s.n = (size_t)n;
            s.call = 0;
            s.a = malloc((size_t)n * sizeof *s.a);
            assert_non_null(s.a);
            tl_rng_seed(&s.rng, (uint32_t)seed);
        }
        assert_true(call >= s.call); /* the file lists calls in order */
        while (s.call < call) {
            for (size_t i = 0; i < s.n; i++) s.a[i] = i;
            tl_rng_shuffle(&s.rng, s.a, s.n);
            s.call++;
        }
        /* Parse the listed values. */
        size_t cnt = 0, vcap = 64;
        uint64_t *v = malloc(vcap * sizeof *v);
        assert_non_null(v);
        for (;;) {
            char *end;
            while (*p == ' ') p++;
            if (*p == '\n' || *p == '\0') break;
            unsigned long long x = strtoull(p, &end, 10);
            assert_true(end != p);
            p = end;
            if (cnt == vcap) {
                vcap *= 2;
                v = realloc(v, vcap * sizeof *v);
                assert_non_null(v);
            }
            v[cnt++] = x;
        }
        size_t off = 0;
        if (strcmp(kind, "") == 0) {
            assert_int_equal(cnt, s.n);
            off = 0;
        } else if (strcmp(kind, "head") == 0) {
            off = 0;
            heads++;
        } else if (strcmp(kind, "tail") == 0) {
            assert_true(cnt <= s.n);
            off = s.n - cnt;
            tails++;
        } else {
            fail_msg("unknown line kind '%s'", kind);
        }
        assert_true(cnt > 0 && off + cnt <= s.n);
        for (size_t i = 0; i < cnt; i++) {
            if (s.a[off + i] != v[i])
                fail_msg("seed %llu n %llu call %ld %s: entry %zu is %llu, numpy has %llu", seed, n,
                         call, kind, off + i, (unsigned long long)s.a[off + i],
                         (unsigned long long)v[i]);
        }
        free(v);
        checked++;
    }
    free(s.a);
    free(line);
    fclose(f);
    assert_int_equal(checked, 60);
    assert_int_equal(heads, 6);
    assert_int_equal(tails, 6);
}

/* interval stays within [0, max], including 0, powers of two and > 32 bits. */
static void test_interval_bounds(void **state) {
    (void)state;
    tl_rng r;
    tl_rng_seed(&r, 123);
    assert_int_equal(tl_rng_interval(&r, 0), 0);
    const uint64_t maxes[] = {
        1, 2, 3, 7, 8, 1000, 0xffffffffu, 0x100000000ull, 0x1ffffffffull, UINT64_MAX};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        int seen_high_half = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t x = tl_rng_interval(&r, maxes[m]);
            assert_true(x <= maxes[m]);
            if (x > maxes[m] / 2) seen_high_half = 1;
        }
        assert_true(seen_high_half);
    }
    /* max = 0 draws nothing: the stream is unchanged. */
    tl_rng a, b;
    tl_rng_seed(&a, 9);
    tl_rng_seed(&b, 9);
    tl_rng_interval(&a, 0);
    assert_int_equal(tl_rng_u32(&a), tl_rng_u32(&b));
}

/* uniform stays in [lo, hi) and covers it. */
static void test_uniform(void **state) {
    (void)state;
    tl_rng r;
    tl_rng_seed(&r, 1);
    float mn = 1e9f, mx = -1e9f;
    for (int i = 0; i < 10000; i++) {
        float x = tl_rng_uniform(&r, -0.25f, 0.25f);
        assert_true(x >= -0.25f && x < 0.25f);
        if (x < mn) mn = x;
        if (x > mx) mx = x;
    }
    assert_true(mn < -0.24f && mx > 0.24f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mt_reference),
        cmocka_unit_test(test_numpy_fixture),
        cmocka_unit_test(test_interval_bounds),
        cmocka_unit_test(test_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
