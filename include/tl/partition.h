/*
 * partition.h - splitting one data set among N nodes (what `tl partition`
 * writes out as per-node data sets).
 *
 * Every sample goes to exactly one node. The result is one array of d->n row
 * indices grouped by node: node i's rows are
 *     rows[off_i .. off_i + counts[i])   with off_i = counts[0] + ... + counts[i-1],
 * and within a node the rows are always in ascending original order.
 *
 * Schemes:
 *   "contiguous"       the reference split: consecutive blocks whose sizes
 *                      differ by at most one, larger blocks first (10 samples,
 *                      3 nodes -> 4, 3, 3); rows is then 0, 1, ..., n-1.
 *   "iid"              numpy's RandomState(seed).shuffle(arange(n)), dealt in
 *                      contiguous blocks of the same sizes (np.array_split),
 *                      each block sorted.
 *   "label"            label skew: rows stably sorted by label, then dealt in
 *                      contiguous blocks of the same sizes; each node sees few
 *                      classes.
 *   "dirichlet:ALPHA"  ALPHA > 0 (e.g. "dirichlet:0.5"); for each class c in
 *                      increasing order that has samples: draw node weights
 *                      p ~ Dirichlet(ALPHA) (N gamma variates, Marsaglia-Tsang,
 *                      on one tl_rng seeded with seed: our own stream, not
 *                      numpy's dirichlet), shuffle the class's rows with
 *                      tl_rng_shuffle, and cut them into consecutive chunks for
 *                      nodes 0..N-1 at floor(n_c * (p_0 + ... + p_i)). Then, for
 *                      each node j (ascending) left with no samples, one sample
 *                      moves to it from the node holding the most (lowest id on
 *                      ties), taken from that node's largest class (lowest
 *                      label on ties). Small ALPHA means strong skew; large
 *                      ALPHA approaches iid.
 * The same (data, N, scheme, seed) always gives the same result; contiguous
 * and label ignore the seed.
 *
 *     size_t *rows, counts[3];
 *     if (tl_partition(&d, 3, "dirichlet:0.5", 1, &rows, counts) < 0) ... tl_errmsg() ...
 *     for (i = 0, off = 0; i < 3; off += counts[i++])
 *         tl_dataset_subset(&d, rows + off, counts[i], &node_data);  // node i
 *     free(rows);
 */
#ifndef TL_PARTITION_H
#define TL_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "tl/dataset.h"

/* Partitions d among n_nodes nodes by scheme (see above). On success
 * *rows_out is a malloc'd array of d->n row indices (the caller frees it with
 * free()) and counts[0..n_nodes) gets each node's sample count, every one >= 1
 * and summing to d->n. On failure *rows_out is NULL: TL_EINVAL for an unknown
 * scheme, ALPHA not a finite number > 0, or n_nodes outside 1..d->n (the
 * message says which); TL_ENOMEM. */
int tl_partition(const tl_dataset *d, int n_nodes, const char *scheme, uint32_t seed,
                 size_t **rows_out, size_t *counts);

/* Checks a scheme string without partitioning, for early option checks:
 * 0 or TL_EINVAL with the same message tl_partition would give. */
int tl_partition_check_scheme(const char *scheme);

/* Per-node per-class counts of a partition, for printing: out is
 * (n_nodes, d->classes) row-major, out[i * d->classes + c] = how many of node
 * i's rows have label c. rows and counts are as tl_partition returned them. */
void tl_partition_class_counts(const tl_dataset *d, int n_nodes, const size_t *rows,
                               const size_t *counts, size_t *out);

#endif
