/* test_nn.c - finite-difference gradient checks for every layer, activation and
 * the loss; model spec parsing; cut arithmetic; split backward == full backward. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/act.h"
#include "tl/linear.h"
#include "tl/loss.h"
#include "tl/model.h"
#include "tl/rng.h"

static tl_rng rng;

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = tl_rng_uniform(&rng, -scale, scale);
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Central difference of f at x[i], in float arithmetic with step h. */
#define CHECK_CLOSE(analytic, numeric, what, i)                                        \
    do {                                                                               \
        double a_ = (analytic), n_ = (numeric);                                        \
        if (fabs(a_ - n_) > 2e-2 * fmax(fabs(a_), fabs(n_)) + 2e-3)                    \
            fail_msg("%s[%d]: analytic %.6f vs numeric %.6f", what, (int)(i), a_, n_); \
    } while (0)

/* Objective for the linear check: L = sum(r .* linear(x)). */
static double lin_obj(const float *x, const float *w, const float *b, const float *r, float *out,
                      int n, int in, int o) {
    tl_linear_forward(out, x, w, b, n, in, o);
    return dot(out, r, (size_t)n * o);
}

static void test_linear_grad(void **s) {
    const int n = 5, in = 7, o = 4;
    float x[35], w[28], b[4], r[20], out[20], dx[35], dw[28] = {0}, db[4] = {0};
    fill(x, 35, 1);
    fill(w, 28, 1);
    fill(b, 4, 1);
    fill(r, 20, 1);
    tl_linear_backward(dx, dw, db, r, x, w, n, in, o); /* dL/dout = r */
    const float h = 1e-2f;
    float *params[3] = {x, w, b}, *grads[3] = {dx, dw, db};
    int sizes[3] = {35, 28, 4};
    const char *names[3] = {"dx", "dw", "db"};
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < sizes[p]; i++) {
            float keep = params[p][i];
            params[p][i] = keep + h;
            double up = lin_obj(x, w, b, r, out, n, in, o);
            params[p][i] = keep - h;
            double down = lin_obj(x, w, b, r, out, n, in, o);
            params[p][i] = keep;
            CHECK_CLOSE(grads[p][i], (up - down) / (2 * h), names[p], i);
        }
    /* backward accumulates into dw, db */
    float dw2[28], db2[4];
    memcpy(dw2, dw, sizeof dw);
    memcpy(db2, db, sizeof db);
    tl_linear_backward(NULL, dw, db, r, x, w, n, in, o);
    for (int i = 0; i < 28; i++) assert_float_equal(dw[i], 2 * dw2[i], 1e-5);
    for (int i = 0; i < 4; i++) assert_float_equal(db[i], 2 * db2[i], 1e-5);
}

typedef void (*act_fwd)(float *, const float *, size_t);
typedef void (*act_bwd)(float *, const float *, const float *, size_t);

static void check_act(act_fwd f, act_bwd b, const char *name) {
    enum { N = 40 };
    float x[N], y[N], r[N], dx[N], tmp[N];
    fill(x, N, 3);
    for (int i = 0; i < N; i++)
        if (fabsf(x[i]) < 0.05f) x[i] = 0.5f; /* keep relu away from its kink */
    fill(r, N, 1);
    f(y, x, N);
    b(dx, r, y, N);
    const float h = 1e-2f;
    for (int i = 0; i < N; i++) {
        float keep = x[i];
        x[i] = keep + h;
        f(tmp, x, N);
        double up = dot(tmp, r, N);
        x[i] = keep - h;
        f(tmp, x, N);
        double down = dot(tmp, r, N);
        x[i] = keep;
        CHECK_CLOSE(dx[i], (up - down) / (2 * h), name, i);
    }
}

static void test_activation_grads(void **s) {
    check_act(tl_relu_forward, tl_relu_backward, "relu");
    check_act(tl_tanh_forward, tl_tanh_backward, "tanh");
    check_act(tl_sigmoid_forward, tl_sigmoid_backward, "sigmoid");
}

