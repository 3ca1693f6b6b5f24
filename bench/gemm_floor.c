/* gemm_floor.c - the floor of a training epoch: exactly the matrix products of
 * one epoch of a model (default: the reference model on Fashion-MNIST, 60,000
 * samples, batch 64), with the transposes the layers use, on the configured
 * tl_gemm backend. Prints the best of several repetitions in seconds.
 *
 * usage: gemm_floor [--samples N] [--batch B] [--model SPEC] [--in D] [--threads T] [--reps R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tl/gemm.h"
#include "tl/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *buf(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

int main(int argc, char **argv) {
    long samples = 60000, batch = 64, in = 784, threads = 1, reps = 5;
    const char *spec = "linear:256,linear:128,linear:64,linear:10";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--samples")) samples = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) spec = argv[i + 1];
        else if (!strcmp(argv[i], "--in")) in = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atol(argv[i + 1]);
        else {
            fprintf(stderr, "gemm_floor: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    tl_model m;
    if (tl_model_parse(spec, (int)in, &m) < 0) return 1;
    tl_gemm_set_threads((int)threads);
    int widest = (int)in;
    for (int k = 0; k < m.n_modules; k++)
        if (m.mod[k].out > widest) widest = m.mod[k].out;
    float *w = buf(m.n_params), *g = buf(m.n_params);
    float *x = buf((size_t)batch * widest), *y = buf((size_t)batch * widest);
    float *d = buf((size_t)batch * widest), *dx = buf((size_t)batch * widest);
    double best = 1e30;
    for (long r = 0; r < reps; r++) {
        double t0 = now_s();
        for (long first = 0; first < samples; first += batch) {
            int n = (int)(samples - first < batch ? samples - first : batch);
            for (int k = 0; k < m.n_modules; k++) {
                const tl_module *mod = &m.mod[k];
                if (mod->kind != TL_MOD_LINEAR) continue;
                /* forward: y (n, out) = x (n, in) . w^T */
                tl_gemm(false, true, n, mod->out, mod->in, 1.0f, x, mod->in, w + mod->w_off,
                        mod->in, 1.0f, y, mod->out);
            }
            for (int k = m.n_modules - 1; k >= 0; k--) {
                const tl_module *mod = &m.mod[k];
                if (mod->kind != TL_MOD_LINEAR) continue;
                /* dw (out, in) += d^T (out, n) . x (n, in) */
                tl_gemm(true, false, mod->out, mod->in, n, 1.0f, d, mod->out, x, mod->in, 1.0f,
                        g + mod->w_off, mod->in);
                /* dx (n, in) = d (n, out) . w (out, in); the first layer needs none */
                if (k > 0)
                    tl_gemm(false, false, n, mod->in, mod->out, 1.0f, d, mod->out, w + mod->w_off,
                            mod->in, 0.0f, dx, mod->in);
            }
        }
        double el = now_s() - t0;
        if (el < best) best = el;
    }
    printf("%.4f\n", best);
    fprintf(
        stderr,
        "gemm_floor: %s, %ld samples, batch %ld, %ld thread(s), backend %s: best of %ld = %.4f s\n",
        spec, samples, batch, threads, tl_gemm_backend(), reps, best);
    return 0;
}
