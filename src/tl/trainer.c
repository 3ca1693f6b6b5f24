/* trainer.c - the epoch/batch loop shared by centralized and distributed runs. */
#include "tl/trainer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tl/checkpoint.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/loss.h"

#define EVAL_CHUNK TL_EVAL_CHUNK

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int tl_trainer_init(tl_trainer *t, const tl_runcfg *cfg, const tl_model *m, float *params,
                    const uint64_t *counts, int n_nodes, const tl_dataset *test) {
    int rc;
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->model = m;
    t->params = params;
    t->test = test;
    t->grads = calloc(m->n_params, sizeof(float));
    if (!t->grads) return tl_error(TL_ENOMEM, "gradients: out of memory");
    if ((rc = tl_optim_init(&t->optim, &cfg->optim, m->n_params)) < 0) goto fail;
    if ((rc = tl_sched_init(&t->sched, cfg->sched, cfg->optim.lr, cfg->gamma, cfg->step_size,
                            cfg->epochs)) < 0)
        goto fail;
    if ((rc = tl_batcher_new(counts, n_nodes, (size_t)cfg->batch_size, cfg->seed, cfg->reshuffle,
                             &t->batcher)) < 0)
        goto fail;
    if (cfg->plan_path && (rc = tl_file_open_stream(cfg->plan_path, 0, &t->plan)) < 0) goto fail;
    return 0;
fail:
    tl_trainer_free(t);
    return rc;
}

void tl_trainer_free(tl_trainer *t) {
    if (t->plan) fclose(t->plan);
    tl_evalstats_free(&t->sums);
    tl_eval_metrics_free(&t->metrics);
    free(t->grads);
    tl_optim_free(&t->optim);
    tl_batcher_free(t->batcher);
    memset(t, 0, sizeof *t);
}

void tl_trainer_set_data_sig(tl_trainer *t, const char *sig) {
    snprintf(t->data_sig, sizeof t->data_sig, "%s", sig);
}

int tl_trainer_set_opt_from(tl_trainer *t, size_t from) {
    const size_t n = t->model->n_params;
    if (from >= n)
        return tl_error(TL_EINVAL, "optimizer from parameter %zu of %zu: nothing left", from, n);
    tl_optim_free(&t->optim);
    t->opt_from = 0;
    int rc = tl_optim_init(&t->optim, &t->cfg->optim, n - from);
    if (rc == 0) t->opt_from = from;
    return rc;
}

/* data_sig, computed now if that was left for when it is needed. */
static void need_data_sig(tl_trainer *t) {
    if (t->data_sig_fn) t->data_sig_fn(t->data_sig_ud, t->data_sig, sizeof t->data_sig);
    t->data_sig_fn = NULL;
}

int tl_trainer_resume(tl_trainer *t) {
    need_data_sig(t);
    tl_run_pos pos;
    int rc = tl_checkpoint_load(t->cfg->checkpoint_path, t, &pos);
    if (rc < 0) return rc;
    t->resumed = 1;
    t->steps = pos.steps;
    t->start_epoch = pos.epoch;
    t->start_batch = pos.batch;
    t->start_loss_sum = pos.loss_sum;
    t->start_correct = pos.correct;
    t->start_seen = pos.seen;
    return 0;
}

/* The evaluation after an epoch: the hook, else the test set; fills r's
 * eval fields and test loss/accuracy. Nothing to evaluate: 0, fields as they are. */
static int evaluate_epoch(tl_trainer *t, tl_epoch_report *r) {
    int rc;
    if (!t->eval && !t->test) return 0;
    if (!t->sums.classes &&
        (rc = tl_evalstats_init(&t->sums, t->model->n_classes, TL_EVAL_BINS)) < 0)
        return rc;
    tl_evalstats_reset(&t->sums);
    if (t->eval) {
        rc = t->eval(t->eval_ctx, t->params, t->steps, &t->sums);
    } else {
        tl_norm nm;
        tl_runcfg_norm(t->cfg, &nm);
        rc = tl_evaluate_sums(t->model, t->params, t->test, &nm, &t->sums);
    }
    if (rc < 0) return rc;
    tl_eval_metrics_free(&t->metrics);
    if ((rc = tl_eval_metrics_compute(&t->sums, &t->metrics)) < 0) return rc;
    r->eval = &t->sums;
    r->metrics = &t->metrics;
    /* the same divisions as tl_evaluate: loss_sum / n, hits / n */
    const double n = (double)t->sums.n;
    uint64_t hits = 0;
    for (int c = 0; c < t->sums.classes; c++)
        hits += t->sums.confusion[(size_t)c * t->sums.classes + c];
    r->test_loss = t->sums.n ? t->sums.loss_sum / n : 0.0;
    r->test_accuracy = t->sums.n ? (double)hits / n : 0.0;
    return 0;
}

