/* test_evalstats.c - evaluation from sums (evalstats.h): the binned AUC is
 * within its reported bound of the exact AUC (computed here from sorted
 * scores, ties as 0.5) for many seeds, C in {2, 3, 10} and several bin
 * counts; merging equals evaluating the union; confusion, precision, recall
 * and macro-F1 as scikit-learn gives them; degenerate cases; the wire form
 * round-trips and a hostile one (wrong sizes, totals that disagree, counts
 * that wrap 2^64) is refused without touching the destination; the JSON. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/loss.h"
#include "tl/rng.h"

static tl_rng rng;

/* Standard normal (Box-Muller) from the test's generator. */
static double gauss(void) {
    const double u = ((double)tl_rng_u32(&rng) + 1.0) / 4294967297.0;
    const double v = (double)tl_rng_u32(&rng) / 4294967296.0;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

typedef struct scored {
    double s;
    int pos;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

/* The exact AUC of n scores with labels: sort, walk groups of equal score;
 * each positive beats every negative below its group and ties (0.5) with the
 * negatives in it. NaN when there are no positives or no negatives. */
static double exact_auc(scored *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_scored);
    double P = 0, N = 0, below = 0, num = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double gp = 0, gn = 0;
        while (j < n && v[j].s == v[i].s) {
            if (v[j].pos) gp++;
            else gn++;
            j++;
        }
        num += gp * below + 0.5 * gp * gn;
        below += gn;
        P += gp;
        N += gn;
        i = j;
    }
    return P > 0 && N > 0 ? num / (P * N) : NAN;
}

/* Random logits for n rows of C classes: labels with a skew, signal on the
 * true class of strength `signal`, noise `noise`; kind 1 rounds the logits to
 * multiples of 0.5 (many exact ties), kind 2 multiplies them by 20 (scores far
 * out in the end bins). */
static void make_rows(float *z, int32_t *y, size_t n, int C, double signal, double noise,
                      int kind) {
    for (size_t i = 0; i < n; i++) {
        /* class 0 three times as likely as each other class */
        int t = (int)tl_rng_interval(&rng, (uint64_t)C + 1);
        y[i] = t >= C ? 0 : t;
        for (int j = 0; j < C; j++) {
            double v = noise * gauss() + (j == y[i] ? signal : 0.0);
            if (kind == 1) v = round(2.0 * v) / 2.0;
            if (kind == 2) v *= 20.0;
            z[i * C + j] = (float)v;
        }
    }
}

static void assert_same_sums(const tl_evalstats *a, const tl_evalstats *b) {
    assert_int_equal(a->classes, b->classes);
    assert_int_equal(a->bins, b->bins);
    assert_int_equal(a->n, b->n);
    const size_t w = (size_t)a->classes * a->classes + 2 * (size_t)a->classes * a->bins;
    assert_memory_equal(a->confusion, b->confusion, w * sizeof(uint64_t));
}

/* The core property, with every other piece along the way: for each data
 * set, stats from chunks merged == stats of all rows; encode/decode round
 * trip; confusion == direct count; accuracy == tl_nll_forward's hits; every
 * class's binned AUC within its bound of the exact one; the macro AUC too. */
