/*
 * model.h - a sequential model built from a spec string.
 *
 * A spec is a comma list of modules: `linear:N`, `relu`, `tanh`, `sigmoid`.
 * The input width comes from the data; the last linear layer's width is the
 * number of classes. Modules are numbered from 0 as torch.nn.Sequential
 * numbers them, so parameter tensors are named `<k>.weight` (out, in) and
 * `<k>.bias` (out).
 *
 * A tl_model only describes the structure. Parameters, gradients and optimizer
 * state are each ONE contiguous float block of tl_model.n_params entries, laid
 * out module by module (weight then bias), so the node-side part of a model
 * cut after module c is the prefix [0, tl_model_param_offset(m, c)).
 * tl_model_tensor() is the single table of parameter tensors (used by the
 * safetensors writer, the checkpoint and the tests).
 *
 * Forward and backward run over a range of modules [from, to) on a workspace
 * holding each module's output h[k] (h[0] is the input):
 *
 *     tl_model m; tl_model_parse("linear:256,relu,linear:10", 784, &m);
 *     float *p = malloc(m.n_params * 4), *g = calloc(m.n_params, 4);
 *     tl_model_init(&m, p, seed);
 *     tl_ws ws; tl_ws_init(&ws, &m, 64);
 *     // fill ws.h[0] with n rows of input
 *     tl_model_forward(&m, p, &ws, n, 0, m.n_modules);     // logits in ws.h[m.n_modules]
 *     tl_model_backward(&m, p, g, &ws, n, 0, m.n_modules, dz, NULL);
 */
#ifndef TL_MODEL_H
#define TL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define TL_MAX_MODULES 64
#define TL_MAX_SPEC 1024

typedef enum tl_module_kind {
    TL_MOD_LINEAR = 1,
    TL_MOD_RELU,
    TL_MOD_TANH,
    TL_MOD_SIGMOID,
} tl_module_kind;

typedef struct tl_module {
    tl_module_kind kind;
    int in, out;         /* widths of h[k] and h[k+1] */
    size_t w_off, b_off; /* offsets into the parameter block (linear only) */
} tl_module;

typedef struct tl_model {
    int n_modules;
    tl_module mod[TL_MAX_MODULES];
    int in_dim;      /* width of the input */
    int n_classes;   /* width of the output */
    int n_linear;    /* parameterized layers */
    size_t n_params; /* floats in the parameter block */
    char spec[TL_MAX_SPEC];
} tl_model;

/* Parses spec for inputs of in_dim features. The spec must have at least one
 * linear layer and end with one (its width = classes, >= 2). */
int tl_model_parse(const char *spec, int in_dim, tl_model *m);

/* Number of node-side modules for cut c (1 <= c < n_linear): the modules up to
 * and including the c-th linear layer and the activations right after it. */
int tl_model_cut_modules(const tl_model *m, int cut, int *n_modules);

/* Offset in the parameter block where module k's parameters start
 * (k == n_modules gives n_params). */
size_t tl_model_param_offset(const tl_model *m, int k);

/* Width of h[k]: in_dim for k = 0, else the output width of module k-1. */
int tl_model_width(const tl_model *m, int k);

/* The parameter tensors, in block order: i in [0, 2 * n_linear). Fills name
 * (e.g. "2.weight"), rank (2 or 1), shape and offset. Returns 0, or -1 past
 * the end. */
int tl_model_tensor(const tl_model *m, int i, char name[32], int *rank, int64_t shape[2],
                    size_t *offset);

/* PyTorch's default initialization of nn.Linear, bit for bit: module by
 * module, weight then bias, uniform draws from an MT19937 seeded with seed,
 * exactly as torch.manual_seed(seed) followed by building the
 * torch.nn.Sequential would draw them (checked against the golden fixtures,
 * made with seed 7). */
void tl_model_init(const tl_model *m, float *params, uint32_t seed);

/* Workspace for up to max_rows rows: h[k] for every k, and scratch for
 * backward. Owned by the caller; tl_ws_free releases it (NULL-safe fields). */
typedef struct tl_ws {
    int max_rows;
    float *h[TL_MAX_MODULES + 1];
    float *scratch[2];
} tl_ws;

int tl_ws_init(tl_ws *ws, const tl_model *m, int max_rows);
void tl_ws_free(tl_ws *ws);

/* Runs a forward and backward pass of `rows` rows of zeros through m on
 * scratch buffers and throws the results away: the matrix-product backend
 * generates its kernels on first use, and this moves that cost to a moment
 * of the caller's choosing (e.g. while data loads). Best effort: does
 * nothing if memory is short. */
void tl_model_warmup(const tl_model *m, int rows);

/* Runs modules from..to-1 on n rows: reads ws->h[from], writes h[from+1..to]. */
void tl_model_forward(const tl_model *m, const float *params, tl_ws *ws, int n, int from, int to);

/* Back-propagates dout = dL/dh[to] (n, width(to)) through modules to-1..from,
 * using the outputs the last forward left in ws. ADDS parameter gradients into
 * grads (same layout as params). If dinp is not NULL, writes dL/dh[from] there.
 * dout is only read. */
void tl_model_backward(const tl_model *m, const float *params, float *grads, tl_ws *ws, int n,
                       int from, int to, const float *dout, float *dinp);

#endif
