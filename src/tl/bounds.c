/* bounds.c - interval bounds on what an honest node can send (see bounds.h). */
#include "tl/bounds.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/finite.h"
#include "tl/simd.h"

/* Absolute slack added to every bound: covers results that underflow to
 * subnormals (absolute errors of ~1e-45 per operation), nothing else. */
#define ABS_SLACK 1e-30f

/* The factor a stage's bound is multiplied by when an honest node computes it
 * as a float32 sum of `terms` products. Whatever the order of summation
 * (gemm blocking, threads), |fl(sum a_j b_j) - sum a_j b_j| <= g_n sum |a_j b_j|
 * with g_n = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability of
 * Numerical Algorithms, 2nd ed., §3.1), and the bound already sums |a_j| |b_j|
 * over the (bounded) computed inputs; a bias add, the input normalization
 * (three roundings) and libm's tanhf/expf (a few ulps) add a few u more. So
 * 1 + 4 (n + 2) u is sound with room to spare. We evaluate the forward bound's
 * sums in float too (abs_dot: fast), which may come out below the exact sum by
 * as much again: another 4 (n + 2) u. The 1% on top makes the bound
 * robust to anything of that order we did not think of (e.g. a BLAS that
 * accumulates in another order with an extra rounding), and is still tight
 * enough to catch overflow attacks by 30 orders of magnitude. Stages compound:
 * each is slackened over bounds of already slackened inputs. */
static double slack(size_t terms) { return 1.01 + 8.0 * ((double)terms + 2.0) * 0x1p-24; }

/* sum_j |w[j]| u[j] over n terms, in float with 16 independent partial sums
 * (vectorized; a single running sum in double is latency-bound and made the
 * forward bound cost ~0.4 ms a step for the default model, this ~0.01 ms).
 * Its rounding is covered by slack(); an overflow gives Inf (no bound). */
static double abs_dot(const float *restrict w, const float *restrict u, int n) {
    enum { LANES = 16 };
    float a[LANES] = {0};
    int j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) a[l] += fabsf(w[j + l]) * u[j + l];
    double acc = 0;
    for (int l = 0; l < LANES; l++) acc += a[l];
    for (; j < n; j++) acc += (double)(fabsf(w[j]) * u[j]);
    return acc;
}

/* The float copy of level k's forward bounds (rounded up; Inf past FLT_MAX). */
static void to_float(tl_bounds *b, int k) {
    const int w = tl_model_width(b->m, k);
    const double *u = b->u + b->off[k];
    float *f = b->uf + b->off[k];
    for (int j = 0; j < w; j++) {
        float v = u[j] > FLT_MAX ? INFINITY : (float)u[j];
        f[j] = (double)v < u[j] ? nextafterf(v, INFINITY) : v;
    }
}

/* A bound that became NaN (Inf * 0) or overflowed is "no bound". */
static double clean(double v) { return v == v ? v : INFINITY; }

double tl_bounds_x_max(float mean, float std) {
    double lo = fabs(0.0 - (double)mean), hi = fabs(1.0 - (double)mean);
    double s = fabs((double)std);
    return (lo > hi ? lo : hi) / s; /* std 0: Inf, i.e. no bound */
}

int tl_bounds_init(tl_bounds *b, const tl_model *m, int cut, double x_max) {
    memset(b, 0, sizeof *b);
    if (cut < 1 || cut > m->n_modules)
        return tl_error(TL_EINVAL, "bounds: %d node-side modules in a model of %d", cut,
                        m->n_modules);
    b->m = m;
    b->cut = cut;
    b->x_max = x_max;
    size_t total = 0;
    for (int k = 0; k <= m->n_modules; k++) { /* the forward bound covers the whole model */
        b->off[k] = total;
        total += (size_t)tl_model_width(m, k);
    }
    b->u = calloc(total, sizeof(double));
    b->d = calloc(total, sizeof(double));
    b->uf = calloc(total, sizeof(float));
    b->rowf = calloc(total, sizeof(float));
    if (!b->u || !b->d || !b->uf || !b->rowf) {
        tl_bounds_free(b);
        return tl_error(TL_ENOMEM, "bounds: out of memory");
    }
    return 0;
}

void tl_bounds_free(tl_bounds *b) {
    free(b->u);
    free(b->d);
    free(b->uf);
    free(b->rowf);
    memset(b, 0, sizeof *b);
}

