/*
 * batch.h - virtual batches over several nodes' samples (DESIGN §3).
 *
 * The global index space concatenates the nodes in ascending id order: node 1's
 * samples are 0..n1-1, node 2's are n1..n1+n2-1, and so on. Epoch e's order is
 * the e-th numpy shuffle of arange(N) from RandomState(seed) (or the first one
 * again for every epoch with reshuffle off). Batch k of an epoch is
 * sorted(p[kB : (k+1)B]); the last one may be short. Because the nodes are
 * concatenated in id order, a sorted batch is already grouped by node, with
 * each node's local indices ascending: that grouping is the traversal plan.
 *
 * The centralized trainer uses the same object with a single "node" holding
 * the whole data set, so both visit the same rows in the same order.
 *
 *     tl_batcher *b;
 *     tl_batcher_new(counts, n_nodes, 64, seed, 1, &b);
 *     for (e = 0; e < epochs; e++) {
 *         tl_batcher_start_epoch(b);              // draws epoch e's permutation
 *         for (k = 0; k < tl_batcher_batches(b); k++) {
 *             tl_batch bt; tl_batcher_get(b, k, &bt);
 *             // bt.global[0..bt.n): sorted global rows
 *             // bt.parts[i] = {node, first, count}: rows bt.local[first..first+count)
 *         }
 *     }
 *     tl_batcher_free(b);
 */
#ifndef TL_BATCH_H
#define TL_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tl/rng.h"

#define TL_MAX_NODES 1024

typedef struct tl_batch_part {
    int node;     /* node index 0..n_nodes-1 (node id = index + 1) */
    size_t first; /* offset into tl_batch.local / .global */
    size_t count; /* rows of this node in the batch (> 0) */
} tl_batch_part;

typedef struct tl_batch {
    size_t n;               /* rows in the batch */
    const uint64_t *global; /* n sorted global indices */
    const uint64_t *local;  /* n local indices (index within the owning node) */
    int n_parts;            /* nodes with rows in this batch, ascending */
    const tl_batch_part *parts;
    int epoch;    /* 0-based */
    size_t index; /* batch index within the epoch */
} tl_batch;

typedef struct tl_batcher tl_batcher;

/* counts[i] = samples of node i (may be 0, but not all); 1..TL_MAX_NODES nodes;
 * batch_size >= 1; reshuffle nonzero draws a new permutation each epoch, zero
 * reuses the first. TL_EINVAL, TL_ERANGE or TL_ENOMEM on failure. Free with
 * tl_batcher_free. */
int tl_batcher_new(const uint64_t *counts, int n_nodes, size_t batch_size, uint32_t seed,
                   int reshuffle, tl_batcher **out);
/* Advances to the next epoch (the first call starts epoch 0). */
void tl_batcher_start_epoch(tl_batcher *b);
/* Number of batches per epoch: ceil(N / B). */
size_t tl_batcher_batches(const tl_batcher *b);
uint64_t tl_batcher_total(const tl_batcher *b);
/* Fills *out with batch k of the current epoch (an epoch must have been
 * started; k < tl_batcher_batches). The pointers in *out point into b and stay
 * valid until the next tl_batcher_get, start_epoch, restore or write_plan. */
void tl_batcher_get(tl_batcher *b, size_t k, tl_batch *out);
/* Epochs started so far. */
int tl_batcher_epoch(const tl_batcher *b);
/* Generator state for checkpoints: restoring (state, epochs started) reproduces
 * the stream. tl_batcher_restore re-derives the current epoch's permutation; it
 * needs a batcher made with the same counts, batch size and reshuffle setting
 * (the caller checks those), and fails with TL_EINVAL on a malformed state. */
void tl_batcher_save(const tl_batcher *b, tl_rng *rng_before_epoch, int *epochs_started);
int tl_batcher_restore(tl_batcher *b, const tl_rng *rng_before_epoch, int epochs_started);
/* Writes the current epoch's plan as JSON lines to f (one batch a line:
 * {"epoch":E,"batch":K,"parts":[{"node":ID,"rows":[...]}...]}, E and K 0-based,
 * ID = node index + 1, rows = local indices ascending). Uses tl_batcher_get, so
 * it invalidates earlier batch pointers. TL_EINVAL before the first epoch,
 * TL_EIO on a write error. */
int tl_batcher_write_plan(tl_batcher *b, FILE *f);
void tl_batcher_free(tl_batcher *b);

#endif
