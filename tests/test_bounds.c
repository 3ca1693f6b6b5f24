/* test_bounds.c - the interval bounds on what an honest node can send (bounds.h):
 * real forward and backward passes of random models (relu, tanh, sigmoid, none;
 * several cuts; random and extreme inputs; honest and arbitrary cut gradients)
 * never fail them; an element scaled by 1e6 or set to FLT_MAX does, and the
 * message names it; the bound is tight where it can be reached; likewise h,
 * g (in [-1, 1]) and the loss sum. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/bounds.h"
#include "tl/error.h"
#include "tl/finite.h"
#include "tl/loss.h"
#include "tl/model.h"
#include "tl/rng.h"

#define MEAN 0.1307f
#define STD 0.3081f

static tl_rng rng;

/* One node's view of a step, computed as an honest node computes it. */
typedef struct scene {
    tl_model m;
    int cm, rows, dc;
    size_t p_node;
    float *params, *grads, *dh, *g;
    double loss; /* the rows' loss sum, as FORWARD_RESULT carries it */
    tl_ws ws;
    tl_bounds b;
} scene;

/* Builds a scene: spec on in_dim inputs cut after linear layer `cut`, params
 * scaled by wscale, inputs random bytes (extreme: only 0 and 255), dH the
 * honest one (dh_scale 0) or uniform in +-dh_scale. */
static void scene_make(scene *s, const char *spec, int in_dim, int cut, int rows, float wscale,
                       int extreme, float dh_scale, uint32_t seed) {
    memset(s, 0, sizeof *s);
    assert_int_equal(tl_model_parse(spec, in_dim, &s->m), 0);
    assert_int_equal(tl_model_cut_modules(&s->m, cut, &s->cm), 0);
    const tl_model *m = &s->m;
    const int L = m->n_modules, C = m->n_classes;
    s->rows = rows;
    s->dc = tl_model_width(m, s->cm);
    s->p_node = tl_model_param_offset(m, s->cm);
    s->params = malloc(sizeof(float) * m->n_params);
    s->grads = calloc(m->n_params, sizeof(float));
    s->dh = malloc(sizeof(float) * (size_t)rows * s->dc);
    s->g = malloc(sizeof(float) * (size_t)rows * C);
    int32_t *y = malloc(sizeof(int32_t) * rows);
    assert_non_null(s->params);
    assert_non_null(s->grads);
    assert_non_null(s->dh);
    assert_non_null(s->g);
    assert_non_null(y);
    tl_model_init(m, s->params, seed);
    for (size_t i = 0; i < m->n_params; i++) s->params[i] *= wscale;
    assert_int_equal(tl_ws_init(&s->ws, m, rows), 0);
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < in_dim; j++) {
            uint32_t byte = extreme ? (tl_rng_u32(&rng) & 1) * 255 : tl_rng_u32(&rng) % 256;
            s->ws.h[0][(size_t)r * in_dim + j] = ((float)byte / 255.0f - MEAN) / STD;
        }
        y[r] = (int32_t)(tl_rng_u32(&rng) % (uint32_t)C);
    }
    /* the node: the whole forward, g = softmax - onehot */
    tl_model_forward(m, s->params, &s->ws, rows, 0, L);
    tl_nll_grad(s->g, s->ws.h[L], y, rows, C);
    s->loss = tl_nll_forward(s->ws.h[L], y, rows, C, NULL);
    if (dh_scale == 0) { /* the orchestrator's honest dL/dH_c */
        float *G = malloc(sizeof(float) * (size_t)rows * C), *scratch = calloc(m->n_params, 4);
        assert_non_null(G);
        assert_non_null(scratch);
        memcpy(G, s->g, sizeof(float) * (size_t)rows * C);
        tl_nll_scale(G, (long)rows * C, rows);
        tl_model_backward(m, s->params, scratch, &s->ws, rows, s->cm, L, G, s->dh);
        free(G);
        free(scratch);
    } else {
        for (size_t i = 0; i < (size_t)rows * s->dc; i++)
            s->dh[i] = tl_rng_uniform(&rng, -dh_scale, dh_scale);
    }
    /* the node's BACKWARD */
    tl_model_backward(m, s->params, s->grads, &s->ws, rows, 0, s->cm, s->dh, NULL);
    free(y);
    assert_int_equal(tl_bounds_init(&s->b, m, s->cm, tl_bounds_x_max(MEAN, STD)), 0);
    tl_bounds_forward(&s->b, s->params);
    tl_bounds_backward(&s->b, s->dh, rows);
}

static void scene_free(scene *s) {
    tl_bounds_free(&s->b);
    tl_ws_free(&s->ws);
    free(s->params);
    free(s->grads);
    free(s->dh);
    free(s->g);
}

