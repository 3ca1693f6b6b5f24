/* batch.c - virtual batches over several nodes' samples (see batch.h, DESIGN §3). */
#include "tl/batch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"

struct tl_batcher {
    int n_nodes;
    uint64_t *offsets; /* n_nodes + 1 entries: node i owns [offsets[i], offsets[i+1]) */
    uint64_t total;    /* N */
    size_t batch_size; /* B */
    size_t buf_rows;   /* min(B, N): the largest batch */
    int reshuffle;
    int epochs;           /* epochs started */
    tl_rng rng;           /* the stream, after the current epoch's draw */
    tl_rng rng_before;    /* the stream as it was before the current permutation's draw */
    uint64_t *perm;       /* N entries: the current epoch's permutation */
    uint64_t *global;     /* buf_rows: the current batch, sorted */
    uint64_t *local;      /* buf_rows: local indices of global[] */
    uint64_t *scratch;    /* buf_rows: radix sort buffer */
    tl_batch_part *parts; /* min(n_nodes, buf_rows) */
};

/* Sorts a[0..n) ascending. Insertion sort for short runs, otherwise an LSD radix
 * sort on 8-bit digits (only as many digits as the largest key needs) using
 * tmp[0..n) as scratch: O(n) for a fixed key range, no allocation. */
static void sort_u64(uint64_t *a, uint64_t *tmp, size_t n) {
    if (n <= 24) {
        for (size_t i = 1; i < n; i++) {
            uint64_t v = a[i];
            size_t j = i;
            while (j > 0 && a[j - 1] > v) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = v;
        }
        return;
    }
    uint64_t maxv = 0;
    for (size_t i = 0; i < n; i++) maxv |= a[i];
    uint64_t *src = a, *dst = tmp;
    for (int shift = 0; shift < 64 && (maxv >> shift) != 0; shift += 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++) count[(src[i] >> shift) & 0xff]++;
        size_t pos = 0;
        for (int d = 0; d < 256; d++) {
            size_t c = count[d];
            count[d] = pos;
            pos += c;
        }
        for (size_t i = 0; i < n; i++) dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a) memcpy(a, src, n * sizeof *a);
}

/* Index of the node owning global row g: the last i with offsets[i] <= g, found
 * by binary search starting from node lo (rows come in ascending order). Nodes
 * with no samples are skipped because their range is empty. */
static int owner_of(const tl_batcher *b, uint64_t g, int lo) {
    int hi = b->n_nodes - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (b->offsets[mid] <= g) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Creates a batcher over n_nodes nodes with counts[i] samples each. Fails with
 * TL_EINVAL on a bad argument (no nodes, too many, batch size 0, no samples),
 * TL_ERANGE if the total overflows, TL_ENOMEM. No epoch is started. */
int tl_batcher_new(const uint64_t *counts, int n_nodes, size_t batch_size, uint32_t seed,
                   int reshuffle, tl_batcher **out) {
    tl_batcher *b = NULL;
    int rc;
    *out = NULL;
    if (n_nodes < 1 || n_nodes > TL_MAX_NODES)
        return tl_error(TL_EINVAL, "batcher: %d nodes (must be 1..%d)", n_nodes, TL_MAX_NODES);
    if (batch_size < 1) return tl_error(TL_EINVAL, "batcher: batch size must be at least 1");
    if (!counts) return tl_error(TL_EINVAL, "batcher: no sample counts");
    b = calloc(1, sizeof *b);
    if (!b) return tl_error(TL_ENOMEM, "batcher: out of memory");
    b->n_nodes = n_nodes;
    b->offsets = malloc(((size_t)n_nodes + 1) * sizeof *b->offsets);
    if (!b->offsets) {
        rc = tl_error(TL_ENOMEM, "batcher: out of memory");
        goto cleanup;
    }
    b->offsets[0] = 0;
    for (int i = 0; i < n_nodes; i++) {
        if (counts[i] > UINT64_MAX - b->offsets[i]) {
            rc = tl_error(TL_ERANGE, "batcher: total sample count overflows");
            goto cleanup;
        }
        b->offsets[i + 1] = b->offsets[i] + counts[i];
    }
    b->total = b->offsets[n_nodes];
    if (b->total == 0) {
        rc = tl_error(TL_EINVAL, "batcher: the nodes hold no samples");
        goto cleanup;
    }
    if (b->total > SIZE_MAX / sizeof(uint64_t)) {
        rc = tl_error(TL_ERANGE, "batcher: %llu samples is too many", (unsigned long long)b->total);
        goto cleanup;
    }
    b->batch_size = batch_size;
    b->buf_rows = (uint64_t)batch_size < b->total ? batch_size : (size_t)b->total;
    b->reshuffle = reshuffle != 0;
    tl_rng_seed(&b->rng, seed);
    b->rng_before = b->rng;
    size_t n_parts = (size_t)n_nodes < b->buf_rows ? (size_t)n_nodes : b->buf_rows;
    b->perm = malloc((size_t)b->total * sizeof *b->perm);
    b->global = malloc(b->buf_rows * sizeof *b->global);
    b->local = malloc(b->buf_rows * sizeof *b->local);
    b->scratch = malloc(b->buf_rows * sizeof *b->scratch);
    b->parts = malloc(n_parts * sizeof *b->parts);
    if (!b->perm || !b->global || !b->local || !b->scratch || !b->parts) {
        rc = tl_error(TL_ENOMEM, "batcher: out of memory for %llu samples",
                      (unsigned long long)b->total);
        goto cleanup;
    }
    *out = b;
    return 0;
cleanup:
    tl_batcher_free(b);
    return rc;
}

/* Draws a fresh permutation arange(N) shuffled by the stream, remembering the
 * stream's state before the draw. */
static void draw_permutation(tl_batcher *b) {
    b->rng_before = b->rng;
    for (uint64_t i = 0; i < b->total; i++) b->perm[i] = i;
    tl_rng_shuffle(&b->rng, b->perm, (size_t)b->total);
}

/* Starts the next epoch: draws its permutation (only the first epoch draws when
 * reshuffle is off). Invalidates the pointers of the last tl_batcher_get. */
void tl_batcher_start_epoch(tl_batcher *b) {
    if (b->epochs == 0 || b->reshuffle) draw_permutation(b);
    b->epochs++;
}

/* ceil(N / B). */
size_t tl_batcher_batches(const tl_batcher *b) {
    return (size_t)((b->total + (b->batch_size - 1)) / b->batch_size);
}

/* N: the samples of all nodes. */
uint64_t tl_batcher_total(const tl_batcher *b) { return b->total; }

/* Epochs started so far (0 before the first tl_batcher_start_epoch). */
int tl_batcher_epoch(const tl_batcher *b) { return b->epochs; }

/* Fills *out with batch k of the current epoch: sorted global rows and their
 * split by node. O(B) work plus O(parts log nodes); allocates nothing. Requires
 * a started epoch and k < tl_batcher_batches(b) (asserted). */
void tl_batcher_get(tl_batcher *b, size_t k, tl_batch *out) {
    assert(b->epochs > 0);
    assert(k < tl_batcher_batches(b));
    uint64_t begin = (uint64_t)k * b->batch_size;
    uint64_t end = b->total - begin < b->batch_size ? b->total : begin + b->batch_size;
    size_t n = (size_t)(end - begin);
    memcpy(b->global, b->perm + begin, n * sizeof *b->global);
    sort_u64(b->global, b->scratch, n);

    int n_parts = 0, node = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t g = b->global[i];
        if (n_parts == 0 || g >= b->offsets[node + 1]) {
            node = owner_of(b, g, node);
            b->parts[n_parts].node = node;
            b->parts[n_parts].first = i;
            b->parts[n_parts].count = 0;
            n_parts++;
        }
        b->local[i] = g - b->offsets[node];
        b->parts[n_parts - 1].count++;
    }
    out->n = n;
    out->global = b->global;
    out->local = b->local;
    out->n_parts = n_parts;
    out->parts = b->parts;
    out->epoch = b->epochs - 1;
    out->index = k;
}