void tl_bounds_forward(tl_bounds *b, const float *params) {
    const tl_model *m = b->m;
    b->params = params;
    const int in0 = tl_model_width(m, 0);
    const double x0 = clean(b->x_max * slack(3));
    for (int j = 0; j < in0; j++) b->u[j] = x0;
    to_float(b, 0);
    for (int k = 0; k < m->n_modules; k++) {
        const tl_module *md = &m->mod[k];
        const double *ui = b->u + b->off[k];
        const float *uif = b->uf + b->off[k];
        double *uo = b->u + b->off[k + 1];
        switch (md->kind) {
        case TL_MOD_LINEAR: {
            const float *W = params + md->w_off, *bias = params + md->b_off; /* W is (out, in) */
            const double s = slack((size_t)md->in + 1);
            for (int i = 0; i < md->out; i++)
                uo[i] = clean(
                    (fabs((double)bias[i]) + abs_dot(W + (size_t)i * md->in, uif, md->in)) * s);
            break;
        }
        case TL_MOD_RELU:
            for (int j = 0; j < md->in; j++) uo[j] = ui[j];
            break;
        case TL_MOD_TANH: /* |tanh x| <= min(|x|, 1) */
            for (int j = 0; j < md->in; j++) uo[j] = (ui[j] < 1.0 ? ui[j] : 1.0) * slack(1);
            break;
        case TL_MOD_SIGMOID: /* 0 < sigmoid x <= 1/2 + |x|/4 (tangent at 0), and < 1 */
            for (int j = 0; j < md->in; j++) {
                double v = 0.5 + ui[j] / 4;
                uo[j] = (v < 1.0 ? v : 1.0) * slack(1);
            }
            break;
        }
        to_float(b, k + 1);
    }
}

int tl_bounds_check_h(const tl_bounds *b, const float *h, size_t rows, const char *what) {
    const int dc = tl_model_width(b->m, b->cut);
    const float *lim = b->uf + b->off[b->cut];
    for (size_t r = 0; r < rows; r++) {
        const float *x = h + r * (size_t)dc;
        uint32_t bad = 0;
        for (int i = 0; i < dc; i++) bad |= fabsf(x[i]) > lim[i] + ABS_SLACK;
        if (!bad) continue;
        for (int i = 0; i < dc; i++)
            if (fabsf(x[i]) > lim[i] + ABS_SLACK)
                return tl_error(TL_EPROTO,
                                "%s: element [%zu,%d] = %g exceeds the bound %g any honest "
                                "node can produce",
                                what, r, i, (double)x[i], (double)lim[i]);
    }
    return 0;
}

int tl_bounds_check_loss(const tl_bounds *b, double loss_sum, size_t rows, const char *what) {
    /* a row's loss is (max_j z_j - z_y) + log sum_j exp(z_j - max) <= 2 max|z| + log C */
    const tl_model *m = b->m;
    const double *uz = b->u + b->off[m->n_modules];
    double zmax = 0;
    for (int j = 0; j < m->n_classes; j++)
        if (!(uz[j] <= zmax)) zmax = uz[j];
    double lim = (double)rows * (2 * zmax + log((double)m->n_classes)) *
                     slack((size_t)m->n_classes) +
                 1e-6;
    if (loss_sum > lim)
        return tl_error(TL_EPROTO,
                        "%s: loss_sum = %g exceeds the bound %g any honest node can produce", what,
                        loss_sum, lim);
    return 0;
}

int tl_bounds_check_g(const float *g, size_t count, const char *what) {
    /* softmax in [0, 1] (a correctly rounded e / sum with e <= sum is <= 1)
     * minus onehot: [-1, 1]; a little room all the same */
    const float lim = 1.0f + 0x1p-20f;
    uint32_t bad = 0;
    for (size_t i = 0; i < count; i++) bad |= fabsf(g[i]) > lim;
    if (!bad) return 0;
    for (size_t i = 0; i < count; i++)
        if (fabsf(g[i]) > lim)
            return tl_error(TL_EPROTO,
                            "%s: element %zu = %g is outside [-1, 1] (softmax - onehot), which "
                            "no honest node can produce",
                            what, i, (double)g[i]);
    return 0;
}

void tl_bounds_backward(tl_bounds *b, const float *dh, size_t rows) {
    const tl_model *m = b->m;
    const int dc = tl_model_width(m, b->cut);
    double *dcut = b->d + b->off[b->cut];
    for (int i = 0; i < dc; i++) dcut[i] = 0.0;
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < dc; i++) {
            double v = fabs((double)dh[r * (size_t)dc + i]);
            if (!(v <= dcut[i])) dcut[i] = clean(v); /* NaN in dh: no bound */
        }
    b->rows = rows;
    for (int k = b->cut - 1; k >= 0; k--) {
        const tl_module *md = &m->mod[k];
        const double *dout = b->d + b->off[k + 1];
        double *din = b->d + b->off[k];
        switch (md->kind) {
        case TL_MOD_LINEAR: {
            const double s = slack(rows);
            float *rf = b->rowf + b->off[k + 1];
            for (int i = 0; i < md->out; i++) {
                double f = clean((double)rows * dout[i] * s);
                rf[i] = f > FLT_MAX ? INFINITY : (float)f;
            }
            if (k == 0) break;                      /* nothing below needs dL/dx */
            const float *W = b->params + md->w_off; /* (out, in) */
            const double sd = slack((size_t)md->out);
            for (int j = 0; j < md->in; j++) din[j] = 0.0;
            for (int i = 0; i < md->out; i++) {
                const float *w = W + (size_t)i * md->in;
                const double di = dout[i];
                for (int j = 0; j < md->in; j++) din[j] += fabs((double)w[j]) * di;
            }
            for (int j = 0; j < md->in; j++) din[j] = clean(din[j] * sd);
            break;
        }
        case TL_MOD_RELU:
        case TL_MOD_TANH: /* derivatives in [0, 1] */
            for (int j = 0; j < md->in; j++) din[j] = dout[j] * slack(1);
            break;
        case TL_MOD_SIGMOID: /* s (1 - s) <= 1/4 */
            for (int j = 0; j < md->in; j++) din[j] = dout[j] * 0.25 * slack(1);
            break;
        }
    }
}