/* Saves a checkpoint to the run's checkpoint file, if it has one; on a
 * failure (failing != 0) to the recovery file otherwise. Before it is
 * written, tells the gradient source (t->checkpointing, with its ctx). */
static int checkpoint(tl_trainer *t, void *ctx, int epoch, size_t batch, double loss_sum,
                      int64_t correct, uint64_t seen, int failing) {
    const char *path = t->cfg->checkpoint_path ? t->cfg->checkpoint_path
                       : failing               ? t->recovery_path
                                               : NULL;
    if (!path) return 0;
    need_data_sig(t);
    tl_run_pos pos = {epoch, batch, t->steps, loss_sum, correct, seen};
    /* first the nodes' side (sealed mode), so that every checkpoint the
     * orchestrator holds has its node-side counterpart */
    if (t->checkpointing) t->checkpointing(ctx, t->steps);
    int rc = tl_checkpoint_save(path, t, &pos);
    if (rc == 0 && failing) t->saved_path = path;
    return rc;
}

int tl_trainer_run(tl_trainer *t, tl_grad_fn fn, void *ctx, const tl_trainer_hooks *hooks) {
    const tl_runcfg *cfg = t->cfg;
    const size_t batches = tl_batcher_batches(t->batcher);
    const uint64_t total = tl_batcher_total(t->batcher);
    int rc = 0;
    for (int e = t->resumed ? t->start_epoch : 0; e < cfg->epochs; e++) {
        double loss_sum = 0.0;
        int64_t correct = 0;
        uint64_t seen = 0;
        size_t k = 0;
        if (t->resumed) {
            /* the checkpoint restored this epoch's permutation */
            t->resumed = 0;
            if (t->start_batch >= batches) continue; /* it had finished this epoch */
            k = t->start_batch;
            loss_sum = t->start_loss_sum;
            correct = t->start_correct;
            seen = t->start_seen;
        } else {
            tl_batcher_start_epoch(t->batcher);
            if (t->plan && (tl_batcher_write_plan(t->batcher, t->plan) < 0 || fflush(t->plan) != 0))
                return tl_error(TL_EIO, "%s: writing the plan failed", cfg->plan_path);
        }
        const double lr = tl_sched_lr(&t->sched, e);
        const double t0 = now_s();
        const uint64_t seen0 = seen;
        int partial = 0;
        for (; k < batches; k++) {
            if (t->stop && *t->stop) { /* a signal: save what is done, as a failure does */
                if ((rc = checkpoint(t, ctx, e, k, loss_sum, correct, seen, 1)) < 0) return rc;
                return tl_error(TL_ESTATE, "stopped by signal %d", (int)*t->stop);
            }
            if (cfg->max_steps > 0 && t->steps >= cfg->max_steps) {
                partial = 1;
                break;
            }
            tl_batch b;
            tl_batcher_get(t->batcher, k, &b);
            /* the totals before batch k, for a checkpoint at batch k */
            const double loss0 = loss_sum;
            const int64_t correct0 = correct;
            /* t->grads is zero here: calloc'ed, then cleared by each optimizer step */
            if ((rc = fn(ctx, &b, t->params, t->grads, &loss_sum, &correct)) < 0) {
                /* keep what is done: the last complete batch is k - 1 */
                char why[1024];
                snprintf(why, sizeof why, "%s", tl_errmsg());
                int rc2 = checkpoint(t, ctx, e, k, loss0, correct0, seen, 1);
                if (rc2 < 0) return rc2;
                return tl_error(rc, "%s", why);
            }
            const size_t rows = b.n;
            if (t->prefetch && k + 1 < batches) { /* prepared while the optimizer runs */
                tl_batcher_get(t->batcher, k + 1, &b);
                t->prefetch(ctx, &b);
            }
            if ((rc = tl_optim_step(&t->optim, t->params + t->opt_from, t->grads + t->opt_from,
                                    lr)) < 0) {
                char why[1024];
                snprintf(why, sizeof why, "%s", tl_errmsg());
                if (rc == TL_ENUMERIC) {
                    /* nothing was changed: the state before batch k is sound */
                    int rc2 = checkpoint(t, ctx, e, k, loss0, correct0, seen, 1);
                    if (rc2 < 0) return rc2;
                    return tl_error(TL_ENUMERIC,
                                    "epoch %d batch %zu: the summed gradient is not finite (%s); "
                                    "stopped before the step (the run diverged; try a smaller "
                                    "learning rate)",
                                    e + 1, k, why);
                }
                /* the step overflowed: that state is poison and is never saved */
                t->saved_path = NULL;
                return tl_error(TL_ENUMERIC,
                                "epoch %d batch %zu: %s; the run diverged (try a smaller learning "
                                "rate); this state is not saved%s%s",
                                e + 1, k, why,
                                t->cfg->checkpoint_path ? ": the last checkpoint in " : "",
                                t->cfg->checkpoint_path ? t->cfg->checkpoint_path : "");
            }
            t->steps++;
            seen += rows;
            if (hooks && hooks->on_batch) {
                double el = now_s() - t0;
                tl_progress p = {e,
                                 cfg->epochs,
                                 k + 1,
                                 batches,
                                 t->steps,
                                 loss_sum / (double)seen,
                                 el > 0 ? (seen - seen0) / el : 0,
                                 el};
                hooks->on_batch(hooks->ud, &p);
            }
            if (cfg->checkpoint_every > 0 && t->steps % cfg->checkpoint_every == 0 &&
                k + 1 < batches &&
                (rc = checkpoint(t, ctx, e, k + 1, loss_sum, correct, seen, 0)) < 0)
                return rc;
        }
        tl_epoch_report r = {0};
        r.epoch = e + 1;
        r.steps = t->steps;
        r.train_loss = seen ? loss_sum / (double)seen : 0.0;
        r.train_accuracy = seen ? (double)correct / (double)seen : 0.0;
        r.lr = lr;
        r.partial = partial || seen < total;
        r.test_loss = r.test_accuracy = -1;
        if ((rc = evaluate_epoch(t, &r)) < 0) return rc;
        r.seconds = now_s() - t0;
        if ((rc = checkpoint(t, ctx, e, partial ? k : batches, loss_sum, correct, seen, 0)) < 0)
            return rc;
        if (hooks && hooks->on_epoch) hooks->on_epoch(hooks->ud, &r);
        if (partial) break;
    }
    return 0;
}