static void test_loss_grad(void **s) {
    enum { N = 6, C = 5 };
    float z[N * C], g[N * C];
    int32_t y[N] = {0, 4, 2, 2, 1, 3};
    fill(z, N * C, 2);
    tl_nll_grad(g, z, y, N, C);
    tl_nll_scale(g, N * C, N);
    const float h = 1e-2f;
    for (int i = 0; i < N * C; i++) {
        float keep = z[i];
        z[i] = keep + h;
        double up = tl_nll_forward(z, y, N, C, NULL) / N;
        z[i] = keep - h;
        double down = tl_nll_forward(z, y, N, C, NULL) / N;
        z[i] = keep;
        CHECK_CLOSE(g[i], (up - down) / (2 * h), "dz", i);
    }
    /* each row of softmax - onehot sums to zero */
    tl_nll_grad(g, z, y, N, C);
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int j = 0; j < C; j++) sum += g[i * C + j];
        assert_true(fabs(sum) < 1e-6);
    }
}

static void test_loss_values(void **s) {
    float z[6] = {1, 2, 3, 3, 0, -1}; /* row 0 argmax 2, row 1 argmax 0 */
    int32_t y[2] = {2, 1};
    int64_t correct;
    double l = tl_nll_forward(z, y, 2, 3, &correct);
    double l0 = -(3 - log(exp(1) + exp(2) + exp(3)));
    double l1 = -(0 - log(exp(3) + exp(0) + exp(-1)));
    assert_true(fabs(l - (l0 + l1)) < 1e-5);
    assert_int_equal(correct, 1);
}

/* Whole-model gradient by finite differences on the mean loss. */
static void test_model_grad(void **s) {
    const char *specs[] = {"linear:6,relu,linear:5,tanh,linear:4,sigmoid,linear:3",
                           "linear:5,linear:4,linear:3"};
    for (int sp = 0; sp < 2; sp++) {
        tl_model m;
        assert_int_equal(tl_model_parse(specs[sp], 4, &m), 0);
        const int n = 5;
        float *p = malloc(m.n_params * 4), *g = calloc(m.n_params, 4), *dz = malloc(n * 3 * 4);
        tl_model_init(&m, p, 7);
        tl_ws ws;
        assert_int_equal(tl_ws_init(&ws, &m, n), 0);
        float x[20];
        fill(x, 20, 1);
        int32_t y[5] = {0, 1, 2, 1, 0};
        memcpy(ws.h[0], x, sizeof x);
        tl_model_forward(&m, p, &ws, n, 0, m.n_modules);
        tl_nll_grad(dz, ws.h[m.n_modules], y, n, 3);
        tl_nll_scale(dz, n * 3, n);
        tl_model_backward(&m, p, g, &ws, n, 0, m.n_modules, dz, NULL);
        const float h = 1e-2f;
        for (size_t i = 0; i < m.n_params; i++) {
            float keep = p[i];
            double v[2];
            for (int k = 0; k < 2; k++) {
                p[i] = keep + (k ? -h : h);
                memcpy(ws.h[0], x, sizeof x);
                tl_model_forward(&m, p, &ws, n, 0, m.n_modules);
                v[k] = tl_nll_forward(ws.h[m.n_modules], y, n, 3, NULL) / n;
            }
            p[i] = keep;
            CHECK_CLOSE(g[i], (v[0] - v[1]) / (2 * h), "param", i);
        }
        tl_ws_free(&ws);
        free(p);
        free(g);
        free(dz);
    }
}

