/*
 * localgrad.h - the gradient source of centralized training: the whole data
 * set in this process (what `tl train` uses with the training loop of
 * trainer.h).
 *
 * A batch's gradient is computed with the very calls a node and the
 * orchestrator make between them (gather, forward, g = softmax - onehot, g/B,
 * backward), so a one-node distributed run reproduces it bit for bit.
 *
 * Input rows are gathered by a loader thread one batch ahead (tl_prefetch_fn):
 * while batch k is computed, batch k+1's rows are converted to floats. The
 * numbers are the same either way; matrix products stay on the calling
 * thread.
 *
 *     tl_local_grad lg;
 *     tl_local_grad_init(&lg, &model, &train, batch_size, mean, std);
 *     t.prefetch = tl_local_grad_prefetch;
 *     tl_trainer_run(&t, tl_local_grad_fn, &lg, &hooks);
 *     tl_local_grad_free(&lg);
 */
#ifndef TL_LOCALGRAD_H
#define TL_LOCALGRAD_H

#include <pthread.h>
#include <stdint.h>

#include "tl/batch.h"
#include "tl/dataset.h"
#include "tl/model.h"
#include "tl/norm.h"

typedef struct tl_local_grad {
    const tl_model *model;
    const tl_dataset *data;
    float mean, std;
    const tl_norm *norm; /* tl_local_grad_set_norm: used instead of mean/std */
    int max_rows;
    tl_ws ws;
    float *dz;
    int32_t *y;
    /* loader thread: gathers the next batch into x_next / y_next */
    pthread_t thread;
    int have_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state; /* 0 idle, 1 requested, 2 ready, 3 quit */
    int next_epoch;
    size_t next_index, next_n;
    size_t *next_rows;
    float *x_next;
    int32_t *y_next;
} tl_local_grad;

int tl_local_grad_init(tl_local_grad *lg, const tl_model *m, const tl_dataset *d, int max_rows,
                       float mean, float std);
/* Normalizes with nm (norm.h: none, scalar or per feature) instead of the
 * scalar mean/std of init; nm must outlive lg. The same floats as
 * init's mean/std for a scalar nm. Call before the first batch. */
void tl_local_grad_set_norm(tl_local_grad *lg, const tl_norm *nm);
/* tl_grad_fn (trainer.h); ctx is the tl_local_grad. */
int tl_local_grad_fn(void *ctx, const tl_batch *b, const float *params, float *grads,
                     double *loss_sum, int64_t *correct);
/* tl_prefetch_fn (trainer.h). */
void tl_local_grad_prefetch(void *ctx, const tl_batch *next);
void tl_local_grad_free(tl_local_grad *lg);

#endif
