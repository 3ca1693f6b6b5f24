/* csv.c - numeric CSV reader (raw or gzip) with an exact float parser.
 *
 * The file is mapped (raw) or inflated whole by libdeflate (gzip), then
 * parsed in one pass, row by row, without copying cells: a feature cell is
 * parsed in place by parse_num, which stops at the first character that
 * cannot continue a number; the cell is good when only blanks and a cell
 * terminator follow. Anything else (a quote, text) goes through the generic
 * cell scanner, which either unquotes the cell or finds its extent for the
 * error message. The first line is always scanned generically, to count the
 * columns, find the label column and decide whether it is a header.
 *
 * Numbers. parse_num gathers up to 19 significant digits into a uint64 and a
 * decimal exponent. When the digits fit in a double's 53-bit mantissa and the
 * power of ten is exact in a double (10^0..10^22), one IEEE multiplication or
 * division gives the correctly rounded double (Clinger's fast path), hence
 * the same double as strtod. Wider mantissas (what %.17g prints) with powers
 * up to 10^27 are computed in x87 long double (64-bit mantissa) and accepted
 * when provably on the same side of every float rounding boundary as the true
 * value (ld_path). Everything else (more than 19 significant digits, larger
 * exponents, the rare value too close to a float midpoint) goes to strtod_l in
 * the C locale, which is exact. The double is then rounded to float by the
 * cast, after an explicit overflow test (|d| >= 2^128 - 2^103 rounds to
 * infinity).
 */
#define _GNU_SOURCE
#include "tl/csv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <libdeflate.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/le.h"

#define MSG_CELL 40 /* characters of a bad cell quoted in a message */
/* Smallest double that rounds to float infinity: halfway between FLT_MAX
 * (2^128 - 2^104, odd mantissa) and 2^128, where ties go to even (2^128). */
#define FLOAT_OVERFLOW 0x1.ffffffp127

static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#if LDBL_MANT_DIG >= 64
/* 10^0..10^27: exact in an x87 long double (5^27 < 2^64). */
static const long double pow10_ld[28] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,
                                         1e7L,  1e8L,  1e9L,  1e10L, 1e11L, 1e12L, 1e13L,
                                         1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L, 1e20L,
                                         1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};

/* w * 10^e10 rounded to float as (float)strtod would, for |e10| <= 27, when
 * that can be decided from a 64-bit-mantissa approximation: returns 1 with
 * *out set, or 0 (the caller falls back to strtod). The approximation a has a
 * relative error of at most 2^-64 (w and the power are exact, one rounding);
 * the correctly rounded double of the true value is within 2^-53 of it, so
 * when a is farther than 2^-50 (relative) from both midpoints around
 * f = (float)a, that double rounds to f too. Values here are at least 1e-27
 * and at most 2^64 * 1e27: no subnormal float; near float overflow we give up. */
static int ld_path(uint64_t w, long e10, int neg, float *out) {
    long double a = (long double)w;
    a = e10 < 0 ? a / pow10_ld[-e10] : a * pow10_ld[e10];
    if (a >= 0x1p127L) return 0;
    float f = (float)a;
    long double up = ((long double)f + nextafterf(f, INFINITY)) / 2;
    long double dn = ((long double)f + nextafterf(f, 0)) / 2;
    long double margin = a * 0x1p-50L;
    if (up - a <= margin || a - dn <= margin) return 0;
    *out = neg ? -f : f;
    return 1;
}
#endif

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

/* Creates the C locale used by the strtod fallback (once per process). */
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* True for the blanks allowed around a cell. */
static int is_blank(char c) { return c == ' ' || c == '\t'; }

/* Exact strtod of s[0..n) (already checked against the number grammar) in the
 * C locale. Returns 0 or TL_ENOMEM / TL_EFORMAT (strtod disagreed). */
static int slow_strtod(const char *s, size_t n, double *out) {
    char small[128], *b = n < sizeof small ? small : malloc(n + 1);
    char *end;
    int rc = 0;
    if (!b) return TL_ENOMEM;
    memcpy(b, s, n);
    b[n] = 0;
    pthread_once(&c_locale_once, c_locale_init);
    *out = c_locale ? strtod_l(b, &end, c_locale) : strtod(b, &end);
    if (end != b + n) rc = TL_EFORMAT;
    if (b != small) free(b);
    return rc;
}

