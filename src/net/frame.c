/* frame.c - frame header, incremental reader and iovec writer (frame.h). */
#include "tl/frame.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <zstd.h>

#include "tl/error.h"
#include "tl/le.h"

static_assert(sizeof(tl_frame_header) == TL_FRAME_HEADER_SIZE, "frame header is 24 bytes");
static_assert(offsetof(tl_frame_header, magic) == 0, "magic at 0");
static_assert(offsetof(tl_frame_header, version) == 4, "version at 4");
static_assert(offsetof(tl_frame_header, type) == 6, "type at 6");
static_assert(offsetof(tl_frame_header, flags) == 8, "flags at 8");
static_assert(offsetof(tl_frame_header, reserved) == 12, "reserved at 12");
static_assert(offsetof(tl_frame_header, payload_len) == 16, "payload_len at 16");
static_assert(TL_FRAME_MAX_PAYLOAD <= (uint64_t)SIZE_MAX / 2, "cap fits in memory sizes");

#define ZSTD_PREFIX 8 /* raw_len u64 in front of a compressed payload */
#define BUF_ALIGN 64

/* Aligned payload for zero-length frames (never written). */
static _Alignas(BUF_ALIGN) const uint8_t empty_payload[8];

static uint64_t clamp_cap(uint64_t max) {
    return (max == 0 || max > TL_FRAME_MAX_PAYLOAD) ? TL_FRAME_MAX_PAYLOAD : max;
}

/* 64-byte-aligned buffer of at least n bytes (n > 0), or NULL. */
static uint8_t *alloc_buf(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, BUF_ALIGN, n) != 0) return NULL;
    return p;
}

/* Makes *buf hold at least n bytes; the old contents are not kept (no copy). */
static int ensure_buf(uint8_t **buf, size_t *cap, size_t n) {
    if (*cap >= n && *buf) return 0;
    free(*buf);
    *buf = NULL;
    *cap = 0;
    size_t want = n < 4096 ? 4096 : n;
    if (!(*buf = alloc_buf(want)))
        return tl_error(TL_ENOMEM, "out of memory for a %zu-byte frame buffer", want);
    *cap = want;
    return 0;
}

void tl_frame_header_encode(const tl_frame_header *h, uint8_t out[TL_FRAME_HEADER_SIZE]) {
    tl_le_store32(out + 0, h->magic);
    tl_le_store16(out + 4, h->version);
    tl_le_store16(out + 6, h->type);
    tl_le_store32(out + 8, h->flags);
    tl_le_store32(out + 12, h->reserved);
    tl_le_store64(out + 16, h->payload_len);
}

int tl_frame_header_decode(const uint8_t in[TL_FRAME_HEADER_SIZE], uint64_t max_payload,
                           int allow_zstd, tl_frame_header *h) {
    h->magic = tl_le_load32(in + 0);
    h->version = tl_le_load16(in + 4);
    h->type = tl_le_load16(in + 6);
    h->flags = tl_le_load32(in + 8);
    h->reserved = tl_le_load32(in + 12);
    h->payload_len = tl_le_load64(in + 16);
    if (in[0] == 0x16 && in[1] == 0x03) /* a TLS handshake record: a ClientHello */
        return tl_error(TL_ETLS,
                        "the peer speaks TLS where plaintext frames were expected (TLS needs "
                        "--tls-dir on both sides, plaintext --insecure on both)");
    if (h->magic != TL_FRAME_MAGIC)
        return tl_error(TL_EPROTO,
                        "bad frame magic %02x %02x %02x %02x (expected \"TLN1\"): not a tl peer",
                        in[0], in[1], in[2], in[3]);
    if (h->version != TL_FRAME_VERSION)
        return tl_error(TL_EPROTO, "unsupported protocol version %u (this side speaks %d)",
                        h->version, TL_FRAME_VERSION);
    if (h->type < 1 || h->type > TL_FRAME_TYPE_MAX)
        return tl_error(TL_EPROTO, "unknown message type %u", h->type);
    if (h->flags & ~TL_FRAME_F_ZSTD)
        return tl_error(TL_EPROTO, "unknown frame flags 0x%x", h->flags & ~TL_FRAME_F_ZSTD);
    if ((h->flags & TL_FRAME_F_ZSTD) && !allow_zstd)
        return tl_error(TL_EPROTO, "compressed frame (type %u) but compression was not negotiated",
                        h->type);
    if (h->reserved != 0)
        return tl_error(TL_EPROTO, "nonzero reserved header field 0x%x", h->reserved);
    if (h->payload_len > clamp_cap(max_payload))
        return tl_error(TL_EPROTO, "frame payload of %llu bytes exceeds the limit of %llu bytes",
                        (unsigned long long)h->payload_len,
                        (unsigned long long)clamp_cap(max_payload));
    return 0;
}

