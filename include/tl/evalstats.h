/*
 * evalstats.h - evaluation from sums only (issue 10, items 5-6; DESIGN §4.5, §8).
 *
 * A node evaluates the model on its own held-out rows and keeps only sums;
 * the orchestrator adds the nodes' sums and derives every metric from them.
 * No row, score or label leaves the node, only:
 *
 *   n          rows evaluated
 *   loss_sum   sum over rows of -log_softmax(z)[y] (tl_nll_forward, double)
 *   confusion  (C, C) counts, [t * C + p]: rows of true class t predicted p
 *              (p = first maximum of the logits, as tl_nll_forward counts hits)
 *   pos, neg   (C, B) counts, [k * B + b]: rows whose score for class k falls
 *              in bin b, split by true == k (pos) and true != k (neg)
 *
 * Merging is adding: exact for the counts (integers); the loss sum is a double
 * sum, so merge in a fixed order (node id) to get the same bits every time.
 * tl_evalstats_add adds tl_nll_forward of the rows it is given, so calling it
 * once per chunk as tl_evaluate (trainer.h) does gives tl_evaluate's sum bit
 * for bit. What the orchestrator learns of a node: its test row count, its
 * confusion matrix (so its label counts) and score histograms; nothing per row.
 *
 * Scores and bins. The score of class k in a row is its one-vs-rest log-odds
 *     s_k = log(p_k / (1 - p_k)) = z_k - log(sum_{j != k} exp(z_j)),
 * p = softmax(z), computed in double from the logits (tl_evalstats_scores).
 * It is a strictly increasing function of p_k, so a histogram of s_k is a
 * histogram of p_k with bin edges p = sigmoid(edge) and the AUC of s_k is the
 * AUC of p_k. Bins are uniform in log-odds over [-TL_EVAL_RANGE, +TL_EVAL_RANGE)
 * (width 2 * TL_EVAL_RANGE / B); the first and last bin also take everything
 * below and above. The bound below needs only that the bin is a nondecreasing
 * function of the score (pairs in different bins are then ordered as their
 * scores), which the rounding of floor((s + R) B / 2R) keeps. Why log-odds and not p itself:
 * softmax outputs of a trained model pile up next to 0 and 1, where uniform bins in p would put
 * most rows of both groups into the two end bins and the AUC error bound below would be useless;
 * log-odds bins spread those rows out, and computing them from the logits keeps resolution where
 * float32 p has rounded to 0 or 1. Range 32: p within 1.3e-14 of 0 or 1.
 *
 * B (TL_EVAL_BINS = 4096, width 1/64 in log-odds, about 1.6% in odds): the
 * histograms are 2 C B counts, 64 KiB per class per node per evaluation (once
 * an epoch): 640 KiB for 10 classes, less than the node side of the default
 * model (935 KB), and mostly zeros that frame compression removes. Filling
 * them is O(C) per row, nothing beside the forward pass. The AUC error from
 * binning shrinks about as 1/B for smooth score densities; tests use other B.
 *
 * AUC. For class k with P = sum pos, N = sum neg, bins counted in order,
 *     AUC_k = ( sum_b pos_b * sum_{b' < b} neg_b'  +  0.5 sum_b pos_b neg_b ) / (P N)
 * i.e. P(score_pos > score_neg) + 0.5 P(same bin): pairs in the same bin count
 * as ties. Binning error: a positive-negative pair in different bins compares
 * exactly as its scores do (the bins are ordered); a pair in the same bin
 * contributes 0.5 instead of 0, 0.5 or 1, so
 *     |AUC_binned - AUC_exact| <= auc_bound = 0.5 sum_b pos_b neg_b / (P N).
 * No a-priori bound in terms of B exists (all rows may share one bin), so
 * auc_bound is computed from the same histograms and reported beside the AUC.
 * Binary (C = 2): the AUC of class 1 (positive) against class 0. C > 2: macro
 * one-vs-rest, the mean of AUC_k over the classes where it is defined (P > 0
 * and N > 0), its bound the mean of their bounds; auc_classes says how many
 * classes entered; none: AUC undefined (NaN, JSON null).
 *
 * Other metrics, exact from the confusion matrix: accuracy = trace / n;
 * precision_k = tp / predicted_k, recall_k = tp / true_k (NaN, JSON null, when
 * the denominator is 0; scikit-learn reports 0 with a warning there);
 * F1_k = 2 tp / (2 tp + fp + fn). macro_f1 is the mean of F1_k over the
 * classes that occur as true or predicted label, which is what
 * sklearn.metrics.f1_score(y_true, y_pred, average="macro") returns with its
 * default labels (zero_division 0 gives the same F1_k). A class that occurs in
 * neither is left out (sklearn with labels=range(C) would count it as 0).
 *
 * Serialization (what an evaluation message carries): a flat array of
 * little-endian 8-byte words, tl_evalstats_size(C, B) = 8 (5 + C^2 + 2 C B)
 * bytes, in this order:
 *     word 0        u64 TL_EVAL_MAGIC (the bytes "tleval01")
 *     word 1, 2     u64 C, u64 B
 *     word 3        u64 n
 *     word 4        f64 loss_sum (IEEE 754 binary64 bits)
 *     C^2 words     u64 confusion, row-major (true, predicted)
 *     C B words     u64 pos, class-major
 *     C B words     u64 neg, class-major
 * tl_evalstats_decode treats the bytes as hostile: the size must be exact and
 * C, B those the receiver expects; n < 2^53; loss_sum finite, >= 0 and 0 when
 * n = 0; the confusion counts sum to n; for each k, pos sums to the true-k row
 * of the confusion matrix and neg to n minus it. Sums are checked without
 * wrapping (every running sum stays <= n), so counts chosen to overflow do not
 * pass. Nothing is written to the destination unless all checks pass.
 *
 *     tl_evalstats s;                       // node
 *     tl_evalstats_init(&s, C, TL_EVAL_BINS);
 *     tl_evalstats_add(&s, logits, labels, rows);   // per batch of test rows
 *     uint8_t *msg = malloc(tl_evalstats_size(C, TL_EVAL_BINS));
 *     tl_evalstats_encode(&s, msg);
 *
 *     tl_evalstats_decode(&one, msg, len);  // orchestrator, per node in id order
 *     tl_evalstats_merge(&all, &one);
 *     tl_eval_metrics m;
 *     tl_eval_metrics_compute(&all, &m);
 *     tl_eval_json(&all, &m, "test_", &buf, &len, &cap);
 *     tl_eval_metrics_free(&m);
 */
