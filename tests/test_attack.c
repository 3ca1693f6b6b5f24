/* test_attack.c - the honest-but-curious orchestrator's attack (issue 11,
 * DESIGN §4): from what the orchestrator holds in the OPEN protocol it
 * rebuilds a node's training inputs.
 *
 * One step of a 3-node traverse-mode run on real Fashion-MNIST rows is
 * computed exactly as the protocol computes it, with the library calls that
 * node.c and orchestrator.c make (gather, forward, g = softmax - onehot,
 * G = g / B, orchestrator-side backward giving dL/dH_c, node-side backward
 * giving the node's parameter gradient). Then attack_open() gets only what
 * the orchestrator holds (struct orch_view) and solves for the inputs:
 *   D = dH (.) act'(H_c)                        known: H_c and dH
 *   grad W = D^T A                              A = the layer's input, n x in
 *   (D D^T) A = D grad W                        n x n, n <= 64 rows: solvable
 * and, for cut 2, A is the first layer's activation: D1 = (D W2) (.) 1[A > 0]
 * and the same solve again gives X.
 * In sealed mode (attack_sealed) the same attack on what the orchestrator
 * holds there recovers nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <unistd.h>

#include "tl/dataset.h"
#include "tl/fixed.h"
#include "tl/groupkey.h"
#include "tl/loss.h"
#include "tl/mask.h"
#include "tl/model.h"
#include "tl/sealed.h"

#include "harness.h"

#define SPEC "linear:256,relu,linear:128,relu,linear:64,relu,linear:10"
#define MEAN 0.1307f /* the defaults of tl_config */
#define STD 0.3081f
#define NODES 3
#define BATCH 64

/* ------------------------------------------------------------------------ */
/* What the orchestrator holds about one node in one step, and the attack. */

/* Everything the orchestrator has about node j's part of a step.
 * OPEN protocol: params is the whole model (it holds and sends it) and
 * grads the node-side gradient of BACKWARD_RESULT.
 * SEALED mode: the orchestrator never holds the node side of params nor
 * grads; it holds the node's masked vector (fixed point + masks, mask.h) and
 * the masked sum. See "SEALED MODE HALF" below for where that attack goes. */
typedef struct orch_view {
    const tl_model *m;
    int cut_modules;        /* node-side modules (WELCOME's cut) */
    const float *params;    /* whole model; node side NULL-able in sealed mode */
    int n;                  /* the node's rows in this batch */
    const float *hc;        /* (n, d_c): FORWARD_RESULT h */
    const float *g;         /* (n, classes): FORWARD_RESULT g (traverse mode) */
    const float *dh;        /* (n, d_c): the node's rows of dL/dH_c (BACKWARD) */
    const float *grads;     /* node-side gradient (BACKWARD_RESULT), open protocol */
    const uint64_t *masked; /* sealed: the node's masked vector, p_node values */
} orch_view;

/* Solves (D D^T) A = D G for A: D is (n, out), G is (out, in) as float, A
 * (n, in). Cholesky in double. Returns 0, or -1 if D D^T is not positive
 * definite (rows of D dependent). */