/* Parses the longest decimal number at p (before end): *stop gets the first
 * character not consumed. Returns 0 with *out = (float)strtod(number), or
 * TL_EFORMAT (no number there: *stop is meaningless), TL_ERANGE (overflows
 * float32), TL_ENOMEM. Records no message. */
static int parse_num(const char *p, const char *end, const char **stop, float *out) {
    const char *s = p;
    uint64_t w = 0;
    int nd = 0, any = 0, inexact = 0, neg = 0;
    long e10 = 0;
    double d;
    if (p < end && (*p == '+' || *p == '-')) neg = *p++ == '-';
    for (; p < end && (unsigned)(*p - '0') < 10; p++) {
        unsigned dg = (unsigned)(*p - '0');
        any = 1;
        if (nd < 19) {
            w = w * 10 + dg;
            nd += w != 0; /* leading zeros are not significant */
        } else {
            e10++;
            inexact |= dg != 0;
        }
    }
    if (p < end && *p == '.') {
        for (p++; p < end && (unsigned)(*p - '0') < 10; p++) {
            unsigned dg = (unsigned)(*p - '0');
            any = 1;
            if (nd < 19) {
                w = w * 10 + dg;
                nd += w != 0;
                e10--;
            } else {
                inexact |= dg != 0;
            }
        }
    }
    if (!any) return TL_EFORMAT;
    if (p < end && (*p == 'e' || *p == 'E')) {
        const char *q = p + 1;
        int eneg = 0;
        long ev = 0;
        if (q < end && (*q == '+' || *q == '-')) eneg = *q++ == '-';
        if (q >= end || (unsigned)(*q - '0') >= 10) return TL_EFORMAT; /* "1e", "1e+" */
        for (; q < end && (unsigned)(*q - '0') < 10; q++)
            if (ev < 100000000) ev = ev * 10 + (*q - '0');
        e10 += eneg ? -ev : ev;
        p = q;
    }
    *stop = p;
    if (w == 0 && !inexact) {
        d = neg ? -0.0 : 0.0;
    } else if (!inexact && w <= (1ull << 53) && e10 >= -22 && e10 <= 22) {
        d = (double)w; /* exact */
        d = e10 < 0 ? d / pow10_exact[-e10] : d * pow10_exact[e10];
        d = neg ? -d : d;
    } else {
#if LDBL_MANT_DIG >= 64
        if (!inexact && e10 >= -27 && e10 <= 27 && ld_path(w, e10, neg, out)) return 0;
#endif
        int rc = slow_strtod(s, (size_t)(p - s), &d);
        if (rc < 0) return rc;
    }
    if (fabs(d) >= FLOAT_OVERFLOW) return TL_ERANGE;
    *out = (float)d;
    return 0;
}

int tl_csv_parse_float(const char *s, size_t len, float *out) {
    const char *stop;
    int rc = parse_num(s, s + len, &stop, out);
    if (rc == 0 && stop != s + len) rc = TL_EFORMAT;
    return rc;
}

/* True if s[0..n) spells NaN or Inf (any case, optional sign), as strtod would take it. */
static int is_nan_inf(const char *s, size_t n) {
    if (n && (*s == '+' || *s == '-')) s++, n--;
    return n >= 3 && (!strncasecmp(s, "nan", 3) || !strncasecmp(s, "inf", 3));
}

/* ---- the parser state ---- */

typedef struct csv {
    const char *name;       /* for messages */
    const char *buf, *end;  /* the whole text */
    size_t line;            /* 1-based line of the row being parsed */
    const char *line_start; /* its first character */
} csv;

/* One cell: its content [s, e) (unquoted, blanks removed) and next, the
 * position of its terminator (',' or '\n', or end; a "\r\n" ends a line at
 * the '\r'). */
typedef struct cell {
    const char *s, *e, *next;
} cell;

/* 1-based column of position p on the current line, counting cells. */
static size_t column_of(const csv *c, const char *p) {
    size_t col = 1;
    for (const char *q = c->line_start; q < p; q++) col += *q == ',';
    return col;
}

