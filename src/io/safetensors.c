/* safetensors.c - strict safetensors reader and atomic writer (see safetensors.h). */
#include "tl/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/error.h"
#include "tl/file.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format is little-endian)"
#endif

/* Per-tensor placement in the data block, kept while validating. */
typedef struct st_span {
    uint64_t begin, end;
} st_span;

struct tl_st {
    int n;
    tl_st_tensor *t;   /* n tensors in file order */
    int *by_name;      /* n indices sorted by name, for tl_st_find */
    int n_meta;
    tl_st_kv *meta;    /* n_meta pairs in file order */
    int *meta_by_key;  /* n_meta indices sorted by key */
    char *arena;       /* every decoded string */
    uint8_t *data;     /* the data block (malloc'd, so 16-byte aligned) */
    void **copies;     /* aligned copies of misaligned tensors (n entries, mostly NULL) */
};

/* ---------------------------------------------------------------------------
 * The header's JSON: objects, strings, integers and arrays of integers only. */

typedef struct parser {
    const char *path;
    const uint8_t *s;
    size_t n, i;
    char *arena; /* decoded strings, NUL-terminated */
    size_t used, cap;
    /* results */
    int n_t, cap_t;
    tl_st_tensor *t;
    st_span *span;
    int n_meta, cap_meta;
    tl_st_kv *meta;
    int seen_meta;
} parser;

/* Records a TL_EFORMAT message naming the file, the problem and the byte
 * position in the header; returns TL_EFORMAT. */
static int perr(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(parser *p, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tl_error(TL_EFORMAT, "%s: bad safetensors header: %s (at byte %zu of the header)",
                    p->path, what, p->i);
}

/* Skips JSON whitespace. */
static void skip_ws(parser *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* The next non-space byte without consuming it, or -1 at the end. */
static int peek(parser *p) {
    skip_ws(p);
    return p->i < p->n ? p->s[p->i] : -1;
}

/* Consumes the byte c after optional whitespace, or fails. */
static int expect(parser *p, char c) {
    if (peek(p) != (unsigned char)c)
        return perr(p, "expected '%c'", c);
    p->i++;
    return 0;
}

/* Appends a byte to the string arena (sized so it cannot overflow on valid
 * input; checked anyway). */
static int put(parser *p, uint8_t c) {
    if (p->used >= p->cap)
        return perr(p, "string storage exhausted");
    p->arena[p->used++] = (char)c;
    return 0;
}

/* Value of one hex digit, or -1. */
static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses the 4 hex digits of a \u escape at p->i. */
static int parse_hex4(parser *p, uint32_t *out) {
    uint32_t v = 0;
    if (p->n - p->i < 4)
        return perr(p, "truncated \\u escape");
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + k]);
        if (h < 0)
            return perr(p, "bad hex digit in \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* Appends code point cp (valid, not a surrogate, not NUL) as UTF-8. */
static int put_utf8(parser *p, uint32_t cp) {
    int rc = 0;
    if (cp < 0x80) {
        rc = put(p, (uint8_t)cp);
    } else if (cp < 0x800) {
        rc = put(p, (uint8_t)(0xc0 | cp >> 6));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        rc = put(p, (uint8_t)(0xe0 | cp >> 12));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | (cp & 0x3f)));
    } else {
        rc = put(p, (uint8_t)(0xf0 | cp >> 18));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | ((cp >> 12) & 0x3f)));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
        rc = rc ? rc : put(p, (uint8_t)(0x80 | (cp & 0x3f)));
    }
    return rc;
}

/* Length of the well-formed UTF-8 sequence at s[0..avail), or 0 if it is not
 * one (overlong forms, surrogates and code points past U+10FFFF are not). */
static size_t utf8_len(const uint8_t *s, size_t avail) {
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (avail < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xbf)
            return 0;
    return len;
}

/* Parses a JSON string into the arena; *out is its NUL-terminated text.
 * Rejects raw control characters, bad escapes, invalid UTF-8 and NUL. */