static void test_parse(void **s) {
    tl_model m;
    assert_int_equal(tl_model_parse("linear:256,linear:128,linear:64,linear:10", 784, &m), 0);
    assert_int_equal(m.n_modules, 4);
    assert_int_equal(m.n_linear, 4);
    assert_int_equal(m.n_classes, 10);
    assert_int_equal(m.n_params, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10);
    char name[32];
    int rank;
    int64_t shape[2];
    size_t off;
    assert_int_equal(tl_model_tensor(&m, 2, name, &rank, shape, &off), 0);
    assert_string_equal(name, "1.weight");
    assert_int_equal(shape[0], 128);
    assert_int_equal(shape[1], 256);
    assert_int_equal(off, 784 * 256 + 256);
    assert_int_equal(tl_model_tensor(&m, 8, name, &rank, shape, &off), -1);

    const char *bad[] = {"",          "linear:0",           "linear:x", "linear:10,",
                         "relu",      "linear:10,relu",     "linear:1", "conv:3",
                         "linear:-5", "linear:10,,linear:3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (tl_model_parse(bad[i], 784, &m) >= 0) fail_msg("accepted bad spec '%s'", bad[i]);
}

static void test_cut(void **s) {
    tl_model m;
    int k;
    assert_int_equal(tl_model_parse("linear:8,relu,linear:6,tanh,linear:4,linear:3", 5, &m), 0);
    assert_int_equal(tl_model_cut_modules(&m, 1, &k), 0);
    assert_int_equal(k, 2); /* linear, relu */
    assert_int_equal(tl_model_cut_modules(&m, 2, &k), 0);
    assert_int_equal(k, 4);
    assert_int_equal(tl_model_cut_modules(&m, 3, &k), 0);
    assert_int_equal(k, 5);
    assert_true(tl_model_cut_modules(&m, 0, &k) < 0);
    assert_true(tl_model_cut_modules(&m, 4, &k) < 0);
    assert_int_equal(tl_model_param_offset(&m, 2), 5 * 8 + 8);
    assert_int_equal(tl_model_param_offset(&m, 6), m.n_params);
}

/* Running the model in two halves (the node's and the orchestrator's) gives
 * the same bits as running it whole: the heart of one-node exactness. */
static void test_split_equals_whole(void **s) {
    tl_model m;
    assert_int_equal(tl_model_parse("linear:16,relu,linear:12,tanh,linear:8,linear:4", 10, &m), 0);
    const int n = 9;
    float *p = malloc(m.n_params * 4), *g1 = calloc(m.n_params, 4), *g2 = calloc(m.n_params, 4);
    tl_model_init(&m, p, 3);
    float x[90], dz[36], dh[9 * 16];
    fill(x, 90, 1);
    int32_t y[9] = {0, 1, 2, 3, 0, 1, 2, 3, 0};
    for (int cut = 1; cut <= 3; cut++) {
        int c;
        assert_int_equal(tl_model_cut_modules(&m, cut, &c), 0);
        tl_ws a, b;
        tl_ws_init(&a, &m, n);
        tl_ws_init(&b, &m, n);
        memset(g1, 0, m.n_params * 4);
        memset(g2, 0, m.n_params * 4);
        memcpy(a.h[0], x, sizeof x);
        tl_model_forward(&m, p, &a, n, 0, m.n_modules);
        tl_nll_grad(dz, a.h[m.n_modules], y, n, 4);
        tl_nll_scale(dz, n * 4, n);
        tl_model_backward(&m, p, g1, &a, n, 0, m.n_modules, dz, NULL);

        memcpy(b.h[0], x, sizeof x);
        tl_model_forward(&m, p, &b, n, 0, c);
        tl_model_forward(&m, p, &b, n, c, m.n_modules);
        assert_memory_equal(a.h[m.n_modules], b.h[m.n_modules], n * 4 * sizeof(float));
        tl_model_backward(&m, p, g2, &b, n, c, m.n_modules, dz, dh);
        tl_model_backward(&m, p, g2, &b, n, 0, c, dh, NULL);
        assert_memory_equal(g1, g2, m.n_params * sizeof(float));
        tl_ws_free(&a);
        tl_ws_free(&b);
    }
    free(p);
    free(g1);
    free(g2);
}

int main(void) {
    tl_rng_seed(&rng, 12345);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_grad), cmocka_unit_test(test_activation_grads),
        cmocka_unit_test(test_loss_grad),   cmocka_unit_test(test_loss_values),
        cmocka_unit_test(test_model_grad),  cmocka_unit_test(test_parse),
        cmocka_unit_test(test_cut),         cmocka_unit_test(test_split_equals_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