int tl_evaluate(const tl_model *m, const float *params, const tl_dataset *d, float mean, float std,
                double *loss, double *accuracy) {
    /* the sums of tl_evaluate_sums (same chunks, same bits), with the fewest bins */
    tl_evalstats s;
    tl_norm nm = {.kind = TL_NORM_SCALAR, .mean = mean, .std = std};
    int rc = tl_evalstats_init(&s, m->n_classes, 2);
    if (rc < 0) return rc;
    if ((rc = tl_evaluate_sums(m, params, d, &nm, &s)) == 0) {
        uint64_t hits = 0;
        for (int c = 0; c < s.classes; c++) hits += s.confusion[c * s.classes + c];
        *loss = s.n ? s.loss_sum / (double)s.n : 0.0;
        *accuracy = s.n ? (double)hits / (double)s.n : 0.0;
    }
    tl_evalstats_free(&s);
    return rc;
}

int tl_evaluate_sums(const tl_model *m, const float *params, const tl_dataset *d, const tl_norm *nm,
                     tl_evalstats *s) {
    tl_ws ws;
    int rc;
    int32_t *y = NULL;
    size_t *rows = NULL;
    if (d->dim != (size_t)m->in_dim)
        return tl_error(TL_EINVAL, "test set has %zu features, the model expects %d", d->dim,
                        m->in_dim);
    if (nm->kind == TL_NORM_FEATURE && nm->dim != d->dim)
        return tl_error(TL_EINVAL, "the normalization has %zu features, the test set %zu", nm->dim,
                        d->dim);
    if (s->classes != m->n_classes)
        return tl_error(TL_EINVAL, "evaluation sums for %d classes, the model has %d", s->classes,
                        m->n_classes);
    if (d->classes > m->n_classes)
        return tl_error(TL_EINVAL, "test labels go up to %d, the model has %d classes",
                        d->classes - 1, m->n_classes);
    if ((rc = tl_ws_init(&ws, m, EVAL_CHUNK)) < 0) return rc;
    rows = malloc(sizeof *rows * EVAL_CHUNK);
    y = malloc(sizeof *y * EVAL_CHUNK);
    if (!rows || !y) {
        rc = tl_error(TL_ENOMEM, "evaluation: out of memory");
        goto cleanup;
    }
    for (size_t first = 0; first < d->n; first += EVAL_CHUNK) {
        int n = (int)(d->n - first < EVAL_CHUNK ? d->n - first : EVAL_CHUNK);
        for (int i = 0; i < n; i++) rows[i] = first + i;
        tl_dataset_gather_norm(d, rows, (size_t)n, nm, ws.h[0], y);
        tl_model_forward(m, params, &ws, n, 0, m->n_modules);
        if ((rc = tl_evalstats_add(s, ws.h[m->n_modules], y, (size_t)n)) < 0) goto cleanup;
    }
cleanup:
    free(rows);
    free(y);
    tl_ws_free(&ws);
    return rc;
}
