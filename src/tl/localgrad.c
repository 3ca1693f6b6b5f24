/* localgrad.c - centralized gradients, with a loader thread one batch ahead. */
#include "tl/localgrad.h"

#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/loss.h"

enum { IDLE, REQUESTED, READY, QUIT };

/* rows -> normalized floats: the descriptor if one was set, else mean/std. */
static void gather(const tl_local_grad *lg, const size_t *rows, size_t n, float *x, int32_t *y) {
    if (lg->norm) tl_dataset_gather_norm(lg->data, rows, n, lg->norm, x, y);
    else tl_dataset_gather(lg->data, rows, n, lg->mean, lg->std, x, y);
}

void tl_local_grad_set_norm(tl_local_grad *lg, const tl_norm *nm) { lg->norm = nm; }

/* The loader thread: gathers each requested batch, then waits for the next. */
static void *loader(void *arg) {
    tl_local_grad *lg = arg;
    pthread_mutex_lock(&lg->mu);
    for (;;) {
        while (lg->state != REQUESTED && lg->state != QUIT) pthread_cond_wait(&lg->cv, &lg->mu);
        if (lg->state == QUIT) break;
        pthread_mutex_unlock(&lg->mu);
        gather(lg, lg->next_rows, lg->next_n, lg->x_next, lg->y_next);
        pthread_mutex_lock(&lg->mu);
        lg->state = READY;
        pthread_cond_broadcast(&lg->cv);
    }
    pthread_mutex_unlock(&lg->mu);
    return NULL;
}

int tl_local_grad_init(tl_local_grad *lg, const tl_model *m, const tl_dataset *d, int max_rows,
                       float mean, float std) {
    int rc;
    memset(lg, 0, sizeof *lg);
    if (d->dim != (size_t)m->in_dim)
        return tl_error(TL_EINVAL, "data has %zu features, the model expects %d", d->dim,
                        m->in_dim);
    if (d->classes > m->n_classes)
        return tl_error(TL_EINVAL, "data has labels up to %d, the model has %d outputs",
                        d->classes - 1, m->n_classes);
    lg->model = m;
    lg->data = d;
    lg->mean = mean;
    lg->std = std;
    lg->max_rows = max_rows;
    if ((rc = tl_ws_init(&lg->ws, m, max_rows)) < 0) return rc;
    lg->dz = malloc(sizeof(float) * (size_t)max_rows * m->n_classes);
    lg->y = malloc(sizeof(int32_t) * (size_t)max_rows);
    lg->next_rows = malloc(sizeof(size_t) * (size_t)max_rows);
    lg->x_next = malloc(sizeof(float) * (size_t)max_rows * m->in_dim);
    lg->y_next = malloc(sizeof(int32_t) * (size_t)max_rows);
    if (!lg->dz || !lg->y || !lg->next_rows || !lg->x_next || !lg->y_next) {
        tl_local_grad_free(lg);
        return tl_error(TL_ENOMEM, "training buffers: out of memory");
    }
    pthread_mutex_init(&lg->mu, NULL);
    pthread_cond_init(&lg->cv, NULL);
    /* without a thread, batches are gathered in place (same numbers) */
    lg->have_thread = pthread_create(&lg->thread, NULL, loader, lg) == 0;
    return 0;
}

void tl_local_grad_prefetch(void *ctx, const tl_batch *next) {
    tl_local_grad *lg = ctx;
    if (!lg->have_thread || next->n > (size_t)lg->max_rows) return;
    pthread_mutex_lock(&lg->mu);
    while (lg->state == REQUESTED) pthread_cond_wait(&lg->cv, &lg->mu); /* one at a time */
    for (size_t i = 0; i < next->n; i++) lg->next_rows[i] = (size_t)next->global[i];
    lg->next_n = next->n;
    lg->next_epoch = next->epoch;
    lg->next_index = next->index;
    lg->state = REQUESTED;
    pthread_cond_broadcast(&lg->cv);
    pthread_mutex_unlock(&lg->mu);
}

/* Puts batch b's inputs in ws.h[0] and labels in y: the loader's work if it
 * prepared this very batch, else gathered here. */
static void take_inputs(tl_local_grad *lg, const tl_batch *b) {
    int prepared = 0;
    if (lg->have_thread) {
        pthread_mutex_lock(&lg->mu);
        if (lg->state != IDLE && lg->next_epoch == b->epoch && lg->next_index == b->index &&
            lg->next_n == b->n) {
            while (lg->state == REQUESTED) pthread_cond_wait(&lg->cv, &lg->mu);
            prepared = 1;
        } else {
            while (lg->state == REQUESTED) pthread_cond_wait(&lg->cv, &lg->mu);
        }
        lg->state = IDLE;
        pthread_mutex_unlock(&lg->mu);
    }
    if (prepared) { /* swap the buffers instead of copying */
        float *x = lg->ws.h[0];
        lg->ws.h[0] = lg->x_next;
        lg->x_next = x;
        int32_t *y = lg->y;
        lg->y = lg->y_next;
        lg->y_next = y;
        return;
    }
    for (size_t i = 0; i < b->n; i++) lg->next_rows[i] = (size_t)b->global[i];
    gather(lg, lg->next_rows, b->n, lg->ws.h[0], lg->y);
}

int tl_local_grad_fn(void *ctx, const tl_batch *b, const float *params, float *grads,
                     double *loss_sum, int64_t *correct) {
    tl_local_grad *lg = ctx;
    const tl_model *m = lg->model;
    const int n = (int)b->n, L = m->n_modules;
    take_inputs(lg, b);
    tl_model_forward(m, params, &lg->ws, n, 0, L);
    int64_t c;
    *loss_sum += tl_nll_forward(lg->ws.h[L], lg->y, n, m->n_classes, &c);
    *correct += c;
    /* The same two steps a node and the orchestrator take: g = softmax - onehot, then / B. */
    tl_nll_grad(lg->dz, lg->ws.h[L], lg->y, n, m->n_classes);
    tl_nll_scale(lg->dz, (long)n * m->n_classes, n);
    tl_model_backward(m, params, grads, &lg->ws, n, 0, L, lg->dz, NULL);
    return 0;
}

void tl_local_grad_free(tl_local_grad *lg) {
    if (lg->have_thread) {
        pthread_mutex_lock(&lg->mu);
        while (lg->state == REQUESTED) pthread_cond_wait(&lg->cv, &lg->mu);
        lg->state = QUIT;
        pthread_cond_broadcast(&lg->cv);
        pthread_mutex_unlock(&lg->mu);
        pthread_join(lg->thread, NULL);
        pthread_mutex_destroy(&lg->mu);
        pthread_cond_destroy(&lg->cv);
    }
    tl_ws_free(&lg->ws);
    free(lg->dz);
    free(lg->y);
    free(lg->next_rows);
    free(lg->x_next);
    free(lg->y_next);
    memset(lg, 0, sizeof *lg);
}
