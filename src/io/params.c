/* params.c - model parameters <-> safetensors. */
#include "tl/params.h"

#include <stdio.h>
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

int tl_model_desc_init(tl_model_desc *desc, const tl_model *m, const tl_dataset *d,
                       const tl_norm *norm) {
    memset(desc, 0, sizeof *desc);
    if (!d) snprintf(desc->shape, sizeof desc->shape, "%d", m->in_dim);
    else if (d->rank == 1) snprintf(desc->shape, sizeof desc->shape, "%zu", d->dim);
    else if (d->rank == 3)
        snprintf(desc->shape, sizeof desc->shape, "%u,%u,%u", d->shape[0], d->shape[1],
                 d->shape[2]);
    else snprintf(desc->shape, sizeof desc->shape, "1,%u,%u", d->rows, d->cols);
    tl_model_desc_names(desc, m, d ? d->class_names : NULL, d ? d->classes : 0);
    size_t used;
    /* x = (x_raw * scale - mean) / std, x_raw the stored values (bytes for
     * images, floats for tables and arrays) */
    const char *scale = d && d->dtype == TL_ELEM_F32 ? "1" : "1/255";
    const size_t cap = 64 + (norm->kind == TL_NORM_FEATURE ? norm->dim * 2 * 18 : 0);
    if (!(desc->norm = malloc(cap))) return tl_error(TL_ENOMEM, "model metadata: out of memory");
    if (norm->kind == TL_NORM_NONE) {
        snprintf(desc->norm, cap, "scale=%s,none", scale);
    } else if (norm->kind == TL_NORM_FEATURE) {
        /* float32 values as %.9g (round-trips), ';' between features */
        used = (size_t)snprintf(desc->norm, cap, "scale=%s,mean=", scale);
        for (int pass = 0; pass < 2; pass++) {
            const float *v = pass ? norm->std_f : norm->mean_f;
            if (pass && used < cap)
                used += (size_t)snprintf(desc->norm + used, cap - used, ",std=");
            for (size_t f = 0; f < norm->dim && used < cap; f++)
                used += (size_t)snprintf(desc->norm + used, cap - used, "%s%.9g", f ? ";" : "",
                                         (double)v[f]);
        }
    } else {
        snprintf(desc->norm, cap, "scale=%s,mean=%.7g,std=%.7g", scale, (double)norm->mean,
                 (double)norm->std);
    }
    desc->meta[0] = (tl_st_kv){"normalize", desc->norm};
    desc->meta[1] = (tl_st_kv){"input_shape", desc->shape};
    desc->meta[2] = (tl_st_kv){"classes", desc->classes};
    return 0;
}

void tl_model_desc_names(tl_model_desc *desc, const tl_model *m, char *const *names, int n) {
    size_t used = 0;
    desc->classes[0] = 0;
    for (int c = 0; c < m->n_classes && used < sizeof desc->classes; c++) {
        int w = names && c < n ? snprintf(desc->classes + used, sizeof desc->classes - used, "%s%s",
                                          c ? "," : "", names[c])
                               : snprintf(desc->classes + used, sizeof desc->classes - used, "%s%d",
                                          c ? "," : "", c);
        if (w < 0) break;
        used += (size_t)w;
    }
}

void tl_model_desc_free(tl_model_desc *desc) {
    free(desc->norm);
    memset(desc, 0, sizeof *desc);
}