#ifndef TL_EVALSTATS_H
#define TL_EVALSTATS_H

#include <stddef.h>
#include <stdint.h>

#define TL_EVAL_BINS 4096  /* default B */
#define TL_EVAL_RANGE 32.0 /* bins cover log-odds [-32, 32) */
#define TL_EVAL_MAX_CLASSES 1024
#define TL_EVAL_MAX_BINS 65536
#define TL_EVAL_MAX_WORDS (UINT64_C(1) << 25)      /* 256 MiB serialized */
#define TL_EVAL_MAX_ROWS (UINT64_C(1) << 53)       /* n stays exact in a double */
#define TL_EVAL_MAGIC UINT64_C(0x31306c6176656c74) /* "tleval01" little-endian */
#define TL_EVAL_HEADER_WORDS 5

typedef struct tl_evalstats {
    int classes;         /* C >= 2 */
    int bins;            /* B >= 2 */
    uint64_t n;          /* rows */
    double loss_sum;     /* sum of the rows' NLL */
    uint64_t *confusion; /* (C, C): [t * C + p] */
    uint64_t *pos;       /* (C, B): [k * B + b], rows with true == k */
    uint64_t *neg;       /* (C, B): [k * B + b], rows with true != k */
} tl_evalstats;

/* Prepares empty sums for C classes and B bins (one allocation, owned by s).
 * 0, TL_ERANGE (C outside [2, TL_EVAL_MAX_CLASSES], B outside
 * [2, TL_EVAL_MAX_BINS], or more than TL_EVAL_MAX_WORDS words) or TL_ENOMEM.
 * Free with tl_evalstats_free (safe on a zeroed or freed one). */