/* True if p is at a line end: '\n', "\r\n", a final '\r', or the end of the text. */
static int at_eol(const csv *c, const char *p) {
    return p >= c->end || *p == '\n' || (*p == '\r' && (p + 1 >= c->end || p[1] == '\n'));
}

/* Position just after the line end at p (at_eol(p) is true). */
static const char *skip_eol(const csv *c, const char *p) {
    if (p >= c->end) return p;
    if (*p == '\r') p++;
    return p < c->end ? p + 1 : p;
}

/* Scans the cell starting at p. Returns 0 or TL_EFORMAT with a message
 * (unterminated quote, text after a closing quote, a quote inside a cell). */
static int scan_cell(const csv *c, const char *p, cell *out) {
    const char *q = p;
    while (q < c->end && is_blank(*q)) q++;
    if (q < c->end && *q == '"') {
        const char *s = q + 1, *e = s;
        while (e < c->end && *e != '"' && *e != '\n') e++;
        if (e >= c->end || *e != '"')
            return tl_error(TL_EFORMAT,
                            "%s:%zu:%zu: unterminated quote (quoted cells cannot span lines)",
                            c->name, c->line, column_of(c, p));
        q = e + 1;
        while (q < c->end && is_blank(*q)) q++;
        if (!(q >= c->end || *q == ',' || at_eol(c, q)))
            return tl_error(TL_EFORMAT,
                            "%s:%zu:%zu: text after a closing quote (quotes inside a quoted cell "
                            "are not supported)",
                            c->name, c->line, column_of(c, p));
        while (s < e && is_blank(*s)) s++;
        while (e > s && is_blank(e[-1])) e--;
        out->s = s, out->e = e, out->next = q;
        return 0;
    }
    const char *s = q;
    while (q < c->end && *q != ',' && !at_eol(c, q)) {
        if (*q == '"')
            return tl_error(TL_EFORMAT,
                            "%s:%zu:%zu: a quote inside a cell (only whole cells may be quoted)",
                            c->name, c->line, column_of(c, p));
        q++;
    }
    const char *e = q;
    while (e > s && is_blank(e[-1])) e--;
    out->s = s, out->e = e, out->next = q;
    return 0;
}

/* Number of cells on the line that starts at c->line_start. */
static size_t count_cells(const csv *c) {
    size_t n = 1;
    const char *q = c->line_start;
    for (; q < c->end && !at_eol(c, q); q++) n += *q == ',';
    return n;
}

/* Records the message for a feature cell [s, e) at column col that is not a
 * good number (rc from tl_csv_parse_float) and returns the code. */
static int bad_number(const csv *c, size_t col, const char *s, const char *e, int rc) {
    int n = (int)(e - s > MSG_CELL ? MSG_CELL : e - s);
    const char *more = e - s > MSG_CELL ? "..." : "";
    if (rc == TL_ENOMEM) return tl_error(rc, "%s: out of memory", c->name);
    if (s == e) return tl_error(TL_EFORMAT, "%s:%zu:%zu: empty cell", c->name, c->line, col);
    if (rc == TL_ERANGE)
        return tl_error(TL_EFORMAT, "%s:%zu:%zu: out of float32 range: \"%.*s%s\"", c->name,
                        c->line, col, n, s, more);
    if (is_nan_inf(s, (size_t)(e - s)))
        return tl_error(TL_EFORMAT, "%s:%zu:%zu: NaN or Inf is not allowed: \"%.*s%s\"", c->name,
                        c->line, col, n, s, more);
    return tl_error(TL_EFORMAT, "%s:%zu:%zu: not a number: \"%.*s%s\"", c->name, c->line, col, n, s,
                    more);
}

/* Records the message for a row with the wrong number of cells. */
static int ragged(const csv *c, size_t ncols) {
    return tl_error(TL_EFORMAT, "%s:%zu: %zu cells, expected %zu (as on line 1)", c->name, c->line,
                    count_cells(c), ncols);
}

