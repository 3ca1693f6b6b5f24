/* test_frame.c - frame header validation, the incremental reader, the iovec
 * writer with partial writes, and zstd payloads (frame.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <poll.h>
#include <zstd.h>

#include "tl/conn.h"
#include "tl/error.h"
#include "tl/frame.h"

/* ------------------------------------------------------------ helpers */

static void hdr_bytes(uint8_t out[24], uint16_t type, uint32_t flags, uint64_t len) {
    tl_frame_header h = {TL_FRAME_MAGIC, TL_FRAME_VERSION, type, flags, 0, len};
    tl_frame_header_encode(&h, out);
}

/* A frame of type with payload p[0..n) as one malloc'd byte string. */
static uint8_t *make_frame(uint16_t type, const void *p, size_t n, size_t *len) {
    uint8_t *b = malloc(24 + n + 1);
    assert_non_null(b);
    hdr_bytes(b, type, 0, n);
    if (n) memcpy(b + 24, p, n);
    *len = 24 + n;
    return b;
}

static void expect_errmsg(const char *needle) {
    if (!strstr(tl_errmsg(), needle))
        fail_msg("error message \"%s\" lacks \"%s\"", tl_errmsg(), needle);
}

/* A fake transport: reads come from `in` at most `chunk` bytes per call, with
 * a TL_EAGAIN before every other call; writes go to `out` likewise. */
typedef struct fake {
    const uint8_t *in;
    size_t in_len, in_pos;
    uint8_t *out;
    size_t out_cap, out_len;
    size_t chunk;
    int tick;
    int eagains;
} fake;

static ssize_t fake_read(tl_conn *c, void *buf, size_t len) {
    fake *f = c->impl;
    if (f->in_pos == f->in_len) {
        c->want = POLLIN;
        f->eagains++;
        return TL_EAGAIN;
    }
    if (f->tick++ % 2 == 0) {
        c->want = POLLIN;
        f->eagains++;
        return TL_EAGAIN;
    }
    size_t n = len < f->chunk ? len : f->chunk;
    if (n > f->in_len - f->in_pos) n = f->in_len - f->in_pos;
    memcpy(buf, f->in + f->in_pos, n);
    f->in_pos += n;
    return (ssize_t)n;
}

static ssize_t fake_writev(tl_conn *c, const struct iovec *iov, int n) {
    fake *f = c->impl;
    if (f->tick++ % 2 == 0) {
        c->want = POLLOUT;
        f->eagains++;
        return TL_EAGAIN;
    }
    size_t done = 0;
    for (int i = 0; i < n && done < f->chunk; i++) {
        size_t k = iov[i].iov_len;
        if (k > f->chunk - done) k = f->chunk - done;
        assert_true(f->out_len + k <= f->out_cap);
        memcpy(f->out + f->out_len, iov[i].iov_base, k);
        f->out_len += k;
        done += k;
    }
    return (ssize_t)done;
}

static int fake_handshake(tl_conn *c) { return 0; }
static size_t fake_pending(tl_conn *c) { return 0; }
static void fake_close(tl_conn *c) {}
static const tl_conn_ops fake_ops = {"fake",         fake_read,    fake_writev,
                                     fake_handshake, fake_pending, fake_close};

static void fake_conn(tl_conn *c, fake *f) {
    memset(c, 0, sizeof *c);
    c->ops = &fake_ops;
    c->fd = -1;
    c->impl = f;
    snprintf(c->peer, sizeof c->peer, "fake:1");
}

/* ------------------------------------------------------------ header */

static void test_header_roundtrip(void **state) {
    (void)state;
    tl_frame_header h = {TL_FRAME_MAGIC, 1, 5, TL_FRAME_F_ZSTD, 0, 0x0102030405060708ull}, g;
    uint8_t b[24];
    tl_frame_header_encode(&h, b);
    static const uint8_t want[24] = {0x54, 0x4c, 0x4e, 0x31, 1, 0, 5, 0, 1, 0, 0, 0,
                                     0,    0,    0,    0,    8, 7, 6, 5, 4, 3, 2, 1};
    assert_memory_equal(b, want, 24);
    assert_memory_equal(b, "TLN1", 4);
    b[16] = 8; /* make the length fit under the cap */
    memset(b + 17, 0, 7);
    assert_int_equal(tl_frame_header_decode(b, 0, 1, &g), 0);
    assert_int_equal(g.type, 5);
    assert_int_equal(g.flags, 1);
    assert_int_equal(g.payload_len, 8);
}