static int parse_string(parser *p, const char **out) {
    int rc;
    if ((rc = expect(p, '"')) < 0)
        return rc;
    char *start = p->arena + p->used;
    for (;;) {
        if (p->i >= p->n)
            return perr(p, "unterminated string");
        uint8_t c = p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c < 0x20)
            return perr(p, "control character 0x%02x in a string", c);
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n)
                return perr(p, "unterminated string");
            uint8_t e = p->s[p->i++];
            uint32_t cp;
            switch (e) {
            case '"': rc = put(p, '"'); break;
            case '\\': rc = put(p, '\\'); break;
            case '/': rc = put(p, '/'); break;
            case 'b': rc = put(p, '\b'); break;
            case 'f': rc = put(p, '\f'); break;
            case 'n': rc = put(p, '\n'); break;
            case 'r': rc = put(p, '\r'); break;
            case 't': rc = put(p, '\t'); break;
            case 'u':
                if ((rc = parse_hex4(p, &cp)) < 0)
                    return rc;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return perr(p, "unpaired low surrogate in \\u escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                        return perr(p, "unpaired high surrogate in \\u escape");
                    p->i += 2;
                    if ((rc = parse_hex4(p, &lo)) < 0)
                        return rc;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return perr(p, "unpaired high surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (cp == 0)
                    return perr(p, "NUL character (\\u0000) in a string");
                rc = put_utf8(p, cp);
                break;
            default:
                p->i--;
                return perr(p, "bad escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? e : '?');
            }
            if (rc < 0)
                return rc;
            continue;
        }
        size_t len = utf8_len(p->s + p->i, p->n - p->i);
        if (len == 0)
            return perr(p, "invalid UTF-8 in a string");
        for (size_t k = 0; k < len; k++)
            if ((rc = put(p, p->s[p->i + k])) < 0)
                return rc;
        p->i += len;
    }
    if ((rc = put(p, '\0')) < 0)
        return rc;
    *out = start;
    return 0;
}

/* Parses a JSON integer (optional '-', no leading zeros, no fraction or
 * exponent) that fits in int64_t. */
static int parse_int(parser *p, int64_t *out) {
    int neg = 0;
    uint64_t v = 0;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '-') {
        neg = 1;
        p->i++;
    }
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return perr(p, "expected an integer");
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return perr(p, "integer with a leading zero");
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        uint64_t d = (uint64_t)(p->s[p->i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10)
            return perr(p, "integer too large");
        v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return perr(p, "expected an integer, found a fractional number");
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* Parses an array of at most max integers into out[], *count set. */
static int parse_int_array(parser *p, int64_t *out, int max, int *count, const char *what,
                           const char *name) {
    int rc;
    *count = 0;
    if (peek(p) != '[')
        return perr(p, "tensor '%s': %s is not an array", name, what);
    p->i++;
    if (peek(p) == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        if (*count == max)
            return perr(p, "tensor '%s': %s has more than %d entries", name, what, max);
        if ((rc = parse_int(p, &out[*count])) < 0)
            return rc;
        (*count)++;
        int c = peek(p);
        p->i++;
        if (c == ']')
            return 0;
        if (c != ',') {
            p->i--;
            return perr(p, "tensor '%s': expected ',' or ']' in %s", name, what);
        }
    }
}

/* After an object member: consumes ',' (returns 1: more) or '}' (returns 0). */
static int member_end(parser *p) {
    int c = peek(p);
    if (c == ',') {
        p->i++;
        return 1;
    }
    if (c == '}') {
        p->i++;
        return 0;
    }
    return perr(p, "expected ',' or '}'");
}

/* Parses "__metadata__"'s value: an object of string values. */
static int parse_metadata(parser *p) {
    int rc;
    if (p->seen_meta)
        return perr(p, "duplicate key '__metadata__'");
    p->seen_meta = 1;
    if (peek(p) != '{')
        return perr(p, "__metadata__ is not an object");
    p->i++;
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        const char *key, *val;
        if ((rc = parse_string(p, &key)) < 0)
            return rc;
        if ((rc = expect(p, ':')) < 0)
            return rc;
        if (peek(p) != '"')
            return perr(p, "metadata value of '%s' is not a string", key);
        if ((rc = parse_string(p, &val)) < 0)
            return rc;
        if (p->n_meta == p->cap_meta) {
            int cap = p->cap_meta ? 2 * p->cap_meta : 16;
            tl_st_kv *m = realloc(p->meta, (size_t)cap * sizeof *m);
            if (!m)
                return tl_error(TL_ENOMEM, "%s: out of memory reading the header", p->path);
            p->meta = m;
            p->cap_meta = cap;
        }
        p->meta[p->n_meta].key = key;
        p->meta[p->n_meta].value = val;
        p->n_meta++;
        if ((rc = member_end(p)) <= 0)
            return rc;
    }
}

