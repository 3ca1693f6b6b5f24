/* checkpoint.c - save and restore a training run's state. */
#include "tl/checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/bounds.h"
#include "tl/error.h"
#include "tl/params.h"
#include "tl/safetensors.h"

#define FORMAT "tl-checkpoint-2"
/* Version 1 (before the optimizer's state interface) kept the optimizer's
 * buffers as one tensor "optim.state" F32 [2, P], buffer i in row i (unused
 * rows zero); it still loads. */
#define FORMAT_V1 "tl-checkpoint-1"

void tl_checkpoint_signature(const tl_trainer *t, char *buf, size_t len) {
    const tl_runcfg *c = t->cfg;
    const tl_optim_cfg *o = &c->optim;
    snprintf(buf, len,
             "model=%s in=%d batch=%d seed=%u reshuffle=%d optimizer=%s lr=%a rho=%a eps=%a "
             "momentum=%a dampening=%a weight_decay=%a nesterov=%d betas=%a,%a schedule=%s "
             "gamma=%a step_size=%d epochs=%d normalize=%a,%a cut=%d mode=%d data=%s",
             c->model, t->model->in_dim, c->batch_size, c->seed, c->reshuffle,
             tl_optim_name(o->kind), o->lr, o->rho, o->eps, o->momentum, o->dampening,
             o->weight_decay, o->nesterov, o->beta1, o->beta2, c->sched, c->gamma, c->step_size,
             c->epochs, (double)c->mean, (double)c->std, c->cut, (int)c->mode, t->data_sig);
}

/* The optimizer's state buffers as tensors "optim.<name>" F32 [n] into
 * out[0, count) (names in names[], data o's own); the count. */
static int optim_tensors(const tl_optim *o, char names[][64], tl_st_tensor *out) {
    int count = tl_optim_state_count(o);
    for (int i = 0; i < count; i++) {
        const char *name;
        float *data;
        size_t len;
        tl_optim_state(o, i, &name, &data, &len);
        snprintf(names[i], 64, "optim.%s", name);
        out[i] = (tl_st_tensor){names[i], TL_ST_F32, 1, {(int64_t)len}, data};
    }
    return count;
}

int tl_checkpoint_save(const char *path, const tl_trainer *t, const tl_run_pos *pos) {
    char onames[TL_OPTIM_MAX_STATE][64];
    tl_st_tensor extra[TL_OPTIM_MAX_STATE + 1];
    const int n_opt = optim_tensors(&t->optim, onames, extra);
    /* a checkpoint is what a run resumes from: never one holding NaN/Inf */
    int finite = tl_bounds_check_finite(t->model, t->params, "parameters") == 0;
    for (int i = 0; finite && i < n_opt; i++)
        finite = tl_bounds_check_tensor("optimizer state", extra[i].name, extra[i].data, 1,
                                        extra[i].shape) == 0;
    if (!finite) {
        char why[512];
        snprintf(why, sizeof why, "%s", tl_errmsg());
        return tl_error(TL_ENUMERIC, "%s: not written: the state is not finite (%s)", path, why);
    }
    char sig[2048], epoch[32], batch[32], steps[32], osteps[32], started[32], loss[64], correct[32],
        seen[32];
    int64_t rng_state[TL_MT_N + 1];
    tl_rng rng;
    int epochs_started;
    tl_batcher_save(t->batcher, &rng, &epochs_started);
    for (int i = 0; i < TL_MT_N; i++) rng_state[i] = rng.mt[i];
    rng_state[TL_MT_N] = rng.mti;
    tl_checkpoint_signature(t, sig, sizeof sig);
    snprintf(epoch, sizeof epoch, "%d", pos->epoch);
    snprintf(batch, sizeof batch, "%zu", pos->batch);
    snprintf(steps, sizeof steps, "%" PRId64, pos->steps);
    snprintf(osteps, sizeof osteps, "%" PRId64, tl_optim_steps(&t->optim));
    snprintf(started, sizeof started, "%d", epochs_started);
    snprintf(loss, sizeof loss, "%a", pos->loss_sum);
    snprintf(correct, sizeof correct, "%" PRId64, pos->correct);
    snprintf(seen, sizeof seen, "%" PRIu64, pos->seen);
    tl_st_kv meta[] = {
        // clang-format off
        {"format", FORMAT},    {"config", sig},         {"epoch", epoch},
        {"batch", batch},      {"steps", steps},        {"optim_steps", osteps},
        {"epochs_started", started}, {"loss_sum", loss}, {"correct", correct},
        {"seen", seen},
        // clang-format on
    };
    extra[n_opt] = (tl_st_tensor){"rng.state", TL_ST_I64, 1, {TL_MT_N + 1}, rng_state};
    return tl_params_save(path, t->model, t->params, extra, n_opt + 1, meta,
                          (int)(sizeof meta / sizeof meta[0]));
}