static void test_header_malformed(void **state) {
    (void)state;
    uint8_t b[24];
    tl_frame_header h;

    hdr_bytes(b, 1, 0, 10);
    b[0] = 'X';
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    expect_errmsg("magic");

    /* a TLS ClientHello where a frame belongs: named as such */
    memset(b, 0, sizeof b);
    b[0] = 0x16, b[1] = 0x03, b[2] = 0x01, b[3] = 0x02;
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_ETLS);
    expect_errmsg("speaks TLS");

    hdr_bytes(b, 1, 0, 10);
    b[4] = 2;
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    expect_errmsg("version 2");

    hdr_bytes(b, 0, 0, 10);
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    expect_errmsg("unknown message type 0");
    hdr_bytes(b, TL_FRAME_TYPE_MAX + 1, 0, 10);
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    char want[40];
    snprintf(want, sizeof want, "unknown message type %d", TL_FRAME_TYPE_MAX + 1);
    expect_errmsg(want);

    hdr_bytes(b, 1, 0, 10);
    b[13] = 1;
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    expect_errmsg("reserved");

    hdr_bytes(b, 1, 0x2, 10);
    assert_int_equal(tl_frame_header_decode(b, 0, 1, &h), TL_EPROTO);
    expect_errmsg("flags");
    hdr_bytes(b, 1, 0x80000000u, 10);
    assert_int_equal(tl_frame_header_decode(b, 0, 1, &h), TL_EPROTO);

    hdr_bytes(b, 4, TL_FRAME_F_ZSTD, 10);
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    expect_errmsg("not negotiated");
    assert_int_equal(tl_frame_header_decode(b, 0, 1, &h), 0);

    hdr_bytes(b, 4, 0, 1001);
    assert_int_equal(tl_frame_header_decode(b, 1000, 0, &h), TL_EPROTO);
    expect_errmsg("exceeds the limit of 1000");
    assert_int_equal(tl_frame_header_decode(b, 1001, 0, &h), 0);
    hdr_bytes(b, 4, 0, TL_FRAME_MAX_PAYLOAD + 1);
    assert_int_equal(tl_frame_header_decode(b, 0, 0, &h), TL_EPROTO);
    hdr_bytes(b, 4, 0, UINT64_MAX);
    assert_int_equal(tl_frame_header_decode(b, UINT64_MAX, 0, &h), TL_EPROTO);
}

/* ------------------------------------------------------------ reader */

static void test_reader_feed_bytewise_and_whole(void **state) {
    (void)state;
    uint8_t payload[100];
    for (int i = 0; i < 100; i++) payload[i] = (uint8_t)(i * 7 + 1);
    size_t n1, n2;
    uint8_t *f1 = make_frame(4, payload, sizeof payload, &n1);
    uint8_t *f2 = make_frame(8, payload, 8, &n2);
    uint8_t *both = malloc(n1 + n2);
    memcpy(both, f1, n1);
    memcpy(both + n1, f2, n2);

    /* one byte at a time: incomplete until the last byte of each frame */
    tl_frame_reader r;
    tl_frame_reader_init(&r, 0);
    tl_frame f;
    int frames = 0;
    for (size_t i = 0; i < n1 + n2; i++) {
        size_t used = 99;
        int rc = tl_frame_reader_feed(&r, both + i, 1, &used, &f);
        assert_int_equal(used, 1);
        if (i == n1 - 1 || i == n1 + n2 - 1) {
            assert_int_equal(rc, 0);
            frames++;
            assert_int_equal(f.type, frames == 1 ? 4 : 8);
            assert_int_equal(f.len, frames == 1 ? 100 : 8);
            assert_memory_equal(f.payload, payload, f.len);
            assert_int_equal((uintptr_t)f.payload % 8, 0);
            assert_int_equal(f.wire_len, frames == 1 ? n1 : n2);
        } else {
            assert_int_equal(rc, TL_EAGAIN);
        }
    }
    assert_int_equal(frames, 2);

    /* all at once: the reader stops exactly at each frame's end */
    size_t used;
    assert_int_equal(tl_frame_reader_feed(&r, both, n1 + n2, &used, &f), 0);
    assert_int_equal(used, n1);
    assert_int_equal(f.type, 4);
    assert_memory_equal(f.payload, payload, 100);
    const uint8_t *buf1 = f.payload;
    assert_int_equal(tl_frame_reader_feed(&r, both + n1, n2, &used, &f), 0);
    assert_int_equal(used, n2);
    assert_ptr_equal(f.payload, buf1); /* the buffer is reused */
    assert_int_equal(tl_frame_reader_feed(&r, both, 0, &used, &f), TL_EAGAIN);
    assert_int_equal(used, 0);

    tl_frame_reader_free(&r);
    free(f1);
    free(f2);
    free(both);
}