/* Per-row label cells, kept until the label kind is known. */
typedef struct label_ref {
    size_t off;   /* offset of the cell content in the text */
    uint32_t len; /* its length */
    uint32_t row;
} label_ref;

/* Parses one data row at c->line_start into x (features floats) and lab;
 * *next gets the position after the row's line end. Returns 0 or TL_EFORMAT
 * (TL_ENOMEM) with a message. */
static int parse_row(const csv *c, size_t ncols, size_t label_col, float *x, label_ref *lab,
                     const char **next) {
    const char *p = c->line_start;
    for (size_t col = 0; col < ncols; col++) {
        const char *q;
        float v;
        int r;
        while (p < c->end && is_blank(*p)) p++;
        if (col == label_col || (p < c->end && *p == '"')) {
            cell k;
            if ((r = scan_cell(c, p, &k)) < 0) return r;
            if (col == label_col) {
                if (k.s == k.e)
                    return tl_error(TL_EFORMAT, "%s:%zu:%zu: empty label", c->name, c->line,
                                    col + 1);
                lab->off = (size_t)(k.s - c->buf);
                lab->len = (uint32_t)(k.e - k.s > UINT32_MAX ? UINT32_MAX : k.e - k.s);
            } else {
                if ((r = tl_csv_parse_float(k.s, (size_t)(k.e - k.s), &v)) < 0)
                    return bad_number(c, col + 1, k.s, k.e, r);
                *x++ = v;
            }
            q = k.next;
        } else {
            r = parse_num(p, c->end, &q, &v);
            if (r == 0) {
                while (q < c->end && is_blank(*q)) q++;
                if (!(q >= c->end || *q == ',' || at_eol(c, q))) r = TL_EFORMAT;
            }
            if (r < 0) { /* no number, or a number followed by text: look at the whole cell */
                cell k;
                if ((r = scan_cell(c, p, &k)) < 0) return r;
                return bad_number(c, col + 1, k.s, k.e,
                                  tl_csv_parse_float(k.s, (size_t)(k.e - k.s), &v));
            }
            *x++ = v;
        }
        /* q is at the cell's terminator */
        if (col + 1 < ncols) {
            if (q >= c->end || *q != ',') return ragged(c, ncols);
            p = q + 1;
        } else {
            if (!at_eol(c, q)) return ragged(c, ncols);
            *next = skip_eol(c, q);
        }
    }
    return 0;
}

/* If the label text is a plain non-negative integer ("+"? digits) sets *v
 * (saturating at INT32_MAX) and returns 1, else 0. */
static int label_int(const char *s, size_t n, int32_t *v) {
    int64_t a = 0;
    if (n && *s == '+') s++, n--;
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned)(s[i] - '0') >= 10) return 0;
        if (a < INT32_MAX) a = a * 10 + (s[i] - '0');
    }
    *v = a > INT32_MAX ? INT32_MAX : (int32_t)a;
    return 1;
}

