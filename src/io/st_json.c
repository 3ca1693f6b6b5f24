/* st_json.c - the safetensors header's JSON subset: objects, strings,
 * integers and arrays of integers only, parsed strictly (see st_int.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_int.h"
#include "tl/error.h"

/* Records a TL_EFORMAT message naming the file, the problem and the byte
 * position in the header; returns TL_EFORMAT. */
static int perr(st_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(st_parser *p, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return tl_error(TL_EFORMAT, "%s: bad safetensors header: %s (at byte %zu of the header)",
                    p->path, what, p->i);
}

/* Skips JSON whitespace. */
static void skip_ws(st_parser *p) {
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

/* The next non-space byte without consuming it, or -1 at the end. */
static int peek(st_parser *p) {
    skip_ws(p);
    return p->i < p->n ? p->s[p->i] : -1;
}

/* Consumes the byte c after optional whitespace, or fails. */
static int expect(st_parser *p, char c) {
    if (peek(p) != (unsigned char)c) return perr(p, "expected '%c'", c);
    p->i++;
    return 0;
}

/* Appends a byte to the string arena (sized so it cannot overflow on valid
 * input; checked anyway). */
static int put(st_parser *p, uint8_t c) {
    if (p->used >= p->cap) return perr(p, "string storage exhausted");
    p->arena[p->used++] = (char)c;
    return 0;
}

/* Value of one hex digit, or -1. */
static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses the 4 hex digits of a \u escape at p->i. */
static int parse_hex4(st_parser *p, uint32_t *out) {
    uint32_t v = 0;
    if (p->n - p->i < 4) return perr(p, "truncated \\u escape");
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + k]);
        if (h < 0) return perr(p, "bad hex digit in \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* Appends code point cp (valid, not a surrogate, not NUL) as UTF-8. */
static int put_utf8(st_parser *p, uint32_t cp) {
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

/* Contract in st_int.h. */
size_t tl__st_utf8_len(const uint8_t *s, size_t avail) {
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) len = 3;
    else if (c >= 0xf0 && c <= 0xf4) len = 4;
    else return 0;
    if (c == 0xe0) lo = 0xa0;
    else if (c == 0xed) hi = 0x9f;
    else if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;
    if (avail < len || s[1] < lo || s[1] > hi) return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xbf) return 0;
    return len;
}

/* Parses a JSON string into the arena; *out is its NUL-terminated text.
 * Rejects raw control characters, bad escapes, invalid UTF-8 and NUL. */
static int parse_string(st_parser *p, const char **out) {
    int rc;
    if ((rc = expect(p, '"')) < 0) return rc;
    char *start = p->arena + p->used;
    for (;;) {
        if (p->i >= p->n) return perr(p, "unterminated string");
        uint8_t c = p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c < 0x20) return perr(p, "control character 0x%02x in a string", c);
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n) return perr(p, "unterminated string");
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
                if ((rc = parse_hex4(p, &cp)) < 0) return rc;
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return perr(p, "unpaired low surrogate in \\u escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    uint32_t lo;
                    if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
                        return perr(p, "unpaired high surrogate in \\u escape");
                    p->i += 2;
                    if ((rc = parse_hex4(p, &lo)) < 0) return rc;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return perr(p, "unpaired high surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (cp == 0) return perr(p, "NUL character (\\u0000) in a string");
                rc = put_utf8(p, cp);
                break;
            default:
                p->i--;
                return perr(p, "bad escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? e : '?');
            }
            if (rc < 0) return rc;
            continue;
        }
        size_t len = tl__st_utf8_len(p->s + p->i, p->n - p->i);
        if (len == 0) return perr(p, "invalid UTF-8 in a string");
        for (size_t k = 0; k < len; k++)
            if ((rc = put(p, p->s[p->i + k])) < 0) return rc;
        p->i += len;
    }
    if ((rc = put(p, '\0')) < 0) return rc;
    *out = start;
    return 0;
}

/* Parses a JSON integer (optional '-', no leading zeros, no fraction or
 * exponent) that fits in int64_t. */
static int parse_int(st_parser *p, int64_t *out) {
    int neg = 0;
    uint64_t v = 0;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '-') {
        neg = 1;
        p->i++;
    }
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return perr(p, "expected an integer");
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return perr(p, "integer with a leading zero");
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        uint64_t d = (uint64_t)(p->s[p->i] - '0');
        if (v > ((uint64_t)INT64_MAX - d) / 10) return perr(p, "integer too large");
        v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return perr(p, "expected an integer, found a fractional number");
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 0;
}

/* Parses an array of at most max integers into out[], *count set. */
static int parse_int_array(st_parser *p, int64_t *out, int max, int *count, const char *what,
                           const char *name) {
    int rc;
    *count = 0;
    if (peek(p) != '[') return perr(p, "tensor '%s': %s is not an array", name, what);
    p->i++;
    if (peek(p) == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        if (*count == max)
            return perr(p, "tensor '%s': %s has more than %d entries", name, what, max);
        if ((rc = parse_int(p, &out[*count])) < 0) return rc;
        (*count)++;
        int c = peek(p);
        p->i++;
        if (c == ']') return 0;
        if (c != ',') {
            p->i--;
            return perr(p, "tensor '%s': expected ',' or ']' in %s", name, what);
        }
    }
}