static void test_reader_truncated(void **state) {
    (void)state;
    uint8_t payload[40] = {1, 2, 3};
    size_t n;
    uint8_t *fr = make_frame(6, payload, sizeof payload, &n);
    tl_frame_reader r;
    tl_frame f;
    size_t used;

    /* truncated header */
    tl_frame_reader_init(&r, 0);
    assert_int_equal(tl_frame_reader_feed(&r, fr, 23, &used, &f), TL_EAGAIN);
    assert_int_equal(used, 23);
    assert_null(r.buf); /* nothing allocated before the header is complete */
    tl_frame_reader_free(&r);

    /* truncated payload: consumes what is there, asks for more */
    tl_frame_reader_init(&r, 0);
    for (size_t cut = 24; cut < n; cut++) {
        tl_frame_reader_reset(&r);
        assert_int_equal(tl_frame_reader_feed(&r, fr, cut, &used, &f), TL_EAGAIN);
        assert_int_equal(used, cut);
    }
    /* the rest completes it */
    tl_frame_reader_reset(&r);
    assert_int_equal(tl_frame_reader_feed(&r, fr, 30, &used, &f), TL_EAGAIN);
    assert_int_equal(tl_frame_reader_feed(&r, fr + 30, n - 30, &used, &f), 0);
    assert_int_equal(used, n - 30);
    assert_memory_equal(f.payload, payload, sizeof payload);
    tl_frame_reader_free(&r);
    free(fr);
}

static void test_reader_rejects_before_alloc(void **state) {
    (void)state;
    tl_frame_reader r;
    tl_frame f;
    uint8_t b[24];
    size_t used;
    tl_frame_reader_init(&r, 4096);
    hdr_bytes(b, 4, 0, 4097);
    assert_int_equal(tl_frame_reader_feed(&r, b, 24, &used, &f), TL_EPROTO);
    expect_errmsg("exceeds the limit");
    assert_null(r.buf);
    tl_frame_reader_free(&r);

    tl_frame_reader_init(&r, 0);
    hdr_bytes(b, 4, 0, 100);
    b[1] = 0;
    assert_int_equal(tl_frame_reader_feed(&r, b, 24, &used, &f), TL_EPROTO);
    assert_null(r.buf);
    tl_frame_reader_free(&r);

    /* the handshake cap */
    tl_frame_reader_init(&r, TL_FRAME_HANDSHAKE_MAX);
    hdr_bytes(b, 1, 0, TL_FRAME_HANDSHAKE_MAX + 1);
    assert_int_equal(tl_frame_reader_feed(&r, b, 24, &used, &f), TL_EPROTO);
    tl_frame_reader_set_max(&r, 0);
    assert_int_equal(r.max_payload, TL_FRAME_MAX_PAYLOAD);
    tl_frame_reader_free(&r);
}