/* Everything an honest node sends passes, whole and in chunks. */
static void assert_honest_passes(scene *s) {
    if (tl_bounds_check_h(&s->b, s->ws.h[s->cm], s->rows, "h") < 0) fail_msg("%s", tl_errmsg());
    if (tl_bounds_check_g(s->g, (size_t)s->rows * s->m.n_classes, "g") < 0)
        fail_msg("%s", tl_errmsg());
    if (tl_bounds_check_loss(&s->b, s->loss, (size_t)s->rows, "loss") < 0)
        fail_msg("%s", tl_errmsg());
    if (tl_bounds_check_grads(&s->b, s->grads, 0, s->p_node, "grads") < 0)
        fail_msg("%s: %s", s->m.spec, tl_errmsg());
    for (size_t off = 0; off < s->p_node; off += 777) {
        size_t n = s->p_node - off < 777 ? s->p_node - off : 777;
        if (tl_bounds_check_grads(&s->b, s->grads + off, off, n, "grads") < 0)
            fail_msg("chunk at %zu: %s", off, tl_errmsg());
    }
}

static const char *specs[] = {
    "linear:32,linear:24,linear:16,linear:10",
    "linear:32,relu,linear:24,relu,linear:16,relu,linear:10",
    "linear:32,tanh,linear:24,tanh,linear:16,tanh,linear:10",
    "linear:32,sigmoid,linear:24,sigmoid,linear:16,sigmoid,linear:10",
    "linear:32,relu,linear:24,tanh,linear:16,sigmoid,linear:10",
};

static void test_honest_never_fails(void **state) {
    (void)state;
    int cases = 0;
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++)
        for (int cut = 1; cut <= 3; cut++)
            for (int v = 0; v < 6; v++) {
                scene s;
                const float wscale[] = {1, 1, 8, 1, 30, 0.01f};
                const float dhs[] = {0, 0, 0, 5, 0, 1e-3f};
                scene_make(&s, specs[si], 40, cut, 1 + (v * 23) % 64, wscale[v], v == 1 || v == 4,
                           dhs[v], 100 + (uint32_t)(si * 10 + cut * 3 + v));
                assert_honest_passes(&s);
                scene_free(&s);
                cases++;
            }
    assert_int_equal(cases, 90);
}

/* The default model's shape at the default cut, with MNIST-sized inputs. */
static void test_honest_default_model(void **state) {
    (void)state;
    scene s;
    scene_make(&s, "linear:256,linear:128,linear:64,linear:10", 784, 2, 64, 1, 0, 0, 7);
    assert_honest_passes(&s);
    scene_free(&s);
}

/* Where the bound can be reached (positive weights, inputs all at x_max) it is
 * reached to within the slack, and honest rounding still passes. */
static void test_tight(void **state) {
    (void)state;
    tl_model m;
    assert_int_equal(tl_model_parse("linear:8,relu,linear:3", 16, &m), 0);
    float *p = malloc(sizeof(float) * m.n_params);
    assert_non_null(p);
    tl_model_init(&m, p, 3);
    for (size_t i = 0; i < m.n_params; i++) p[i] = fabsf(p[i]);
    tl_ws ws;
    assert_int_equal(tl_ws_init(&ws, &m, 2), 0);
    float x1 = ((float)255 / 255.0f - MEAN) / STD; /* the largest |x| */
    for (int j = 0; j < 32; j++) ws.h[0][j] = x1;
    tl_model_forward(&m, p, &ws, 2, 0, 2);
    tl_bounds b;
    assert_int_equal(tl_bounds_init(&b, &m, 2, tl_bounds_x_max(MEAN, STD)), 0);
    assert_true(fabs(tl_bounds_x_max(MEAN, STD) - (1.0 - MEAN) / STD) < 1e-12);
    tl_bounds_forward(&b, p);
    assert_int_equal(tl_bounds_check_h(&b, ws.h[2], 2, "h"), 0);
    for (int i = 0; i < 8; i++) {
        double ratio = ws.h[2][i] / b.uf[b.off[2] + i];
        assert_true(ratio > 0.97 && ratio <= 1.0);
    }
    /* just above the bound fails */
    ws.h[2][8 + 5] = b.uf[b.off[2] + 5] * 1.001f;
    assert_int_equal(tl_bounds_check_h(&b, ws.h[2], 2, "FORWARD_RESULT h"), TL_EPROTO);
    assert_non_null(strstr(tl_errmsg(), "FORWARD_RESULT h: element [1,5] = "));
    tl_bounds_free(&b);
    tl_ws_free(&ws);
    free(p);
}

/* Index of the largest |x| in x[0, n). */
static size_t argmax_abs(const float *x, size_t n) {
    size_t k = 0;
    for (size_t i = 1; i < n; i++)
        if (fabsf(x[i]) > fabsf(x[k])) k = i;
    return k;
}

