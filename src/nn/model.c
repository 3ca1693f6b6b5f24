/* model.c - sequential models: spec parsing, parameter table, forward/backward. */
#include "tl/model.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/act.h"
#include "tl/error.h"
#include "tl/linear.h"
#include "tl/rng.h"

#define MAX_WIDTH (1 << 20)

/* Parses one module token of len bytes into *mod (kind and, for linear, out). */
static int parse_module(const char *tok, size_t len, tl_module *mod) {
    char buf[64];
    if (len == 0 || len >= sizeof buf)
        return tl_error(TL_EINVAL, "model: empty or overlong module");
    memcpy(buf, tok, len);
    buf[len] = 0;
    memset(mod, 0, sizeof *mod);
    if (!strncmp(buf, "linear:", 7)) {
        char *end;
        errno = 0;
        long n = strtol(buf + 7, &end, 10);
        if (errno || end == buf + 7 || *end || n < 1 || n > MAX_WIDTH)
            return tl_error(TL_EINVAL, "model: bad width in '%s' (want linear:N, 1 <= N <= %d)",
                            buf, MAX_WIDTH);
        mod->kind = TL_MOD_LINEAR;
        mod->out = (int)n;
    } else if (!strcmp(buf, "relu")) {
        mod->kind = TL_MOD_RELU;
    } else if (!strcmp(buf, "tanh")) {
        mod->kind = TL_MOD_TANH;
    } else if (!strcmp(buf, "sigmoid")) {
        mod->kind = TL_MOD_SIGMOID;
    } else {
        return tl_error(TL_EINVAL,
                        "model: unknown module '%s' (know linear:N, relu, tanh, sigmoid)", buf);
    }
    return 0;
}

int tl_model_parse(const char *spec, int in_dim, tl_model *m) {
    memset(m, 0, sizeof *m);
    if (!spec || strlen(spec) >= TL_MAX_SPEC)
        return tl_error(TL_EINVAL, "model: spec missing or too long");
    if (in_dim < 1) return tl_error(TL_EINVAL, "model: input width %d", in_dim);
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    m->in_dim = in_dim;
    int width = in_dim;
    size_t off = 0;
    const char *p = spec;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (m->n_modules == TL_MAX_MODULES)
            return tl_error(TL_ERANGE, "model: more than %d modules", TL_MAX_MODULES);
        tl_module *mod = &m->mod[m->n_modules];
        int rc = parse_module(p, len, mod);
        if (rc < 0) return rc;
        mod->in = width;
        if (mod->kind == TL_MOD_LINEAR) {
            mod->w_off = off;
            off += (size_t)mod->out * (size_t)width;
            mod->b_off = off;
            off += (size_t)mod->out;
            m->n_linear++;
        } else {
            mod->out = width;
        }
        width = mod->out;
        m->n_modules++;
        if (!comma) break;
        p = comma + 1;
    }
    if (m->n_linear == 0 || m->mod[m->n_modules - 1].kind != TL_MOD_LINEAR)
        return tl_error(TL_EINVAL, "model: '%s' must end with a linear layer (the logits)", spec);
    if (width < 2) return tl_error(TL_EINVAL, "model: the last layer needs >= 2 outputs (classes)");
    m->n_classes = width;
    m->n_params = off;
    return 0;
}

int tl_model_cut_modules(const tl_model *m, int cut, int *n_modules) {
    if (m->n_linear < 2)
        return tl_error(TL_EINVAL,
                        "this model has %d linear layer%s: a cut needs a linear layer on each "
                        "side (at least two, e.g. linear:64,relu,linear:10)",
                        m->n_linear, m->n_linear == 1 ? "" : "s");
    if (cut < 1 || cut >= m->n_linear)
        return tl_error(TL_EINVAL, "cut %d out of range: this model has %d linear layers, so 1..%d",
                        cut, m->n_linear, m->n_linear - 1);
    int seen = 0, k = 0;
    for (; k < m->n_modules; k++) {
        if (m->mod[k].kind == TL_MOD_LINEAR) {
            if (seen == cut) break;
            seen++;
        }
    }
    /* k is now the (cut+1)-th linear layer: everything before it is node side,
     * which includes the activations following the cut-th linear layer. */
    *n_modules = k;
    return 0;
}

size_t tl_model_param_offset(const tl_model *m, int k) {
    for (; k < m->n_modules; k++)
        if (m->mod[k].kind == TL_MOD_LINEAR) return m->mod[k].w_off;
    return m->n_params;
}

int tl_model_width(const tl_model *m, int k) { return k == 0 ? m->in_dim : m->mod[k - 1].out; }

int tl_model_tensor(const tl_model *m, int i, char name[32], int *rank, int64_t shape[2],
                    size_t *offset) {
    for (int k = 0; k < m->n_modules; k++) {
        const tl_module *mod = &m->mod[k];
        if (mod->kind != TL_MOD_LINEAR) continue;
        if (i > 1) {
            i -= 2;
            continue;
        }
        if (i == 0) {
            snprintf(name, 32, "%d.weight", k);
            *rank = 2;
            shape[0] = mod->out;
            shape[1] = mod->in;
            *offset = mod->w_off;
        } else {
            snprintf(name, 32, "%d.bias", k);
            *rank = 1;
            shape[0] = mod->out;
            shape[1] = 0;
            *offset = mod->b_off;
        }
        return 0;
    }
    return -1;
}