static int solve_input(const double *D, int n, int out, const float *G, int in, double *A) {
    double *M = calloc((size_t)n * n, sizeof *M), *R = calloc((size_t)n * in, sizeof *R);
    assert_non_null(M);
    assert_non_null(R);
    for (int r = 0; r < n; r++)
        for (int s = 0; s <= r; s++) {
            double acc = 0;
            for (int o = 0; o < out; o++) acc += D[(size_t)r * out + o] * D[(size_t)s * out + o];
            M[(size_t)r * n + s] = M[(size_t)s * n + r] = acc;
        }
    for (int r = 0; r < n; r++) /* R = D G */
        for (int o = 0; o < out; o++) {
            double d = D[(size_t)r * out + o];
            if (d == 0) continue;
            const float *g = G + (size_t)o * in;
            double *dst = R + (size_t)r * in;
            for (int i = 0; i < in; i++) dst[i] += d * g[i];
        }
    int rc = 0;
    for (int j = 0; j < n && rc == 0; j++) { /* M = L L^T in place (lower) */
        double s = M[(size_t)j * n + j];
        for (int k = 0; k < j; k++) s -= M[(size_t)j * n + k] * M[(size_t)j * n + k];
        if (!(s > 0)) {
            rc = -1;
            break;
        }
        M[(size_t)j * n + j] = sqrt(s);
        for (int i = j + 1; i < n; i++) {
            double t = M[(size_t)i * n + j];
            for (int k = 0; k < j; k++) t -= M[(size_t)i * n + k] * M[(size_t)j * n + k];
            M[(size_t)i * n + j] = t / M[(size_t)j * n + j];
        }
    }
    for (int c = 0; c < in && rc == 0; c++) { /* L y = R[:, c], L^T a = y */
        for (int i = 0; i < n; i++) {
            double t = R[(size_t)i * in + c];
            for (int k = 0; k < i; k++) t -= M[(size_t)i * n + k] * A[(size_t)k * in + c];
            A[(size_t)i * in + c] = t / M[(size_t)i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double t = A[(size_t)i * in + c];
            for (int k = i + 1; k < n; k++) t -= M[(size_t)k * n + i] * A[(size_t)k * in + c];
            A[(size_t)i * in + c] = t / M[(size_t)i * n + i];
        }
    }
    free(M);
    free(R);
    return rc;
}

#ifndef RELU_THR
#define RELU_THR 1e-5
#endif

/* The attack on the open protocol: rebuilds the node's normalized inputs x
 * (n, in_dim) from v alone. Walks the node side from the cut down: an
 * activation multiplies D by its derivative, taken from the activation's
 * output (H_c at the top, the recovered input of the layer above further
 * down); a linear layer gives its input by the solve, and D W for the next
 * layer down. Returns 0, or -1 if a solve fails. */
static int attack_open(const orch_view *v, double *x) {
    const tl_model *m = v->m;
    const int n = v->n;
    int w = tl_model_width(m, v->cut_modules);
    double *D = malloc(sizeof *D * (size_t)n * w), *out = malloc(sizeof *out * (size_t)n * w);
    assert_non_null(D);
    assert_non_null(out);
    for (size_t i = 0; i < (size_t)n * w; i++) {
        D[i] = v->dh[i];
        out[i] = v->hc[i];
    }
    int rc = 0, recovered = 0; /* out is H_c itself, then recovered values */
    for (int k = v->cut_modules - 1; k >= 0 && rc == 0; k--) {
        const tl_module *mod = &m->mod[k];
        if (mod->kind != TL_MOD_LINEAR) {
            /* ReLU: H_c's zeros are exact; recovered zeros come back as
             * tiny values of either sign */
            double amax = 0, thr;
            for (size_t i = 0; i < (size_t)n * w; i++) amax = fmax(amax, fabs(out[i]));
            thr = recovered ? RELU_THR * amax : 0.0;
            for (size_t i = 0; i < (size_t)n * w; i++) {
                double y = out[i];
                D[i] *= mod->kind == TL_MOD_RELU   ? (y > thr ? 1.0 : 0.0)
                        : mod->kind == TL_MOD_TANH ? 1.0 - y * y
                                                   : y * (1.0 - y);
            }
            continue;
        }
        const int in = mod->in, o = mod->out;
        assert_int_equal(o, w);
        double *A = malloc(sizeof *A * (size_t)n * in);
        assert_non_null(A);
        if (solve_input(D, n, o, v->grads + mod->w_off, in, A) < 0) rc = -1;
        if (rc == 0 && k > 0) { /* D <- D W: dL/d(input of this layer) */
            double *Dn = calloc((size_t)n * in, sizeof *Dn);
            assert_non_null(Dn);
            const float *W = v->params + mod->w_off; /* (out, in) */
            for (int r = 0; r < n; r++)
                for (int j = 0; j < o; j++) {
                    double d = D[(size_t)r * o + j];
                    for (int i = 0; i < in; i++)
                        Dn[(size_t)r * in + i] += d * W[(size_t)j * in + i];
                }
            free(D);
            D = Dn;
            free(out);
            out = A;
            A = NULL;
            recovered = 1;
            w = in;
        } else if (rc == 0) {
            memcpy(x, A, sizeof *x * (size_t)n * in);
        }
        free(A);
    }
    free(D);
    free(out);
    return rc;
}

/* The labels, from traverse mode's g = softmax - onehot: its one negative
 * entry per row is at the label (split mode sends the labels outright). The
 * same in both privacy modes: sealed mode does not hide labels. */
static void attack_labels(const orch_view *v, int32_t *labels) {
    const int c = v->m->n_classes;
    for (int r = 0; r < v->n; r++) {
        labels[r] = -1;
        for (int k = 0; k < c; k++)
            if (v->g[(size_t)r * c + k] < 0) labels[r] = k;
    }
}

/* SEALED MODE HALF: the same attacker holding only what the sealed protocol
 * shows it: in place of the node-side gradient, the node's BACKWARD_RESULT
 * vector (made by sealed.c's tl_sealed_seal, exactly as node.c makes it) or
 * the masked sum of SEALED_STEP, read as fixed point (fixed.h) -- and,
 * generously, the true node-side weights, which in sealed mode it never
 * holds. It must recover nothing usable (PSNR under 15 dB, correlation near
 * 0). Returns what attack_open returns. */
static int attack_sealed(const orch_view *v, const uint64_t *masked, size_t p_node, float *as_grad,
                         double *x) {
    for (size_t i = 0; i < p_node; i++) /* read as fixed point, no range check */
        as_grad[i] = (float)(int64_t)masked[i] * 0x1p-32f;
    orch_view s = *v;
    s.grads = as_grad;
    s.masked = masked;
    return attack_open(&s, x);
}

/* ------------------------------------------------------------------------ */
/* One step of the protocol, computed as the node and the orchestrator do. */

typedef struct step_result {
    int n[NODES];
    size_t rows[NODES][BATCH];
    int32_t y[NODES][BATCH];
    float *hc[NODES], *g[NODES], *dh[NODES], *grads[NODES];
} step_result;

static void run_step(const tl_model *m, const tl_dataset *d, const float *params, int cut_modules,
                     step_result *res) {
    const int L = m->n_modules, dc = tl_model_width(m, cut_modules);
    const size_t p_node = tl_model_param_offset(m, cut_modules);
    tl_ws node_ws[NODES], ows;
    float *g[NODES], *G = malloc(sizeof(float) * BATCH * m->n_classes), *dH;
    assert_non_null(G);
    /* a virtual batch of 64 distinct rows, split 22/21/21 between the nodes */
    int total = 0;
    for (int j = 0; j < NODES; j++) {
        res->n[j] = BATCH / NODES + (j < BATCH % NODES);
        for (int i = 0; i < res->n[j]; i++)
            res->rows[j][i] = (size_t)(total + i) * 937 % d->n; /* spread over the set */
        total += res->n[j];
    }
    assert_int_equal(total, BATCH);
    /* FORWARD at each node: whole model on its rows, h_c and g = softmax - onehot */
    for (int j = 0; j < NODES; j++) {
        const int n = res->n[j];
        assert_int_equal(tl_ws_init(&node_ws[j], m, n), 0);
        g[j] = res->g[j] = malloc(sizeof(float) * n * m->n_classes);
        assert_non_null(g[j]);
        int32_t *y = res->y[j];
        tl_dataset_gather(d, res->rows[j], (size_t)n, MEAN, STD, node_ws[j].h[0], y);
        tl_model_forward(m, params, &node_ws[j], n, 0, L);
        int64_t correct;
        (void)tl_nll_forward(node_ws[j].h[L], y, n, m->n_classes, &correct);
        tl_nll_grad(g[j], node_ws[j].h[L], y, n, m->n_classes);
        res->hc[j] = malloc(sizeof(float) * n * dc);
        assert_non_null(res->hc[j]);
        memcpy(res->hc[j], node_ws[j].h[cut_modules], sizeof(float) * n * dc);
    }
    /* the orchestrator: H_c and G in plan order, its side forward and back */
    assert_int_equal(tl_ws_init(&ows, m, BATCH), 0);
    float *ograds = calloc(m->n_params, sizeof(float));
    dH = malloc(sizeof(float) * BATCH * dc);
    assert_non_null(ograds);
    assert_non_null(dH);
    for (int j = 0, off = 0; j < NODES; off += res->n[j], j++) {
        memcpy(ows.h[cut_modules] + (size_t)off * dc, res->hc[j], sizeof(float) * res->n[j] * dc);
        memcpy(G + (size_t)off * m->n_classes, g[j], sizeof(float) * res->n[j] * m->n_classes);
    }
    tl_model_forward(m, params, &ows, BATCH, cut_modules, L);
    tl_nll_scale(G, (long)BATCH * m->n_classes, BATCH);
    tl_model_backward(m, params, ograds, &ows, BATCH, cut_modules, L, G, dH);
    /* BACKWARD at each node: its rows of dL/dH_c through its side */
    for (int j = 0, off = 0; j < NODES; off += res->n[j], j++) {
        const int n = res->n[j];
        res->dh[j] = malloc(sizeof(float) * n * dc);
        res->grads[j] = calloc(p_node, sizeof(float));
        assert_non_null(res->dh[j]);
        assert_non_null(res->grads[j]);
        memcpy(res->dh[j], dH + (size_t)off * dc, sizeof(float) * n * dc);
        tl_model_backward(m, params, res->grads[j], &node_ws[j], n, 0, cut_modules, res->dh[j],
                          NULL);
        tl_ws_free(&node_ws[j]);
    }
    tl_ws_free(&ows);
    free(ograds);
    free(dH);
    free(G);
}

static void step_free(step_result *res) {
    for (int j = 0; j < NODES; j++) {
        free(res->hc[j]);
        free(res->g[j]);
        free(res->dh[j]);
        free(res->grads[j]);
    }
}

/* Pixel error of a reconstruction: x normalized (n, dim) against the bytes. */
static void score(const tl_dataset *d, const size_t *rows, int n, const double *x, double *psnr,
                  double *max_err, double *corr) {
    double se = 0, sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0, cnt = (double)n * d->dim;
    *max_err = 0;
    for (int r = 0; r < n; r++)
        for (size_t i = 0; i < d->dim; i++) {
            double px = (x[(size_t)r * d->dim + i] * STD + MEAN) * 255.0;
            double t = d->images[rows[r] * d->dim + i], e = px - t;
            se += e * e;
            *max_err = fmax(*max_err, fabs(e));
            sa += px, sb += t, saa += px * px, sbb += t * t, sab += px * t;
        }
    double mse = se / cnt;
    *psnr = mse > 0 ? 10 * log10(255.0 * 255.0 / mse) : 999.0;
    double va = saa - sa * sa / cnt, vb = sbb - sb * sb / cnt; /* Pearson, pixels */
    *corr = va > 0 && vb > 0 ? (sab - sa * sb / cnt) / sqrt(va * vb) : 0.0;
}

static tl_dataset data;

/* Fashion-MNIST is required (harness.h): without it every case fails. */
static int setup(void **state) {
    (void)state;
    harness_init("test_attack", 0, 0);
    if (require_fmnist() < 0) return -1;
    if (tl_dataset_load(fmnist_dir(), "train", &data) < 0) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tl_dataset_free(&data);
    return 0;
}

/* The attack at cut c on the open protocol (returns the worst node's PSNR
 * and max pixel error), and on masked vectors (returns the best node's PSNR
 * and the largest |correlation| with the true pixels there). */
static void attack_at_cut(int cut, double *worst_open_psnr, double *worst_open_err,
                          double *best_sealed_psnr, double *worst_sealed_corr) {
    tl_model m;
    assert_int_equal(tl_model_parse(SPEC, (int)data.dim, &m), 0);
    int cm;
    assert_int_equal(tl_model_cut_modules(&m, cut, &cm), 0);
    const size_t p_node = tl_model_param_offset(&m, cm);
    float *params = malloc(sizeof(float) * m.n_params);
    assert_non_null(params);
    tl_model_init(&m, params, 7);
    step_result res;
    run_step(&m, &data, params, cm, &res);

    /* the sealed side: each node's BACKWARD_RESULT vector as sealed.c makes it
     * (node ids 1..3 in plan order), and their sum as SEALED_STEP carries it */
    tl_group_key gk;
    uint8_t key[TL_GROUP_KEY_LEN]; /* a fixed key: the test repeats exactly */
    for (int i = 0; i < TL_GROUP_KEY_LEN; i++) key[i] = (uint8_t)(0x5a ^ i);
    assert_int_equal(tl_group_key_from_bytes(&gk, key), 0);
    tl_optim_cfg oc;
    assert_int_equal(tl_optim_defaults("adadelta", &oc), 0);
    uint32_t ids[NODES] = {1, 2, 3};
    float *as_grad = malloc(sizeof(float) * p_node);
    uint64_t *masked[NODES], *sum = calloc(p_node, sizeof(uint64_t));
    assert_non_null(as_grad);
    assert_non_null(sum);
    for (int j = 0; j < NODES; j++) {
        tl_sealed_node sn;
        assert_int_equal(tl_sealed_init(&sn, &gk, &m, cm, params, &oc), 0);
        masked[j] = malloc(sizeof(uint64_t) * p_node);
        assert_non_null(masked[j]);
        assert_int_equal(tl_sealed_seal(&sn, 1, 0, 0, ids, NODES, ids[j], res.grads[j], masked[j]),
                         0);
        tl_ring_add(sum, masked[j], p_node);
        tl_sealed_free(&sn);
    }

    *worst_open_psnr = 1e9;
    *worst_open_err = 0;
    *best_sealed_psnr = -1e9;
    *worst_sealed_corr = 0;
    for (int j = 0; j < NODES; j++) {
        const int n = res.n[j];
        double *x = calloc((size_t)n * data.dim, sizeof *x), psnr, err, corr;
        assert_non_null(x);
        orch_view v = {.m = &m,
                       .cut_modules = cm,
                       .params = params,
                       .n = n,
                       .hc = res.hc[j],
                       .g = res.g[j],
                       .dh = res.dh[j],
                       .grads = res.grads[j]};
        int32_t labels[BATCH];
        attack_labels(&v, labels);
        assert_memory_equal(labels, res.y[j], sizeof(int32_t) * n);
        assert_int_equal(attack_open(&v, x), 0);
        score(&data, res.rows[j], n, x, &psnr, &err, &corr);
        print_message("cut %d node %d (%d rows), open protocol: PSNR %.1f dB, max error %.2g "
                      "of 255, correlation %.6f\n",
                      cut, j + 1, n, psnr, err, corr);
        *worst_open_psnr = fmin(*worst_open_psnr, psnr);
        *worst_open_err = fmax(*worst_open_err, err);

        /* sealed: the node's masked vector, then the masked sum, in place of grads */
        for (int which = 0; which < 2; which++) {
            memset(x, 0, sizeof *x * (size_t)n * data.dim);
            if (attack_sealed(&v, which ? sum : masked[j], p_node, as_grad, x) == 0) {
                score(&data, res.rows[j], n, x, &psnr, &err, &corr);
            } else {
                psnr = -1e9, corr = 0; /* the solve itself failed: nothing recovered */
            }
            print_message("cut %d node %d, sealed (%s): PSNR %.1f dB, correlation %.3f\n", cut,
                          j + 1, which ? "masked sum" : "its masked vector", psnr, corr);
            *best_sealed_psnr = fmax(*best_sealed_psnr, psnr);
            *worst_sealed_corr = fmax(*worst_sealed_corr, fabs(corr));
        }
        free(x);
    }
    tl_group_key_wipe(&gk);
    free(as_grad);
    for (int j = 0; j < NODES; j++) free(masked[j]);
    free(sum);
    step_free(&res);
    free(params);
}

/* Cut 1: every image of every node, exactly (to float rounding). */
static void test_attack_cut1(void **state) {
    (void)state;
    double psnr, err, sealed, corr;
    attack_at_cut(1, &psnr, &err, &sealed, &corr);
    assert_true(err < 0.01); /* of 255 */
    assert_true(psnr > 40);
    assert_true(sealed < 15);
    assert_true(corr < 0.1);
}

/* Cut 2: through the second layer and both ReLU masks. */
static void test_attack_cut2(void **state) {
    (void)state;
    double psnr, err, sealed, corr;
    attack_at_cut(2, &psnr, &err, &sealed, &corr);
    assert_true(psnr > 40);
    assert_true(sealed < 15);
    assert_true(corr < 0.1);
}

/* Cut 3: three solves, three ReLU masks. */
static void test_attack_cut3(void **state) {
    (void)state;
    double psnr, err, sealed, corr;
    attack_at_cut(3, &psnr, &err, &sealed, &corr);
    assert_true(psnr > 30);
    assert_true(sealed < 15);
    assert_true(corr < 0.1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attack_cut1),
        cmocka_unit_test(test_attack_cut2),
        cmocka_unit_test(test_attack_cut3),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
