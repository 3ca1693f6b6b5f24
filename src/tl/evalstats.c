/* evalstats.c - evaluation sums, their wire form and the metrics (evalstats.h). */
#include "tl/evalstats.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/le.h"
#include "tl/loss.h"

/* Words of the sums after the header: confusion, pos, neg. */
static uint64_t body_words(uint64_t c, uint64_t b) { return c * c + 2 * c * b; }

int tl_evalstats_init(tl_evalstats *s, int classes, int bins) {
    memset(s, 0, sizeof *s);
    if (classes < 2 || classes > TL_EVAL_MAX_CLASSES)
        return tl_error(TL_ERANGE, "evaluation: %d classes (2..%d)", classes, TL_EVAL_MAX_CLASSES);
    if (bins < 2 || bins > TL_EVAL_MAX_BINS)
        return tl_error(TL_ERANGE, "evaluation: %d bins (2..%d)", bins, TL_EVAL_MAX_BINS);
    const uint64_t words = body_words((uint64_t)classes, (uint64_t)bins);
    if (words + TL_EVAL_HEADER_WORDS > TL_EVAL_MAX_WORDS)
        return tl_error(TL_ERANGE, "evaluation: %d classes x %d bins need %llu words (max %llu)",
                        classes, bins, (unsigned long long)words,
                        (unsigned long long)TL_EVAL_MAX_WORDS);
    uint64_t *p = calloc((size_t)words, sizeof *p);
    if (!p) return tl_error(TL_ENOMEM, "evaluation: out of memory");
    s->classes = classes;
    s->bins = bins;
    s->confusion = p;
    s->pos = p + (size_t)classes * classes;
    s->neg = s->pos + (size_t)classes * bins;
    return 0;
}

void tl_evalstats_free(tl_evalstats *s) {
    if (!s) return;
    free(s->confusion);
    memset(s, 0, sizeof *s);
}

void tl_evalstats_reset(tl_evalstats *s) {
    s->n = 0;
    s->loss_sum = 0.0;
    memset(s->confusion, 0, sizeof(uint64_t) * body_words(s->classes, s->bins));
}

/* With M the row maximum, e_j = exp(z_j - M), S = sum e_j:
 *   s_k = (z_k - M) - log(S - e_k)                  if another j has z_j = M
 * (S - e_k >= 1 then, so the subtraction loses at most C ulps of S), and for
 * the unique maximum k, with M2 = max_{j != k} z_j,
 *   s_k = (z_k - M2) - log(sum_{j != k} exp(z_j - M2))
 * (the sum is >= 1: no underflow to log 0 where p_k is nearest to 1). */
void tl_evalstats_scores(const float *z, int classes, double *s) {
    int top = 0, ties = 0;
    for (int j = 1; j < classes; j++)
        if (z[j] > z[top]) top = j;
    const double M = z[top];
    double S = 0.0, M2 = -INFINITY;
    for (int j = 0; j < classes; j++) {
        s[j] = exp((double)z[j] - M); /* e_j, for now */
        S += s[j];
        if ((double)z[j] == M) ties++;
        if (j != top && (double)z[j] > M2) M2 = z[j];
    }
    double rest2 = 0.0;
    if (ties == 1)
        for (int j = 0; j < classes; j++)
            if (j != top) rest2 += exp((double)z[j] - M2);
    for (int k = 0; k < classes; k++) {
        if (k == top && ties == 1) s[k] = ((double)z[k] - M2) - log(rest2);
        else s[k] = ((double)z[k] - M) - log(S - s[k]);
    }
}

int tl_evalstats_bin(double score, int bins) {
    if (!(score >= -TL_EVAL_RANGE)) return 0; /* also NaN, which add() never passes */
    if (score >= TL_EVAL_RANGE) return bins - 1;
    const double b = floor((score + TL_EVAL_RANGE) * ((double)bins / (2.0 * TL_EVAL_RANGE)));
    return b >= bins ? bins - 1 : (int)b;
}