int tl_evalstats_init(tl_evalstats *s, int classes, int bins);
void tl_evalstats_free(tl_evalstats *s);

/* Sets every sum back to zero. */
void tl_evalstats_reset(tl_evalstats *s);

/* s[k] = the score of class k (log-odds of p_k, in double) for one row of
 * logits z[0..classes); +-inf only when a logit difference is beyond the range
 * of exp. z must be finite. This is the very computation tl_evalstats_add bins. */
void tl_evalstats_scores(const float *z, int classes, double *s);

/* The bin of a score among B: floor((s + R) B / (2 R)) clamped to [0, B). */
int tl_evalstats_bin(double score, int bins);

/* Adds `rows` rows: z is (rows, C) logits, y holds rows labels. Validates
 * first and changes nothing on failure: TL_EINVAL for a label outside
 * [0, C), TL_ENUMERIC for a NaN or infinite logit (naming row and column),
 * TL_ERANGE if n would reach TL_EVAL_MAX_ROWS. */
int tl_evalstats_add(tl_evalstats *s, const float *z, const int32_t *y, size_t rows);

/* dst += src. TL_EINVAL if C or B differ, TL_ERANGE if n would reach
 * TL_EVAL_MAX_ROWS; dst is unchanged on failure. */
int tl_evalstats_merge(tl_evalstats *dst, const tl_evalstats *src);

/* Bytes of the serialization of C classes and B bins (format above). */
size_t tl_evalstats_size(int classes, int bins);

/* Writes s to out (tl_evalstats_size(s->classes, s->bins) bytes). */
void tl_evalstats_encode(const tl_evalstats *s, uint8_t *out);

/* Reads len bytes from a peer into s, which was set up by tl_evalstats_init
 * with the C and B the receiver expects; its previous sums are replaced.
 * 0, or TL_EPROTO naming the first check that fails (see above); s is then
 * unchanged. */
int tl_evalstats_decode(tl_evalstats *s, const uint8_t *buf, size_t len);

/* Metrics from sums. NaN means undefined (JSON null). Per-class arrays have
 * C entries, owned by the struct; free with tl_eval_metrics_free. */
typedef struct tl_eval_metrics {
    int classes;
    uint64_t n;
    double loss;                     /* loss_sum / n */
    double accuracy;                 /* trace / n */
    double macro_f1;                 /* mean F1 over f1_classes classes */
    int f1_classes;                  /* classes occurring as true or predicted label */
    double auc;                      /* binary: class 1; C > 2: macro one-vs-rest */
    double auc_bound;                /* |auc - exact AUC| <= auc_bound */
    int auc_classes;                 /* classes averaged into auc (binary: 1 or 0) */
    double *precision, *recall, *f1; /* per class */
    double *auc_k, *auc_bound_k;     /* per class, one-vs-rest */
} tl_eval_metrics;

/* Computes m from s. 0 or TL_ENOMEM. */
int tl_eval_metrics_compute(const tl_evalstats *s, tl_eval_metrics *m);
void tl_eval_metrics_free(tl_eval_metrics *m); /* safe on zeroed or freed */

/* Appends to the NUL-terminated text *buf (length *len, allocated size *cap;
 * *buf may start NULL with *len = *cap = 0; realloc'ed as needed, the caller
 * frees it) the fields, each name prefixed with prefix (e.g. "test_"):
 *   "n":6,"loss":0.5,"accuracy":0.5,"macro_f1":0.27,"auc":0.75,"auc_bound":0.01,
 *   "auc_classes":3,"precision":[..],"recall":[..],"confusion":[[..],[..]]
 * with no surrounding braces or leading comma, numbers as %.9g, NaN as null
 * (auc and auc_bound both null when the AUC is undefined).
 * 0, or TL_ENOMEM with *len and the text as they were (*buf, *cap may have
 * changed by a successful realloc before the failure). */
int tl_eval_json(const tl_evalstats *s, const tl_eval_metrics *m, const char *prefix, char **buf,
                 size_t *len, size_t *cap);

#endif