static void test_reader_empty_payload_take_recycle(void **state) {
    (void)state;
    tl_frame_reader r;
    tl_frame f;
    uint8_t b[24];
    size_t used;
    tl_frame_reader_init(&r, 0);
    hdr_bytes(b, 9, 0, 0);
    assert_int_equal(tl_frame_reader_feed(&r, b, 24, &used, &f), 0);
    assert_int_equal(f.len, 0);
    assert_non_null(f.payload);

    uint8_t p[16] = {9, 9, 9};
    size_t n;
    uint8_t *fr = make_frame(8, p, 8, &n);
    assert_int_equal(tl_frame_reader_feed(&r, fr, n, &used, &f), 0);
    size_t cap;
    uint8_t *taken = tl_frame_reader_take(&r, &cap);
    assert_ptr_equal(taken, f.payload);
    assert_true(cap >= 8);
    /* the next frame goes elsewhere; the taken payload stays intact */
    fr[24] = 1;
    assert_int_equal(tl_frame_reader_feed(&r, fr, n, &used, &f), 0);
    assert_ptr_not_equal(f.payload, taken);
    assert_int_equal(taken[0], 9);
    assert_int_equal(f.payload[0], 1);
    tl_frame_reader_recycle(&r, taken, cap); /* same size: freed */
    tl_frame_reader_recycle(&r, NULL, 0);
    free(fr);
    tl_frame_reader_free(&r);
    tl_frame_reader_free(NULL);
}

/* ------------------------------------------------------------ writer */

static void test_writer_iovecs_and_partial_writes(void **state) {
    (void)state;
    /* pieces with an empty one in the middle */
    uint8_t a[5] = {1, 2, 3, 4, 5}, c3[3000];
    for (int i = 0; i < 3000; i++) c3[i] = (uint8_t)(i ^ (i >> 3));
    struct iovec iov[3] = {{a, 5}, {NULL, 0}, {c3, 3000}};

    for (size_t chunk = 1; chunk <= 4096; chunk = chunk * 3 + 1) {
        fake fk = {0};
        fk.chunk = chunk;
        fk.out_cap = 4096;
        fk.out = malloc(fk.out_cap);
        tl_conn c;
        fake_conn(&c, &fk);
        tl_frame_writer w;
        tl_frame_writer_init(&w);
        assert_int_equal(tl_frame_writer_start(&w, 4, iov, 3), 0);
        assert_true(tl_frame_writer_busy(&w));
        assert_int_equal(tl_frame_writer_start(&w, 4, iov, 3), TL_EINVAL); /* busy */
        int rc, calls = 0;
        while ((rc = tl_frame_writer_flush(&w, &c)) == TL_EAGAIN) calls++;
        assert_int_equal(rc, 0);
        assert_false(tl_frame_writer_busy(&w));
        assert_true(calls > 0);
        assert_int_equal(fk.out_len, 24 + 3005);

        /* and the reader over the same fake transport */
        fake rk = {0};
        rk.in = fk.out;
        rk.in_len = fk.out_len;
        rk.chunk = chunk;
        tl_conn rc2;
        fake_conn(&rc2, &rk);
        tl_frame_reader r;
        tl_frame_reader_init(&r, 0);
        tl_frame f;
        while ((rc = tl_frame_read(&r, &rc2, &f)) == TL_EAGAIN)
            ;
        assert_int_equal(rc, 0);
        assert_int_equal(f.len, 3005);
        assert_memory_equal(f.payload, a, 5);
        assert_memory_equal(f.payload + 5, c3, 3000);
        assert_int_equal(rk.in_pos, rk.in_len);
        tl_frame_reader_free(&r);
        tl_frame_writer_free(&w);
        free(fk.out);
    }
}

static void test_writer_limits(void **state) {
    (void)state;
    tl_frame_writer w;
    tl_frame_writer_init(&w);
    uint8_t x[64] = {0};
    struct iovec iov[TL_FRAME_MAX_IOV + 1];
    for (int i = 0; i <= TL_FRAME_MAX_IOV; i++) iov[i] = (struct iovec){x, 1};
    assert_int_equal(tl_frame_writer_start(&w, 4, iov, TL_FRAME_MAX_IOV + 1), TL_EINVAL);
    assert_int_equal(tl_frame_writer_start(&w, 0, iov, 1), TL_EINVAL);
    assert_int_equal(tl_frame_writer_start(&w, TL_FRAME_TYPE_MAX + 1, iov, 1), TL_EINVAL);
    w.max_payload = 10;
    assert_int_equal(tl_frame_writer_start(&w, 4, iov, 11), TL_ERANGE);
    assert_false(tl_frame_writer_busy(&w));
    struct iovec big[2] = {{x, (size_t)TL_FRAME_MAX_PAYLOAD}, {x, (size_t)TL_FRAME_MAX_PAYLOAD}};
    w.max_payload = 0;
    assert_int_equal(tl_frame_writer_start(&w, 4, big, 2), TL_ERANGE);
    /* zero-length payload */
    uint8_t *out;
    size_t len;
    assert_int_equal(tl_frame_writer_start(&w, 8, NULL, 0), 0);
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, &len), 0);
    assert_int_equal(len, 24);
    assert_int_equal(out[6], 8);
    free(out);
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, &len), TL_EINVAL);
    tl_frame_writer_free(&w);
    tl_frame_writer_free(NULL);
}

