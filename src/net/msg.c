/* msg.c - message encode/decode and receiver-side validation (msg.h). */
#include "tl/msg.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/finite.h"
#include "tl/le.h"

static_assert(TL_MSG_CHECKPOINT == TL_FRAME_TYPE_MAX, "frame.h knows every message type");
static_assert(TL_MSG_MAX_IOV <= TL_FRAME_MAX_IOV, "a message fits in one frame's iovecs");

size_t tl_dtype_size(int dtype) {
    switch (dtype) {
    case TL_DT_F32: return 4;
    case TL_DT_I64: return 8;
    case TL_DT_U32: return 4;
    case TL_DT_I32: return 4;
    case TL_DT_F64: return 8;
    case TL_DT_U64: return 8;
    case TL_DT_U8: return 1;
    default: return 0;
    }
}

static const char *dtype_name(int dtype) {
    switch (dtype) {
    case TL_DT_F32: return "f32";
    case TL_DT_I64: return "i64";
    case TL_DT_U32: return "u32";
    case TL_DT_I32: return "i32";
    case TL_DT_F64: return "f64";
    case TL_DT_U64: return "u64";
    case TL_DT_U8: return "u8";
    default: return "dtype?";
    }
}

const char *tl_msg_type_name(int type) {
    // clang-format off
    static const char *names[] = {NULL,          "HELLO",          "WELCOME",  "REJECT",
                                  "FORWARD",     "FORWARD_RESULT", "BACKWARD", "BACKWARD_RESULT",
                                  "HEARTBEAT",   "DONE",           "ERROR",    "READY",
                                  "STATS_REQUEST", "STATS",        "EVAL",     "EVAL_RESULT",
                                  "SEALED_STEP", "PARAM_MAC",      "FINAL",
                                  "STATE_REQUEST", "STATE_BLOB",   "CHECKPOINT"};
    // clang-format on
    static_assert(sizeof names / sizeof names[0] == TL_MSG_CHECKPOINT + 1, "a name per type");
    static _Thread_local char other[24];
    if (type >= 1 && type <= TL_MSG_CHECKPOINT) return names[type];
    snprintf(other, sizeof other, "type %d", type);
    return other;
}

