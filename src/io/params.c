/* params.c - model parameters <-> safetensors. */
#include "tl/params.h"

#include <stdlib.h>
#include <string.h>

#include "tl/bounds.h"
#include "tl/error.h"

int tl_params_save(const char *path, const tl_model *m, const float *params,
                   const tl_st_tensor *extra, int n_extra, const tl_st_kv *meta, int n_meta) {
    int n = 2 * m->n_linear, rc;
    tl_st_tensor *t = calloc((size_t)(n + n_extra), sizeof *t);
    char(*names)[32] = calloc((size_t)n, 32);
    tl_st_kv *kv = calloc((size_t)n_meta + 1, sizeof *kv);
    if (!t || !names || !kv) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        int64_t shape[2];
        size_t off;
        tl_model_tensor(m, i, names[i], &t[i].rank, shape, &off);
        t[i].name = names[i];
        t[i].dtype = TL_ST_F32;
        t[i].shape[0] = shape[0];
        t[i].shape[1] = shape[1];
        t[i].data = params + off;
    }
    for (int i = 0; i < n_extra; i++) t[n + i] = extra[i];
    kv[0].key = "model";
    kv[0].value = m->spec;
    for (int i = 0; i < n_meta; i++) kv[i + 1] = meta[i];
    rc = tl_st_write(path, t, n + n_extra, kv, n_meta + 1);
cleanup:
    free(t);
    free(names);
    free(kv);
    return rc;
}

int tl_params_from_st(const tl_st *st, const char *path, const tl_model *m, float *params) {
    for (int i = 0; i < 2 * m->n_linear; i++) {
        char name[32];
        int rank;
        int64_t shape[2];
        size_t off;
        tl_model_tensor(m, i, name, &rank, shape, &off);
        const tl_st_tensor *t = tl_st_find(st, name);
        if (!t) return tl_error(TL_EFORMAT, "%s: no tensor '%s' (model %s)", path, name, m->spec);
        if (t->dtype != TL_ST_F32 || t->rank != rank || t->shape[0] != shape[0] ||
            (rank == 2 && t->shape[1] != shape[1]))
            return tl_error(TL_EFORMAT,
                            "%s: tensor '%s' has the wrong dtype or shape (want F32 [%lld%s%lld])",
                            path, name, (long long)shape[0], rank == 2 ? "," : "",
                            rank == 2 ? (long long)shape[1] : 0LL);
        /* a model file with NaN/Inf would poison a run (--init, --resume) */
        int rc = tl_bounds_check_tensor(path, name, t->data, rank, shape);
        if (rc < 0) return rc;
        memcpy(params + off, t->data, tl_st_numel(t) * sizeof(float));
    }
    return 0;
}

int tl_params_load(const char *path, const tl_model *m, float *params) {
    tl_st *st;
    int rc = tl_st_read(path, &st);
    if (rc < 0) return rc;
    if (tl_st_count(st) != 2 * m->n_linear) {
        rc = tl_error(TL_EFORMAT, "%s: has %d tensors, model %s has %d", path, tl_st_count(st),
                      m->spec, 2 * m->n_linear);
        goto cleanup;
    }
    rc = tl_params_from_st(st, path, m, params);
cleanup:
    tl_st_free(st);
    return rc;
}