int tl_evalstats_add(tl_evalstats *s, const float *z, const int32_t *y, size_t rows) {
    const int C = s->classes, B = s->bins;
    if (rows >= TL_EVAL_MAX_ROWS - s->n)
        return tl_error(TL_ERANGE, "evaluation: more than 2^53 rows");
    for (size_t i = 0; i < rows; i++) {
        if (y[i] < 0 || y[i] >= C)
            return tl_error(TL_EINVAL, "evaluation: row %zu has label %d (classes 0..%d)", i,
                            (int)y[i], C - 1);
        for (int j = 0; j < C; j++)
            if (!isfinite(z[i * C + j]))
                return tl_error(TL_ENUMERIC, "evaluation: logit [%zu, %d] is %g", i, j,
                                (double)z[i * C + j]);
    }
    double *sc = malloc(sizeof(double) * C);
    if (!sc) return tl_error(TL_ENOMEM, "evaluation: out of memory");
    /* tl_nll_forward counts rows in an int: feed it chunks. */
    for (size_t i = 0; i < rows; i += 1u << 20) {
        const size_t m = rows - i < (1u << 20) ? rows - i : (1u << 20);
        s->loss_sum += tl_nll_forward(z + i * C, y + i, (int)m, C, NULL);
    }
    for (size_t i = 0; i < rows; i++) {
        const float *row = z + i * C;
        const int t = y[i];
        int p = 0; /* first maximum, as tl_nll_forward */
        for (int j = 1; j < C; j++)
            if (row[j] > row[p]) p = j;
        s->confusion[(size_t)t * C + p]++;
        tl_evalstats_scores(row, C, sc);
        for (int k = 0; k < C; k++) {
            uint64_t *h = k == t ? s->pos : s->neg;
            h[(size_t)k * B + tl_evalstats_bin(sc[k], B)]++;
        }
    }
    s->n += rows;
    free(sc);
    return 0;
}

int tl_evalstats_merge(tl_evalstats *dst, const tl_evalstats *src) {
    if (dst->classes != src->classes || dst->bins != src->bins)
        return tl_error(TL_EINVAL, "evaluation: merging %d classes x %d bins into %d x %d",
                        src->classes, src->bins, dst->classes, dst->bins);
    if (src->n >= TL_EVAL_MAX_ROWS - dst->n)
        return tl_error(TL_ERANGE, "evaluation: more than 2^53 rows");
    /* Each count is <= its n (init/add/decode keep that), so no sum wraps. */
    const size_t w = (size_t)body_words(dst->classes, dst->bins);
    for (size_t i = 0; i < w; i++) dst->confusion[i] += src->confusion[i];
    dst->n += src->n;
    dst->loss_sum += src->loss_sum;
    return 0;
}

size_t tl_evalstats_size(int classes, int bins) {
    return 8 * (size_t)(TL_EVAL_HEADER_WORDS + body_words((uint64_t)classes, (uint64_t)bins));
}