/* ---------------------------------------------------------------- reader */

void tl_frame_reader_init(tl_frame_reader *r, uint64_t max_payload) {
    memset(r, 0, sizeof *r);
    r->max_payload = clamp_cap(max_payload);
}

void tl_frame_reader_free(tl_frame_reader *r) {
    if (!r) return;
    free(r->buf);
    free(r->zbuf);
    ZSTD_freeDCtx(r->dctx);
    uint64_t max = r->max_payload;
    int zstd = r->zstd;
    memset(r, 0, sizeof *r);
    r->max_payload = max;
    r->zstd = zstd;
}

void tl_frame_reader_reset(tl_frame_reader *r) {
    r->hdr_got = 0;
    r->in_payload = 0;
    r->got = 0;
}

void tl_frame_reader_set_max(tl_frame_reader *r, uint64_t max_payload) {
    r->max_payload = clamp_cap(max_payload);
}

void *tl_frame_reader_take(tl_frame_reader *r, size_t *cap) {
    void *b = r->buf;
    if (cap) *cap = b ? r->cap : 0;
    r->buf = NULL;
    r->cap = 0;
    return b;
}

void tl_frame_reader_recycle(tl_frame_reader *r, void *buf, size_t cap) {
    if (!buf) return;
    if (cap > r->cap && !r->in_payload) { /* never under half a frame */
        free(r->buf);
        r->buf = buf;
        r->cap = cap;
    } else {
        free(buf);
    }
}

/* Replaces the compressed payload in r->buf by its decompressed bytes
 * (docs/protocol.md §3.4). 0 or TL_EPROTO / TL_ENOMEM. */
static int decompress_payload(tl_frame_reader *r) {
    uint64_t n = r->h.payload_len;
    if (n < ZSTD_PREFIX)
        return tl_error(TL_EPROTO,
                        "compressed payload of %llu bytes is shorter than its size field",
                        (unsigned long long)n);
    uint64_t raw = tl_le_load64(r->buf);
    const uint8_t *src = r->buf + ZSTD_PREFIX;
    size_t srclen = (size_t)(n - ZSTD_PREFIX);
    if (raw > r->max_payload)
        return tl_error(TL_EPROTO,
                        "compressed frame declares %llu decompressed bytes, over the limit of %llu",
                        (unsigned long long)raw, (unsigned long long)r->max_payload);
    unsigned long long fcs = ZSTD_getFrameContentSize(src, srclen);
    if (fcs == ZSTD_CONTENTSIZE_ERROR)
        return tl_error(TL_EPROTO, "compressed payload is not a zstd frame");
    if (fcs == ZSTD_CONTENTSIZE_UNKNOWN)
        return tl_error(TL_EPROTO, "zstd frame does not record its content size");
    if (fcs != raw)
        return tl_error(TL_EPROTO, "zstd frame content size %llu does not match the declared %llu",
                        fcs, (unsigned long long)raw);
    size_t fsz = ZSTD_findFrameCompressedSize(src, srclen);
    if (ZSTD_isError(fsz))
        return tl_error(TL_EPROTO, "truncated or corrupt zstd frame: %s", ZSTD_getErrorName(fsz));
    if (fsz != srclen)
        return tl_error(TL_EPROTO, "%zu bytes after the zstd frame in a compressed payload",
                        srclen - fsz);
    int rc = ensure_buf(&r->zbuf, &r->zcap, raw ? (size_t)raw : 1);
    if (rc < 0) return rc;
    if (!r->dctx && !(r->dctx = ZSTD_createDCtx()))
        return tl_error(TL_ENOMEM, "out of memory for a zstd decompression context");
    size_t got = ZSTD_decompressDCtx(r->dctx, r->zbuf, (size_t)raw, src, srclen);
    if (ZSTD_isError(got))
        return tl_error(TL_EPROTO, "corrupt zstd payload: %s", ZSTD_getErrorName(got));
    if (got != raw)
        return tl_error(TL_EPROTO, "zstd payload decompressed to %zu bytes, declared %llu", got,
                        (unsigned long long)raw);
    uint8_t *t = r->buf;
    size_t tc = r->cap;
    r->buf = r->zbuf;
    r->cap = r->zcap;
    r->zbuf = t;
    r->zcap = tc;
    r->h.payload_len = raw; /* now the decompressed length */
    return 0;
}