/* Parses one tensor's description {"dtype","shape","data_offsets"}: each key
 * exactly once, nothing else. */
static int parse_tensor(parser *p, const char *name) {
    int rc, have_dtype = 0, have_shape = 0, have_offsets = 0;
    tl_st_tensor t = {0};
    int64_t off[2] = {0, 0};
    t.name = name;
    if (peek(p) != '{')
        return perr(p, "tensor '%s': description is not an object", name);
    p->i++;
    if (peek(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            const char *key;
            if ((rc = parse_string(p, &key)) < 0)
                return rc;
            if ((rc = expect(p, ':')) < 0)
                return rc;
            if (strcmp(key, "dtype") == 0) {
                const char *dt;
                if (have_dtype++)
                    return perr(p, "tensor '%s': duplicate key 'dtype'", name);
                if (peek(p) != '"')
                    return perr(p, "tensor '%s': dtype is not a string", name);
                if ((rc = parse_string(p, &dt)) < 0)
                    return rc;
                if (strcmp(dt, "F32") == 0)
                    t.dtype = TL_ST_F32;
                else if (strcmp(dt, "I64") == 0)
                    t.dtype = TL_ST_I64;
                else
                    return perr(p, "tensor '%s': unsupported dtype '%.32s' (F32 and I64 only)",
                                name, dt);
            } else if (strcmp(key, "shape") == 0) {
                if (have_shape++)
                    return perr(p, "tensor '%s': duplicate key 'shape'", name);
                if ((rc = parse_int_array(p, t.shape, TL_ST_MAX_RANK, &t.rank, "shape", name)) < 0)
                    return rc;
                for (int k = 0; k < t.rank; k++)
                    if (t.shape[k] < 0)
                        return perr(p, "tensor '%s': negative dimension %lld in shape", name,
                                    (long long)t.shape[k]);
            } else if (strcmp(key, "data_offsets") == 0) {
                int cnt;
                if (have_offsets++)
                    return perr(p, "tensor '%s': duplicate key 'data_offsets'", name);
                if ((rc = parse_int_array(p, off, 2, &cnt, "data_offsets", name)) < 0)
                    return rc;
                if (cnt != 2)
                    return perr(p, "tensor '%s': data_offsets must have 2 entries", name);
                if (off[0] < 0 || off[1] < 0)
                    return perr(p, "tensor '%s': negative data offset", name);
            } else {
                return perr(p, "tensor '%s': unknown key '%.32s'", name, key);
            }
            if ((rc = member_end(p)) < 0)
                return rc;
            if (rc == 0)
                break;
        }
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return perr(p, "tensor '%s': missing '%s'", name,
                    !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    if (p->n_t == p->cap_t) {
        if (p->cap_t > INT32_MAX / 2)
            return perr(p, "too many tensors");
        int cap = p->cap_t ? 2 * p->cap_t : 64;
        tl_st_tensor *nt = realloc(p->t, (size_t)cap * sizeof *nt);
        if (nt)
            p->t = nt;
        st_span *ns = nt ? realloc(p->span, (size_t)cap * sizeof *ns) : NULL;
        if (!ns)
            return tl_error(TL_ENOMEM, "%s: out of memory reading the header", p->path);
        p->span = ns;
        p->cap_t = cap;
    }
    p->t[p->n_t] = t;
    p->span[p->n_t].begin = (uint64_t)off[0];
    p->span[p->n_t].end = (uint64_t)off[1];
    p->n_t++;
    return 0;
}

/* Parses the whole header: one object, then only whitespace. */
static int parse_header(parser *p) {
    int rc;
    if (peek(p) != '{')
        return perr(p, "the header is not a JSON object");
    p->i++;
    if (peek(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            const char *key;
            if (peek(p) != '"')
                return perr(p, "expected a string key");
            if ((rc = parse_string(p, &key)) < 0)
                return rc;
            if ((rc = expect(p, ':')) < 0)
                return rc;
            if (strcmp(key, "__metadata__") == 0)
                rc = parse_metadata(p);
            else
                rc = parse_tensor(p, key);
            if (rc < 0)
                return rc;
            if ((rc = member_end(p)) < 0)
                return rc;
            if (rc == 0)
                break;
        }
    }
    skip_ws(p);
    if (p->i != p->n)
        return perr(p, "trailing characters after the header object");
    return 0;
}

/* ---------------------------------------------------------------------------
 * Validation and loading. */

/* Bytes per element of a dtype (0 if unknown). */
static size_t dtype_size(tl_st_dtype d) {
    return d == TL_ST_F32 ? 4 : d == TL_ST_I64 ? 8 : 0;
}

static const char *dtype_name(tl_st_dtype d) {
    return d == TL_ST_F32 ? "F32" : d == TL_ST_I64 ? "I64" : "?";
}

/* Number of elements of t (product of shape; 1 for rank 0). Assumes a
 * validated shape (no overflow). */
size_t tl_st_numel(const tl_st_tensor *t) {
    size_t n = 1;
    for (int k = 0; k < t->rank; k++)
        n *= (size_t)t->shape[k];
    return n;
}

/* Byte size of a tensor of dtype d and the given shape, or 0 with *ok = 0 if
 * it does not fit in size_t. */
static size_t checked_bytes(tl_st_dtype d, int rank, const int64_t *shape, int *ok) {
    size_t n = dtype_size(d);
    *ok = 1;
    for (int k = 0; k < rank; k++) {
        uint64_t dim = (uint64_t)shape[k];
        if (dim != 0 && n > SIZE_MAX / dim) {
            *ok = 0;
            return 0;
        }
        n *= (size_t)dim;
    }
    return n;
}

/* Sort contexts (qsort has none, so the arrays travel with the indices). */
typedef struct idx_str {
    int idx;
    const char *s;
} idx_str;

static int cmp_idx_str(const void *a, const void *b) {
    const idx_str *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

typedef struct idx_span {
    int idx;
    uint64_t begin, end;
} idx_span;

static int cmp_idx_span(const void *a, const void *b) {
    const idx_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Sorts n >= 1 strings (strs[i * stride] viewed as const char *) and stores
 * the sorted order in order[]; fails with TL_EFORMAT naming a duplicate. */
static int sort_unique(const char *path, int n, const char *const *strs, size_t stride,
                       int *order, const char *what) {
    idx_str *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v)
        return tl_error(TL_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        v[i].idx = i;
        v[i].s = *(const char *const *)((const char *)strs + (size_t)i * stride);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_idx_str);
    for (int i = 0; i < n; i++) {
        if (i > 0 && strcmp(v[i - 1].s, v[i].s) == 0) {
            int rc = tl_error(TL_EFORMAT, "%s: bad safetensors header: duplicate %s '%.64s'", path,
                              what, v[i].s);
            free(v);
            return rc;
        }
        order[i] = v[i].idx;
    }
    free(v);
    return 0;
}

/* Takes the parser's results into a tl_st over the data block data[0..dlen)
 * (ownership of data passes to st), validating offsets, sizes, overlaps and
 * uniqueness, and making aligned copies of misaligned tensors. */
static int finish(parser *p, uint8_t *data, size_t dlen, tl_st *st) {
    int rc;
    idx_span *sp = NULL;
    st->data = data;
    st->arena = p->arena;
    p->arena = NULL;
    st->n = p->n_t;
    st->t = p->t;
    p->t = NULL;
    st->n_meta = p->n_meta;
    st->meta = p->meta;
    p->meta = NULL;
    st->by_name = malloc((size_t)(st->n ? st->n : 1) * sizeof *st->by_name);
    st->meta_by_key = malloc((size_t)(st->n_meta ? st->n_meta : 1) * sizeof *st->meta_by_key);
    st->copies = calloc((size_t)(st->n ? st->n : 1), sizeof *st->copies);
    sp = malloc((size_t)(st->n ? st->n : 1) * sizeof *sp);
    if (!st->by_name || !st->meta_by_key || !st->copies || !sp) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", p->path);
        goto cleanup;
    }
    for (int i = 0; i < st->n; i++) {
        const tl_st_tensor *t = &st->t[i];
        uint64_t b = p->span[i].begin, e = p->span[i].end;
        int ok;
        if (b > e) {
            rc = tl_error(TL_EFORMAT, "%s: tensor '%.64s': data_offsets [%llu, %llu] end before they begin",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e);
            goto cleanup;
        }
        if (e > dlen) {
            rc = tl_error(TL_EFORMAT,
                          "%s: tensor '%.64s': data_offsets [%llu, %llu] run past the data block "
                          "(%zu bytes; file truncated?)",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e, dlen);
            goto cleanup;
        }
        size_t bytes = checked_bytes(t->dtype, t->rank, t->shape, &ok);
        if (!ok || bytes != e - b) {
            rc = tl_error(TL_EFORMAT,
                          "%s: tensor '%.64s': data_offsets [%llu, %llu] span %llu bytes but %s of "
                          "its shape needs %s%zu",
                          p->path, t->name, (unsigned long long)b, (unsigned long long)e,
                          (unsigned long long)(e - b), dtype_name(t->dtype), ok ? "" : "more than ",
                          ok ? bytes : SIZE_MAX);
            goto cleanup;
        }
        sp[i].idx = i;
        sp[i].begin = b;
        sp[i].end = e;
    }
    /* Overlaps: sorted by begin, every non-empty tensor starts at or after the
     * furthest end of the non-empty ones before it. */
    qsort(sp, (size_t)st->n, sizeof *sp, cmp_idx_span);
    uint64_t reach = 0;
    int reach_idx = -1;
    for (int i = 0; i < st->n; i++) {
        if (sp[i].begin == sp[i].end)
            continue;
        if (reach_idx >= 0 && sp[i].begin < reach) {
            rc = tl_error(TL_EFORMAT, "%s: tensors '%.64s' and '%.64s' overlap in the data block",
                          p->path, st->t[reach_idx].name, st->t[sp[i].idx].name);
            goto cleanup;
        }
        reach = sp[i].end;
        reach_idx = sp[i].idx;
    }
    if (st->n > 0 && (rc = sort_unique(p->path, st->n, &st->t[0].name, sizeof st->t[0],
                                       st->by_name, "tensor name")) < 0)
        goto cleanup;
    if (st->n_meta > 0 && (rc = sort_unique(p->path, st->n_meta, &st->meta[0].key,
                                            sizeof st->meta[0], st->meta_by_key,
                                            "metadata key")) < 0)
        goto cleanup;
    /* Data pointers: into the block, or an aligned copy if misaligned. */
    for (int i = 0; i < st->n; i++) {
        tl_st_tensor *t = &st->t[i];
        size_t b = (size_t)p->span[i].begin, bytes = (size_t)(p->span[i].end - p->span[i].begin);
        if (b % dtype_size(t->dtype) == 0) {
            t->data = data + b;
        } else {
            st->copies[i] = malloc(bytes ? bytes : 1);
            if (!st->copies[i]) {
                rc = tl_error(TL_ENOMEM, "%s: out of memory", p->path);
                goto cleanup;
            }
            memcpy(st->copies[i], data + b, bytes);
            t->data = st->copies[i];
        }
    }
    rc = 0;
cleanup:
    free(sp);
    return rc;
}

/* Parses header hdr[0..hlen) over the data block data[0..dlen) into a new
 * tl_st. Takes ownership of data (freed on failure). */
static int load(const char *path, const uint8_t *hdr, size_t hlen, uint8_t *data, size_t dlen,
                tl_st **out) {
    int rc;
    parser p = {0};
    tl_st *st = NULL;
    p.path = path;
    p.s = hdr;
    p.n = hlen;
    p.cap = hlen + 1;
    p.arena = malloc(p.cap);
    st = calloc(1, sizeof *st);
    if (!p.arena || !st) {
        free(data);
        rc = tl_error(TL_ENOMEM, "%s: out of memory for a %zu-byte header", path, hlen);
        goto cleanup;
    }
    if ((rc = parse_header(&p)) < 0) {
        free(data);
        goto cleanup;
    }
    rc = finish(&p, data, dlen, st);
    if (rc < 0)
        goto cleanup;
    *out = st;
    st = NULL;
cleanup:
    free(p.arena);
    free(p.t);
    free(p.span);
    free(p.meta);
    tl_st_free(st);
    return rc;
}

/* Reads an 8-byte little-endian integer. */
static uint64_t le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = v << 8 | b[k];
    return v;
}

/* Checks the header length h against the limit and the total size. */
static int check_header_len(const char *path, uint64_t h, uint64_t size) {
    if (h > TL_ST_MAX_HEADER)
        return tl_error(TL_EFORMAT, "%s: safetensors header length %llu exceeds the limit of %u bytes",
                        path, (unsigned long long)h, (unsigned)TL_ST_MAX_HEADER);
    if (h > size - 8)
        return tl_error(TL_EFORMAT,
                        "%s: safetensors header length %llu runs past the end of the file "
                        "(%llu bytes; truncated?)",
                        path, (unsigned long long)h, (unsigned long long)size);
    return 0;
}

/* Parses a safetensors image held in memory (copied; buf may be freed after). */
int tl_st_read_mem(const uint8_t *buf, size_t len, tl_st **out) {
    const char *path = "<memory>";
    int rc;
    *out = NULL;
    if (len < 8)
        return tl_error(TL_EFORMAT, "%s: %zu bytes is too short for a safetensors file", path, len);
    uint64_t h = le64(buf);
    if ((rc = check_header_len(path, h, len)) < 0)
        return rc;
    size_t dlen = len - 8 - (size_t)h;
    uint8_t *data = malloc(dlen ? dlen : 1);
    if (!data)
        return tl_error(TL_ENOMEM, "%s: out of memory for %zu bytes of tensor data", path, dlen);
    memcpy(data, buf + 8 + h, dlen);
    return load(path, buf + 8, (size_t)h, data, dlen, out);
}

/* Reads exactly len bytes from fd: 0, TL_EIO on error, TL_EFORMAT at an early
 * end of file. */
static int read_full(int fd, void *buf, size_t len, const char *path) {
    uint8_t *b = buf;
    while (len > 0) {
        size_t chunk = len > (1u << 30) ? (1u << 30) : len;
        ssize_t r = read(fd, b, chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return tl_error(TL_EIO, "%s: read failed: %s", path, strerror(errno));
        }
        if (r == 0)
            return tl_error(TL_EFORMAT, "%s: file ended early (truncated while reading?)", path);
        b += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Loads a safetensors file: header into a temporary buffer, data block into
 * its own allocation (so tensor data is aligned whatever the header length). */
int tl_st_read(const char *path, tl_st **out) {
    int rc, fd = -1;
    uint8_t lenbuf[8], *hdr = NULL, *data = NULL;
    struct stat sb;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &sb) < 0) {
        rc = tl_error(TL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = tl_error(TL_EIO, "%s: not a regular file", path);
        goto cleanup;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        rc = tl_error(TL_EFORMAT, "%s: %llu bytes is too short for a safetensors file", path,
                      (unsigned long long)size);
        goto cleanup;
    }
    if ((rc = read_full(fd, lenbuf, 8, path)) < 0)
        goto cleanup;
    uint64_t h = le64(lenbuf);
    if ((rc = check_header_len(path, h, size)) < 0)
        goto cleanup;
    uint64_t dlen64 = size - 8 - h;
    if (dlen64 > SIZE_MAX - 1) {
        rc = tl_error(TL_ERANGE, "%s: file too large", path);
        goto cleanup;
    }
    size_t dlen = (size_t)dlen64;
    hdr = malloc(h ? (size_t)h : 1);
    data = malloc(dlen ? dlen : 1);
    if (!hdr || !data) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory for a %llu-byte file", path,
                      (unsigned long long)size);
        goto cleanup;
    }
    if ((rc = read_full(fd, hdr, (size_t)h, path)) < 0 ||
        (rc = read_full(fd, data, dlen, path)) < 0)
        goto cleanup;
    rc = load(path, hdr, (size_t)h, data, dlen, out);
    data = NULL; /* owned by load now */
cleanup:
    if (fd >= 0)
        close(fd);
    free(hdr);
    free(data);
    return rc;
}

