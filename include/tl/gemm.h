/*
 * gemm.h - the one matrix product every layer goes through.
 *
 *   C = alpha * op(A) * op(B) + beta * C,   row-major,
 *   op(X) = X, or X transposed when the flag is set;
 *   op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides.
 *
 * The backend is a build choice: oneDNN's dnnl_sgemm (default) or CBLAS
 * (cmake -DTL_GEMM_CBLAS=ON). For a given backend, shapes and thread count the
 * result is the same bit for bit on every call, which the exactness of
 * distributed training relies on.
 */
#ifndef TL_GEMM_H
#define TL_GEMM_H

#include <stdbool.h>

void tl_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* Threads the backend may use (>= 1). Call before the first product. */
void tl_gemm_set_threads(int n);

/* Name of the backend, for logs: "onednn" or "cblas". */
const char *tl_gemm_backend(void);

#endif