/* Compares the texts of two label cells of text base by byte value (strcmp order). */
static int cmp_text(const label_ref *x, const label_ref *y, const char *base) {
    size_t n = x->len < y->len ? x->len : y->len;
    int r = memcmp(base + x->off, base + y->off, n);
    if (r) return r;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* qsort_r order of label cells: by text, then by row (a total order). */
static int cmp_label(const void *a, const void *b, void *base) {
    const label_ref *x = a, *y = b;
    int r = cmp_text(x, y, base);
    return r ? r : x->row < y->row ? -1 : x->row > y->row;
}

/* Frees the n strings of v, then v (v may be NULL). */
static void free_strs(char **v, size_t n) {
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void tl_table_free(tl_table *t) {
    if (!t) return;
    free(t->x);
    free(t->y);
    free_strs(t->class_names, t->class_names ? (size_t)t->classes : 0);
    free_strs(t->feature_names, t->feature_names ? t->features : 0);
    free(t->label_name);
    memset(t, 0, sizeof *t);
}

/* Sets t->y and t->classes from the label cells of n rows: integers as
 * themselves, or strings by sorted rank (t->class_names). lab is reordered. */
static int make_labels(const csv *c, label_ref *lab, size_t n, size_t label_col,
                       size_t first_data_line, tl_table *t) {
    int ints = 1;
    int32_t maxv = -1;
    t->y = malloc(n * sizeof *t->y);
    if (!t->y) return tl_error(TL_ENOMEM, "%s: out of memory (%zu labels)", c->name, n);
    for (size_t i = 0; i < n && ints; i++) {
        int32_t v;
        if (!label_int(c->buf + lab[i].off, lab[i].len, &v)) ints = 0;
        else t->y[i] = v, maxv = v > maxv ? v : maxv;
    }
    if (ints) {
        if (maxv >= TL_DATASET_MAX_CLASSES) {
            for (size_t i = 0; i < n; i++)
                if (t->y[i] == maxv)
                    return tl_error(TL_ERANGE,
                                    "%s:%zu:%zu: label %.*s is over the limit of %d classes",
                                    c->name, first_data_line + i, label_col + 1, (int)lab[i].len,
                                    c->buf + lab[i].off, TL_DATASET_MAX_CLASSES);
        }
        t->classes = maxv + 1;
        return 0;
    }
    qsort_r(lab, n, sizeof *lab, cmp_label, (void *)c->buf);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && cmp_text(&lab[i - 1], &lab[i], c->buf) != 0) k++;
        if (k >= TL_DATASET_MAX_CLASSES)
            return tl_error(TL_ERANGE, "%s: more than %d distinct labels in column %zu", c->name,
                            TL_DATASET_MAX_CLASSES, label_col + 1);
        t->y[lab[i].row] = (int32_t)k;
    }
    t->classes = (int)k + 1;
    t->class_names = calloc(k + 1, sizeof *t->class_names);
    if (!t->class_names) return tl_error(TL_ENOMEM, "%s: out of memory", c->name);
    for (size_t i = 0; i < n; i++) {
        char **slot = &t->class_names[t->y[lab[i].row]];
        if (!*slot && !(*slot = strndup(c->buf + lab[i].off, lab[i].len)))
            return tl_error(TL_ENOMEM, "%s: out of memory", c->name);
    }
    return 0;
}

/* Resolves o->label against the first row's cells: *col gets the label
 * column, *by_name whether it was given by name (a header cell matched). */
static int find_label(const csv *c, const cell *cells, size_t ncols, const tl_csv_opts *o,
                      size_t *col, int *by_name) {
    const char *l = o->label;
    char *end;
    long long v;
    *by_name = 0;
    if (!l) {
        *col = ncols - 1;
        return 0;
    }
    errno = 0;
    v = strtoll(l, &end, 10);
    if (*l && !*end && errno == 0 && !isspace((unsigned char)*l)) {
        if (v < 0) v += (long long)ncols;
        if (v < 0 || v >= (long long)ncols)
            return tl_error(TL_EFORMAT, "%s: label column %s is out of range (%zu columns)",
                            c->name, l, ncols);
        *col = (size_t)v;
        return 0;
    }
    if (o->header == 0)
        return tl_error(TL_EFORMAT, "%s: label column \"%s\" needs a header row (header is off)",
                        c->name, l);
    for (size_t i = 0; i < ncols; i++) {
        if ((size_t)(cells[i].e - cells[i].s) == strlen(l) && !memcmp(cells[i].s, l, strlen(l))) {
            *col = i, *by_name = 1;
            return 0;
        }
    }
    return tl_error(TL_EFORMAT, "%s: no column named \"%s\" in the first row", c->name, l);
}