/* After an object member: consumes ',' (returns 1: more) or '}' (returns 0). */
static int member_end(st_parser *p) {
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
static int parse_metadata(st_parser *p) {
    int rc;
    if (p->seen_meta) return perr(p, "duplicate key '__metadata__'");
    p->seen_meta = 1;
    if (peek(p) != '{') return perr(p, "__metadata__ is not an object");
    p->i++;
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        const char *key, *val;
        if ((rc = parse_string(p, &key)) < 0) return rc;
        if ((rc = expect(p, ':')) < 0) return rc;
        if (peek(p) != '"') return perr(p, "metadata value of '%s' is not a string", key);
        if ((rc = parse_string(p, &val)) < 0) return rc;
        if (p->n_meta == p->cap_meta) {
            int cap = p->cap_meta ? 2 * p->cap_meta : 16;
            tl_st_kv *m = realloc(p->meta, (size_t)cap * sizeof *m);
            if (!m) return tl_error(TL_ENOMEM, "%s: out of memory reading the header", p->path);
            p->meta = m;
            p->cap_meta = cap;
        }
        p->meta[p->n_meta].key = key;
        p->meta[p->n_meta].value = val;
        p->n_meta++;
        if ((rc = member_end(p)) <= 0) return rc;
    }
}

/* Parses one tensor's description {"dtype","shape","data_offsets"}: each key
 * exactly once, nothing else. */
static int parse_tensor(st_parser *p, const char *name) {
    int rc, have_dtype = 0, have_shape = 0, have_offsets = 0;
    tl_st_tensor t = {0};
    int64_t off[2] = {0, 0};
    t.name = name;
    if (peek(p) != '{') return perr(p, "tensor '%s': description is not an object", name);
    p->i++;
    if (peek(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            const char *key;
            if ((rc = parse_string(p, &key)) < 0) return rc;
            if ((rc = expect(p, ':')) < 0) return rc;
            if (strcmp(key, "dtype") == 0) {
                const char *dt;
                if (have_dtype++) return perr(p, "tensor '%s': duplicate key 'dtype'", name);
                if (peek(p) != '"') return perr(p, "tensor '%s': dtype is not a string", name);
                if ((rc = parse_string(p, &dt)) < 0) return rc;
                if (strcmp(dt, "F32") == 0) t.dtype = TL_ST_F32;
                else if (strcmp(dt, "I64") == 0) t.dtype = TL_ST_I64;
                else
                    return perr(p, "tensor '%s': unsupported dtype '%.32s' (F32 and I64 only)",
                                name, dt);
            } else if (strcmp(key, "shape") == 0) {
                if (have_shape++) return perr(p, "tensor '%s': duplicate key 'shape'", name);
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
                if ((rc = parse_int_array(p, off, 2, &cnt, "data_offsets", name)) < 0) return rc;
                if (cnt != 2) return perr(p, "tensor '%s': data_offsets must have 2 entries", name);
                if (off[0] < 0 || off[1] < 0)
                    return perr(p, "tensor '%s': negative data offset", name);
            } else {
                return perr(p, "tensor '%s': unknown key '%.32s'", name, key);
            }
            if ((rc = member_end(p)) < 0) return rc;
            if (rc == 0) break;
        }
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return perr(p, "tensor '%s': missing '%s'", name,
                    !have_dtype   ? "dtype"
                    : !have_shape ? "shape"
                                  : "data_offsets");
    if (p->n_t == p->cap_t) {
        if (p->cap_t > INT32_MAX / 2) return perr(p, "too many tensors");
        int cap = p->cap_t ? 2 * p->cap_t : 64;
        tl_st_tensor *nt = realloc(p->t, (size_t)cap * sizeof *nt);
        if (nt) p->t = nt;
        st_span *ns = nt ? realloc(p->span, (size_t)cap * sizeof *ns) : NULL;
        if (!ns) return tl_error(TL_ENOMEM, "%s: out of memory reading the header", p->path);
        p->span = ns;
        p->cap_t = cap;
    }
    p->t[p->n_t] = t;
    p->span[p->n_t].begin = (uint64_t)off[0];
    p->span[p->n_t].end = (uint64_t)off[1];
    p->n_t++;
    return 0;
}

/* Contract in st_int.h. */
int tl__st_parse_header(st_parser *p) {
    int rc;
    if (peek(p) != '{') return perr(p, "the header is not a JSON object");
    p->i++;
    if (peek(p) == '}') {
        p->i++;
    } else {
        for (;;) {
            const char *key;
            if (peek(p) != '"') return perr(p, "expected a string key");
            if ((rc = parse_string(p, &key)) < 0) return rc;
            if ((rc = expect(p, ':')) < 0) return rc;
            if (strcmp(key, "__metadata__") == 0) rc = parse_metadata(p);
            else rc = parse_tensor(p, key);
            if (rc < 0) return rc;
            if ((rc = member_end(p)) < 0) return rc;
            if (rc == 0) break;
        }
    }
    skip_ws(p);
    if (p->i != p->n) return perr(p, "trailing characters after the header object");
    return 0;
}