/* Fills *f from the completed frame and resets for the next header. */
static int finish_frame(tl_frame_reader *r, tl_frame *f) {
    uint64_t wire = TL_FRAME_HEADER_SIZE + r->h.payload_len;
    if (r->h.flags & TL_FRAME_F_ZSTD) {
        int rc = decompress_payload(r);
        if (rc < 0) return rc;
    }
    f->type = r->h.type;
    f->flags = r->h.flags;
    f->len = r->h.payload_len;
    f->payload = f->len ? r->buf : empty_payload;
    f->wire_len = wire;
    r->hdr_got = 0;
    r->in_payload = 0;
    r->got = 0;
    return 0;
}

/* A byte source: > 0 bytes, TL_EAGAIN, or an error. */
typedef ssize_t (*source_fn)(void *ctx, void *buf, size_t len);

/* The reader's state machine over any source. */
static int advance(tl_frame_reader *r, source_fn src, void *ctx, tl_frame *f) {
    for (;;) {
        if (!r->in_payload) {
            ssize_t n = src(ctx, r->hdr + r->hdr_got, TL_FRAME_HEADER_SIZE - r->hdr_got);
            if (n < 0) return (int)n;
            r->hdr_got += (size_t)n;
            if (r->hdr_got < TL_FRAME_HEADER_SIZE) continue;
            int rc = tl_frame_header_decode(r->hdr, r->max_payload, r->zstd, &r->h);
            if (rc < 0) return rc;
            r->in_payload = 1;
            r->got = 0;
            if (r->h.payload_len == 0) return finish_frame(r, f);
            if ((rc = ensure_buf(&r->buf, &r->cap, (size_t)r->h.payload_len)) < 0) return rc;
        }
        size_t want = (size_t)(r->h.payload_len - r->got);
        ssize_t n = src(ctx, r->buf + r->got, want);
        if (n < 0) return (int)n;
        r->got += (uint64_t)n;
        if (r->got == r->h.payload_len) return finish_frame(r, f);
    }
}

static ssize_t conn_source(void *ctx, void *buf, size_t len) {
    return tl_conn_read((tl_conn *)ctx, buf, len);
}

typedef struct mem_source {
    const uint8_t *p;
    size_t len, pos;
} mem_source;

static ssize_t mem_read(void *ctx, void *buf, size_t len) {
    mem_source *m = ctx;
    size_t left = m->len - m->pos;
    if (left == 0) return TL_EAGAIN;
    if (len > left) len = left;
    memcpy(buf, m->p + m->pos, len);
    m->pos += len;
    return (ssize_t)len;
}

/* Prefixes the current message with the peer's name. */
static int name_peer(int rc, const tl_conn *c) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s", tl_errmsg());
    if (strncmp(msg, c->peer, strlen(c->peer)) == 0 && c->peer[0])
        return rc; /* the transport already named it */
    return tl_error(rc, "%s: %s", c->peer, msg);
}

int tl_frame_read(tl_frame_reader *r, tl_conn *c, tl_frame *f) {
    int rc = advance(r, conn_source, c, f);
    if (rc < 0 && rc != TL_EAGAIN) return name_peer(rc, c);
    return rc;
}

