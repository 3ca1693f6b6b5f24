/*
 * bounds.h - what an honest node can send, by interval arithmetic (issue 8).
 *
 * The NaN/Inf checks on a node's results let finite overflow through: h =
 * FLT_MAX or a gradient of 3e38 is finite, and poisons the step. But the
 * orchestrator knows everything an honest node's numbers depend on except the
 * node's data, and the data is bounded: every normalized input satisfies
 * |x| <= x_max (tl_bounds_x_max). From the parameters it holds (in the open
 * protocol it holds the node side too) it bounds, per unit,
 *
 *   forward   u_0[j] = x_max; linear W (out, in), b: u[i] = sum_j |W_ij| u[j] + |b_i|;
 *             relu: u; tanh: min(u, 1); sigmoid: min(1, 1/2 + u/4)
 *   backward  for a part of n rows with cut gradient dH (n, d_c), as sent:
 *             d_c[i] = max_r |dH[r, i]|; activation: d times its derivative bound
 *             (relu 1, tanh 1, sigmoid 1/4); linear: |dW_ij| <= n d[i] u_in[j],
 *             |db_i| <= n d[i], d_in[j] = sum_i |W_ij| d[i]
 *
 * each stage multiplied by a slack that covers float32 rounding (slack() in
 * bounds.c says why it is enough), so that an honest node can never fail
 * them, whatever its data. In traverse mode the output gradient
 * g = softmax - onehot lies in [-1, 1] by construction, and a row's loss is at
 * most 2 max|logit| + log(classes).
 *
 * Cost: the forward bound is O(parameters) once per step (the
 * parameters change once per step); the backward bound is the same per part.
 *
 *     tl_bounds b;
 *     tl_bounds_init(&b, &model, cut_modules, tl_bounds_x_max(mean, std));
 *     tl_bounds_forward(&b, params);                    // once per step
 *     if (tl_bounds_check_h(&b, h, rows, "FORWARD_RESULT h") < 0) ... tl_errmsg() ...
 *     tl_bounds_backward(&b, dh, rows);                 // this part's rows of dL/dH_c
 *     if (tl_bounds_check_grads(&b, grads, 0, p_node, "BACKWARD_RESULT grads") < 0) ...
 *     tl_bounds_free(&b);
 *
 * The finiteness helpers at the end name the offending tensor element, for
 * checkpoints and --init files.
 */
#ifndef TL_BOUNDS_H
#define TL_BOUNDS_H

#include <stddef.h>
#include <stdint.h>

#include "tl/model.h"

typedef struct tl_bounds {
    const tl_model *m;
    int cut;                        /* node-side modules: [0, cut) */
    double x_max;                   /* bound on |normalized input| */
    const float *params;            /* of the last tl_bounds_forward; must stay put */
    size_t off[TL_MAX_MODULES + 1]; /* unit j of h[k] is entry off[k] + j below */
    double *u;                      /* forward: |h[k][j]| <= u[off[k] + j], k = 0..n_modules */
    double *d;                      /* backward, current part: |dL/dh[k][j]| <= d[off[k] + j] */
    float *uf;                      /* u as floats, for the checks */
    float *rowf;                    /* current part: per unit of h[k+1] of a linear module k,
                                     * the factor n d[i] (bias bound; weight bound times u_in) */
    size_t rows;                    /* rows of the current part */
} tl_bounds;

/* max |x| of a normalized input: bytes scaled to [0, 1], then (x - mean) / std. */
double tl_bounds_x_max(float mean, float std);

/* Prepares bounds for the node side of m: modules [0, cut), cut >= 1.
 * 0 or TL_ENOMEM/TL_EINVAL. Free with tl_bounds_free (safe on a zeroed one). */
int tl_bounds_init(tl_bounds *b, const tl_model *m, int cut, double x_max);
void tl_bounds_free(tl_bounds *b);

/* Computes the forward bounds from params (m->n_params floats), through the
 * whole model (the logits' bound is for tl_bounds_check_loss). params must
 * stay unchanged until tl_bounds_backward and the grads checks of this step
 * are done. */
void tl_bounds_forward(tl_bounds *b, const float *params);

/* Checks h (rows, d_c) of a FORWARD_RESULT against the forward bound at the
 * cut. 0, or TL_EPROTO naming the first element above its bound ("what:
 * element [r, i] = 3.4e+38 exceeds the bound 12.5 any honest node can
 * produce"). NaN/Inf are not judged here (the finiteness checks name them). */
int tl_bounds_check_h(const tl_bounds *b, const float *h, size_t rows, const char *what);

/* Checks a traverse-mode loss_sum of `rows` rows: each row's NLL is at most
 * 2 max|logit| + log(classes), with the logits' forward bound. 0, or
 * TL_EPROTO (NaN is not judged here). */
int tl_bounds_check_loss(const tl_bounds *b, double loss_sum, size_t rows, const char *what);

/* Checks a traverse-mode output gradient g (count floats): softmax - onehot,
 * so every element in [-1, 1]. 0 or TL_EPROTO naming the element. */
int tl_bounds_check_g(const float *g, size_t count, const char *what);

/* Computes the backward bounds of a part of `rows` rows whose cut gradient is
 * dh (rows, d_c), after tl_bounds_forward of the same step. */
void tl_bounds_backward(tl_bounds *b, const float *dh, size_t rows);

/* Checks elements [off, off + n) of a node-side gradient (g[0] is element
 * off) against the backward bounds of the current part; n may be a chunk, so
 * memory that must be read once can be checked piecewise. 0, or TL_EPROTO
 * naming the first offender: "what: 0.weight[3,17] = 3e+38 exceeds the bound
 * 12.5 any honest node can produce". NaN/Inf are not judged here. */
int tl_bounds_check_grads(const tl_bounds *b, const float *g, size_t off, size_t n,
                          const char *what);

/* Checks that tensor `name` (float32, rank dims of shape, row-major, at x) is
 * all finite. 0, or TL_ENUMERIC naming the element: "what: optim.state[0,7]
 * is NaN". */
int tl_bounds_check_tensor(const char *what, const char *name, const float *x, int rank,
                           const int64_t *shape);

/* Checks that m's parameters are all finite. 0, or TL_ENUMERIC naming the
 * tensor and index: "what: 0.weight[3,17] is NaN". */
int tl_bounds_check_finite(const tl_model *m, const float *params, const char *what);

#endif