/* Reads metadata key as a signed integer in [lo, hi]. */
static int meta_int(const tl_st *st, const char *path, const char *key, long long lo, long long hi,
                    long long *out) {
    const char *v = tl_st_meta(st, key);
    char *end;
    if (!v) return tl_error(TL_EFORMAT, "%s: checkpoint lacks '%s'", path, key);
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || x < lo || x > hi)
        return tl_error(TL_EFORMAT, "%s: checkpoint field '%s' = '%s' is invalid", path, key, v);
    *out = x;
    return 0;
}

/* Points at the first space-separated field where a and b differ. */
static void first_difference(const char *a, const char *b, char *out, size_t len) {
    const char *fa = a, *fb = b;
    while (*a && *a == *b) {
        if (*a == ' ') fa = a + 1, fb = b + 1;
        a++, b++;
    }
    int na = (int)strcspn(fa, " "), nb = (int)strcspn(fb, " ");
    snprintf(out, len, "this run has '%.*s', the checkpoint '%.*s'", na, fa, nb, fb);
}

/* Checks that st (read from path) is a tl checkpoint of the configuration
 * whose signature is sig; with no_data, only the fields before " data=".
 * 0, TL_EFORMAT or TL_ESTATE (the message shows the first field that differs). */
static int check_config(const tl_st *st, const char *path, const char *sig, int no_data) {
    const char *fmt = tl_st_meta(st, "format"), *cfg = tl_st_meta(st, "config");
    char diff[512];
    if (!fmt || (strcmp(fmt, FORMAT) != 0 && strcmp(fmt, FORMAT_V1) != 0) || !cfg)
        return tl_error(TL_EFORMAT, "%s: not a tl checkpoint (format '%s')", path,
                        fmt ? fmt : "none");
    size_t ls = strlen(sig), lc = strlen(cfg);
    if (no_data) {
        const char *ds = strstr(sig, " data="), *dc = strstr(cfg, " data=");
        if (ds) ls = (size_t)(ds - sig);
        if (dc) lc = (size_t)(dc - cfg);
    }
    if (ls != lc || memcmp(sig, cfg, ls) != 0) {
        first_difference(sig, cfg, diff, sizeof diff);
        return tl_error(TL_ESTATE, "%s: checkpoint of another configuration: %s", path, diff);
    }
    return 0;
}

/* Checks that every float tensor in st (read from path) is finite: the
 * parameters and the optimizer state (a checkpoint's other tensor, rng.state,
 * is integer; the shape checks come later). 0 or TL_ENUMERIC naming the
 * tensor and index. */
static int st_finite(const tl_st *st, const char *path) {
    for (int i = 0; i < tl_st_count(st); i++) {
        const tl_st_tensor *t = tl_st_get(st, i);
        int rc = t->dtype != TL_ST_F32
                     ? 0
                     : tl_bounds_check_tensor(path, t->name, t->data, t->rank, t->shape);
        if (rc < 0) return rc;
    }
    return 0;
}

int tl_checkpoint_check(const char *path, const tl_runcfg *cfg, const tl_model *m) {
    tl_st *st;
    int rc = tl_st_read(path, &st);
    if (rc < 0) return rc;
    tl_trainer t = {.cfg = cfg, .model = m}; /* no data yet */
    char sig[2048];
    tl_checkpoint_signature(&t, sig, sizeof sig);
    rc = check_config(st, path, sig, 1);
    if (rc == 0) rc = st_finite(st, path);
    tl_st_free(st);
    return rc;
}

/* Finds the state buffers of o (for n parameters) in st (read from path):
 * "optim.<name>" F32 [n] each, or in a version-1 file row i of "optim.state"
 * F32 [2, n]; their data into out[i]. 0 or TL_EFORMAT naming what is missing. */