void tl_model_init(const tl_model *m, float *params, uint32_t seed) {
    tl_rng r;
    tl_rng_seed(&r, seed);
    for (int k = 0; k < m->n_modules; k++) {
        const tl_module *mod = &m->mod[k];
        if (mod->kind != TL_MOD_LINEAR) continue;
        /* nn.Linear.reset_parameters: kaiming_uniform_(w, a=sqrt(5)) has bound
         * gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)); the bias is
         * uniform in +-1/sqrt(fan_in). Bounds in double, as Python computes them. */
        const double fan_in = (double)mod->in;
        const double wb = sqrt(2.0 / (1.0 + 5.0)) / sqrt(fan_in) * sqrt(3.0);
        const double bb = 1.0 / sqrt(fan_in);
        size_t nw = (size_t)mod->out * mod->in;
        for (size_t i = 0; i < nw; i++)
            params[mod->w_off + i] = tl_rng_torch_uniform(&r, (float)-wb, (float)wb);
        for (int i = 0; i < mod->out; i++)
            params[mod->b_off + i] = tl_rng_torch_uniform(&r, (float)-bb, (float)bb);
    }
}

int tl_ws_init(tl_ws *ws, const tl_model *m, int max_rows) {
    memset(ws, 0, sizeof *ws);
    ws->max_rows = max_rows;
    int widest = m->in_dim;
    for (int k = 0; k <= m->n_modules; k++) {
        int w = tl_model_width(m, k);
        if (w > widest) widest = w;
        ws->h[k] = malloc(sizeof(float) * (size_t)max_rows * w);
        if (!ws->h[k]) goto oom;
    }
    for (int i = 0; i < 2; i++) {
        ws->scratch[i] = malloc(sizeof(float) * (size_t)max_rows * widest);
        if (!ws->scratch[i]) goto oom;
    }
    return 0;
oom:
    tl_ws_free(ws);
    return tl_error(TL_ENOMEM, "workspace for %d rows: out of memory", max_rows);
}

void tl_ws_free(tl_ws *ws) {
    for (int k = 0; k <= TL_MAX_MODULES; k++) free(ws->h[k]);
    free(ws->scratch[0]);
    free(ws->scratch[1]);
    memset(ws, 0, sizeof *ws);
}

void tl_model_forward(const tl_model *m, const float *params, tl_ws *ws, int n, int from, int to) {
    assert(n <= ws->max_rows && from >= 0 && to <= m->n_modules);
    for (int k = from; k < to; k++) {
        const tl_module *mod = &m->mod[k];
        const float *x = ws->h[k];
        float *y = ws->h[k + 1];
        size_t count = (size_t)n * mod->out;
        switch (mod->kind) {
        case TL_MOD_LINEAR:
            tl_linear_forward(y, x, params + mod->w_off, params + mod->b_off, n, mod->in, mod->out);
            break;
        case TL_MOD_RELU: tl_relu_forward(y, x, count); break;
        case TL_MOD_TANH: tl_tanh_forward(y, x, count); break;
        case TL_MOD_SIGMOID: tl_sigmoid_forward(y, x, count); break;
        }
    }
}

void tl_model_backward(const tl_model *m, const float *params, float *grads, tl_ws *ws, int n,
                       int from, int to, const float *dout, float *dinp) {
    assert(n <= ws->max_rows && from >= 0 && to <= m->n_modules);
    const float *cur = dout; /* dL/dh[k+1] */
    int alt = 0;
    for (int k = to - 1; k >= from; k--) {
        const tl_module *mod = &m->mod[k];
        /* Where dL/dh[k] goes: the caller's buffer for the last module, else scratch. */
        float *next = k == from ? dinp : ws->scratch[alt];
        size_t count = (size_t)n * mod->out;
        switch (mod->kind) {
        case TL_MOD_LINEAR:
            tl_linear_backward(next, grads + mod->w_off, grads + mod->b_off, cur, ws->h[k],
                               params + mod->w_off, n, mod->in, mod->out);
            break;
        case TL_MOD_RELU:
            if (next) tl_relu_backward(next, cur, ws->h[k + 1], count);
            break;
        case TL_MOD_TANH:
            if (next) tl_tanh_backward(next, cur, ws->h[k + 1], count);
            break;
        case TL_MOD_SIGMOID:
            if (next) tl_sigmoid_backward(next, cur, ws->h[k + 1], count);
            break;
        }
        cur = next;
        alt ^= 1;
    }
}

void tl_model_warmup(const tl_model *m, int rows) {
    tl_ws ws;
    const int n = rows > 0 ? rows : 1;
    float *p = calloc(m->n_params, sizeof(float)), *g = calloc(m->n_params, sizeof(float));
    float *d = calloc((size_t)n * m->n_classes, sizeof(float));
    if (p && g && d && tl_ws_init(&ws, m, n) == 0) {
        memset(ws.h[0], 0, sizeof(float) * (size_t)n * m->in_dim);
        tl_model_forward(m, p, &ws, n, 0, m->n_modules);
        tl_model_backward(m, p, g, &ws, n, 0, m->n_modules, d, NULL);
        tl_ws_free(&ws);
    }
    free(p);
    free(g);
    free(d);
}
