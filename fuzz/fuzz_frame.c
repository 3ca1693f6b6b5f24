/* fuzz_frame.c - libFuzzer target for the incremental frame reader
 * (tl_frame_reader_feed) and every message decoder (tl_msg_decode_payload).
 *
 * Input layout (what fuzz/gen_frame_corpus.c writes):
 *   byte 0   reader settings: bit 0 accept zstd frames, bit 1 use the
 *            handshake cap (64 KiB) instead of 1 MiB
 *   byte 1   seed of the chunk sizes
 *   rest     the byte stream as it would arrive on a connection
 *
 * The stream is fed in chunks of pseudo-random sizes (1 byte to a few KiB,
 * drawn from the seed) as a non-blocking socket would deliver it. Every
 * complete frame is then:
 *   - decoded as its own type and as every other type (0..TL_FRAME_TYPE_MAX
 *     + 1), so each
 *     decoder sees every payload; decoded tensors and strings are read in
 *     full and run through the receiver checks (ASan catches bad views);
 *   - when it decodes as its own type, re-encoded: the bytes must equal the
 *     payload (the encoding is canonical), and the re-encoded message sent
 *     through a frame writer (plain and zstd) and a fresh reader must come
 *     back as the same payload.
 * Reading stops at the first reader error (the stream is out of sync then,
 * as on a real connection). With FUZZ_VERBOSE=1 in the environment, each
 * frame and error is printed (for looking at one input). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/frame.h"
#include "tl/msg.h"

#include "check.h"

#define FUZZ_CAP (UINT64_C(1) << 20)

static int verbose = -1;

/* A decoded tensor must be consistent and lie inside the payload. */
static void touch_tensor(const tl_tensor *t, const uint8_t *payload, uint64_t len) {
    if (t->dtype == 0) return; /* absent (FORWARD_RESULT's unused g / labels) */
    size_t es = tl_dtype_size(t->dtype);
    CHECK(es != 0 && t->rank >= 1 && t->rank <= TL_TENSOR_MAX_RANK);
    uint64_t n = 1;
    for (int i = 0; i < t->rank; i++) n *= t->dims[i];
    CHECK(n == t->numel);
    const uint8_t *d = t->data;
    CHECK(d >= payload && (uint64_t)(d - payload) <= len);
    CHECK(t->numel * es <= len - (uint64_t)(d - payload));
    CHECK(((uintptr_t)d & 7) == 0);
    touch(d, (size_t)(t->numel * es));
    if (t->dtype == TL_DT_F32) (void)tl_tensor_check_finite(t, "fuzz");
    else (void)tl_tensor_check_below(t, 1000, "fuzz");
    uint32_t dims[TL_TENSOR_MAX_RANK] = {1, 2, 3, 4};
    (void)tl_tensor_check(t, (tl_dtype)t->dtype, t->rank, dims, "fuzz");
    (void)tl_tensor_check(t, (tl_dtype)t->dtype, t->rank, t->dims, "fuzz");
}

static void touch_str(const char *s) {
    size_t n = strnlen(s, TL_MSG_STR_MAX + 1);
    CHECK(n <= TL_MSG_STR_MAX);
    touch(s, n + 1);
}

/* Reads every field of a decoded message. */
static void touch_msg(const tl_msg *m, const uint8_t *payload, uint64_t len) {
    CHECK(tl_msg_type_name(m->type) != NULL);
    switch (m->type) {
    case TL_MSG_HELLO: touch_str(m->u.hello.version); break;
    case TL_MSG_REJECT: touch_str(m->u.reject.reason); break;
    case TL_MSG_DONE: touch_str(m->u.done.reason); break;
    case TL_MSG_ERROR: touch_str(m->u.error.message); break;
    case TL_MSG_FORWARD:
        touch_tensor(&m->u.forward.rows, payload, len);
        touch_tensor(&m->u.forward.params, payload, len);
        break;
    case TL_MSG_FORWARD_RESULT:
        touch_tensor(&m->u.fwd_result.h, payload, len);
        touch_tensor(&m->u.fwd_result.g, payload, len);
        touch_tensor(&m->u.fwd_result.labels, payload, len);
        CHECK((m->u.fwd_result.g.dtype != 0) != (m->u.fwd_result.labels.dtype != 0));
        break;
    case TL_MSG_BACKWARD:
        touch_tensor(&m->u.backward.dh, payload, len);
        touch_tensor(&m->u.backward.participants, payload, len);
        break;
    case TL_MSG_BACKWARD_RESULT: touch_tensor(&m->u.bwd_result.grads, payload, len); break;
    case TL_MSG_STATS:
        touch_tensor(&m->u.stats.sum, payload, len);
        touch_tensor(&m->u.stats.sumsq, payload, len);
        break;
    case TL_MSG_EVAL: touch_tensor(&m->u.eval.params, payload, len); break;
    case TL_MSG_EVAL_RESULT: touch_tensor(&m->u.eval_result.stats, payload, len); break;
    case TL_MSG_WELCOME:
        touch_str(m->u.welcome.model);
        touch_tensor(&m->u.welcome.mean_f, payload, len);
        touch_tensor(&m->u.welcome.std_f, payload, len);
        break;
    case TL_MSG_SEALED_STEP:
        touch_tensor(&m->u.sealed_step.participants, payload, len);
        touch_tensor(&m->u.sealed_step.sum, payload, len);
        break;
    case TL_MSG_PARAM_MAC: touch(m->u.param_mac.mac, sizeof m->u.param_mac.mac); break;
    case TL_MSG_FINAL: touch_tensor(&m->u.final.params, payload, len); break;
    case TL_MSG_STATE_BLOB: touch_tensor(&m->u.state_blob.blob, payload, len); break;
    default: break;
    }
}

