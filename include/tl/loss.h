/*
 * loss.h - log-softmax + negative log-likelihood, the classification loss.
 *
 * z is (n, classes) logits, y holds n labels in [0, classes).
 * The loss of a batch of B rows is mean_i -log_softmax(z_i)[y_i]; its gradient
 * with respect to z is (softmax(z) - onehot(y)) / B. The two factors are kept
 * apart on purpose: a node computes g = softmax - onehot for its own rows
 * (tl_nll_grad) without knowing B, and whoever knows B scales by it
 * (tl_nll_scale). The centralized trainer makes the very same two calls, so
 * its gradient is the same bit for bit.
 */
#ifndef TL_LOSS_H
#define TL_LOSS_H

#include <stdint.h>

/* Returns the SUM over rows of -log_softmax(z)[y] (in double) and, if correct
 * is not NULL, stores the number of rows whose argmax (first maximum) equals y. */
double tl_nll_forward(const float *z, const int32_t *y, int n, int classes, int64_t *correct);

/* g = softmax(z) - onehot(y), (n, classes); g may alias z. */
void tl_nll_grad(float *g, const float *z, const int32_t *y, int n, int classes);

/* g /= batch, element-wise over count entries. */
void tl_nll_scale(float *g, long count, int batch);

#endif
