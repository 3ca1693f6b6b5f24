/* partition.c - contiguous, iid, label-skew and Dirichlet splits of a data set.
 *
 * Every scheme first decides a node for each row (assign[row]); one common
 * pass then groups the rows by node, ascending within each node.
 */
#include "tl/partition.h"

#include <assert.h>
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/rng.h"

enum { SCHEME_CONTIGUOUS, SCHEME_IID, SCHEME_LABEL, SCHEME_DIRICHLET };

/* Parses scheme into *kind (and *alpha for Dirichlet). 0 or TL_EINVAL. */
static int parse_scheme(const char *scheme, int *kind, double *alpha) {
    static const char prefix[] = "dirichlet:";
    if (!scheme) return tl_error(TL_EINVAL, "partition scheme missing");
    if (strcmp(scheme, "contiguous") == 0) return *kind = SCHEME_CONTIGUOUS, 0;
    if (strcmp(scheme, "iid") == 0) return *kind = SCHEME_IID, 0;
    if (strcmp(scheme, "label") == 0) return *kind = SCHEME_LABEL, 0;
    if (strncmp(scheme, prefix, sizeof prefix - 1) == 0) {
        const char *a = scheme + sizeof prefix - 1;
        char *end;
        double v = *a && !isspace((unsigned char)*a) ? strtod(a, &end) : NAN;
        if (isnan(v) || *end != '\0' || !isfinite(v) || v <= 0)
            return tl_error(TL_EINVAL, "partition scheme '%s': ALPHA must be a finite number > 0",
                            scheme);
        *kind = SCHEME_DIRICHLET;
        *alpha = v;
        return 0;
    }
    return tl_error(
        TL_EINVAL,
        "unknown partition scheme '%s' (expected contiguous, iid, label or dirichlet:ALPHA)",
        scheme);
}

/* Contract in partition.h. */
int tl_partition_check_scheme(const char *scheme) {
    int kind;
    double alpha;
    return parse_scheme(scheme, &kind, &alpha);
}

/* Deals order[0..n) to nodes in consecutive blocks of the contiguous sizes
 * (n / N, the first n % N one larger). */
static void deal_blocks(const size_t *order, size_t n, int n_nodes, uint32_t *assign) {
    size_t base = n / (size_t)n_nodes, extra = n % (size_t)n_nodes, k = 0;
    for (int i = 0; i < n_nodes; i++) {
        size_t len = base + ((size_t)i < extra);
        for (size_t j = 0; j < len; j++, k++) assign[order ? order[k] : k] = (uint32_t)i;
    }
}

/* Uniform double in the open interval (0, 1), 53 bits from two outputs. */
static double uniform_open(tl_rng *r) {
    uint32_t a = tl_rng_u32(r) >> 5, b = tl_rng_u32(r) >> 6;
    return ((double)a * 67108864.0 + (double)b + 0.5) / 9007199254740992.0;
}

/* Standard normal variate (Marsaglia's polar method, one of the pair). */
static double normal(tl_rng *r) {
    double x, y, s;
    do {
        x = 2.0 * uniform_open(r) - 1.0;
        y = 2.0 * uniform_open(r) - 1.0;
        s = x * x + y * y;
    } while (s >= 1.0 || s == 0.0);
    return x * sqrt(-2.0 * log(s) / s);
}

/* log of a Gamma(alpha, 1) variate (Marsaglia-Tsang; alpha < 1 through
 * Gamma(alpha + 1) * U^(1/alpha)). Working in logs keeps tiny alphas, whose
 * variates underflow, comparable. Never below -DBL_MAX. */
static double log_gamma_variate(tl_rng *r, double alpha) {
    if (alpha < 1.0) {
        double g = log_gamma_variate(r, alpha + 1.0) + log(uniform_open(r)) / alpha;
        return g < -DBL_MAX ? -DBL_MAX : g;
    }
    double d = alpha - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = uniform_open(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return log(d) + log(v);
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return log(d) + log(v);
    }
}

/* Dirichlet(alpha) split: fills assign (see partition.h for the exact steps).
 * 0 or TL_ENOMEM. */