static void test_auc_within_bound(void **state) {
    (void)state;
    const int classes[] = {2, 3, 10};
    const int bins[] = {4, 64, TL_EVAL_BINS};
    int cases = 0, nontrivial = 0;
    double worst_bound_4096 = 0;
    for (int ci = 0; ci < 3; ci++)
        for (int bi = 0; bi < 3; bi++)
            for (int seed = 0; seed < 40; seed++) {
                const int C = classes[ci], B = bins[bi];
                const size_t n = 1 + tl_rng_interval(&rng, 1500);
                const int kind = seed % 3;
                const double signal = 0.25 * (double)tl_rng_interval(&rng, 12);
                const double noise = 0.5 + 0.25 * (double)tl_rng_interval(&rng, 8);
                float *z = malloc(sizeof(float) * n * C);
                int32_t *y = malloc(sizeof(int32_t) * n);
                scored *v = malloc(sizeof(scored) * n);
                double *sc = malloc(sizeof(double) * n * C);
                uint64_t *conf = calloc((size_t)C * C, sizeof(uint64_t));
                assert_non_null(z);
                assert_non_null(y);
                assert_non_null(v);
                assert_non_null(sc);
                assert_non_null(conf);
                make_rows(z, y, n, C, signal, noise, kind);

                tl_evalstats all, a, b, d;
                assert_int_equal(tl_evalstats_init(&all, C, B), 0);
                assert_int_equal(tl_evalstats_init(&a, C, B), 0);
                assert_int_equal(tl_evalstats_init(&b, C, B), 0);
                assert_int_equal(tl_evalstats_init(&d, C, B), 0);
                assert_int_equal(tl_evalstats_add(&all, z, y, n), 0);
                const size_t cut = tl_rng_interval(&rng, n);
                assert_int_equal(tl_evalstats_add(&a, z, y, cut), 0);
                assert_int_equal(tl_evalstats_add(&b, z + cut * C, y + cut, n - cut), 0);
                assert_int_equal(tl_evalstats_merge(&a, &b), 0);
                assert_same_sums(&a, &all);
                assert_true(fabs(a.loss_sum - all.loss_sum) <= 1e-9 * (1 + all.loss_sum));

                const size_t len = tl_evalstats_size(C, B);
                uint8_t *msg = malloc(len);
                assert_non_null(msg);
                tl_evalstats_encode(&all, msg);
                assert_int_equal(tl_evalstats_decode(&d, msg, len), 0);
                assert_same_sums(&d, &all);
                assert_true(d.loss_sum == all.loss_sum);

                int64_t hits;
                const double loss = tl_nll_forward(z, y, (int)n, C, &hits);
                assert_true(all.loss_sum == loss);
                for (size_t i = 0; i < n; i++) {
                    int p = 0;
                    for (int j = 1; j < C; j++)
                        if (z[i * C + j] > z[i * C + p]) p = j;
                    conf[(size_t)y[i] * C + p]++;
                    tl_evalstats_scores(z + i * C, C, sc + i * C);
                }
                assert_memory_equal(conf, all.confusion, sizeof(uint64_t) * C * C);

                tl_eval_metrics m;
                assert_int_equal(tl_eval_metrics_compute(&all, &m), 0);
                assert_true(m.accuracy == (double)hits / (double)n);
                double macro = 0;
                int defined = 0;
                for (int k = 0; k < C; k++) {
                    for (size_t i = 0; i < n; i++) v[i] = (scored){sc[i * C + k], y[i] == k};
                    const double ex = exact_auc(v, n);
                    if (isnan(ex)) {
                        assert_true(isnan(m.auc_k[k]));
                        continue;
                    }
                    assert_false(isnan(m.auc_k[k]));
                    if (fabs(m.auc_k[k] - ex) > m.auc_bound_k[k] + 1e-12)
                        fail_msg("C %d B %d seed %d class %d: binned %.12f exact %.12f bound %.3g",
                                 C, B, seed, k, m.auc_k[k], ex, m.auc_bound_k[k]);
                    if (m.auc_k[k] != ex) nontrivial++;
                    if (C == 2 && k == 1) {
                        assert_true(m.auc == m.auc_k[1]);
                        assert_true(fabs(m.auc - ex) <= m.auc_bound + 1e-12);
                    }
                    if (B == TL_EVAL_BINS && kind == 0 && n >= 500 &&
                        m.auc_bound_k[k] > worst_bound_4096)
                        worst_bound_4096 = m.auc_bound_k[k];
                    macro += ex;
                    defined++;
                }
                if (C > 2) {
                    assert_int_equal(m.auc_classes, defined);
                    if (defined) assert_true(fabs(m.auc - macro / defined) <= m.auc_bound + 1e-12);
                }
                cases++;
                tl_eval_metrics_free(&m);
                tl_evalstats_free(&all);
                tl_evalstats_free(&a);
                tl_evalstats_free(&b);
                tl_evalstats_free(&d);
                free(msg);
                free(z);
                free(y);
                free(v);
                free(sc);
                free(conf);
            }
    /* The bound is not vacuous: binning changed many AUCs, and with the
     * default bins on unquantized scores the reported bound stays small. */
    assert_int_equal(cases, 360);
    assert_true(nontrivial > 100);
    print_message("max auc_bound, B = %d, smooth scores, n >= 500: %.3g\n", TL_EVAL_BINS,
                  worst_bound_4096);
    assert_true(worst_bound_4096 > 0 && worst_bound_4096 < 0.01);
}