/* Parses the whole text [buf, buf+len). */
static int parse(const char *buf, size_t len, const char *name, const tl_csv_opts *o, tl_table *t) {
    csv c;
    cell *cells = NULL;
    label_ref *lab = NULL;
    size_t ncols = 0, cap = 16, label_col = 0, rows_max, n = 0, first_line;
    int rc, by_name, header;
    const char *p;

    if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3)) buf += 3, len -= 3; /* a UTF-8 BOM */
    c = (csv){name, buf, buf + len, 1, buf};
    if (len == 0 || at_eol(&c, buf))
        return tl_error(TL_EFORMAT, "%s:1: %s", name, len ? "empty first line" : "empty file");
    /* the first line, generically */
    if (!(cells = malloc(cap * sizeof *cells)))
        return tl_error(TL_ENOMEM, "%s: out of memory", name);
    for (p = buf;;) {
        if (ncols == cap) {
            cell *nc = ncols >= TL_CSV_MAX_COLUMNS ? NULL : realloc(cells, 2 * cap * sizeof *cells);
            if (!nc) {
                rc = ncols >= TL_CSV_MAX_COLUMNS ? tl_error(TL_ERANGE, "%s:1: more than %d columns",
                                                            name, TL_CSV_MAX_COLUMNS)
                                                 : tl_error(TL_ENOMEM, "%s: out of memory", name);
                goto cleanup;
            }
            cells = nc, cap *= 2;
        }
        if ((rc = scan_cell(&c, p, &cells[ncols])) < 0) goto cleanup;
        p = cells[ncols++].next;
        if (at_eol(&c, p)) break;
        p++; /* the ',' */
    }
    if (ncols < 2) {
        rc = tl_error(TL_EFORMAT, "%s:1: one column only: need features and a label", name);
        goto cleanup;
    }
    if ((rc = find_label(&c, cells, ncols, o, &label_col, &by_name)) < 0) goto cleanup;
    header = o->header;
    if (header < 0) {
        header = by_name;
        for (size_t i = 0; i < ncols && !header; i++) {
            float v;
            size_t k = (size_t)(cells[i].e - cells[i].s);
            if (i == label_col || k == 0 || is_nan_inf(cells[i].s, k)) continue;
            header = tl_csv_parse_float(cells[i].s, k, &v) == TL_EFORMAT;
        }
    }
    t->features = ncols - 1;
    if (header) {
        t->feature_names = calloc(t->features, sizeof *t->feature_names);
        if (!t->feature_names ||
            !(t->label_name = strndup(cells[label_col].s,
                                      cells[label_col].e - cells[label_col].s))) {
            rc = tl_error(TL_ENOMEM, "%s: out of memory", name);
            goto cleanup;
        }
        for (size_t i = 0, j = 0; i < ncols; i++) {
            if (i == label_col) continue;
            if (!(t->feature_names[j++] = strndup(cells[i].s, cells[i].e - cells[i].s))) {
                rc = tl_error(TL_ENOMEM, "%s: out of memory", name);
                goto cleanup;
            }
        }
        p = skip_eol(&c, p);
        c.line = 2;
    } else {
        p = buf;
    }
    first_line = c.line;

    /* upper bound on the data rows: line ends after p, plus one */
    rows_max = 1;
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(c.end - q))); q++) rows_max++;
    if (rows_max > UINT32_MAX) {
        rc = tl_error(TL_ERANGE, "%s: more than %u rows", name, UINT32_MAX);
        goto cleanup;
    }
    if (rows_max > SIZE_MAX / sizeof(float) / t->features ||
        !(t->x = malloc(rows_max * t->features * sizeof(float))) ||
        !(lab = malloc(rows_max * sizeof *lab))) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory (%zu rows x %zu features)", name, rows_max,
                      t->features);
        goto cleanup;
    }
    while (p < c.end) {
        c.line_start = p;
        if (at_eol(&c, p)) { /* an empty line: only allowed at the very end */
            const char *q = p;
            while (q < c.end && (*q == '\n' || *q == '\r' || is_blank(*q))) q++;
            if (q == c.end) break;
            rc = tl_error(TL_EFORMAT, "%s:%zu: empty line", name, c.line);
            goto cleanup;
        }
        lab[n].row = (uint32_t)n;
        if ((rc = parse_row(&c, ncols, label_col, t->x + n * t->features, &lab[n], &p)) < 0)
            goto cleanup;
        n++;
        c.line++;
    }
    if (n == 0) {
        rc = tl_error(TL_EFORMAT, "%s: no data rows", name);
        goto cleanup;
    }
    t->n = n;
    if ((rc = make_labels(&c, lab, n, label_col, first_line, t)) < 0) goto cleanup;
    rc = 0;
cleanup:
    free(cells);
    free(lab);
    if (rc < 0) tl_table_free(t);
    return rc;
}