/* The iovecs of e concatenated into a new buffer (caller frees). */
static uint8_t *flatten(const tl_msg_enc *e) {
    uint8_t *b = malloc(e->len ? e->len : 1);
    CHECK(b);
    size_t off = 0;
    for (int i = 0; i < e->iovcnt; i++) {
        memcpy(b + off, e->iov[i].iov_base, e->iov[i].iov_len);
        off += e->iov[i].iov_len;
    }
    CHECK(off == e->len);
    return b;
}

/* Sends e through a frame writer (zstd on or off) into memory, reads it back
 * with a fresh reader fed in one go, and checks the payload comes back. */
static void writer_round_trip(const tl_msg_enc *e, const uint8_t *want, int zstd) {
    tl_frame_writer w;
    tl_frame_writer_init(&w);
    tl_frame_writer_set_zstd(&w, zstd, 1);
    uint8_t *wire = NULL;
    size_t wlen = 0;
    CHECK(tl_frame_writer_start(&w, e->type, e->iov, e->iovcnt) == 0);
    CHECK(tl_frame_writer_flush_mem(&w, &wire, &wlen) == 0);
    tl_frame_writer_free(&w);
    tl_frame_reader r;
    tl_frame_reader_init(&r, 0);
    r.zstd = 1;
    tl_frame f;
    size_t used = 0;
    int rc = tl_frame_reader_feed(&r, wire, wlen, &used, &f);
    if (rc != 0) fprintf(stderr, "writer round trip: %s\n", tl_errmsg());
    CHECK(rc == 0 && used == wlen);
    CHECK(f.type == e->type && f.len == e->len && f.wire_len == wlen);
    CHECK(memcmp(f.payload, want, (size_t)e->len) == 0);
    tl_frame_reader_free(&r);
    free(wire);
}

/* Decodes one complete frame with every decoder. */
static void check_frame(const tl_frame *f) {
    static tl_msg m; /* 4 KiB strings: keep off the stack */
    static tl_msg_enc e;
    CHECK(f->payload != NULL && ((uintptr_t)f->payload & 7) == 0);
    CHECK(f->len <= FUZZ_CAP);
    touch(f->payload, (size_t)f->len);
    int drc = tl_msg_decode(f, &m);
    if (verbose)
        fprintf(stderr, "frame %s, %llu bytes%s: %s\n", tl_msg_type_name(f->type),
                (unsigned long long)f->len, f->flags & TL_FRAME_F_ZSTD ? " (zstd)" : "",
                drc == 0 ? "decoded" : tl_errmsg());
    /* A HELLO of another protocol version is read only as far as its version
     * (so that it can be refused with the reason): nothing to round-trip. */
    int partial = drc == 0 && m.type == TL_MSG_HELLO && m.u.hello.proto_version != TL_PROTO_VERSION;
    if (drc == 0 && partial) CHECK(m.type == f->type);
    if (drc == 0 && !partial) {
        CHECK(m.type == f->type);
        touch_msg(&m, f->payload, f->len);
        int rc = tl_msg_encode(&m, &e);
        if (rc != 0)
            fprintf(stderr, "re-encoding a decoded %s: %s\n", tl_msg_type_name(m.type),
                    tl_errmsg());
        CHECK(rc == 0);
        CHECK(e.len == f->len);
        uint8_t *b = flatten(&e);
        CHECK(memcmp(b, f->payload, (size_t)f->len) == 0);
        writer_round_trip(&e, b, 0);
        writer_round_trip(&e, b, 1);
        free(b);
    }
    for (int t = 0; t <= TL_FRAME_TYPE_MAX + 1; t++) {
        if (t == f->type) continue;
        if (tl_msg_decode_payload((uint16_t)t, f->payload, f->len, &m) == 0)
            touch_msg(&m, f->payload, f->len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (verbose < 0) verbose = getenv("FUZZ_VERBOSE") && atoi(getenv("FUZZ_VERBOSE")) > 0;
    if (size < 2) return 0;
    uint8_t settings = data[0];
    uint32_t seed = data[1] * 2654435761u + 1;
    data += 2;
    size -= 2;

    tl_frame_reader r;
    tl_frame_reader_init(&r, settings & 2 ? TL_FRAME_HANDSHAKE_MAX : FUZZ_CAP);
    r.zstd = settings & 1;
    size_t pos = 0;
    int dead = 0;
    while (pos < size && !dead) {
        /* Chunk sizes: mostly small, sometimes large, sometimes everything. */
        seed = seed * 1103515245u + 12345u;
        uint32_t k = seed >> 16;
        size_t chunk = (k & 3) == 0 ? (k >> 2) % 4096 + 1 : (k & 3) == 1 ? size : (k >> 2) % 32 + 1;
        if (chunk > size - pos) chunk = size - pos;
        size_t off = 0;
        while (off < chunk) {
            tl_frame f;
            size_t used = 0;
            int rc = tl_frame_reader_feed(&r, data + pos + off, chunk - off, &used, &f);
            CHECK(used <= chunk - off);
            off += used;
            if (rc == 0) {
                check_frame(&f);
            } else if (rc == TL_EAGAIN) {
                CHECK(off == chunk);
            } else {
                if (verbose) fprintf(stderr, "reader: %s\n", tl_errmsg());
                CHECK(rc == TL_EPROTO || rc == TL_ETLS || rc == TL_ENOMEM);
                dead = 1; /* out of sync: stop, as a real connection would close */
                break;
            }
        }
        pos += chunk;
    }
    tl_frame_reader_free(&r);
    return 0;
}