/* Reports element e of module k's weight (row-major (out, in)) or bias. */
static int over(const char *what, int k, const char *kind, long long i, long long j, float v,
                float lim) {
    char idx[64];
    if (j >= 0) snprintf(idx, sizeof idx, "[%lld,%lld]", i, j);
    else snprintf(idx, sizeof idx, "[%lld]", i);
    return tl_error(TL_EPROTO, "%s: %d.%s%s = %g exceeds the bound %g any honest node can produce",
                    what, k, kind, idx, (double)v, (double)lim);
}

TL_CLONES int tl_bounds_check_grads(const tl_bounds *b, const float *g, size_t off, size_t n,
                                    const char *what) {
    const tl_model *m = b->m;
    const size_t end = off + n;
    for (int k = 0; k < b->cut; k++) {
        const tl_module *md = &m->mod[k];
        if (md->kind != TL_MOD_LINEAR) continue;
        const size_t in = (size_t)md->in, out = (size_t)md->out;
        const float *rf = b->rowf + b->off[k + 1], *ui = b->uf + b->off[k];
        /* weights: elements [w_off, w_off + out * in), row i = unit i of the output */
        size_t a = off > md->w_off ? off : md->w_off;
        size_t z = end < md->w_off + out * in ? end : md->w_off + out * in;
        while (a < z) {
            const size_t i = (a - md->w_off) / in, j0 = (a - md->w_off) % in;
            const size_t j1 = j0 + (z - a) < in ? j0 + (z - a) : in;
            const float r = rf[i];
            const float *x = g + (a - off) - j0; /* x[j] is element (i, j) */
            uint32_t bad = 0;
            for (size_t j = j0; j < j1; j++) bad |= fabsf(x[j]) > r * ui[j] + ABS_SLACK;
            if (bad)
                for (size_t j = j0; j < j1; j++)
                    if (fabsf(x[j]) > r * ui[j] + ABS_SLACK)
                        return over(what, k, "weight", (long long)i, (long long)j, x[j],
                                    r * ui[j] + ABS_SLACK);
            a += j1 - j0;
        }
        /* bias: [b_off, b_off + out) */
        a = off > md->b_off ? off : md->b_off;
        z = end < md->b_off + out ? end : md->b_off + out;
        for (; a < z; a++) {
            const size_t i = a - md->b_off;
            const float v = g[a - off];
            if (fabsf(v) > rf[i] + ABS_SLACK)
                return over(what, k, "bias", (long long)i, -1, v, rf[i] + ABS_SLACK);
        }
    }
    return 0;
}

int tl_bounds_check_tensor(const char *what, const char *name, const float *x, int rank,
                           const int64_t *shape) {
    size_t numel = 1;
    for (int i = 0; i < rank; i++) numel *= (size_t)shape[i];
    size_t e = tl_first_nonfinite(x, numel);
    if (e == numel) return 0;
    float v = x[e];
    size_t ix[8], rest = e;
    char idx[8 * 24] = "";
    if (rank > 8) rank = 8;
    for (int i = rank - 1; i >= 0; i--) { /* row-major: the last index varies fastest */
        ix[i] = rest % (size_t)shape[i];
        rest /= (size_t)shape[i];
    }
    for (int i = 0, len = 0; i < rank; i++)
        len += snprintf(idx + len, sizeof idx - (size_t)len, "%s%zu", i ? "," : "", ix[i]);
    return tl_error(TL_ENUMERIC, "%s: %s[%s] is %s", what, name, idx,
                    isnan(v) ? "NaN"
                    : v > 0  ? "+Inf"
                             : "-Inf");
}

int tl_bounds_check_finite(const tl_model *m, const float *params, const char *what) {
    for (int t = 0; t < 2 * m->n_linear; t++) {
        char name[32];
        int rank, rc;
        int64_t shape[2];
        size_t off;
        tl_model_tensor(m, t, name, &rank, shape, &off);
        if ((rc = tl_bounds_check_tensor(what, name, params + off, rank, shape)) < 0) return rc;
    }
    return 0;
}
