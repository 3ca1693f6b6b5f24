/* loss.c - log-softmax and NLL. */
#include "tl/loss.h"

#include <math.h>
#include <stddef.h>

/* Row maximum and log of the sum of exp(z - max): log_softmax = z - max - lse. */
static void row_stats(const float *z, int classes, float *max_out, float *lse_out) {
    float m = z[0];
    for (int j = 1; j < classes; j++)
        if (z[j] > m) m = z[j];
    float s = 0.0f;
    for (int j = 0; j < classes; j++) s += expf(z[j] - m);
    *max_out = m;
    *lse_out = logf(s);
}

double tl_nll_forward(const float *z, const int32_t *y, int n, int classes, int64_t *correct) {
    double loss = 0.0;
    int64_t hits = 0;
    for (int i = 0; i < n; i++) {
        const float *row = z + (size_t)i * classes;
        float m, lse;
        row_stats(row, classes, &m, &lse);
        loss -= (double)((row[y[i]] - m) - lse);
        int best = 0;
        for (int j = 1; j < classes; j++)
            if (row[j] > row[best]) best = j;
        hits += best == y[i];
    }
    if (correct) *correct = hits;
    return loss;
}

void tl_nll_grad(float *g, const float *z, const int32_t *y, int n, int classes) {
    for (int i = 0; i < n; i++) {
        const float *row = z + (size_t)i * classes;
        float *out = g + (size_t)i * classes;
        float m, lse;
        row_stats(row, classes, &m, &lse);
        for (int j = 0; j < classes; j++) out[j] = expf((row[j] - m) - lse);
        out[y[i]] -= 1.0f;
    }
}

void tl_nll_scale(float *g, long count, int batch) {
    const float b = (float)batch;
    for (long i = 0; i < count; i++) g[i] /= b;
}