/* Rows built so that argmax(z) is the wanted prediction. */
static void rows_from_predictions(float *z, const int32_t *pred, size_t n, int C) {
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < C; j++) z[i * C + j] = j == pred[i] ? 2.0f : (float)(-j) * 0.25f;
}

/* sklearn's documented example: f1_score([0,1,2,0,1,2], [0,2,1,0,0,1],
 * average='macro') = 0.26666666666666666, precision [0.667, 0, 0], recall
 * [1, 0, 0]. A fourth class that occurs nowhere leaves macro-F1 unchanged
 * (sklearn's default labels) and has undefined precision and recall. */
static void test_sklearn_example(void **state) {
    (void)state;
    const int32_t yt[6] = {0, 1, 2, 0, 1, 2}, yp[6] = {0, 2, 1, 0, 0, 1};
    for (int C = 3; C <= 4; C++) {
        float z[6 * 4];
        rows_from_predictions(z, yp, 6, C);
        tl_evalstats s;
        tl_eval_metrics m;
        assert_int_equal(tl_evalstats_init(&s, C, 16), 0);
        assert_int_equal(tl_evalstats_add(&s, z, yt, 6), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_true(fabs(m.macro_f1 - 0.26666666666666666) < 1e-15);
        assert_int_equal(m.f1_classes, 3);
        assert_true(fabs(m.accuracy - 2.0 / 6.0) < 1e-15);
        assert_true(fabs(m.precision[0] - 2.0 / 3.0) < 1e-15);
        assert_true(m.precision[1] == 0 && m.precision[2] == 0);
        assert_true(m.recall[0] == 1 && m.recall[1] == 0 && m.recall[2] == 0);
        assert_true(fabs(m.f1[0] - 0.8) < 1e-15);
        if (C == 4) {
            assert_true(isnan(m.precision[3]) && isnan(m.recall[3]) && isnan(m.f1[3]));
            assert_true(isnan(m.auc_k[3])); /* no positives */
            assert_int_equal(m.auc_classes, 3);
        }
        const uint64_t want[9] = {2, 0, 0, 1, 0, 1, 0, 2, 0};
        for (int t = 0; t < 3; t++)
            for (int p = 0; p < 3; p++) assert_int_equal(s.confusion[t * C + p], want[t * 3 + p]);
        tl_eval_metrics_free(&m);
        tl_evalstats_free(&s);
    }
}

static void test_degenerate(void **state) {
    (void)state;
    tl_evalstats s;
    tl_eval_metrics m;
    char *buf = NULL;
    size_t len = 0, cap = 0;

    /* Empty: every metric undefined. */
    assert_int_equal(tl_evalstats_init(&s, 3, 8), 0);
    assert_int_equal(tl_evalstats_add(&s, NULL, NULL, 0), 0);
    assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
    assert_true(isnan(m.loss) && isnan(m.accuracy) && isnan(m.macro_f1) && isnan(m.auc));
    assert_int_equal(m.auc_classes, 0);
    assert_int_equal(m.f1_classes, 0);
    assert_int_equal(tl_eval_json(&s, &m, "", &buf, &len, &cap), 0);
    assert_string_equal(buf, "\"n\":0,\"loss\":null,\"accuracy\":null,\"macro_f1\":null,"
                             "\"auc\":null,\"auc_bound\":null,\"auc_classes\":0,"
                             "\"precision\":[null,null,null],\"recall\":[null,null,null],"
                             "\"confusion\":[[0,0,0],[0,0,0],[0,0,0]]");
    tl_eval_metrics_free(&m);
    tl_evalstats_free(&s);

    /* All rows of one class: accuracy defined, no AUC (binary and OvR). */
    for (int C = 2; C <= 3; C++) {
        float z[5 * 3];
        int32_t y[5];
        for (int i = 0; i < 5; i++) {
            y[i] = C - 1;
            for (int j = 0; j < C; j++) z[i * C + j] = (float)(i * j);
        }
        assert_int_equal(tl_evalstats_init(&s, C, 8), 0);
        assert_int_equal(tl_evalstats_add(&s, z, y, 5), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_true(m.accuracy == 4.0 / 5.0); /* row 0 is all zeros: predicts 0 */
        assert_true(isnan(m.auc) && isnan(m.auc_bound));
        assert_int_equal(m.auc_classes, 0);
        tl_eval_metrics_free(&m);
        tl_evalstats_free(&s);
    }

    /* Identical rows of both classes: everything ties, AUC 0.5, bound 0.5. */
    {
        float z[8] = {0};
        int32_t y[4] = {0, 1, 0, 1};
        assert_int_equal(tl_evalstats_init(&s, 2, 4096), 0);
        assert_int_equal(tl_evalstats_add(&s, z, y, 4), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_true(m.auc == 0.5 && m.auc_bound == 0.5);
        tl_eval_metrics_free(&m);
        tl_evalstats_free(&s);
    }

    /* Perfectly separated, far apart: AUC 1 with bound 0 (and 0 reversed). */
    {
        float z[8] = {0, -3, 0, 3, 0, -4, 0, 5};
        int32_t y[4] = {0, 1, 0, 1}, yr[4] = {1, 0, 1, 0};
        assert_int_equal(tl_evalstats_init(&s, 2, 4096), 0);
        assert_int_equal(tl_evalstats_add(&s, z, y, 4), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_true(m.auc == 1.0 && m.auc_bound == 0.0 && m.auc_classes == 1);
        tl_eval_metrics_free(&m);
        tl_evalstats_reset(&s);
        assert_int_equal(tl_evalstats_add(&s, z, yr, 4), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_true(m.auc == 0.0 && m.auc_bound == 0.0);
        tl_eval_metrics_free(&m);
        tl_evalstats_free(&s);
    }

    /* Three classes, class 2 absent: OvR over classes 0 and 1 only. */
    {
        float z[4 * 3] = {1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0};
        int32_t y[4] = {0, 1, 0, 1};
        assert_int_equal(tl_evalstats_init(&s, 3, 64), 0);
        assert_int_equal(tl_evalstats_add(&s, z, y, 4), 0);
        assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
        assert_int_equal(m.auc_classes, 2);
        assert_true(m.auc == 1.0 && isnan(m.auc_k[2]));
        assert_true(m.macro_f1 == 1.0 && m.f1_classes == 2);
        tl_eval_metrics_free(&m);
        tl_evalstats_free(&s);
    }
    free(buf);
}

static void test_scores_and_bins(void **state) {
    (void)state;
    double s[4];
    /* Binary: s_1 = z_1 - z_0, s_0 = -s_1, even far beyond exp's range. */
    const float zb[2] = {0.0f, 1000.0f};
    tl_evalstats_scores(zb, 2, s);
    assert_true(s[1] == 1000.0 && s[0] == -1000.0);
    const float zc[2] = {0.25f, -1.5f};
    tl_evalstats_scores(zc, 2, s);
    assert_true(fabs(s[0] - 1.75) < 1e-15 && fabs(s[1] + 1.75) < 1e-15);
    /* C = 4: the log-odds of softmax. Ties at the maximum too. */
    const float z4[2][4] = {{0.5f, -1.0f, 2.0f, 0.0f}, {2.0f, -1.0f, 2.0f, 0.0f}};
    for (int r = 0; r < 2; r++) {
        tl_evalstats_scores(z4[r], 4, s);
        double e[4], S = 0;
        for (int j = 0; j < 4; j++) S += e[j] = exp(z4[r][j]);
        for (int k = 0; k < 4; k++) {
            const double p = e[k] / S;
            assert_true(fabs(s[k] - log(p / (1 - p))) < 1e-12);
        }
    }
    /* Bins: ends take everything beyond; monotone; exact edges. */
    assert_int_equal(tl_evalstats_bin(-INFINITY, 64), 0);
    assert_int_equal(tl_evalstats_bin(-1e300, 64), 0);
    assert_int_equal(tl_evalstats_bin(-TL_EVAL_RANGE, 64), 0);
    assert_int_equal(tl_evalstats_bin(0.0, 64), 32);
    assert_int_equal(tl_evalstats_bin(-0.01, 64), 31);
    assert_int_equal(tl_evalstats_bin(1.0, 64), 33);
    assert_int_equal(tl_evalstats_bin(TL_EVAL_RANGE - 1e-9, 64), 63);
    assert_int_equal(tl_evalstats_bin(INFINITY, 64), 63);
    assert_int_equal(tl_evalstats_bin(1.0 / 64, TL_EVAL_BINS), 2049);
    int last = 0;
    for (double x = -40; x < 40; x += 0.01) {
        const int b = tl_evalstats_bin(x, 1000);
        assert_true(b >= last && b < 1000);
        last = b;
    }
    assert_int_equal(last, 999);
}

static void test_bad_calls(void **state) {
    (void)state;
    tl_evalstats s, t;
    assert_int_equal(tl_evalstats_init(&s, 1, 8), TL_ERANGE);
    assert_int_equal(tl_evalstats_init(&s, 3, 1), TL_ERANGE);
    assert_int_equal(tl_evalstats_init(&s, TL_EVAL_MAX_CLASSES + 1, 8), TL_ERANGE);
    assert_int_equal(tl_evalstats_init(&s, 3, TL_EVAL_MAX_BINS + 1), TL_ERANGE);
    assert_int_equal(tl_evalstats_init(&s, TL_EVAL_MAX_CLASSES, TL_EVAL_MAX_BINS), TL_ERANGE);
    tl_evalstats_free(&s);
    tl_evalstats_free(NULL);

    assert_int_equal(tl_evalstats_init(&s, 3, 8), 0);
    float z[6] = {0, 1, 2, 3, 4, 5};
    int32_t y[2] = {0, 3};
    assert_int_equal(tl_evalstats_add(&s, z, y, 2), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(), "row 1 has label 3"));
    y[1] = -1;
    assert_int_equal(tl_evalstats_add(&s, z, y, 2), TL_EINVAL);
    y[1] = 2;
    z[4] = NAN;
    assert_int_equal(tl_evalstats_add(&s, z, y, 2), TL_ENUMERIC);
    assert_non_null(strstr(tl_errmsg(), "[1, 1]"));
    z[4] = INFINITY;
    assert_int_equal(tl_evalstats_add(&s, z, y, 2), TL_ENUMERIC);
    assert_int_equal(s.n, 0); /* nothing was added */
    for (int i = 0; i < 9 + 2 * 3 * 8; i++) assert_int_equal(s.confusion[i], 0);
    assert_true(s.loss_sum == 0);

    assert_int_equal(tl_evalstats_init(&t, 3, 16), 0);
    assert_int_equal(tl_evalstats_merge(&s, &t), TL_EINVAL);
    tl_evalstats_free(&t);
    assert_int_equal(tl_evalstats_init(&t, 3, 8), 0);
    t.n = TL_EVAL_MAX_ROWS - 1;
    s.n = 1;
    assert_int_equal(tl_evalstats_merge(&s, &t), TL_ERANGE);
    assert_int_equal(s.n, 1);
    tl_evalstats_free(&t);
    tl_evalstats_free(&s);
}

/* A valid message of 7 rows, 3 classes, 8 bins, and its parts' offsets. */
#define HC 3
#define HB 8
static size_t conf_off(int t, int p) { return 8 * (TL_EVAL_HEADER_WORDS + t * HC + p); }
static size_t pos_off(int k, int b) { return 8 * (TL_EVAL_HEADER_WORDS + HC * HC + k * HB + b); }
static size_t neg_off(int k, int b) {
    return 8 * (TL_EVAL_HEADER_WORDS + HC * HC + HC * HB + k * HB + b);
}
static uint64_t rd(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void wr(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_hostile_decode(void **state) {
    (void)state;
    const float z[7 * HC] = {3, 0, 0, 0, 2, 1, 1, 1, 4, 0.5f, 0, 0, 0, 0, 9, 1, 2, 3, 5, 5, 0};
    const int32_t y[7] = {0, 1, 2, 0, 2, 1, 1};
    tl_evalstats s, d, ref;
    assert_int_equal(tl_evalstats_init(&s, HC, HB), 0);
    assert_int_equal(tl_evalstats_add(&s, z, y, 7), 0);
    const size_t len = tl_evalstats_size(HC, HB);
    assert_int_equal(len, 8 * (5 + 9 + 48));
    uint8_t *good = malloc(len), *bad = malloc(len + 8);
    assert_non_null(good);
    assert_non_null(bad);
    tl_evalstats_encode(&s, good);
    assert_memory_equal(good, "tleval01", 8);
    assert_int_equal(rd(good + 8), HC);
    assert_int_equal(rd(good + 16), HB);
    assert_int_equal(rd(good + 24), 7);
    /* The destination holds other sums; a refused message leaves them. */
    assert_int_equal(tl_evalstats_init(&d, HC, HB), 0);
    assert_int_equal(tl_evalstats_init(&ref, HC, HB), 0);
    assert_int_equal(tl_evalstats_add(&d, z, y, 3), 0);
    assert_int_equal(tl_evalstats_add(&ref, z, y, 3), 0);

#define REFUSED(L, what)                                                \
    do {                                                                \
        assert_int_equal(tl_evalstats_decode(&d, bad, (L)), TL_EPROTO); \
        assert_non_null(strstr(tl_errmsg(), what));                     \
        assert_same_sums(&d, &ref);                                     \
        assert_true(d.loss_sum == ref.loss_sum);                        \
        memcpy(bad, good, len);                                         \
    } while (0)

    memcpy(bad, good, len);
    REFUSED(len - 1, "expected");
    REFUSED(len + 8, "expected");
    REFUSED(39, "shorter than the header");
    REFUSED(0, "shorter than the header");
    bad[3] ^= 1;
    REFUSED(len, "bad magic");
    wr(bad + 8, 4);
    REFUSED(len, "4 classes x 8 bins, expected 3 x 8");
    wr(bad + 16, 7);
    REFUSED(len, "expected 3 x 8");
    wr(bad + 8, (uint64_t)1 << 40); /* a size product that would wrap */
    REFUSED(len, "expected 3 x 8");
    wr(bad + 24, TL_EVAL_MAX_ROWS);
    REFUSED(len, "rows");
    wr(bad + 32, 0x7ff8000000000000ull); /* NaN */
    REFUSED(len, "loss sum");
    wr(bad + 32, 0xbff0000000000000ull); /* -1.0 */
    REFUSED(len, "loss sum");
    wr(bad + 32, 0x7ff0000000000000ull); /* +inf */
    REFUSED(len, "loss sum");
    wr(bad + 24, 8); /* n disagrees with every total */
    REFUSED(len, "confusion counts do not sum to n = 8");
    wr(bad + conf_off(2, 2), rd(bad + conf_off(2, 2)) + 1); /* one row too many */
    REFUSED(len, "confusion counts");
    /* Counts that wrap 2^64 to the right total. */
    wr(bad + conf_off(0, 1), rd(bad + conf_off(0, 1)) + (UINT64_C(1) << 63));
    wr(bad + conf_off(1, 0), rd(bad + conf_off(1, 0)) + (UINT64_C(1) << 63));
    REFUSED(len, "confusion counts");
    wr(bad + pos_off(1, 0), rd(bad + pos_off(1, 0)) + (UINT64_C(1) << 63));
    wr(bad + pos_off(1, 1), rd(bad + pos_off(1, 1)) + (UINT64_C(1) << 63));
    REFUSED(len, "class 1: positive histogram");
    {
        int b0 = 0; /* an empty bin of class 2's negatives: 2^64 - 1 there, +1 elsewhere */
        while (rd(good + neg_off(2, b0))) b0++;
        wr(bad + neg_off(2, b0), UINT64_MAX);
        wr(bad + neg_off(2, (b0 + 1) % HB), rd(bad + neg_off(2, (b0 + 1) % HB)) + 1);
        REFUSED(len, "class 2: negative histogram");
    }
    /* A row moved from a positive to a negative histogram. */
    uint64_t pk = 0;
    int bk = 0;
    for (int b = 0; b < HB; b++)
        if (rd(good + pos_off(0, b))) bk = b, pk = 1;
    assert_true(pk);
    wr(bad + pos_off(0, bk), rd(bad + pos_off(0, bk)) - 1);
    wr(bad + neg_off(0, bk), rd(bad + neg_off(0, bk)) + 1);
    REFUSED(len, "class 0: positive histogram");
    /* A whole row moved between true classes, histograms left alone. */
    wr(bad + conf_off(1, 1), rd(bad + conf_off(1, 1)) - 1);
    wr(bad + conf_off(0, 1), rd(bad + conf_off(0, 1)) + 1);
    REFUSED(len, "class 0: positive histogram does not sum to its 3 true rows");
    /* n = 0 with a loss. */
    {
        tl_evalstats e;
        assert_int_equal(tl_evalstats_init(&e, HC, HB), 0);
        tl_evalstats_encode(&e, bad);
        wr(bad + 32, 0x3ff0000000000000ull);
        REFUSED(len, "loss sum 1 of 0 rows");
        tl_evalstats_encode(&e, bad);
        assert_int_equal(tl_evalstats_decode(&d, bad, len), 0); /* empty is fine */
        assert_int_equal(d.n, 0);
        tl_evalstats_free(&e);
    }
#undef REFUSED
    /* The untouched message decodes to the sender's sums. */
    assert_int_equal(tl_evalstats_decode(&d, good, len), 0);
    assert_same_sums(&d, &s);
    assert_true(d.loss_sum == s.loss_sum);
    free(good);
    free(bad);
    tl_evalstats_free(&s);
    tl_evalstats_free(&d);
    tl_evalstats_free(&ref);
}

static void test_json(void **state) {
    (void)state;
    const int32_t yt[6] = {0, 1, 2, 0, 1, 2}, yp[6] = {0, 2, 1, 0, 0, 1};
    float z[18];
    rows_from_predictions(z, yp, 6, 3);
    tl_evalstats s;
    tl_eval_metrics m;
    assert_int_equal(tl_evalstats_init(&s, 3, 4096), 0);
    assert_int_equal(tl_evalstats_add(&s, z, yt, 6), 0);
    assert_int_equal(tl_eval_metrics_compute(&s, &m), 0);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    /* Appends after what is there, growing from a tiny buffer. */
    buf = malloc(2);
    strcpy(buf, "{");
    len = 1;
    cap = 2;
    assert_int_equal(tl_eval_json(&s, &m, "test_", &buf, &len, &cap), 0);
    char want[1024];
    snprintf(want, sizeof want,
             "{\"test_n\":6,\"test_loss\":%.9g,\"test_accuracy\":0.333333333,"
             "\"test_macro_f1\":0.266666667,\"test_auc\":%.9g,\"test_auc_bound\":%.9g,"
             "\"test_auc_classes\":3,\"test_precision\":[0.666666667,0,0],"
             "\"test_recall\":[1,0,0],\"test_confusion\":[[2,0,0],[1,0,1],[0,2,0]]",
             m.loss, m.auc, m.auc_bound);
    assert_string_equal(buf, want);
    assert_int_equal(len, strlen(want));
    assert_true(cap > len);
    free(buf);
    tl_eval_metrics_free(&m);
    tl_eval_metrics_free(&m);
    tl_evalstats_free(&s);
}

int main(void) {
    tl_rng_seed(&rng, 10);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_within_bound),
        cmocka_unit_test(test_sklearn_example),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_scores_and_bins),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_hostile_decode),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