int tl_frame_reader_feed(tl_frame_reader *r, const void *data, size_t len, size_t *used,
                         tl_frame *f) {
    mem_source m = {data, len, 0};
    int rc = advance(r, mem_read, &m, f);
    if (used) *used = m.pos;
    return rc;
}

int tl_frame_recv(tl_frame_reader *r, tl_conn *c, tl_frame *f, int64_t deadline_ms) {
    for (;;) {
        int rc = tl_frame_read(r, c, f);
        if (rc != TL_EAGAIN) return rc;
        if ((rc = tl_conn_wait(c, deadline_ms)) < 0)
            return rc == TL_ETIMEDOUT ? tl_error(rc, "%s: timed out waiting for a frame", c->peer)
                                      : rc;
    }
}

/* ---------------------------------------------------------------- writer */

void tl_frame_writer_init(tl_frame_writer *w) {
    memset(w, 0, sizeof *w);
    w->max_payload = TL_FRAME_MAX_PAYLOAD;
    w->zstd_level = 1;
}

void tl_frame_writer_free(tl_frame_writer *w) {
    if (!w) return;
    free(w->zbuf);
    ZSTD_freeCCtx(w->cctx);
    w->zbuf = NULL;
    w->zcap = 0;
    w->cctx = NULL;
    w->busy = 0;
}

void tl_frame_writer_set_zstd(tl_frame_writer *w, int on, int level) {
    w->zstd = on != 0;
    w->zstd_level = level;
}

/* Compresses the n pieces (total bytes) into w->zbuf as [raw_len u64][zstd
 * frame]. *out_len gets the compressed payload size, or 0 if compressing does
 * not make the payload smaller (send it plain then). */
static int compress_payload(tl_frame_writer *w, const struct iovec *iov, int n, uint64_t total,
                            size_t *out_len) {
    *out_len = 0;
    int rc = ensure_buf(&w->zbuf, &w->zcap, (size_t)total);
    if (rc < 0) return rc;
    if (!w->cctx && !(w->cctx = ZSTD_createCCtx()))
        return tl_error(TL_ENOMEM, "out of memory for a zstd compression context");
    ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_and_parameters);
    size_t e = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, w->zstd_level);
    if (!ZSTD_isError(e)) e = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
    if (!ZSTD_isError(e)) e = ZSTD_CCtx_setPledgedSrcSize(w->cctx, total);
    if (ZSTD_isError(e)) return tl_error(TL_EINVAL, "zstd setup: %s", ZSTD_getErrorName(e));
    /* Output room: one byte less than the plain payload, so a full buffer
     * means "incompressible". */
    ZSTD_outBuffer out = {w->zbuf + ZSTD_PREFIX, (size_t)total - ZSTD_PREFIX - 1, 0};
    for (int i = 0; i <= n; i++) {
        ZSTD_inBuffer in = {i < n ? iov[i].iov_base : NULL, i < n ? iov[i].iov_len : 0, 0};
        ZSTD_EndDirective mode = i < n ? ZSTD_e_continue : ZSTD_e_end;
        for (;;) {
            size_t left = ZSTD_compressStream2(w->cctx, &out, &in, mode);
            if (ZSTD_isError(left))
                return tl_error(TL_EINVAL, "zstd compression: %s", ZSTD_getErrorName(left));
            int done = mode == ZSTD_e_end ? left == 0 : in.pos == in.size;
            if (done) break;
            if (out.pos == out.size) return 0; /* incompressible: send plain */
        }
    }
    tl_le_store64(w->zbuf, total);
    *out_len = ZSTD_PREFIX + out.pos;
    return 0;
}