static void test_poison_is_named(void **state) {
    (void)state;
    for (size_t si = 0; si < sizeof specs / sizeof specs[0]; si++) {
        scene s;
        scene_make(&s, specs[si], 40, 2, 17, 1, 0, 0, 50 + (uint32_t)si);
        const tl_model *m = &s.m;
        /* the largest weight gradient of layer 0, scaled by 1e6 */
        size_t nw = (size_t)m->mod[0].out * m->mod[0].in;
        size_t e = argmax_abs(s.grads, nw);
        float keep = s.grads[e];
        s.grads[e] = keep * 1e6f;
        assert_int_equal(tl_bounds_check_grads(&s.b, s.grads, 0, s.p_node, "BACKWARD_RESULT grads"),
                         TL_EPROTO);
        char want[80];
        snprintf(want, sizeof want,
                 "BACKWARD_RESULT grads: 0.weight[%zu,%zu] = ", e / (size_t)m->mod[0].in,
                 e % (size_t)m->mod[0].in);
        if (!strstr(tl_errmsg(), want) || !strstr(tl_errmsg(), "any honest node can produce"))
            fail_msg("message '%s' lacks '%s'", tl_errmsg(), want);
        /* the same found by a chunked check that holds the element */
        size_t off = e - e % 100;
        assert_int_equal(tl_bounds_check_grads(&s.b, s.grads + off, off, 100, "grads"), TL_EPROTO);
        s.grads[e] = keep;
        /* FLT_MAX in the last node-side bias */
        int k = 0;
        for (int i = 0; i < s.cm; i++)
            if (m->mod[i].kind == TL_MOD_LINEAR) k = i;
        size_t bi = m->mod[k].b_off + 3;
        s.grads[bi] = -FLT_MAX;
        assert_int_equal(tl_bounds_check_grads(&s.b, s.grads, 0, s.p_node, "g"), TL_EPROTO);
        snprintf(want, sizeof want, "g: %d.bias[3] = -3.40282e+38 exceeds", k);
        if (!strstr(tl_errmsg(), want)) fail_msg("'%s' lacks '%s'", tl_errmsg(), want);
        /* NaN is left to the finiteness checks */
        s.grads[bi] = NAN;
        assert_int_equal(tl_bounds_check_grads(&s.b, s.grads, 0, s.p_node, "g"), 0);
        /* h = FLT_MAX */
        s.ws.h[s.cm][s.dc + 1] = FLT_MAX;
        assert_int_equal(tl_bounds_check_h(&s.b, s.ws.h[s.cm], s.rows, "FORWARD_RESULT h"),
                         TL_EPROTO);
        assert_non_null(strstr(tl_errmsg(), "FORWARD_RESULT h: element [1,1] = 3.40282e+38"));
        /* g outside [-1, 1] */
        s.g[7] = 1.5f;
        assert_int_equal(tl_bounds_check_g(s.g, (size_t)s.rows * m->n_classes, "FORWARD_RESULT g"),
                         TL_EPROTO);
        assert_non_null(strstr(tl_errmsg(), "FORWARD_RESULT g: element 7 = 1.5"));
        /* a loss no row can have */
        assert_int_equal(tl_bounds_check_loss(&s.b, 1e30, (size_t)s.rows, "FORWARD_RESULT"),
                         TL_EPROTO);
        assert_non_null(strstr(tl_errmsg(), "FORWARD_RESULT: loss_sum = 1e+30 exceeds the bound"));
        scene_free(&s);
    }
}

static void test_finite(void **state) {
    (void)state;
    tl_model m;
    assert_int_equal(tl_model_parse("linear:4,relu,linear:3", 5, &m), 0);
    float p[64];
    assert_true(m.n_params <= 64);
    for (size_t i = 0; i < m.n_params; i++) p[i] = 0.5f;
    assert_int_equal(tl_bounds_check_finite(&m, p, "x"), 0);
    p[1 * 5 + 2] = NAN; /* 0.weight[1,2] */
    assert_int_equal(tl_bounds_check_finite(&m, p, "ck.st"), TL_ENUMERIC);
    assert_string_equal(tl_errmsg(), "ck.st: 0.weight[1,2] is NaN");
    p[1 * 5 + 2] = 0;
    p[m.mod[2].b_off + 2] = -INFINITY;
    assert_int_equal(tl_bounds_check_finite(&m, p, "ck.st"), TL_ENUMERIC);
    assert_string_equal(tl_errmsg(), "ck.st: 2.bias[2] is -Inf");
    float big[10000] = {0};
    assert_int_equal(tl_first_nonfinite(big, 10000), 10000);
    big[9999] = INFINITY;
    assert_int_equal(tl_first_nonfinite(big, 10000), 9999);
}

int main(void) {
    tl_rng_seed(&rng, 2026);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_honest_never_fails),
        cmocka_unit_test(test_honest_default_model),
        cmocka_unit_test(test_tight),
        cmocka_unit_test(test_poison_is_named),
        cmocka_unit_test(test_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
