/* linear.c - dense layer on tl_gemm. */
#include "tl/linear.h"

#include <string.h>

#include "tl/gemm.h"

void tl_linear_forward(float *out, const float *inp, const float *w, const float *b, int n, int in,
                       int out_dim) {
    // out is (n, out_dim): start from the bias in every row, then add inp (n, in) times
    // w^T (in, out_dim): w is stored (out_dim, in), so B is transposed.
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * out_dim, b, sizeof(float) * out_dim);
    tl_gemm(false, true, n, out_dim, in, 1.0f, inp, in, w, in, 1.0f, out, out_dim);
}

void tl_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, int n, int in, int out_dim) {
    // dinp (n, in) = dout (n, out_dim) . w (out_dim, in): no transposes.
    if (dinp) tl_gemm(false, false, n, in, out_dim, 1.0f, dout, out_dim, w, in, 0.0f, dinp, in);
    // dw (out_dim, in) += dout^T (out_dim, n) . inp (n, in): A transposed.
    tl_gemm(true, false, out_dim, in, n, 1.0f, dout, out_dim, inp, in, 1.0f, dw, in);
    for (int i = 0; i < n; i++) {
        const float *row = dout + (size_t)i * out_dim;
        for (int j = 0; j < out_dim; j++) db[j] += row[j];
    }
}
