/* ahead.c - masks drawn ahead by a worker thread (see ahead.h). */
#include "tl/ahead.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "tl/error.h"
#include "tl/fixed.h"

/* The worker's job: R into total, then m_pos into seal (pos >= 0). */
static int draw(tl_mask_ahead *a) {
    const size_t n = a->n;
    int rc = 0;
    if (a->pos >= 0) {
        rc = tl_mask_begin(&a->mk, &a->at, a->ids, a->k, a->pos, n);
        if (rc == 0) rc = tl_mask_next(&a->mk, NULL, a->seal, n, +1);
    }
    /* at position 0 the R just drawn was kept: this is a copy */
    if (rc == 0) rc = tl_mask_begin_total(&a->mk, &a->at, n);
    if (rc == 0) rc = tl_mask_next(&a->mk, NULL, a->total, n, +1);
    return rc;
}

static void *worker(void *arg) {
    tl_mask_ahead *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && !(a->posted && !a->done)) pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop) break;
        pthread_mutex_unlock(&a->mu);
        int rc = draw(a); /* the job's fields are not changed while !done */
        pthread_mutex_lock(&a->mu);
        a->failed = rc < 0;
        a->done = 1;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

int tl_mask_ahead_start(tl_mask_ahead *a, const tl_group_key *gk, size_t n) {
    memset(a, 0, sizeof *a);
    a->n = n;
    const size_t m = n ? n : 1;
    a->seal = malloc(m * sizeof(uint64_t));
    a->total = malloc(m * sizeof(uint64_t));
    a->ids = malloc(TL_FIXED_MAX_TERMS * sizeof(uint32_t));
    if (!a->seal || !a->total || !a->ids || tl_mask_init(&a->mk, gk) < 0) {
        tl_mask_ahead_stop(a);
        return tl_error(TL_ENOMEM, "masks ahead: out of memory");
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (pthread_create(&a->thread, NULL, worker, a) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        tl_mask_ahead_stop(a);
        return tl_error(TL_ENOMEM, "masks ahead: cannot start a thread");
    }
    a->started = 1;
    return 0;
}

void tl_mask_ahead_stop(tl_mask_ahead *a) {
    if (!a) return;
    if (a->started) {
        pthread_mutex_lock(&a->mu);
        a->stop = 1;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
    }
    if (a->seal) OPENSSL_cleanse(a->seal, (a->n ? a->n : 1) * sizeof(uint64_t));
    if (a->total) OPENSSL_cleanse(a->total, (a->n ? a->n : 1) * sizeof(uint64_t));
    free(a->seal);
    free(a->total);
    free(a->ids);
    tl_mask_free(&a->mk);
    memset(a, 0, sizeof *a);
}

/* Waits (holding mu) until the posted job is drawn. */
static void wait_done(tl_mask_ahead *a) {
    while (a->posted && !a->done) pthread_cond_wait(&a->cv, &a->mu);
}

static int same_at(const tl_mask_at *x, const tl_mask_at *y) {
    return x->run_id == y->run_id && x->step == y->step && x->attempt == y->attempt;
}

void tl_mask_ahead_post(tl_mask_ahead *a, const tl_mask_at *at, const uint32_t *ids, int k,
                        int pos) {
    if (!a->started) return;
    pthread_mutex_lock(&a->mu);
    wait_done(a);
    a->at = *at;
    if (pos >= 0 && (k < 1 || k > TL_FIXED_MAX_TERMS || pos >= k)) pos = -1;
    a->k = pos >= 0 ? k : 0;
    a->pos = pos;
    if (pos >= 0) memcpy(a->ids, ids, (size_t)k * sizeof(uint32_t));
    a->posted = 1;
    a->done = a->failed = 0;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

const uint64_t *tl_mask_ahead_seal(tl_mask_ahead *a, const tl_mask_at *at, const uint32_t *ids,
                                   int k, int pos) {
    if (!a->started) return NULL;
    pthread_mutex_lock(&a->mu);
    int match = a->posted && a->pos >= 0 && a->pos == pos && a->k == k && same_at(&a->at, at) &&
                memcmp(a->ids, ids, (size_t)k * sizeof(uint32_t)) == 0;
    if (match) wait_done(a);
    const uint64_t *r = match && !a->failed ? a->seal : NULL;
    pthread_mutex_unlock(&a->mu);
    return r;
}

const uint64_t *tl_mask_ahead_total(tl_mask_ahead *a, const tl_mask_at *at) {
    if (!a->started) return NULL;
    pthread_mutex_lock(&a->mu);
    int match = a->posted && same_at(&a->at, at);
    if (match) wait_done(a);
    const uint64_t *r = match && !a->failed ? a->total : NULL;
    pthread_mutex_unlock(&a->mu);
    return r;
}
