/* gemm.c - tl_gemm on oneDNN (default) or CBLAS. */
#include "tl/gemm.h"

#include <assert.h>
#include <omp.h>

#if defined(TL_GEMM_CBLAS)
#include <cblas.h>
#else
#include <oneapi/dnnl/dnnl.h>
#endif

void tl_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return;
#if defined(TL_GEMM_CBLAS)
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                  B, ldb, beta, C, ldc);
    assert(st == dnnl_success); /* only fails on bad arguments: a programmer error */
    (void)st;
#endif
}

void tl_gemm_set_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
#if defined(TL_GEMM_CBLAS)
    extern void openblas_set_num_threads(int) __attribute__((weak));
    if (openblas_set_num_threads) openblas_set_num_threads(n);
#endif
}

const char *tl_gemm_backend(void) {
#if defined(TL_GEMM_CBLAS)
    return "cblas";
#else
    return "onednn";
#endif
}