/* Tensors in the file. */
int tl_st_count(const tl_st *st) { return st->n; }

/* Tensor i in file order, or NULL if i is out of range. */
const tl_st_tensor *tl_st_get(const tl_st *st, int i) {
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

/* Binary search of key among n entries whose sorted order is order[] and whose
 * strings are reached through strs/stride. Returns the entry index or -1. */
static int lookup(const int *order, int n, const char *const *strs, size_t stride,
                  const char *key) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const char *s = *(const char *const *)((const char *)strs + (size_t)order[mid] * stride);
        int c = strcmp(key, s);
        if (c == 0)
            return order[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

/* The tensor called name, or NULL. O(log n). */
const tl_st_tensor *tl_st_find(const tl_st *st, const char *name) {
    if (st->n == 0)
        return NULL;
    int i = lookup(st->by_name, st->n, &st->t[0].name, sizeof st->t[0], name);
    return i < 0 ? NULL : &st->t[i];
}

/* The metadata value of key, or NULL. */
const char *tl_st_meta(const tl_st *st, const char *key) {
    if (st->n_meta == 0)
        return NULL;
    int i = lookup(st->meta_by_key, st->n_meta, &st->meta[0].key, sizeof st->meta[0], key);
    return i < 0 ? NULL : st->meta[i].value;
}

/* Metadata entries. */
int tl_st_meta_count(const tl_st *st) { return st->n_meta; }

/* Metadata entry i in file order, or NULL if out of range. */
const tl_st_kv *tl_st_meta_get(const tl_st *st, int i) {
    return i >= 0 && i < st->n_meta ? &st->meta[i] : NULL;
}

/* Frees st and everything it owns. NULL-safe. */
void tl_st_free(tl_st *st) {
    if (!st)
        return;
    if (st->copies)
        for (int i = 0; i < st->n; i++)
            free(st->copies[i]);
    free(st->copies);
    free(st->t);
    free(st->by_name);
    free(st->meta);
    free(st->meta_by_key);
    free(st->arena);
    free(st->data);
    free(st);
}

/* ---------------------------------------------------------------------------
 * Writing. */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

/* Appends n bytes (remembers an allocation failure instead of reporting it). */
static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Appends s as a JSON string literal (quotes, escapes of '"', '\\' and control
 * characters; other bytes as they are). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c == '\n') {
            sb_put(b, "\\n", 2);
        } else if (c == '\t') {
            sb_put(b, "\\t", 2);
        } else if (c == '\r') {
            sb_put(b, "\\r", 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Whether s is well-formed UTF-8. */
static int valid_utf8(const char *s) {
    const uint8_t *u = (const uint8_t *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);
        if (len == 0)
            return 0;
        i += len;
    }
    return 1;
}

/* Validates the writer's arguments: TL_EINVAL naming the first problem. */
static int check_write_args(const char *path, const tl_st_tensor *t, int n, const tl_st_kv *meta,
                            int n_meta) {
    if (n < 0 || n_meta < 0 || (n > 0 && !t) || (n_meta > 0 && !meta))
        return tl_error(TL_EINVAL, "%s: bad tensor or metadata list", path);
    for (int i = 0; i < n; i++) {
        int ok;
        if (!t[i].name || !valid_utf8(t[i].name) || strcmp(t[i].name, "__metadata__") == 0)
            return tl_error(TL_EINVAL, "%s: tensor %d has a bad name", path, i);
        if (dtype_size(t[i].dtype) == 0)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has an unknown dtype", path, t[i].name);
        if (t[i].rank < 0 || t[i].rank > TL_ST_MAX_RANK)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has rank %d", path, t[i].name, t[i].rank);
        for (int k = 0; k < t[i].rank; k++)
            if (t[i].shape[k] < 0)
                return tl_error(TL_EINVAL, "%s: tensor '%s' has a negative dimension", path,
                                t[i].name);
        size_t bytes = checked_bytes(t[i].dtype, t[i].rank, t[i].shape, &ok);
        if (!ok)
            return tl_error(TL_EINVAL, "%s: tensor '%s' is too large", path, t[i].name);
        if (bytes > 0 && !t[i].data)
            return tl_error(TL_EINVAL, "%s: tensor '%s' has no data", path, t[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return tl_error(TL_EINVAL, "%s: duplicate tensor name '%s'", path, t[i].name);
    }
    for (int i = 0; i < n_meta; i++) {
        if (!meta[i].key || !meta[i].value || !valid_utf8(meta[i].key) ||
            !valid_utf8(meta[i].value))
            return tl_error(TL_EINVAL, "%s: metadata entry %d is missing or not UTF-8", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(meta[j].key, meta[i].key) == 0)
                return tl_error(TL_EINVAL, "%s: duplicate metadata key '%s'", path, meta[i].key);
    }
    return 0;
}

/* Builds the header JSON (metadata first, then the tensors in order, data
 * offsets contiguous), padded with spaces to a multiple of 8 bytes. */
static int build_header(const char *path, const tl_st_tensor *t, int n, const tl_st_kv *meta,
                        int n_meta, sbuf *h, uint64_t *data_len) {
    char num[64];
    uint64_t off = 0;
    sb_str(h, "{");
    if (n_meta > 0) {
        sb_str(h, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i)
                sb_str(h, ",");
            sb_json_str(h, meta[i].key);
            sb_str(h, ":");
            sb_json_str(h, meta[i].value);
        }
        sb_str(h, "}");
    }
    for (int i = 0; i < n; i++) {
        int ok;
        size_t bytes = checked_bytes(t[i].dtype, t[i].rank, t[i].shape, &ok);
        if (n_meta > 0 || i > 0)
            sb_str(h, ",");
        sb_json_str(h, t[i].name);
        sb_str(h, ":{\"dtype\":\"");
        sb_str(h, dtype_name(t[i].dtype));
        sb_str(h, "\",\"shape\":[");
        for (int k = 0; k < t[i].rank; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
            sb_str(h, num);
        }
        if (off > UINT64_MAX - bytes)
            return tl_error(TL_EINVAL, "%s: tensors too large", path);
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + bytes));
        sb_str(h, num);
        off += bytes;
    }
    sb_str(h, "}");
    while (h->len % 8 != 0)
        sb_str(h, " ");
    if (h->oom)
        return tl_error(TL_ENOMEM, "%s: out of memory building the header", path);
    if (h->len > TL_ST_MAX_HEADER)
        return tl_error(TL_EINVAL, "%s: header of %zu bytes exceeds the format's limit", path,
                        h->len);
    *data_len = off;
    return 0;
}

/* Serializes the file into one malloc'd buffer (*out, *len bytes; caller
 * frees): the same bytes tl_st_write puts in a file. */
int tl_st_write_mem(const tl_st_tensor *tensors, int n, const tl_st_kv *meta, int n_meta,
                    uint8_t **out, size_t *len) {
    int rc;
    sbuf h = {0};
    uint64_t data_len;
    const char *what = "safetensors buffer";
    *out = NULL;
    *len = 0;
    if ((rc = check_write_args(what, tensors, n, meta, n_meta)) < 0)
        return rc;
    if ((rc = build_header(what, tensors, n, meta, n_meta, &h, &data_len)) < 0)
        goto cleanup;
    if (data_len > SIZE_MAX - 8 - h.len) {
        rc = tl_error(TL_ERANGE, "%s: too large for memory", what);
        goto cleanup;
    }
    uint8_t *buf = malloc(8 + h.len + (size_t)data_len);
    if (!buf) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory", what);
        goto cleanup;
    }
    for (int k = 0; k < 8; k++)
        buf[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
    memcpy(buf + 8, h.p, h.len);
    size_t off = 8 + h.len;
    for (int i = 0; i < n; i++) {
        int ok;
        size_t bytes = checked_bytes(tensors[i].dtype, tensors[i].rank, tensors[i].shape, &ok);
        if (bytes > 0)
            memcpy(buf + off, tensors[i].data, bytes);
        off += bytes;
    }
    *out = buf;
    *len = off;
cleanup:
    free(h.p);
    return rc;
}

/* Writes the file atomically through file.h (a temporary with a random name
 * in path's directory, fsync, rename over path, which replaces a link planted
 * at path instead of following it); on any failure path is left as it was. */
int tl_st_write(const char *path, const tl_st_tensor *tensors, int n, const tl_st_kv *meta,
                int n_meta) {
    int rc;
    sbuf h = {0};
    uint64_t data_len;
    uint8_t lenbuf[8];
    tl_file_w w;
    if ((rc = check_write_args(path, tensors, n, meta, n_meta)) < 0)
        return rc;
    if ((rc = build_header(path, tensors, n, meta, n_meta, &h, &data_len)) < 0)
        goto cleanup;
    if ((rc = tl_file_begin(&w, path, 0644, 0)) < 0)
        goto cleanup;
    for (int k = 0; k < 8; k++)
        lenbuf[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
    rc = tl_file_write(&w, lenbuf, 8);
    if (rc == 0)
        rc = tl_file_write(&w, h.p, h.len);
    for (int i = 0; rc == 0 && i < n; i++) {
        int ok;
        size_t bytes = checked_bytes(tensors[i].dtype, tensors[i].rank, tensors[i].shape, &ok);
        if (bytes > 0)
            rc = tl_file_write(&w, tensors[i].data, bytes);
    }
    (void)data_len;
    if (rc == 0)
        rc = tl_file_commit(&w);
    else
        tl_file_abort(&w);
cleanup:
    free(h.p);
    return rc;
}
