/*
 * norm.h - how samples are normalized on their way to the model, and the
 * per-feature statistics that standardization needs.
 *
 * The value v of feature f of a sample is, before normalization:
 *   uint8 data    v = (float)byte / 255.0f     (the /255 scaling always stays)
 *   float32 data  v = the stored float
 * and the model sees, in float32 arithmetic:
 *   TL_NORM_NONE     x = v
 *   TL_NORM_SCALAR   x = (v - mean) / std            (today's MEAN,STD; for
 *                                                     uint8 bit-identical to
 *                                                     tl_dataset_gather)
 *   TL_NORM_FEATURE  x = (v - mean_f[f]) / std_f[f]  (standardize)
 *
 * Standardize uses the mean and the population standard deviation (divided
 * by the count, as scikit-learn's StandardScaler) of the union of the
 * nodes' training rows. Each node computes tl_norm_stats of its rows: the
 * row count and, per feature, the sum and the sum of squares of v, in double
 * with compensated (Neumaier) summation, so that a node's sums are within a
 * few ulps of the exact ones however many rows it has.
 * The orchestrator adds them up (tl_norm_stats_combine: plain sums, so the
 * order of the nodes only changes the last bits, and nothing at all for
 * small integer data, whose sums are exact) and tl_norm_finish turns the
 * total into float32 mean_f / std_f for WELCOME. Every feature is present in
 * every row, so one count serves all features.
 *
 * Precision: var = sumsq / count - mean^2 cancels when |mean| >> std. With
 * sums good to a few ulps (and a few nodes), the absolute error of var is
 * about 8 * 2^-53 * (mean^2 + var), so std keeps float32 accuracy while
 * |mean| / std < 10^4 and is still good to ~1e-4 relative at 10^6. A
 * feature whose var <= 2^-48 * mean^2 (std below ~1.5e-7 |mean|: under
 * float32's own resolution, i.e. constant up to the last bit) or var <= 0
 * counts as constant: std 1, so x = v - mean (StandardScaler's rule for a
 * zero variance).
 *
 *     tl_norm_stats s;
 *     tl_norm_stats_init(&s, d.dim);
 *     tl_norm_stats_add(&s, &d, NULL, d.n);       // at each node
 *     tl_norm_stats_combine(&total, &s);           // at the orchestrator
 *     tl_norm nm;
 *     tl_norm_finish(&total, &nm);                 // mean_f, std_f
 *     tl_dataset_gather_norm(&d, rows, n, &nm, x, y);
 *     tl_norm_free(&nm); tl_norm_stats_free(&s);
 */
#ifndef TL_NORM_H
#define TL_NORM_H

#include <stddef.h>
#include <stdint.h>

#include "tl/dataset.h"

typedef enum tl_norm_kind {
    TL_NORM_NONE = 0,
    TL_NORM_SCALAR = 1,
    TL_NORM_FEATURE = 2,
} tl_norm_kind;

typedef struct tl_norm {
    tl_norm_kind kind;
    float mean, std; /* TL_NORM_SCALAR */
    size_t dim;      /* TL_NORM_FEATURE: length of mean_f and std_f */
    float *mean_f;   /* TL_NORM_FEATURE: dim means (owned) */
    float *std_f;    /* TL_NORM_FEATURE: dim standard deviations, each > 0 (owned) */
} tl_norm;

typedef struct tl_norm_stats {
    size_t dim;     /* features */
    uint64_t count; /* rows added */
    double *sum;    /* dim sums of v (owned) */
    double *sumsq;  /* dim sums of v * v (owned) */
} tl_norm_stats;

/* Parses a --normalize value: "none", "standardize" (kind TL_NORM_FEATURE
 * with dim 0: the means and deviations come later from tl_norm_finish) or
 * "MEAN,STD" (two finite numbers, STD > 0). TL_EINVAL otherwise, naming the
 * value. *out needs no tl_norm_free after a parse. */
int tl_norm_parse(const char *s, tl_norm *out);

/* Empty statistics of dim features (dim >= 1): count 0, zero sums. TL_EINVAL,
 * TL_ENOMEM; on failure *s is empty. */
int tl_norm_stats_init(tl_norm_stats *s, size_t dim);

/* Adds rows[0..n) of d (rows NULL: 0..n-1; each < d->n, asserted) to s: the
 * value v of each feature as above (uint8 scaled by 1/255). TL_EINVAL if
 * d->dim != s->dim. */
int tl_norm_stats_add(tl_norm_stats *s, const tl_dataset *d, const size_t *rows, size_t n);

/* into += add (counts, sums and sums of squares). TL_EINVAL if the dims
 * differ (the message gives both). */
int tl_norm_stats_combine(tl_norm_stats *into, const tl_norm_stats *add);

/* *out = TL_NORM_FEATURE with mean_f[f] = (float)(sum / count) and std_f[f] =
 * (float)sqrt(max(0, sumsq / count - mean^2)), or 1 for a constant feature
 * (see above). TL_EINVAL for count 0, TL_ENUMERIC for a sum that is not
 * finite, TL_ENOMEM. On failure *out is empty. The caller frees it with
 * tl_norm_free. */
int tl_norm_finish(const tl_norm_stats *s, tl_norm *out);

/* Frees what s holds and empties it; safe on NULL or a zeroed struct. */
void tl_norm_stats_free(tl_norm_stats *s);

/* Frees mean_f/std_f and empties *n; safe on NULL or a zeroed struct. */
void tl_norm_free(tl_norm *n);

/* Converts rows[0..n) of d to normalized floats with nm (see above): x is
 * (n, d->dim) row-major, y gets the labels as int32 (y may be NULL). rows NULL
 * means 0..n-1; every row < d->n and, for TL_NORM_FEATURE, nm->dim == d->dim
 * (both asserted: the caller checks the descriptor against the data when it
 * receives it). */
void tl_dataset_gather_norm(const tl_dataset *d, const size_t *rows, size_t n, const tl_norm *nm,
                            float *x, int32_t *y);

#endif