int tl_frame_writer_start(tl_frame_writer *w, uint16_t type, const struct iovec *iov, int n) {
    if (w->busy)
        return tl_error(TL_EINVAL, "frame writer busy: the previous frame is not sent yet");
    if (n < 0 || n > TL_FRAME_MAX_IOV)
        return tl_error(TL_EINVAL, "frame of %d pieces (at most %d)", n, TL_FRAME_MAX_IOV);
    if (type < 1 || type > TL_FRAME_TYPE_MAX)
        return tl_error(TL_EINVAL, "unknown message type %u", type);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > TL_FRAME_MAX_PAYLOAD - total)
            return tl_error(TL_ERANGE, "frame payload over %llu bytes",
                            (unsigned long long)TL_FRAME_MAX_PAYLOAD);
        total += iov[i].iov_len;
    }
    uint64_t cap = clamp_cap(w->max_payload);
    if (total > cap)
        return tl_error(TL_ERANGE, "frame payload of %llu bytes exceeds the limit of %llu bytes",
                        (unsigned long long)total, (unsigned long long)cap);
    tl_frame_header h = {TL_FRAME_MAGIC, TL_FRAME_VERSION, type, 0, 0, total};
    w->iovcnt = 0;
    w->iov[w->iovcnt++] = (struct iovec){w->hdr, TL_FRAME_HEADER_SIZE};
    size_t zlen = 0;
    if (w->zstd && total >= TL_FRAME_ZSTD_MIN) {
        int rc = compress_payload(w, iov, n, total, &zlen);
        if (rc < 0) return rc;
    }
    if (zlen) {
        h.flags = TL_FRAME_F_ZSTD;
        h.payload_len = zlen;
        w->iov[w->iovcnt++] = (struct iovec){w->zbuf, zlen};
    } else {
        for (int i = 0; i < n; i++)
            if (iov[i].iov_len) w->iov[w->iovcnt++] = iov[i];
    }
    tl_frame_header_encode(&h, w->hdr);
    w->cur = 0;
    w->left = TL_FRAME_HEADER_SIZE + h.payload_len;
    w->busy = 1;
    return 0;
}

/* Marks n more bytes as sent, stepping over finished iovecs. */
static void writer_advance(tl_frame_writer *w, size_t n) {
    w->left -= n;
    while (n > 0 && w->cur < w->iovcnt) {
        struct iovec *v = &w->iov[w->cur];
        if (n < v->iov_len) {
            v->iov_base = (uint8_t *)v->iov_base + n;
            v->iov_len -= n;
            return;
        }
        n -= v->iov_len;
        w->cur++;
    }
}

int tl_frame_writer_flush(tl_frame_writer *w, tl_conn *c) {
    while (w->busy && w->left > 0) {
        ssize_t n = tl_conn_writev(c, w->iov + w->cur, w->iovcnt - w->cur);
        if (n < 0) return (int)n;
        writer_advance(w, (size_t)n);
    }
    w->busy = 0;
    return 0;
}

int tl_frame_send(tl_frame_writer *w, tl_conn *c, uint16_t type, const struct iovec *iov, int n,
                  int64_t deadline_ms) {
    int rc = tl_frame_writer_start(w, type, iov, n);
    if (rc < 0) return rc;
    for (;;) {
        rc = tl_frame_writer_flush(w, c);
        if (rc != TL_EAGAIN) break;
        if ((rc = tl_conn_wait(c, deadline_ms)) < 0) {
            if (rc == TL_ETIMEDOUT) tl_error(rc, "%s: timed out sending a frame", c->peer);
            break;
        }
    }
    if (rc < 0) w->busy = 0; /* the stream is broken anyway: the caller closes */
    return rc;
}

int tl_frame_writer_flush_mem(tl_frame_writer *w, uint8_t **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (!w->busy) return tl_error(TL_EINVAL, "no frame queued");
    uint8_t *b = malloc(w->left ? (size_t)w->left : 1);
    if (!b)
        return tl_error(TL_ENOMEM, "out of memory for a %llu-byte frame",
                        (unsigned long long)w->left);
    size_t pos = 0;
    for (int i = w->cur; i < w->iovcnt; i++) {
        memcpy(b + pos, w->iov[i].iov_base, w->iov[i].iov_len);
        pos += w->iov[i].iov_len;
    }
    *out = b;
    *len = pos;
    w->busy = 0;
    w->left = 0;
    return 0;
}