static uint64_t f64_bits(double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bits_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void tl_evalstats_encode(const tl_evalstats *s, uint8_t *out) {
    tl_le_store64(out, TL_EVAL_MAGIC);
    tl_le_store64(out + 8, (uint64_t)s->classes);
    tl_le_store64(out + 16, (uint64_t)s->bins);
    tl_le_store64(out + 24, s->n);
    tl_le_store64(out + 32, f64_bits(s->loss_sum));
    const size_t w = (size_t)body_words(s->classes, s->bins);
    uint8_t *p = out + 8 * TL_EVAL_HEADER_WORDS;
    for (size_t i = 0; i < w; i++) tl_le_store64(p + 8 * i, s->confusion[i]);
}

/* Sums the `count` words at p (stride `stride` words) into *sum without ever
 * exceeding limit. 0, or -1 (nothing else said) if the sum would pass limit. */
static int sum_capped(const uint8_t *p, size_t count, size_t stride, uint64_t limit,
                      uint64_t *sum) {
    uint64_t acc = 0;
    for (size_t i = 0; i < count; i++) {
        const uint64_t v = tl_le_load64(p + 8 * i * stride);
        if (v > limit - acc) return -1;
        acc += v;
    }
    *sum = acc;
    return 0;
}

int tl_evalstats_decode(tl_evalstats *s, const uint8_t *buf, size_t len) {
    const int C = s->classes, B = s->bins;
    const size_t want = tl_evalstats_size(C, B);
    if (len < 8 * TL_EVAL_HEADER_WORDS)
        return tl_error(TL_EPROTO, "evaluation: %zu bytes, shorter than the header", len);
    if (tl_le_load64(buf) != TL_EVAL_MAGIC) return tl_error(TL_EPROTO, "evaluation: bad magic");
    const uint64_t c = tl_le_load64(buf + 8), b = tl_le_load64(buf + 16);
    if (c != (uint64_t)C || b != (uint64_t)B)
        return tl_error(TL_EPROTO, "evaluation: %llu classes x %llu bins, expected %d x %d",
                        (unsigned long long)c, (unsigned long long)b, C, B);
    if (len != want) return tl_error(TL_EPROTO, "evaluation: %zu bytes, expected %zu", len, want);
    const uint64_t n = tl_le_load64(buf + 24);
    const double loss = bits_f64(tl_le_load64(buf + 32));
    if (n >= TL_EVAL_MAX_ROWS)
        return tl_error(TL_EPROTO, "evaluation: n = %llu rows (max 2^53 - 1)",
                        (unsigned long long)n);
    if (!isfinite(loss) || loss < 0 || (n == 0 && loss != 0))
        return tl_error(TL_EPROTO, "evaluation: loss sum %g of %llu rows", loss,
                        (unsigned long long)n);
    const uint8_t *conf = buf + 8 * TL_EVAL_HEADER_WORDS;
    const uint8_t *pos = conf + 8 * (size_t)C * C, *neg = pos + 8 * (size_t)C * B;
    uint64_t total;
    if (sum_capped(conf, (size_t)C * C, 1, n, &total) < 0 || total != n)
        return tl_error(TL_EPROTO, "evaluation: confusion counts do not sum to n = %llu",
                        (unsigned long long)n);
    for (int k = 0; k < C; k++) {
        uint64_t tk = 0, pk, nk;
        sum_capped(conf + 8 * (size_t)k * C, (size_t)C, 1, n, &tk); /* <= total: cannot fail */
        if (sum_capped(pos + 8 * (size_t)k * B, (size_t)B, 1, n, &pk) < 0 || pk != tk)
            return tl_error(TL_EPROTO,
                            "evaluation: class %d: positive histogram does not sum to its "
                            "%llu true rows",
                            k, (unsigned long long)tk);
        if (sum_capped(neg + 8 * (size_t)k * B, (size_t)B, 1, n, &nk) < 0 || nk != n - tk)
            return tl_error(TL_EPROTO,
                            "evaluation: class %d: negative histogram does not sum to its "
                            "%llu other rows",
                            k, (unsigned long long)(n - tk));
    }
    s->n = n;
    s->loss_sum = loss;
    const size_t w = (size_t)body_words(C, B);
    for (size_t i = 0; i < w; i++) s->confusion[i] = tl_le_load64(conf + 8 * i);
    return 0;
}

/* AUC and its binning bound of one class from its two histograms; NaN, NaN
 * when there are no positives or no negatives. Counts are < 2^53, the pair
 * counts go through double (relative rounding ~1e-16, far below any bound). */
static void class_auc(const uint64_t *pos, const uint64_t *neg, int B, double *auc, double *bound) {
    double P = 0, N = 0, below = 0, wins = 0, ties = 0;
    for (int b = 0; b < B; b++) {
        P += (double)pos[b];
        N += (double)neg[b];
    }
    if (P == 0 || N == 0) {
        *auc = *bound = NAN;
        return;
    }
    for (int b = 0; b < B; b++) {
        wins += (double)pos[b] * below;
        ties += (double)pos[b] * (double)neg[b];
        below += (double)neg[b];
    }
    *auc = (wins + 0.5 * ties) / (P * N);
    *bound = 0.5 * ties / (P * N);
}

int tl_eval_metrics_compute(const tl_evalstats *s, tl_eval_metrics *m) {
    const int C = s->classes, B = s->bins;
    memset(m, 0, sizeof *m);
    double *a = malloc(sizeof(double) * 5 * (size_t)C);
    if (!a) return tl_error(TL_ENOMEM, "evaluation: out of memory");
    m->classes = C;
    m->n = s->n;
    m->precision = a;
    m->recall = a + C;
    m->f1 = a + 2 * C;
    m->auc_k = a + 3 * C;
    m->auc_bound_k = a + 4 * C;
    const double n = (double)s->n;
    uint64_t trace = 0;
    double f1_sum = 0;
    for (int k = 0; k < C; k++) {
        uint64_t tp = s->confusion[(size_t)k * C + k], truth = 0, pred = 0;
        for (int j = 0; j < C; j++) {
            truth += s->confusion[(size_t)k * C + j];
            pred += s->confusion[(size_t)j * C + k];
        }
        trace += tp;
        m->precision[k] = pred ? (double)tp / (double)pred : NAN;
        m->recall[k] = truth ? (double)tp / (double)truth : NAN;
        /* 2tp + fp + fn = truth + pred */
        m->f1[k] = truth + pred ? 2.0 * (double)tp / (double)(truth + pred) : NAN;
        if (truth + pred) {
            f1_sum += m->f1[k];
            m->f1_classes++;
        }
        class_auc(s->pos + (size_t)k * B, s->neg + (size_t)k * B, B, &m->auc_k[k],
                  &m->auc_bound_k[k]);
    }
    m->loss = s->n ? s->loss_sum / n : NAN;
    m->accuracy = s->n ? (double)trace / n : NAN;
    m->macro_f1 = m->f1_classes ? f1_sum / m->f1_classes : NAN;
    if (C == 2) {
        m->auc = m->auc_k[1];
        m->auc_bound = m->auc_bound_k[1];
        m->auc_classes = !isnan(m->auc);
    } else {
        double sa = 0, sb = 0;
        for (int k = 0; k < C; k++)
            if (!isnan(m->auc_k[k])) {
                sa += m->auc_k[k];
                sb += m->auc_bound_k[k];
                m->auc_classes++;
            }
        m->auc = m->auc_classes ? sa / m->auc_classes : NAN;
        m->auc_bound = m->auc_classes ? sb / m->auc_classes : NAN;
    }
    return 0;
}

void tl_eval_metrics_free(tl_eval_metrics *m) {
    if (!m) return;
    free(m->precision);
    memset(m, 0, sizeof *m);
}

/* Text appender: on the first failure everything after is skipped and the
 * caller restores the old length. */
typedef struct appender {
    char *buf;
    size_t len, cap;
    int failed;
} appender;

__attribute__((format(printf, 2, 3))) static void put(appender *a, const char *fmt, ...) {
    if (a->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int k = vsnprintf(a->buf ? a->buf + a->len : NULL, a->buf ? a->cap - a->len : 0, fmt,
                                ap);
        va_end(ap);
        if (k < 0) {
            a->failed = 1;
            return;
        }
        if (a->buf && (size_t)k < a->cap - a->len) {
            a->len += (size_t)k;
            return;
        }
        size_t cap = a->cap ? a->cap : 256;
        while (cap - a->len <= (size_t)k) cap *= 2;
        char *nb = realloc(a->buf, cap);
        if (!nb) {
            a->failed = 1;
            return;
        }
        a->buf = nb;
        a->cap = cap;
    }
}

static void put_num(appender *a, double v) {
    if (isnan(v) || isinf(v)) put(a, "null");
    else put(a, "%.9g", v);
}

static void put_field(appender *a, const char *prefix, const char *name, int first) {
    put(a, "%s\"%s%s\":", first ? "" : ",", prefix, name);
}

static void put_array(appender *a, const char *prefix, const char *name, const double *v, int n) {
    put_field(a, prefix, name, 0);
    put(a, "[");
    for (int i = 0; i < n; i++) {
        if (i) put(a, ",");
        put_num(a, v[i]);
    }
    put(a, "]");
}

int tl_eval_json(const tl_evalstats *s, const tl_eval_metrics *m, const char *prefix, char **buf,
                 size_t *len, size_t *cap) {
    const int C = s->classes;
    if (!prefix) prefix = "";
    appender a = {*buf, *len, *cap, 0};
    put_field(&a, prefix, "n", 1);
    put(&a, "%llu", (unsigned long long)m->n);
    put_field(&a, prefix, "loss", 0);
    put_num(&a, m->loss);
    put_field(&a, prefix, "accuracy", 0);
    put_num(&a, m->accuracy);
    put_field(&a, prefix, "macro_f1", 0);
    put_num(&a, m->macro_f1);
    put_field(&a, prefix, "auc", 0);
    put_num(&a, m->auc);
    put_field(&a, prefix, "auc_bound", 0);
    put_num(&a, isnan(m->auc) ? NAN : m->auc_bound);
    put_field(&a, prefix, "auc_classes", 0);
    put(&a, "%d", m->auc_classes);
    put_array(&a, prefix, "precision", m->precision, C);
    put_array(&a, prefix, "recall", m->recall, C);
    put_field(&a, prefix, "confusion", 0);
    put(&a, "[");
    for (int t = 0; t < C; t++) {
        put(&a, "%s[", t ? "," : "");
        for (int p = 0; p < C; p++)
            put(&a, "%s%llu", p ? "," : "", (unsigned long long)s->confusion[(size_t)t * C + p]);
        put(&a, "]");
    }
    put(&a, "]");
    if (a.failed) {
        /* Keep the (possibly moved) buffer, but the old text. */
        if (a.buf) a.buf[*len] = '\0';
        *buf = a.buf;
        *cap = a.cap;
        return tl_error(TL_ENOMEM, "evaluation: out of memory writing JSON");
    }
    *buf = a.buf;
    *len = a.len;
    *cap = a.cap;
    return 0;
}
