/*
 * linear.h - the dense layer, forward and backward side by side.
 *
 * Shapes (row-major): inp is (n, in), w is (out, in) as torch.nn.Linear
 * stores it, b is (out), the output is (n, out).
 * Nothing is allocated; the caller owns every buffer. Backward ADDS into dw
 * and db (so gradients over several calls accumulate; clear them first).
 */
#ifndef TL_LINEAR_H
#define TL_LINEAR_H

/* out = inp . w^T + b */
void tl_linear_forward(float *out, const float *inp, const float *w, const float *b, int n, int in,
                       int out_dim);

/* dinp = dout . w        (skipped if dinp is NULL: the first layer needs none)
 * dw  += dout^T . inp
 * db  += column sums of dout (rows added in order 0..n-1) */
void tl_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, int n, int in, int out_dim);

#endif