static int dirichlet(const tl_dataset *d, int n_nodes, double alpha, uint32_t seed,
                     uint32_t *assign) {
    size_t n = d->n, N = (size_t)n_nodes, classes = 0;
    for (size_t r = 0; r < n; r++) /* from the labels: d->classes is not trusted */
        if ((size_t)d->labels[r] + 1 > classes) classes = (size_t)d->labels[r] + 1;
    size_t *cnt = calloc(classes * N, sizeof *cnt); /* cnt[c * N + i]: class c's rows for node i */
    size_t *total = calloc(N, sizeof *total);       /* node i's rows */
    size_t start[257] = {0};                        /* class c: by_class[start[c] .. start[c+1]) */
    size_t pos[256];
    uint64_t *by_class = malloc(n * sizeof *by_class);
    double *w = malloc(N * sizeof *w);
    tl_rng *rng = malloc(sizeof *rng);
    int rc = 0;
    if (!cnt || !total || !by_class || !w || !rng) {
        rc = tl_error(TL_ENOMEM, "out of memory partitioning %zu samples", n);
        goto cleanup;
    }
    for (size_t r = 0; r < n; r++) start[d->labels[r] + 1]++;
    for (size_t c = 0; c < classes; c++) start[c + 1] += start[c];
    memcpy(pos, start, sizeof pos);
    for (size_t r = 0; r < n; r++) by_class[pos[d->labels[r]]++] = r;

    tl_rng_seed(rng, seed);
    for (size_t c = 0; c < classes; c++) {
        size_t nc = start[c + 1] - start[c];
        if (nc == 0) continue;
        double max = -DBL_MAX, sum = 0, cum = 0;
        for (size_t i = 0; i < N; i++) {
            w[i] = log_gamma_variate(rng, alpha);
            if (w[i] > max) max = w[i];
        }
        for (size_t i = 0; i < N; i++) sum += (w[i] = exp(w[i] - max));
        tl_rng_shuffle(rng, by_class + start[c], nc);
        size_t prev = 0;
        for (size_t i = 0; i < N; i++) {
            cum += w[i];
            size_t end = i + 1 == N ? nc : (size_t)floor((double)nc * (cum / sum));
            if (end > nc) end = nc;
            if (end < prev) end = prev;
            cnt[c * N + i] = end - prev;
            total[i] += end - prev;
            prev = end;
        }
    }

    /* every node gets at least one sample (n >= N, so the largest has >= 2) */
    for (size_t j = 0; j < N; j++) {
        if (total[j] > 0) continue;
        size_t big = 0, cls = 0;
        for (size_t i = 1; i < N; i++)
            if (total[i] > total[big]) big = i;
        for (size_t c = 1; c < classes; c++)
            if (cnt[c * N + big] > cnt[cls * N + big]) cls = c;
        assert(total[big] >= 2 && cnt[cls * N + big] >= 1);
        cnt[cls * N + big]--, total[big]--;
        cnt[cls * N + j]++, total[j]++;
    }

    for (size_t c = 0; c < classes; c++) {
        size_t k = start[c];
        for (size_t i = 0; i < N; i++)
            for (size_t m = 0; m < cnt[c * N + i]; m++) assign[by_class[k++]] = (uint32_t)i;
    }
cleanup:
    free(cnt), free(total), free(by_class), free(w), free(rng);
    return rc;
}

/* Fills assign for the block schemes: contiguous, iid, label. 0 or TL_ENOMEM. */
static int blocks(const tl_dataset *d, int n_nodes, int kind, uint32_t seed, uint32_t *assign) {
    size_t n = d->n;
    if (kind == SCHEME_CONTIGUOUS) {
        deal_blocks(NULL, n, n_nodes, assign);
        return 0;
    }
    size_t *order = malloc(n * sizeof *order);
    if (!order) return tl_error(TL_ENOMEM, "out of memory partitioning %zu samples", n);
    if (kind == SCHEME_IID) {
        uint64_t *p = malloc(n * sizeof *p);
        tl_rng *rng = malloc(sizeof *rng);
        if (!p || !rng) {
            free(p), free(rng), free(order);
            return tl_error(TL_ENOMEM, "out of memory partitioning %zu samples", n);
        }
        for (size_t i = 0; i < n; i++) p[i] = i;
        tl_rng_seed(rng, seed);
        tl_rng_shuffle(rng, p, n);
        for (size_t i = 0; i < n; i++) order[i] = (size_t)p[i];
        free(p), free(rng);
    } else { /* label: stable counting sort */
        size_t start[257] = {0};
        for (size_t r = 0; r < n; r++) start[d->labels[r] + 1]++;
        for (int c = 0; c < 256; c++) start[c + 1] += start[c];
        for (size_t r = 0; r < n; r++) order[start[d->labels[r]]++] = r;
    }
    deal_blocks(order, n, n_nodes, assign);
    free(order);
    return 0;
}

/* Contract in partition.h. */
int tl_partition(const tl_dataset *d, int n_nodes, const char *scheme, uint32_t seed,
                 size_t **rows_out, size_t *counts) {
    int kind, rc;
    double alpha = 0;
    *rows_out = NULL;
    if ((rc = parse_scheme(scheme, &kind, &alpha)) < 0) return rc;
    if (n_nodes < 1 || (size_t)n_nodes > d->n)
        return tl_error(TL_EINVAL,
                        "cannot partition %zu samples among %d nodes (need 1 to %zu nodes)", d->n,
                        n_nodes, d->n);
    uint32_t *assign = malloc(d->n * sizeof *assign);
    size_t *rows = malloc(d->n * sizeof *rows);
    if (!assign || !rows) {
        rc = tl_error(TL_ENOMEM, "out of memory partitioning %zu samples", d->n);
        goto cleanup;
    }
    rc = kind == SCHEME_DIRICHLET ? dirichlet(d, n_nodes, alpha, seed, assign)
                                  : blocks(d, n_nodes, kind, seed, assign);
    if (rc < 0) goto cleanup;

    /* group by node, ascending rows within a node (counting sort) */
    memset(counts, 0, (size_t)n_nodes * sizeof *counts);
    for (size_t r = 0; r < d->n; r++) counts[assign[r]]++;
    size_t *pos = malloc((size_t)n_nodes * sizeof *pos);
    if (!pos) {
        rc = tl_error(TL_ENOMEM, "out of memory partitioning %zu samples", d->n);
        goto cleanup;
    }
    pos[0] = 0;
    for (int i = 1; i < n_nodes; i++) pos[i] = pos[i - 1] + counts[i - 1];
    for (size_t r = 0; r < d->n; r++) rows[pos[assign[r]]++] = r;
    free(pos);
    *rows_out = rows;
    rows = NULL;
cleanup:
    free(assign);
    free(rows);
    return rc;
}

/* Contract in partition.h. */
void tl_partition_class_counts(const tl_dataset *d, int n_nodes, const size_t *rows,
                               const size_t *counts, size_t *out) {
    size_t classes = (size_t)d->classes, k = 0;
    memset(out, 0, (size_t)n_nodes * classes * sizeof *out);
    for (int i = 0; i < n_nodes; i++) {
        for (size_t m = 0; m < counts[i]; m++, k++) {
            assert(rows[k] < d->n && d->labels[rows[k]] < classes);
            out[(size_t)i * classes + d->labels[rows[k]]]++;
        }
    }
}
