/*
 * ahead.h - a node's masks drawn ahead, by a worker thread (sealed mode).
 *
 * A sealed node's masks depend on nothing but (run, step, attempt,
 * participants, position) (mask.h), so the next step's can be drawn while
 * the node waits for the network or computes its forward pass: after applying
 * step s, the node posts a guess for step s+1 (attempt 0, the participants
 * of step s), and a worker thread draws that step's mask m_pos and total R
 * into buffers of its own. When the step comes and the guess was right, the
 * node adds the buffered mask instead of drawing it (one add per value, no
 * AES on the step's critical path); when it was wrong (a replay, a node
 * lost or sitting out), the node draws as it would have. The masks are the
 * same values either way, so the vectors sent are the same bits.
 *
 *     tl_mask_ahead a;  tl_mask_ahead_start(&a, &group_key, n);
 *     tl_mask_ahead_post(&a, &at, ids, k, pos);             // pos -1: R only
 *     const uint64_t *m = tl_mask_ahead_seal(&a, &at, ids, k, pos);   // or NULL
 *     const uint64_t *r = tl_mask_ahead_total(&a, &at);               // or NULL
 *     tl_mask_ahead_stop(&a);
 *
 * The buffers returned stay valid until the next post or stop. One thread
 * (the node's) calls these functions; the worker only draws.
 */
#ifndef TL_AHEAD_H
#define TL_AHEAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"
#include "tl/mask.h"

typedef struct tl_mask_ahead {
    tl_mask mk;                /* the worker's own streams */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;
    int posted, done, failed;  /* a job is posted; the worker finished it (or failed) */
    size_t n;                  /* values per mask */
    tl_mask_at at;             /* the job: (at, ids[0..k), pos) */
    uint32_t *ids;
    int k, pos;
    uint64_t *seal;            /* m_pos (when pos >= 0) */
    uint64_t *total;           /* R */
} tl_mask_ahead;

/* Sets a up for masks of n values and starts its worker. 0 or TL_ENOMEM
 * (memory, OpenSSL, or no thread; the node then draws every mask itself). */
int tl_mask_ahead_start(tl_mask_ahead *a, const tl_group_key *gk, size_t n);

/* Stops and joins the worker, wipes and frees. Safe on a zeroed or stopped a. */
void tl_mask_ahead_stop(tl_mask_ahead *a);

/* Posts the next job: R of at and, if pos >= 0, participant pos's mask among
 * ids[0..k) (checked as in tl_mask_begin; a bad list posts R only). Waits for
 * a job still being drawn first (its buffers are reused). */
void tl_mask_ahead_post(tl_mask_ahead *a, const tl_mask_at *at, const uint32_t *ids, int k,
                        int pos);

/* The mask m_pos of exactly (at, ids[0..k), pos) if that was posted: waits for
 * the worker to finish it. NULL if another job was posted, or none, or the
 * worker failed. */
const uint64_t *tl_mask_ahead_seal(tl_mask_ahead *a, const tl_mask_at *at, const uint32_t *ids,
                                   int k, int pos);

/* R of exactly at if posted (any ids), after the worker has drawn it; else NULL. */
const uint64_t *tl_mask_ahead_total(tl_mask_ahead *a, const tl_mask_at *at);

#endif