/* "f32 [64, 128]" into buf. */
static const char *shape_str(char *buf, size_t n, int dtype, int rank, const uint32_t *dims) {
    int k = snprintf(buf, n, "%s [", dtype_name(dtype));
    for (int i = 0; i < rank && k > 0 && (size_t)k < n; i++)
        k += snprintf(buf + k, n - k, i ? ", %u" : "%u", dims[i]);
    if (k > 0 && (size_t)k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* Product of dims times the element size, or 0 with *ok = 0 on overflow. */
static uint64_t data_bytes(int rank, const uint32_t *dims, size_t esz, uint64_t *numel, int *ok) {
    uint64_t p = 1;
    *ok = 1;
    for (int i = 0; i < rank; i++) {
        if (__builtin_mul_overflow(p, (uint64_t)dims[i], &p)) {
            *ok = 0;
            return 0;
        }
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(p, (uint64_t)esz, &bytes)) {
        *ok = 0;
        return 0;
    }
    *numel = p;
    return bytes;
}

/* WELCOME's protocol-3 fields agree with each other and input_dim: the
 * norm kind, the descriptor lengths, the sample shape. 0 or code naming the
 * field (TL_EINVAL on encode, TL_EPROTO on decode). */
static int welcome_check(const tl_msg_welcome *w, int code) {
    const uint64_t nm = w->mean_f.dtype ? w->mean_f.numel : 0,
                   ns = w->std_f.dtype ? w->std_f.numel : 0;
    if (w->norm > TL_WELCOME_NORM_FEATURE)
        return tl_error(code, "WELCOME: unknown norm %u", w->norm);
    if (w->norm == TL_WELCOME_NORM_SCALAR && (nm || ns))
        return tl_error(code, "WELCOME: scalar norm with per-feature arrays (%llu, %llu)",
                        (unsigned long long)nm, (unsigned long long)ns);
    if (w->norm == TL_WELCOME_NORM_FEATURE && (nm != w->input_dim || ns != w->input_dim))
        return tl_error(code,
                        "WELCOME: per-feature norm needs mean_f and std_f of input_dim "
                        "%u, got %llu and %llu",
                        w->input_dim, (unsigned long long)nm, (unsigned long long)ns);
    uint64_t p = (uint64_t)w->shape[0] * w->shape[1] * w->shape[2];
    if (w->rank == 0 && (w->shape[0] || w->shape[1] || w->shape[2]))
        return tl_error(code, "WELCOME: a shape without a rank");
    if (w->rank == 1 && (w->shape[0] != w->input_dim || w->shape[1] || w->shape[2]))
        return tl_error(code, "WELCOME: rank-1 shape [%u] is not input_dim %u", w->shape[0],
                        w->input_dim);
    if (w->rank == 3 && p != w->input_dim)
        return tl_error(code, "WELCOME: shape [%u, %u, %u] does not make input_dim %u", w->shape[0],
                        w->shape[1], w->shape[2], w->input_dim);
    if (w->rank != 0 && w->rank != 1 && w->rank != 3)
        return tl_error(code, "WELCOME: sample rank %u (must be 0, 1 or 3)", w->rank);
    return 0;
}

/* ---------------------------------------------------------------- encode */

typedef struct packer {
    tl_msg_enc *e;
    size_t piece; /* start in e->buf of the piece being filled */
    int rc;
} packer;

static void put_bytes(packer *k, const void *p, size_t n) {
    tl_msg_enc *e = k->e;
    if (k->rc) return;
    if (n > sizeof e->buf - e->used) {
        k->rc = tl_error(TL_ERANGE, "%s: fixed fields over %zu bytes", tl_msg_type_name(e->type),
                         sizeof e->buf);
        return;
    }
    memcpy(e->buf + e->used, p, n);
    e->used += n;
    e->len += n;
}

static void put_u8(packer *k, uint8_t v) { put_bytes(k, &v, 1); }
static void put_u16(packer *k, uint16_t v) {
    uint8_t b[2];
    tl_le_store16(b, v);
    put_bytes(k, b, 2);
}
static void put_u32(packer *k, uint32_t v) {
    uint8_t b[4];
    tl_le_store32(b, v);
    put_bytes(k, b, 4);
}
static void put_u64(packer *k, uint64_t v) {
    uint8_t b[8];
    tl_le_store64(b, v);
    put_bytes(k, b, 8);
}
static void put_f32(packer *k, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(k, u);
}
static void put_f64(packer *k, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(k, u);
}

static void put_str(packer *k, const char *s, const char *field) {
    if (k->rc) return;
    size_t n = strnlen(s, TL_MSG_STR_MAX + 1);
    if (n > TL_MSG_STR_MAX) {
        k->rc = tl_error(TL_ERANGE, "%s: %s longer than %d bytes", tl_msg_type_name(k->e->type),
                         field, TL_MSG_STR_MAX);
        return;
    }
    put_u32(k, (uint32_t)n);
    put_bytes(k, s, n);
}

/* Ends the current buf piece (if any bytes) as an iovec. */
static void close_piece(packer *k) {
    tl_msg_enc *e = k->e;
    if (k->rc || e->used == k->piece) return;
    if (e->iovcnt >= TL_MSG_MAX_IOV) {
        k->rc = tl_error(TL_ERANGE, "%s: too many pieces", tl_msg_type_name(e->type));
        return;
    }
    e->iov[e->iovcnt++] = (struct iovec){e->buf + k->piece, e->used - k->piece};
    k->piece = e->used;
}

/* Tensor header, padding to 8 from the payload start, then the caller's data
 * as its own iovec. dtype/rank are the field's required ones. */
static void put_tensor(packer *k, const tl_tensor *t, int dtype, int rank, const char *field) {
    tl_msg_enc *e = k->e;
    const char *mn = tl_msg_type_name(e->type);
    if (k->rc) return;
    if (t->dtype != dtype || t->rank != rank) {
        k->rc = tl_error(TL_EINVAL, "%s: %s must be %s rank %d, got %s rank %u", mn, field,
                         dtype_name(dtype), rank, dtype_name(t->dtype), t->rank);
        return;
    }
    uint64_t numel = 0;
    int ok;
    uint64_t bytes = data_bytes(rank, t->dims, tl_dtype_size(dtype), &numel, &ok);
    if (!ok || bytes > TL_FRAME_MAX_PAYLOAD) {
        k->rc = tl_error(TL_ERANGE, "%s: %s is larger than a frame", mn, field);
        return;
    }
    if (numel != t->numel) {
        k->rc = tl_error(TL_EINVAL, "%s: %s: numel %llu is not the product of its dims (%llu)", mn,
                         field, (unsigned long long)t->numel, (unsigned long long)numel);
        return;
    }
    if (numel > 0 && !t->data) {
        k->rc = tl_error(TL_EINVAL, "%s: %s: NULL data", mn, field);
        return;
    }
    put_u8(k, (uint8_t)dtype);
    put_u8(k, (uint8_t)rank);
    put_u16(k, 0);
    for (int i = 0; i < rank; i++) put_u32(k, t->dims[i]);
    static const uint8_t zeros[8];
    put_bytes(k, zeros, (size_t)((8 - (e->len & 7)) & 7));
    if (bytes == 0 || k->rc) return;
    close_piece(k);
    if (k->rc) return;
    if (e->iovcnt >= TL_MSG_MAX_IOV) {
        k->rc = tl_error(TL_ERANGE, "%s: too many pieces", mn);
        return;
    }
    e->iov[e->iovcnt++] = (struct iovec){(void *)t->data, (size_t)bytes};
    e->len += bytes;
}

int tl_msg_encode(const tl_msg *m, tl_msg_enc *e) {
    e->type = m->type;
    e->iovcnt = 0;
    e->len = 0;
    e->used = 0;
    packer k = {e, 0, 0};
    const char *mn = tl_msg_type_name(m->type);
    switch (m->type) {
    case TL_MSG_HELLO: {
        const tl_msg_hello *h = &m->u.hello;
        put_u32(&k, h->node_id);
        put_u16(&k, h->proto_version);
        put_u16(&k, h->flags);
        put_u64(&k, h->sample_count);
        put_u64(&k, h->fingerprint);
        put_str(&k, h->version, "software version");
        if (h->proto_version >= 3) {
            put_u32(&k, h->classes);
            put_u32(&k, h->elem);
            put_u32(&k, h->rank);
            for (int i = 0; i < 3; i++) put_u32(&k, h->shape[i]);
            put_u64(&k, h->test_count);
            put_u64(&k, h->labels_hash);
            put_u32(&k, h->privacy);
            put_u32(&k, 0);
            put_bytes(&k, h->key_id, sizeof h->key_id);
        }
        break;
    }
    case TL_MSG_WELCOME: {
        const tl_msg_welcome *w = &m->u.welcome;
        if (w->flags & ~(TL_WELCOME_F_ZSTD | TL_WELCOME_F_SHM))
            return tl_error(TL_EINVAL, "WELCOME: unknown flags 0x%x", w->flags);
        if (w->mode > 1) return tl_error(TL_EINVAL, "WELCOME: unknown mode %u", w->mode);
        if (w->privacy > TL_PRIVACY_SEALED)
            return tl_error(TL_EINVAL, "WELCOME: unknown privacy %u", w->privacy);
        put_u64(&k, w->run_id);
        put_u32(&k, w->flags);
        put_u32(&k, w->cut);
        put_u32(&k, w->mode);
        put_u32(&k, w->n_classes);
        put_u32(&k, w->input_dim);
        put_f32(&k, w->mean);
        put_f32(&k, w->std);
        put_u32(&k, w->heartbeat_ms);
        int rc = welcome_check(w, TL_EINVAL);
        if (rc < 0) return rc;
        put_str(&k, w->model, "model");
        put_u32(&k, w->norm);
        put_u32(&k, w->rank);
        for (int i = 0; i < 3; i++) put_u32(&k, w->shape[i]);
        put_u32(&k, w->privacy);
        put_u32(&k, w->mac_every);
        put_u32(&k, w->opt_kind);
        put_u32(&k, w->opt_nesterov);
        put_f64(&k, w->opt_lr);
        put_f64(&k, w->opt_rho);
        put_f64(&k, w->opt_eps);
        put_f64(&k, w->opt_momentum);
        put_f64(&k, w->opt_dampening);
        put_f64(&k, w->opt_weight_decay);
        put_f64(&k, w->opt_beta1);
        put_f64(&k, w->opt_beta2);
        put_u64(&k, w->opt_steps);
        tl_tensor none = tl_tensor_1d(TL_DT_F32, NULL, 0);
        put_tensor(&k, w->mean_f.dtype ? &w->mean_f : &none, TL_DT_F32, 1, "mean_f");
        put_tensor(&k, w->std_f.dtype ? &w->std_f : &none, TL_DT_F32, 1, "std_f");
        break;
    }
    case TL_MSG_REJECT:
        put_u32(&k, m->u.reject.code);
        put_str(&k, m->u.reject.reason, "reason");
        break;
    case TL_MSG_FORWARD:
        put_u64(&k, m->u.forward.step);
        put_tensor(&k, &m->u.forward.rows, TL_DT_U32, 1, "rows");
        put_tensor(&k, &m->u.forward.params, TL_DT_F32, 1, "params");
        break;
    case TL_MSG_FORWARD_RESULT: {
        const tl_msg_forward_result *r = &m->u.fwd_result;
        int has_g = r->g.dtype != 0, has_l = r->labels.dtype != 0;
        if (has_g == has_l)
            return tl_error(TL_EINVAL, "FORWARD_RESULT: needs exactly one of g and labels");
        uint32_t n2 = has_g ? r->g.dims[0] : r->labels.dims[0];
        if (r->h.rank >= 1 && n2 != r->h.dims[0])
            return tl_error(TL_EINVAL, "FORWARD_RESULT: h has %u rows but %s has %u", r->h.dims[0],
                            has_g ? "g" : "labels", n2);
        put_u64(&k, r->step);
        put_f64(&k, r->loss_sum);
        put_u32(&k, r->correct);
        put_u32(&k, 0);
        put_tensor(&k, &r->h, TL_DT_F32, 2, "h");
        if (has_g) put_tensor(&k, &r->g, TL_DT_F32, 2, "g");
        else put_tensor(&k, &r->labels, TL_DT_I32, 1, "labels");
        break;
    }
    case TL_MSG_BACKWARD:
        put_u64(&k, m->u.backward.step);
        put_u32(&k, m->u.backward.attempt);
        put_u32(&k, 0);
        put_tensor(&k, &m->u.backward.dh, TL_DT_F32, 2, "dh");
        { /* open mode callers may leave it unset: U32 [0] */
            const tl_tensor none = tl_tensor_1d(TL_DT_U32, NULL, 0);
            const tl_tensor *pt = m->u.backward.participants.dtype ? &m->u.backward.participants
                                                                   : &none;
            put_tensor(&k, pt, TL_DT_U32, 1, "participants");
        }
        break;
    case TL_MSG_BACKWARD_RESULT:
        put_u64(&k, m->u.bwd_result.step);
        put_tensor(&k, &m->u.bwd_result.grads,
                   m->u.bwd_result.grads.dtype == TL_DT_U64 ? TL_DT_U64 : TL_DT_F32, 1, "grads");
        break;
    case TL_MSG_SEALED_STEP: {
        const tl_msg_sealed_step *q = &m->u.sealed_step;
        put_u64(&k, q->step);
        put_u32(&k, q->attempt);
        put_u32(&k, q->flags);
        put_f64(&k, q->lr);
        put_tensor(&k, &q->participants, TL_DT_U32, 1, "participants");
        put_tensor(&k, &q->sum, TL_DT_U64, 1, "sum");
        break;
    }
    case TL_MSG_PARAM_MAC:
        put_u64(&k, m->u.param_mac.step);
        put_bytes(&k, m->u.param_mac.mac, sizeof m->u.param_mac.mac);
        break;
    case TL_MSG_FINAL:
        put_u64(&k, m->u.final.step);
        put_tensor(&k, &m->u.final.params, TL_DT_F32, 1, "params");
        break;
    case TL_MSG_HEARTBEAT: put_u64(&k, m->u.heartbeat.nonce); break;
    case TL_MSG_DONE: put_str(&k, m->u.done.reason, "reason"); break;
    case TL_MSG_ERROR:
        put_u32(&k, m->u.error.code);
        put_str(&k, m->u.error.message, "message");
        break;
    case TL_MSG_READY:
        put_u64(&k, m->u.ready.run_id);
        put_u64(&k, m->u.ready.state_step);
        break;
    case TL_MSG_STATE_REQUEST:
        put_u64(&k, m->u.state_request.step);
        put_u32(&k, m->u.state_request.to);
        put_u32(&k, 0);
        break;
    case TL_MSG_STATE_BLOB:
        put_u64(&k, m->u.state_blob.step);
        put_u32(&k, m->u.state_blob.from);
        put_u32(&k, m->u.state_blob.to);
        put_tensor(&k, &m->u.state_blob.blob, TL_DT_U8, 1, "blob");
        break;
    case TL_MSG_CHECKPOINT: put_u64(&k, m->u.checkpoint.step); break;
    case TL_MSG_STATS_REQUEST:
        if (m->u.stats_request.what != TL_STATS_NORM)
            return tl_error(TL_EINVAL, "STATS_REQUEST: unknown what %u", m->u.stats_request.what);
        put_u32(&k, m->u.stats_request.what);
        put_u32(&k, 0);
        break;
    case TL_MSG_STATS: {
        const tl_msg_stats *st = &m->u.stats;
        if (st->sum.dims[0] != st->sumsq.dims[0])
            return tl_error(TL_EINVAL, "STATS: sum has %u features, sumsq %u", st->sum.dims[0],
                            st->sumsq.dims[0]);
        put_u64(&k, st->count);
        put_tensor(&k, &st->sum, TL_DT_F64, 1, "sum");
        put_tensor(&k, &st->sumsq, TL_DT_F64, 1, "sumsq");
        break;
    }
    case TL_MSG_EVAL:
        put_u64(&k, m->u.eval.step);
        put_u32(&k, m->u.eval.bins);
        put_u32(&k, 0);
        put_tensor(&k, &m->u.eval.params, TL_DT_F32, 1, "params");
        break;
    case TL_MSG_EVAL_RESULT:
        put_u64(&k, m->u.eval_result.step);
        put_tensor(&k, &m->u.eval_result.stats, TL_DT_U64, 1, "stats");
        break;
    default: return tl_error(TL_EINVAL, "cannot encode %s", mn);
    }
    close_piece(&k);
    return k.rc;
}

int tl_msg_start(tl_frame_writer *w, tl_msg_enc *e, const tl_msg *m) {
    int rc = tl_msg_encode(m, e);
    if (rc < 0) return rc;
    return tl_frame_writer_start(w, e->type, e->iov, e->iovcnt);
}

int tl_msg_send(tl_conn *c, tl_frame_writer *w, const tl_msg *m, int64_t deadline_ms) {
    tl_msg_enc *e = malloc(sizeof *e);
    if (!e) return tl_error(TL_ENOMEM, "out of memory encoding %s", tl_msg_type_name(m->type));
    int rc = tl_msg_encode(m, e);
    if (rc == 0) rc = tl_frame_send(w, c, e->type, e->iov, e->iovcnt, deadline_ms);
    free(e);
    return rc;
}

/* ---------------------------------------------------------------- decode */

typedef struct cursor {
    const uint8_t *p;
    uint64_t len, off;
    const char *mn; /* message name for errors */
} cursor;

/* 0 if n more bytes remain, else TL_EPROTO naming field. */
static int need(cursor *c, uint64_t n, const char *field) {
    if (n > c->len - c->off)
        return tl_error(TL_EPROTO, "%s: %s needs %llu bytes at offset %llu but only %llu remain",
                        c->mn, field, (unsigned long long)n, (unsigned long long)c->off,
                        (unsigned long long)(c->len - c->off));
    return 0;
}

static int get_u16(cursor *c, uint16_t *v, const char *field) {
    int rc = need(c, 2, field);
    if (rc < 0) return rc;
    *v = tl_le_load16(c->p + c->off);
    c->off += 2;
    return 0;
}
static int get_u32(cursor *c, uint32_t *v, const char *field) {
    int rc = need(c, 4, field);
    if (rc < 0) return rc;
    *v = tl_le_load32(c->p + c->off);
    c->off += 4;
    return 0;
}
static int get_u64(cursor *c, uint64_t *v, const char *field) {
    int rc = need(c, 8, field);
    if (rc < 0) return rc;
    *v = tl_le_load64(c->p + c->off);
    c->off += 8;
    return 0;
}
static int get_f32(cursor *c, float *v, const char *field) {
    uint32_t u;
    int rc = get_u32(c, &u, field);
    if (rc == 0) memcpy(v, &u, 4);
    return rc;
}
static int get_f64(cursor *c, double *v, const char *field) {
    uint64_t u;
    int rc = get_u64(c, &u, field);
    if (rc == 0) memcpy(v, &u, 8);
    return rc;
}

/* u32 length + bytes into out[TL_MSG_STR_MAX + 1], NUL-terminated. */
static int get_str(cursor *c, char *out, const char *field) {
    uint32_t n;
    int rc = get_u32(c, &n, field);
    if (rc < 0) return rc;
    if (n > TL_MSG_STR_MAX)
        return tl_error(TL_EPROTO, "%s: %s of %u bytes is over the %d-byte limit", c->mn, field, n,
                        TL_MSG_STR_MAX);
    if ((rc = need(c, n, field)) < 0) return rc;
    if (memchr(c->p + c->off, 0, n))
        return tl_error(TL_EPROTO, "%s: %s contains a NUL byte", c->mn, field);
    memcpy(out, c->p + c->off, n);
    out[n] = 0;
    c->off += n;
    return 0;
}

/* A tensor whose dtype and rank must be (dtype, rank); dtype2/rank2 is an
 * accepted alternative (0: none). The view points into the payload. */
static int get_tensor(cursor *c, tl_tensor *t, const char *field, int dtype, int rank, int dtype2,
                      int rank2) {
    memset(t, 0, sizeof *t);
    int rc = need(c, 4, field);
    if (rc < 0) return rc;
    const uint8_t *h = c->p + c->off;
    int dt = h[0], rk = h[1];
    if (!tl_dtype_size(dt))
        return tl_error(TL_EPROTO, "%s: %s has unknown dtype %d", c->mn, field, dt);
    if (rk < 1 || rk > TL_TENSOR_MAX_RANK)
        return tl_error(TL_EPROTO, "%s: %s has rank %d (must be 1..%d)", c->mn, field, rk,
                        TL_TENSOR_MAX_RANK);
    if (h[2] || h[3]) return tl_error(TL_EPROTO, "%s: %s has nonzero reserved bytes", c->mn, field);
    if (!((dt == dtype && rk == rank) || (dtype2 && dt == dtype2 && rk == rank2))) {
        if (dtype2)
            return tl_error(TL_EPROTO, "%s: %s must be %s rank %d or %s rank %d, got %s rank %d",
                            c->mn, field, dtype_name(dtype), rank, dtype_name(dtype2), rank2,
                            dtype_name(dt), rk);
        return tl_error(TL_EPROTO, "%s: %s must be %s rank %d, got %s rank %d", c->mn, field,
                        dtype_name(dtype), rank, dtype_name(dt), rk);
    }
    c->off += 4;
    if ((rc = need(c, 4 * (uint64_t)rk, field)) < 0) return rc;
    t->dtype = (uint8_t)dt;
    t->rank = (uint8_t)rk;
    for (int i = 0; i < rk; i++) t->dims[i] = tl_le_load32(c->p + c->off + 4 * i);
    c->off += 4 * (uint64_t)rk;
    uint64_t pad = (8 - (c->off & 7)) & 7;
    if ((rc = need(c, pad, field)) < 0) return rc;
    for (uint64_t i = 0; i < pad; i++)
        if (c->p[c->off + i])
            return tl_error(TL_EPROTO, "%s: %s has nonzero padding", c->mn, field);
    c->off += pad;
    int ok;
    uint64_t bytes = data_bytes(rk, t->dims, tl_dtype_size(dt), &t->numel, &ok);
    if (!ok) return tl_error(TL_EPROTO, "%s: %s: the product of its dims overflows", c->mn, field);
    if (bytes > c->len - c->off)
        return tl_error(TL_EPROTO,
                        "%s: %s: %llu data bytes at offset %llu run past the end of the "
                        "payload (%llu remain)",
                        c->mn, field, (unsigned long long)bytes, (unsigned long long)c->off,
                        (unsigned long long)(c->len - c->off));
    t->data = c->p + c->off;
    c->off += bytes;
    return 0;
}

int tl_msg_decode_payload(uint16_t type, const void *payload, uint64_t len, tl_msg *m) {
    if (((uintptr_t)payload & 7) != 0)
        return tl_error(TL_EINVAL, "payload buffer is not 8-byte aligned");
    cursor c = {payload, len, 0, tl_msg_type_name(type)};
    int rc = 0;
    m->type = type;
#define TRY(x)                         \
    do {                               \
        if ((rc = (x)) < 0) return rc; \
    } while (0)
    switch (type) {
    case TL_MSG_HELLO: {
        tl_msg_hello *h = &m->u.hello;
        TRY(get_u32(&c, &h->node_id, "node_id"));
        TRY(get_u16(&c, &h->proto_version, "proto_version"));
        TRY(get_u16(&c, &h->flags, "flags"));
        TRY(get_u64(&c, &h->sample_count, "sample_count"));
        TRY(get_u64(&c, &h->fingerprint, "fingerprint"));
        TRY(get_str(&c, h->version, "software version"));
        h->classes = h->elem = h->rank = 0;
        h->shape[0] = h->shape[1] = h->shape[2] = 0;
        h->test_count = h->labels_hash = 0;
        h->privacy = 0;
        memset(h->key_id, 0, sizeof h->key_id);
        if (h->proto_version > TL_PROTO_VERSION) {
            /* a newer node: what follows is its business; the receiver refuses
             * it by proto_version (§9) */
            c.off = c.len;
        } else if (h->proto_version >= 3) {
            TRY(get_u32(&c, &h->classes, "classes"));
            TRY(get_u32(&c, &h->elem, "elem"));
            TRY(get_u32(&c, &h->rank, "rank"));
            for (int i = 0; i < 3; i++) TRY(get_u32(&c, &h->shape[i], "shape"));
            TRY(get_u64(&c, &h->test_count, "test_count"));
            TRY(get_u64(&c, &h->labels_hash, "labels_hash"));
            uint32_t pad;
            TRY(get_u32(&c, &h->privacy, "privacy"));
            TRY(get_u32(&c, &pad, "pad"));
            if (pad) return tl_error(TL_EPROTO, "HELLO: nonzero pad field");
            TRY(need(&c, sizeof h->key_id, "key_id"));
            memcpy(h->key_id, c.p + c.off, sizeof h->key_id);
            c.off += sizeof h->key_id;
            if (h->privacy > TL_PRIVACY_SEALED)
                return tl_error(TL_EPROTO, "HELLO: unknown privacy %u", h->privacy);
        }
        break;
    }
    case TL_MSG_WELCOME: {
        tl_msg_welcome *w = &m->u.welcome;
        TRY(get_u64(&c, &w->run_id, "run_id"));
        TRY(get_u32(&c, &w->flags, "flags"));
        TRY(get_u32(&c, &w->cut, "cut"));
        TRY(get_u32(&c, &w->mode, "mode"));
        TRY(get_u32(&c, &w->n_classes, "n_classes"));
        TRY(get_u32(&c, &w->input_dim, "input_dim"));
        TRY(get_f32(&c, &w->mean, "mean"));
        TRY(get_f32(&c, &w->std, "std"));
        TRY(get_u32(&c, &w->heartbeat_ms, "heartbeat_ms"));
        TRY(get_str(&c, w->model, "model"));
        TRY(get_u32(&c, &w->norm, "norm"));
        TRY(get_u32(&c, &w->rank, "rank"));
        for (int i = 0; i < 3; i++) TRY(get_u32(&c, &w->shape[i], "shape"));
        TRY(get_u32(&c, &w->privacy, "privacy"));
        TRY(get_u32(&c, &w->mac_every, "mac_every"));
        TRY(get_u32(&c, &w->opt_kind, "opt_kind"));
        TRY(get_u32(&c, &w->opt_nesterov, "opt_nesterov"));
        TRY(get_f64(&c, &w->opt_lr, "opt_lr"));
        TRY(get_f64(&c, &w->opt_rho, "opt_rho"));
        TRY(get_f64(&c, &w->opt_eps, "opt_eps"));
        TRY(get_f64(&c, &w->opt_momentum, "opt_momentum"));
        TRY(get_f64(&c, &w->opt_dampening, "opt_dampening"));
        TRY(get_f64(&c, &w->opt_weight_decay, "opt_weight_decay"));
        TRY(get_f64(&c, &w->opt_beta1, "opt_beta1"));
        TRY(get_f64(&c, &w->opt_beta2, "opt_beta2"));
        TRY(get_u64(&c, &w->opt_steps, "opt_steps"));
        TRY(get_tensor(&c, &w->mean_f, "mean_f", TL_DT_F32, 1, 0, 0));
        TRY(get_tensor(&c, &w->std_f, "std_f", TL_DT_F32, 1, 0, 0));
        TRY(welcome_check(w, TL_EPROTO));
        if (w->privacy > TL_PRIVACY_SEALED)
            return tl_error(TL_EPROTO, "WELCOME: unknown privacy %u", w->privacy);
        if (w->flags & ~(TL_WELCOME_F_ZSTD | TL_WELCOME_F_SHM))
            return tl_error(TL_EPROTO, "WELCOME: unknown flags 0x%x", w->flags);
        if (w->mode > 1) return tl_error(TL_EPROTO, "WELCOME: unknown mode %u", w->mode);
        break;
    }
    case TL_MSG_REJECT:
        TRY(get_u32(&c, &m->u.reject.code, "code"));
        TRY(get_str(&c, m->u.reject.reason, "reason"));
        break;
    case TL_MSG_FORWARD:
        TRY(get_u64(&c, &m->u.forward.step, "step"));
        TRY(get_tensor(&c, &m->u.forward.rows, "rows", TL_DT_U32, 1, 0, 0));
        TRY(get_tensor(&c, &m->u.forward.params, "params", TL_DT_F32, 1, 0, 0));
        break;
    case TL_MSG_FORWARD_RESULT: {
        tl_msg_forward_result *r = &m->u.fwd_result;
        uint32_t pad;
        tl_tensor t;
        TRY(get_u64(&c, &r->step, "step"));
        TRY(get_f64(&c, &r->loss_sum, "loss_sum"));
        TRY(get_u32(&c, &r->correct, "correct"));
        TRY(get_u32(&c, &pad, "pad"));
        if (pad) return tl_error(TL_EPROTO, "FORWARD_RESULT: nonzero pad field");
        TRY(get_tensor(&c, &r->h, "h", TL_DT_F32, 2, 0, 0));
        TRY(get_tensor(&c, &t, "g/labels", TL_DT_F32, 2, TL_DT_I32, 1));
        memset(&r->g, 0, sizeof r->g);
        memset(&r->labels, 0, sizeof r->labels);
        if (t.dtype == TL_DT_F32) r->g = t;
        else r->labels = t;
        if (t.dims[0] != r->h.dims[0])
            return tl_error(TL_EPROTO, "FORWARD_RESULT: h has %u rows but %s has %u", r->h.dims[0],
                            t.dtype == TL_DT_F32 ? "g" : "labels", t.dims[0]);
        break;
    }
    case TL_MSG_BACKWARD: {
        uint32_t pad;
        TRY(get_u64(&c, &m->u.backward.step, "step"));
        TRY(get_u32(&c, &m->u.backward.attempt, "attempt"));
        TRY(get_u32(&c, &pad, "pad"));
        if (pad) return tl_error(TL_EPROTO, "BACKWARD: nonzero pad field");
        TRY(get_tensor(&c, &m->u.backward.dh, "dh", TL_DT_F32, 2, 0, 0));
        TRY(get_tensor(&c, &m->u.backward.participants, "participants", TL_DT_U32, 1, 0, 0));
        break;
    }
    case TL_MSG_BACKWARD_RESULT:
        TRY(get_u64(&c, &m->u.bwd_result.step, "step"));
        TRY(get_tensor(&c, &m->u.bwd_result.grads, "grads", TL_DT_F32, 1, TL_DT_U64, 1));
        break;
    case TL_MSG_SEALED_STEP: {
        tl_msg_sealed_step *q = &m->u.sealed_step;
        TRY(get_u64(&c, &q->step, "step"));
        TRY(get_u32(&c, &q->attempt, "attempt"));
        TRY(get_u32(&c, &q->flags, "flags"));
        TRY(get_f64(&c, &q->lr, "lr"));
        TRY(get_tensor(&c, &q->participants, "participants", TL_DT_U32, 1, 0, 0));
        TRY(get_tensor(&c, &q->sum, "sum", TL_DT_U64, 1, 0, 0));
        if (q->flags & ~TL_SEALED_F_MAC)
            return tl_error(TL_EPROTO, "SEALED_STEP: unknown flags 0x%x", q->flags);
        break;
    }
    case TL_MSG_PARAM_MAC:
        TRY(get_u64(&c, &m->u.param_mac.step, "step"));
        TRY(need(&c, sizeof m->u.param_mac.mac, "mac"));
        memcpy(m->u.param_mac.mac, c.p + c.off, sizeof m->u.param_mac.mac);
        c.off += sizeof m->u.param_mac.mac;
        break;
    case TL_MSG_FINAL:
        TRY(get_u64(&c, &m->u.final.step, "step"));
        TRY(get_tensor(&c, &m->u.final.params, "params", TL_DT_F32, 1, 0, 0));
        break;
    case TL_MSG_HEARTBEAT: TRY(get_u64(&c, &m->u.heartbeat.nonce, "nonce")); break;
    case TL_MSG_DONE: TRY(get_str(&c, m->u.done.reason, "reason")); break;
    case TL_MSG_ERROR:
        TRY(get_u32(&c, &m->u.error.code, "code"));
        TRY(get_str(&c, m->u.error.message, "message"));
        break;
    case TL_MSG_READY:
        TRY(get_u64(&c, &m->u.ready.run_id, "run_id"));
        TRY(get_u64(&c, &m->u.ready.state_step, "state_step"));
        break;
    case TL_MSG_STATE_REQUEST: {
        uint32_t pad;
        TRY(get_u64(&c, &m->u.state_request.step, "step"));
        TRY(get_u32(&c, &m->u.state_request.to, "to"));
        TRY(get_u32(&c, &pad, "pad"));
        if (pad) return tl_error(TL_EPROTO, "STATE_REQUEST: nonzero pad field");
        break;
    }
    case TL_MSG_STATE_BLOB:
        TRY(get_u64(&c, &m->u.state_blob.step, "step"));
        TRY(get_u32(&c, &m->u.state_blob.from, "from"));
        TRY(get_u32(&c, &m->u.state_blob.to, "to"));
        TRY(get_tensor(&c, &m->u.state_blob.blob, "blob", TL_DT_U8, 1, 0, 0));
        break;
    case TL_MSG_CHECKPOINT: TRY(get_u64(&c, &m->u.checkpoint.step, "step")); break;
    case TL_MSG_STATS_REQUEST: {
        uint32_t pad;
        TRY(get_u32(&c, &m->u.stats_request.what, "what"));
        TRY(get_u32(&c, &pad, "pad"));
        if (m->u.stats_request.what != TL_STATS_NORM)
            return tl_error(TL_EPROTO, "STATS_REQUEST: unknown what %u", m->u.stats_request.what);
        if (pad) return tl_error(TL_EPROTO, "STATS_REQUEST: nonzero pad field");
        break;
    }
    case TL_MSG_STATS: {
        tl_msg_stats *st = &m->u.stats;
        TRY(get_u64(&c, &st->count, "count"));
        TRY(get_tensor(&c, &st->sum, "sum", TL_DT_F64, 1, 0, 0));
        TRY(get_tensor(&c, &st->sumsq, "sumsq", TL_DT_F64, 1, 0, 0));
        if (st->sum.dims[0] != st->sumsq.dims[0])
            return tl_error(TL_EPROTO, "STATS: sum has %u features but sumsq %u", st->sum.dims[0],
                            st->sumsq.dims[0]);
        break;
    }
    case TL_MSG_EVAL: {
        uint32_t pad;
        TRY(get_u64(&c, &m->u.eval.step, "step"));
        TRY(get_u32(&c, &m->u.eval.bins, "bins"));
        TRY(get_u32(&c, &pad, "pad"));
        if (pad) return tl_error(TL_EPROTO, "EVAL: nonzero pad field");
        TRY(get_tensor(&c, &m->u.eval.params, "params", TL_DT_F32, 1, 0, 0));
        break;
    }
    case TL_MSG_EVAL_RESULT:
        TRY(get_u64(&c, &m->u.eval_result.step, "step"));
        TRY(get_tensor(&c, &m->u.eval_result.stats, "stats", TL_DT_U64, 1, 0, 0));
        break;
    default: return tl_error(TL_EPROTO, "unknown message type %u", type);
    }
#undef TRY
    if (c.off != c.len)
        return tl_error(TL_EPROTO, "%s: %llu trailing bytes after the last field", c.mn,
                        (unsigned long long)(c.len - c.off));
    return 0;
}

int tl_msg_decode(const tl_frame *f, tl_msg *m) {
    return tl_msg_decode_payload(f->type, f->payload, f->len, m);
}

int tl_msg_recv(tl_conn *c, tl_frame_reader *r, tl_msg *m, int64_t deadline_ms) {
    tl_frame f;
    int rc = tl_frame_recv(r, c, &f, deadline_ms);
    if (rc < 0) return rc;
    if ((rc = tl_msg_decode(&f, m)) < 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", tl_errmsg());
        return tl_error(rc, "%s: %s", c->peer, msg);
    }
    return 0;
}

/* ---------------------------------------------------------------- checks */

int tl_tensor_check(const tl_tensor *t, tl_dtype dtype, int rank, const uint32_t *dims,
                    const char *what) {
    int same = t->dtype == dtype && t->rank == rank;
    for (int i = 0; same && i < rank; i++) same = t->dims[i] == dims[i];
    if (same) return 0;
    char want[96], got[96];
    return tl_error(TL_EPROTO, "%s: expected %s, got %s", what,
                    shape_str(want, sizeof want, dtype, rank, dims),
                    shape_str(got, sizeof got, t->dtype, t->rank < 5 ? t->rank : 4, t->dims));
}

int tl_tensor_check_finite(const tl_tensor *t, const char *what) {
    if (t->dtype != TL_DT_F32)
        return tl_error(TL_EINVAL, "%s: finite check on a %s tensor", what, dtype_name(t->dtype));
    const uint64_t e = tl_first_nonfinite(t->data, t->numel);
    if (e == t->numel) return 0;
    uint32_t u;
    memcpy(&u, (const uint8_t *)t->data + 4 * e, sizeof u);
    return tl_error(TL_ENUMERIC, "%s: element %llu is %s", what, (unsigned long long)e,
                    (u & 0x007fffffu) ? "NaN"
                    : (u >> 31)       ? "-Inf"
                                      : "+Inf");
}

int tl_tensor_check_below(const tl_tensor *t, uint64_t bound, const char *what) {
    const uint8_t *p = t->data;
    for (uint64_t i = 0; i < t->numel; i++) {
        int64_t v;
        if (t->dtype == TL_DT_U32) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            v = u;
        } else if (t->dtype == TL_DT_I32) {
            int32_t s;
            memcpy(&s, p + 4 * i, 4);
            v = s;
        } else if (t->dtype == TL_DT_I64) {
            memcpy(&v, p + 8 * i, 8);
        } else {
            return tl_error(TL_EINVAL, "%s: range check on a %s tensor", what,
                            dtype_name(t->dtype));
        }
        if (v < 0 || (uint64_t)v >= bound)
            return tl_error(TL_EPROTO, "%s: element %llu is %lld, outside 0..%llu", what,
                            (unsigned long long)i, (long long)v,
                            (unsigned long long)(bound ? bound - 1 : 0));
    }
    return 0;
}