/* ------------------------------------------------------------ zstd */

static void test_zstd_roundtrip(void **state) {
    (void)state;
    size_t n = 200000;
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)(i % 17) * 0.25f; /* compressible */
    uint8_t head[8] = {7, 0, 0, 0, 0, 0, 0, 0};
    struct iovec iov[2] = {{head, 8}, {v, n * sizeof *v}};
    tl_frame_writer w;
    tl_frame_writer_init(&w);
    tl_frame_writer_set_zstd(&w, 1, 1);
    assert_int_equal(tl_frame_writer_start(&w, 7, iov, 2), 0);
    uint8_t *out;
    size_t len;
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, &len), 0);
    assert_int_equal(out[8] & 1, 1);
    assert_true(len < 24 + 8 + n * sizeof *v / 4);

    tl_frame_reader r;
    tl_frame_reader_init(&r, 0);
    tl_frame f;
    size_t used;
    assert_int_equal(tl_frame_reader_feed(&r, out, len, &used, &f), TL_EPROTO); /* not negotiated */
    tl_frame_reader_reset(&r);
    r.zstd = 1;
    /* byte by byte for the first part, then the rest */
    int rc = TL_EAGAIN;
    size_t i = 0;
    for (; i < 40 && rc == TL_EAGAIN; i++) rc = tl_frame_reader_feed(&r, out + i, 1, &used, &f);
    assert_int_equal(rc, TL_EAGAIN);
    assert_int_equal(tl_frame_reader_feed(&r, out + i, len - i, &used, &f), 0);
    assert_int_equal(used, len - i);
    assert_int_equal(f.type, 7);
    assert_int_equal(f.flags, TL_FRAME_F_ZSTD);
    assert_int_equal(f.len, 8 + n * sizeof *v);
    assert_int_equal(f.wire_len, len);
    assert_int_equal((uintptr_t)f.payload % 8, 0);
    assert_memory_equal(f.payload, head, 8);
    assert_memory_equal(f.payload + 8, v, n * sizeof *v);
    free(out);

    /* incompressible data goes out plain even with compression on */
    uint32_t s = 12345;
    uint8_t *rnd = malloc(4096);
    for (int k = 0; k < 4096; k++) {
        s = s * 1103515245u + 12345u;
        rnd[k] = (uint8_t)(s >> 24);
    }
    struct iovec one = {rnd, 4096};
    assert_int_equal(tl_frame_writer_start(&w, 7, &one, 1), 0);
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, &len), 0);
    assert_int_equal(out[8], 0);
    assert_int_equal(len, 24 + 4096);
    free(out);
    /* small payloads are never compressed */
    struct iovec sm = {v, 100};
    assert_int_equal(tl_frame_writer_start(&w, 7, &sm, 1), 0);
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, &len), 0);
    assert_int_equal(out[8], 0);
    free(out);

    free(rnd);
    free(v);
    tl_frame_reader_free(&r);
    tl_frame_writer_free(&w);
}

/* A compressed frame by hand: [raw_len][zstd frame of src] (+ extra bytes). */
static uint8_t *zframe(const void *src, size_t n, uint64_t declared, int content_size, size_t extra,
                       size_t *len) {
    size_t bound = ZSTD_compressBound(n);
    uint8_t *b = calloc(1, 24 + 8 + bound + extra);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, content_size);
    size_t z;
    if (content_size) {
        z = ZSTD_compress2(cc, b + 32, bound, src, n);
    } else {
        /* streaming without a pledged size: no content size in the header */
        ZSTD_outBuffer o = {b + 32, bound, 0};
        ZSTD_inBuffer in = {src, n, 0};
        while (ZSTD_compressStream2(cc, &o, &in, ZSTD_e_end) != 0)
            ;
        z = o.pos;
    }
    assert_false(ZSTD_isError(z));
    ZSTD_freeCCtx(cc);
    for (int i = 0; i < 8; i++) b[24 + i] = (uint8_t)(declared >> (8 * i));
    hdr_bytes(b, 4, TL_FRAME_F_ZSTD, 8 + z + extra);
    *len = 24 + 8 + z + extra;
    return b;
}