static int find_optim_state(const tl_st *st, const char *path, const tl_optim *o, size_t n,
                            const float **out) {
    const int count = tl_optim_state_count(o);
    const char *fmt = tl_st_meta(st, "format");
    if (fmt && !strcmp(fmt, FORMAT_V1)) {
        const tl_st_tensor *os = tl_st_find(st, "optim.state");
        if (!os || os->dtype != TL_ST_F32 || os->rank != 2 || os->shape[0] != 2 ||
            os->shape[1] != (int64_t)n)
            return tl_error(TL_EFORMAT, "%s: checkpoint lacks a valid optim.state", path);
        for (int i = 0; i < count; i++) out[i] = (const float *)os->data + (size_t)i * n;
        return 0;
    }
    for (int i = 0; i < count; i++) {
        const char *name;
        size_t len;
        char key[64];
        tl_optim_state(o, i, &name, NULL, &len);
        snprintf(key, sizeof key, "optim.%s", name);
        const tl_st_tensor *ts = tl_st_find(st, key);
        if (!ts || ts->dtype != TL_ST_F32 || ts->rank != 1 || ts->shape[0] != (int64_t)n ||
            len != n)
            return tl_error(TL_EFORMAT, "%s: checkpoint lacks a valid %s (F32 [%zu])", path, key,
                            n);
        out[i] = ts->data;
    }
    return 0;
}

int tl_checkpoint_load(const char *path, tl_trainer *t, tl_run_pos *pos) {
    tl_st *st;
    int rc = tl_st_read(path, &st);
    if (rc < 0) return rc;
    char sig[2048];
    long long epoch = 0, batch = 0, steps = 0, osteps = 0, started = 0, correct = 0, seen = 0;
    tl_checkpoint_signature(t, sig, sizeof sig);
    if ((rc = check_config(st, path, sig, 0)) < 0 || (rc = st_finite(st, path)) < 0) goto out;
    const long long batches = (long long)tl_batcher_batches(t->batcher);
    if ((rc = meta_int(st, path, "epoch", 0, t->cfg->epochs - 1, &epoch)) < 0 ||
        (rc = meta_int(st, path, "batch", 0, batches, &batch)) < 0 ||
        (rc = meta_int(st, path, "steps", 0, INT64_MAX, &steps)) < 0 ||
        (rc = meta_int(st, path, "optim_steps", 0, INT64_MAX, &osteps)) < 0 ||
        (rc = meta_int(st, path, "epochs_started", 1, 1 << 30, &started)) < 0 ||
        (rc = meta_int(st, path, "correct", 0, INT64_MAX, &correct)) < 0 ||
        (rc = meta_int(st, path, "seen", 0, INT64_MAX, &seen)) < 0)
        goto out;
    const char *loss = tl_st_meta(st, "loss_sum");
    char *end;
    double loss_sum = loss ? strtod(loss, &end) : 0;
    if (!loss || end == loss || *end) {
        rc = tl_error(TL_EFORMAT, "%s: checkpoint field 'loss_sum' is invalid", path);
        goto out;
    }
    const float *ostate[TL_OPTIM_MAX_STATE];
    if ((rc = find_optim_state(st, path, &t->optim, t->optim.n, ostate)) < 0) goto out;
    const tl_st_tensor *rs = tl_st_find(st, "rng.state");
    if (!rs || rs->dtype != TL_ST_I64 || rs->rank != 1 || rs->shape[0] != TL_MT_N + 1) {
        rc = tl_error(TL_EFORMAT, "%s: checkpoint lacks a valid rng.state", path);
        goto out;
    }
    const int64_t *r = rs->data;
    if (r[TL_MT_N] < 0 || r[TL_MT_N] > TL_MT_N) {
        rc = tl_error(TL_EFORMAT, "%s: rng.state index out of range", path);
        goto out;
    }
    if ((rc = tl_params_from_st(st, path, t->model, t->params)) < 0) goto out;
    tl_rng rng;
    for (int i = 0; i < TL_MT_N; i++) rng.mt[i] = (uint32_t)r[i];
    rng.mti = (int)r[TL_MT_N];
    if ((rc = tl_batcher_restore(t->batcher, &rng, (int)started)) < 0) goto out;
    for (int i = 0; i < tl_optim_state_count(&t->optim); i++) {
        float *buf;
        size_t len;
        tl_optim_state(&t->optim, i, NULL, &buf, &len);
        memcpy(buf, ostate[i], sizeof(float) * len);
    }
    tl_optim_set_steps(&t->optim, osteps); /* >= 0: checked above */
    pos->epoch = (int)epoch;
    pos->batch = (size_t)batch;
    pos->steps = steps;
    pos->loss_sum = loss_sum;
    pos->correct = correct;
    pos->seen = (uint64_t)seen;
out:
    tl_st_free(st);
    return rc;
}

int tl_checkpoint_steps(const char *path, int64_t *steps) {
    tl_st *st;
    long long v = 0;
    int rc = tl_st_read(path, &st);
    if (rc < 0) return rc;
    rc = meta_int(st, path, "steps", 0, INT64_MAX, &v);
    tl_st_free(st);
    if (rc == 0) *steps = v;
    return rc;
}