/* Inflates gzip bytes (one or more members) into a new buffer *out (*n
 * bytes; free() it). Returns 0 or TL_EFORMAT / TL_ERANGE / TL_ENOMEM. */
static int gunzip(const uint8_t *in, size_t len, const char *name, char **out, size_t *n) {
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t cap, used = 0, pos = 0;
    char *b = NULL;
    int rc = 0;
    if (!d) return tl_error(TL_ENOMEM, "%s: out of memory", name);
    cap = len < 18 ? 4096 : (size_t)tl_le_load32(in + len - 4) + 1; /* ISIZE, a hint */
    if (cap < 4 * len) cap = 4 * len;
    if (cap > TL_CSV_MAX_BYTES + 1) cap = TL_CSV_MAX_BYTES + 1;
    while (pos < len) {
        size_t in_used, out_got;
        enum libdeflate_result r;
        if (!b && !(b = malloc(cap))) {
            rc = tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, cap);
            goto done;
        }
        r = libdeflate_gzip_decompress_ex(d, in + pos, len - pos, b + used, cap - used, &in_used,
                                          &out_got);
        if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
            char *nb;
            if (cap > TL_CSV_MAX_BYTES) {
                rc = tl_error(TL_ERANGE, "%s: inflates to more than %zu bytes", name,
                              (size_t)TL_CSV_MAX_BYTES);
                goto done;
            }
            cap = cap * 2 > TL_CSV_MAX_BYTES + 1 ? TL_CSV_MAX_BYTES + 1 : cap * 2;
            if (!(nb = realloc(b, cap))) {
                rc = tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, cap);
                goto done;
            }
            b = nb;
            continue;
        }
        if (r != LIBDEFLATE_SUCCESS) {
            rc = tl_error(TL_EFORMAT, "%s: corrupt gzip data", name);
            goto done;
        }
        pos += in_used, used += out_got;
    }
    if (used > TL_CSV_MAX_BYTES) {
        rc = tl_error(TL_ERANGE, "%s: inflates to more than %zu bytes", name,
                      (size_t)TL_CSV_MAX_BYTES);
        goto done;
    }
done:
    libdeflate_free_decompressor(d);
    if (rc < 0) free(b), b = NULL;
    *out = b, *n = used;
    return rc;
}

/* Parses bytes that may be gzip. */
static int read_bytes(const uint8_t *buf, size_t len, const char *name, const tl_csv_opts *o,
                      tl_table *t) {
    static const tl_csv_opts dflt = {NULL, -1};
    int rc;
    memset(t, 0, sizeof *t);
    if (!o) o = &dflt;
    if (o->header < -1 || o->header > 1)
        return tl_error(TL_EINVAL, "%s: header must be -1, 0 or 1 (got %d)", name, o->header);
    if (len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
        char *text = NULL;
        size_t n = 0;
        if ((rc = gunzip(buf, len, name, &text, &n)) < 0) return rc;
        rc = parse(text, n, name, o, t);
        free(text);
        return rc;
    }
    if (len > TL_CSV_MAX_BYTES)
        return tl_error(TL_ERANGE, "%s: more than %zu bytes", name, (size_t)TL_CSV_MAX_BYTES);
    return parse((const char *)buf, len, name, o, t);
}

int tl_csv_read_mem(const void *buf, size_t len, const char *name, const tl_csv_opts *o,
                    tl_table *out) {
    return read_bytes(buf, len, name, o, out);
}

int tl_csv_read(const char *path, const tl_csv_opts *o, tl_table *out) {
    struct stat st;
    void *map;
    int fd, rc;
    memset(out, 0, sizeof *out);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = tl_error(TL_EIO, "%s: not a regular file", path);
        close(fd);
        return rc;
    }
    if (st.st_size == 0) {
        close(fd);
        return read_bytes((const uint8_t *)"", 0, path, o, out);
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return tl_error(TL_EIO, "%s: cannot map: %s", path, strerror(errno));
    madvise(map, (size_t)st.st_size, MADV_SEQUENTIAL);
    rc = read_bytes(map, (size_t)st.st_size, path, o, out);
    munmap(map, (size_t)st.st_size);
    return rc;
}