static void test_zstd_malformed(void **state) {
    (void)state;
    size_t n = 1 << 20, len, used;
    uint8_t *zeros = calloc(1, n);
    tl_frame_reader r;
    tl_frame f;
    tl_frame_reader_init(&r, 64 << 10); /* 64 KiB cap */
    r.zstd = 1;

    /* bomb: 1 MiB of zeros compresses to a few bytes but is over the cap */
    uint8_t *b = zframe(zeros, n, n, 1, 0, &len);
    assert_true(len < 200);
    assert_int_equal(tl_frame_reader_feed(&r, b, len, &used, &f), TL_EPROTO);
    expect_errmsg("over the limit");
    assert_null(r.zbuf); /* nothing allocated for it */
    free(b);

    tl_frame_reader_reset(&r);
    tl_frame_reader_set_max(&r, 0);
    /* declared size differs from the zstd frame's content size */
    b = zframe(zeros, 1000, 999, 1, 0, &len);
    assert_int_equal(tl_frame_reader_feed(&r, b, len, &used, &f), TL_EPROTO);
    expect_errmsg("does not match");
    free(b);

    tl_frame_reader_reset(&r);
    b = zframe(zeros, 1000, 1000, 0, 0, &len);
    assert_int_equal(tl_frame_reader_feed(&r, b, len, &used, &f), TL_EPROTO);
    expect_errmsg("content size");
    free(b);

    tl_frame_reader_reset(&r);
    b = zframe(zeros, 1000, 1000, 1, 3, &len);
    assert_int_equal(tl_frame_reader_feed(&r, b, len, &used, &f), TL_EPROTO);
    expect_errmsg("after the zstd frame");
    free(b);

    /* corrupted compressed bytes (truncated frame) */
    tl_frame_reader_reset(&r);
    b = zframe(zeros, 1000, 1000, 1, 0, &len);
    hdr_bytes(b, 4, TL_FRAME_F_ZSTD, len - 24 - 2);
    assert_int_equal(tl_frame_reader_feed(&r, b, len - 2, &used, &f), TL_EPROTO);
    free(b);

    /* shorter than the size field; not a zstd frame at all */
    tl_frame_reader_reset(&r);
    uint8_t s[24 + 12] = {0};
    hdr_bytes(s, 4, TL_FRAME_F_ZSTD, 5);
    assert_int_equal(tl_frame_reader_feed(&r, s, 29, &used, &f), TL_EPROTO);
    expect_errmsg("shorter than its size field");
    tl_frame_reader_reset(&r);
    hdr_bytes(s, 4, TL_FRAME_F_ZSTD, 12);
    s[24] = 4;
    assert_int_equal(tl_frame_reader_feed(&r, s, 36, &used, &f), TL_EPROTO);
    expect_errmsg("not a zstd frame");

    /* and a good one still decodes afterwards */
    tl_frame_reader_reset(&r);
    b = zframe(zeros, 1000, 1000, 1, 0, &len);
    assert_int_equal(tl_frame_reader_feed(&r, b, len, &used, &f), 0);
    assert_int_equal(f.len, 1000);
    assert_memory_equal(f.payload, zeros, 1000);
    free(b);

    free(zeros);
    tl_frame_reader_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_roundtrip),
        cmocka_unit_test(test_header_malformed),
        cmocka_unit_test(test_reader_feed_bytewise_and_whole),
        cmocka_unit_test(test_reader_truncated),
        cmocka_unit_test(test_reader_rejects_before_alloc),
        cmocka_unit_test(test_reader_empty_payload_take_recycle),
        cmocka_unit_test(test_writer_iovecs_and_partial_writes),
        cmocka_unit_test(test_writer_limits),
        cmocka_unit_test(test_zstd_roundtrip),
        cmocka_unit_test(test_zstd_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