/* Stores what a checkpoint needs to reproduce the stream: the generator as it
 * was before the current permutation was drawn, and the epochs started. */
void tl_batcher_save(const tl_batcher *b, tl_rng *rng_before_epoch, int *epochs_started) {
    *rng_before_epoch = b->rng_before;
    *epochs_started = b->epochs;
}

/* Restores a state saved by tl_batcher_save on a batcher created with the same
 * counts, batch size and reshuffle setting: re-derives the current epoch's
 * permutation (when epochs_started > 0), so the next start_epoch continues the
 * stream. TL_EINVAL if the state is malformed; b is unchanged then. */
int tl_batcher_restore(tl_batcher *b, const tl_rng *rng_before_epoch, int epochs_started) {
    if (epochs_started < 0)
        return tl_error(TL_EINVAL, "batcher: restoring %d epochs started", epochs_started);
    if (rng_before_epoch->mti < 0 || rng_before_epoch->mti > TL_MT_N)
        return tl_error(TL_EINVAL, "batcher: restored generator position %d is out of range",
                        rng_before_epoch->mti);
    b->rng = *rng_before_epoch;
    b->rng_before = *rng_before_epoch;
    b->epochs = epochs_started;
    if (epochs_started > 0) draw_permutation(b);
    return 0;
}

/* Writes every batch of the current epoch to f, one JSON object a line:
 * {"epoch":E,"batch":K,"parts":[{"node":ID,"rows":[...]}...]} with E and K
 * counted from 1 (as in the metrics), ID = node index + 1 and rows the node's local indices
 * ascending. TL_EINVAL before the first epoch, TL_EIO if writing fails. Invalidates the pointers of
 * the last tl_batcher_get. */
int tl_batcher_write_plan(tl_batcher *b, FILE *f) {
    if (b->epochs == 0) return tl_error(TL_EINVAL, "batcher: no epoch started, no plan to write");
    size_t nb = tl_batcher_batches(b);
    for (size_t k = 0; k < nb; k++) {
        tl_batch bt;
        tl_batcher_get(b, k, &bt);
        fprintf(f, "{\"epoch\":%d,\"batch\":%zu,\"parts\":[", bt.epoch + 1, k + 1);
        for (int p = 0; p < bt.n_parts; p++) {
            const tl_batch_part *pt = &bt.parts[p];
            fprintf(f, "%s{\"node\":%d,\"rows\":[", p ? "," : "", pt->node + 1);
            for (size_t i = 0; i < pt->count; i++)
                fprintf(f, "%s%llu", i ? "," : "", (unsigned long long)bt.local[pt->first + i]);
            fputs("]}", f);
        }
        fputs("]}\n", f);
        if (ferror(f)) return tl_error(TL_EIO, "batcher: writing the plan failed");
    }
    if (fflush(f) != 0 || ferror(f)) return tl_error(TL_EIO, "batcher: writing the plan failed");
    return 0;
}

/* Frees b and everything it owns. NULL-safe. */
void tl_batcher_free(tl_batcher *b) {
    if (!b) return;
    free(b->offsets);
    free(b->perm);
    free(b->global);
    free(b->local);
    free(b->scratch);
    free(b->parts);
    free(b);
}
