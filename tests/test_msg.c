/* test_msg.c - every message through encode -> bytes -> incremental reader ->
 * decode, the byte-level examples of docs/protocol.md, malformed payloads,
 * and the receiver-side validation helpers (msg.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/frame.h"
#include "tl/msg.h"
#include "tl/optim.h"

static void expect_errmsg(const char *needle) {
    if (!strstr(tl_errmsg(), needle))
        fail_msg("error message \"%s\" lacks \"%s\"", tl_errmsg(), needle);
}

static uint32_t rng_state = 2463534242u;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* n random 32-bit patterns (NaNs, infinities, -0 included: compared as bits). */
static uint32_t *rnd_words(size_t n) {
    uint32_t *p = malloc(n * 4 + 4);
    for (size_t i = 0; i < n; i++) p[i] = rnd();
    return p;
}

/* The frame bytes of m (encode + writer into memory). */
static uint8_t *encode_frame(const tl_msg *m, size_t *len) {
    tl_msg_enc *e = malloc(sizeof *e);
    tl_frame_writer w;
    tl_frame_writer_init(&w);
    int rc = tl_msg_start(&w, e, m);
    if (rc < 0) fail_msg("encode %s: %s", tl_msg_type_name(m->type), tl_errmsg());
    /* every tensor's data starts 8-aligned in the payload */
    uint64_t off = 0;
    for (int i = 0; i < e->iovcnt; i++) {
        int in_buf = (uint8_t *)e->iov[i].iov_base >= e->buf &&
                     (uint8_t *)e->iov[i].iov_base < e->buf + sizeof e->buf;
        if (!in_buf) assert_int_equal(off % 8, 0);
        off += e->iov[i].iov_len;
    }
    assert_int_equal(off, e->len);
    uint8_t *out;
    assert_int_equal(tl_frame_writer_flush_mem(&w, &out, len), 0);
    assert_int_equal(*len, 24 + e->len);
    tl_frame_writer_free(&w);
    free(e);
    return out;
}

static void same_tensor(const tl_tensor *a, const tl_tensor *b) {
    assert_int_equal(a->dtype, b->dtype);
    if (!a->dtype) return;
    assert_int_equal(a->rank, b->rank);
    for (int i = 0; i < a->rank; i++) assert_int_equal(a->dims[i], b->dims[i]);
    assert_int_equal(a->numel, b->numel);
    assert_int_equal((uintptr_t)b->data % 8, 0);
    if (a->numel) assert_memory_equal(a->data, b->data, a->numel * tl_dtype_size(a->dtype));
}

static void same_msg(const tl_msg *a, const tl_msg *b) {
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case TL_MSG_HELLO:
        assert_int_equal(a->u.hello.node_id, b->u.hello.node_id);
        assert_int_equal(a->u.hello.proto_version, b->u.hello.proto_version);
        assert_int_equal(a->u.hello.flags, b->u.hello.flags);
        assert_int_equal(a->u.hello.sample_count, b->u.hello.sample_count);
        assert_int_equal(a->u.hello.fingerprint, b->u.hello.fingerprint);
        assert_string_equal(a->u.hello.version, b->u.hello.version);
        assert_int_equal(a->u.hello.classes, b->u.hello.classes);
        assert_int_equal(a->u.hello.elem, b->u.hello.elem);
        assert_int_equal(a->u.hello.rank, b->u.hello.rank);
        assert_memory_equal(a->u.hello.shape, b->u.hello.shape, sizeof a->u.hello.shape);
        assert_int_equal(a->u.hello.test_count, b->u.hello.test_count);
        assert_int_equal(a->u.hello.labels_hash, b->u.hello.labels_hash);
        assert_int_equal(a->u.hello.privacy, b->u.hello.privacy);
        assert_memory_equal(a->u.hello.key_id, b->u.hello.key_id, 16);
        break;
    case TL_MSG_WELCOME:
        assert_int_equal(a->u.welcome.run_id, b->u.welcome.run_id);
        assert_int_equal(a->u.welcome.flags, b->u.welcome.flags);
        assert_int_equal(a->u.welcome.cut, b->u.welcome.cut);
        assert_int_equal(a->u.welcome.mode, b->u.welcome.mode);
        assert_int_equal(a->u.welcome.n_classes, b->u.welcome.n_classes);
        assert_int_equal(a->u.welcome.input_dim, b->u.welcome.input_dim);
        assert_memory_equal(&a->u.welcome.mean, &b->u.welcome.mean, 4);
        assert_memory_equal(&a->u.welcome.std, &b->u.welcome.std, 4);
        assert_int_equal(a->u.welcome.heartbeat_ms, b->u.welcome.heartbeat_ms);
        assert_string_equal(a->u.welcome.model, b->u.welcome.model);
        assert_int_equal(a->u.welcome.norm, b->u.welcome.norm);
        assert_int_equal(a->u.welcome.rank, b->u.welcome.rank);
        assert_memory_equal(a->u.welcome.shape, b->u.welcome.shape, sizeof a->u.welcome.shape);
        assert_int_equal(a->u.welcome.privacy, b->u.welcome.privacy);
        assert_int_equal(a->u.welcome.mac_every, b->u.welcome.mac_every);
        assert_int_equal(a->u.welcome.opt_kind, b->u.welcome.opt_kind);
        assert_int_equal(a->u.welcome.opt_nesterov, b->u.welcome.opt_nesterov);
        assert_memory_equal(&a->u.welcome.opt_lr, &b->u.welcome.opt_lr, 8);
        assert_memory_equal(&a->u.welcome.opt_beta2, &b->u.welcome.opt_beta2, 8);
        assert_int_equal(a->u.welcome.opt_steps, b->u.welcome.opt_steps);
        if (a->u.welcome.norm == TL_WELCOME_NORM_FEATURE) {
            same_tensor(&a->u.welcome.mean_f, &b->u.welcome.mean_f);
            same_tensor(&a->u.welcome.std_f, &b->u.welcome.std_f);
        } else { /* absent (dtype 0) on encode is F32 [0] on the wire */
            assert_int_equal(b->u.welcome.mean_f.numel, 0);
            assert_int_equal(b->u.welcome.std_f.numel, 0);
        }
        break;
    case TL_MSG_REJECT:
        assert_int_equal(a->u.reject.code, b->u.reject.code);
        assert_string_equal(a->u.reject.reason, b->u.reject.reason);
        break;
    case TL_MSG_FORWARD:
        assert_int_equal(a->u.forward.step, b->u.forward.step);
        same_tensor(&a->u.forward.rows, &b->u.forward.rows);
        same_tensor(&a->u.forward.params, &b->u.forward.params);
        break;
    case TL_MSG_FORWARD_RESULT:
        assert_int_equal(a->u.fwd_result.step, b->u.fwd_result.step);
        assert_memory_equal(&a->u.fwd_result.loss_sum, &b->u.fwd_result.loss_sum, 8);
        assert_int_equal(a->u.fwd_result.correct, b->u.fwd_result.correct);
        same_tensor(&a->u.fwd_result.h, &b->u.fwd_result.h);
        same_tensor(&a->u.fwd_result.g, &b->u.fwd_result.g);
        same_tensor(&a->u.fwd_result.labels, &b->u.fwd_result.labels);
        break;
    case TL_MSG_BACKWARD:
        assert_int_equal(a->u.backward.step, b->u.backward.step);
        assert_int_equal(a->u.backward.attempt, b->u.backward.attempt);
        same_tensor(&a->u.backward.dh, &b->u.backward.dh);
        if (a->u.backward.participants.dtype)
            same_tensor(&a->u.backward.participants, &b->u.backward.participants);
        else /* an unset one goes out as u32 [0] */
            assert_int_equal(b->u.backward.participants.numel, 0);
        break;
    case TL_MSG_SEALED_STEP:
        assert_int_equal(a->u.sealed_step.step, b->u.sealed_step.step);
        assert_int_equal(a->u.sealed_step.attempt, b->u.sealed_step.attempt);
        assert_int_equal(a->u.sealed_step.flags, b->u.sealed_step.flags);
        assert_memory_equal(&a->u.sealed_step.lr, &b->u.sealed_step.lr, 8);
        same_tensor(&a->u.sealed_step.participants, &b->u.sealed_step.participants);
        same_tensor(&a->u.sealed_step.sum, &b->u.sealed_step.sum);
        break;
    case TL_MSG_PARAM_MAC:
        assert_int_equal(a->u.param_mac.step, b->u.param_mac.step);
        assert_memory_equal(a->u.param_mac.mac, b->u.param_mac.mac, 32);
        break;
    case TL_MSG_FINAL:
        assert_int_equal(a->u.final.step, b->u.final.step);
        same_tensor(&a->u.final.params, &b->u.final.params);
        break;
    case TL_MSG_BACKWARD_RESULT:
        assert_int_equal(a->u.bwd_result.step, b->u.bwd_result.step);
        same_tensor(&a->u.bwd_result.grads, &b->u.bwd_result.grads);
        break;
    case TL_MSG_HEARTBEAT: assert_int_equal(a->u.heartbeat.nonce, b->u.heartbeat.nonce); break;
    case TL_MSG_DONE: assert_string_equal(a->u.done.reason, b->u.done.reason); break;
    case TL_MSG_ERROR:
        assert_int_equal(a->u.error.code, b->u.error.code);
        assert_string_equal(a->u.error.message, b->u.error.message);
        break;
    case TL_MSG_READY:
        assert_int_equal(a->u.ready.run_id, b->u.ready.run_id);
        assert_int_equal(a->u.ready.state_step, b->u.ready.state_step);
        break;
    case TL_MSG_STATE_REQUEST:
        assert_int_equal(a->u.state_request.step, b->u.state_request.step);
        assert_int_equal(a->u.state_request.to, b->u.state_request.to);
        break;
    case TL_MSG_STATE_BLOB:
        assert_int_equal(a->u.state_blob.step, b->u.state_blob.step);
        assert_int_equal(a->u.state_blob.from, b->u.state_blob.from);
        assert_int_equal(a->u.state_blob.to, b->u.state_blob.to);
        same_tensor(&a->u.state_blob.blob, &b->u.state_blob.blob);
        break;
    case TL_MSG_CHECKPOINT: assert_int_equal(a->u.checkpoint.step, b->u.checkpoint.step); break;
    case TL_MSG_STATS_REQUEST:
        assert_int_equal(a->u.stats_request.what, b->u.stats_request.what);
        break;
    case TL_MSG_STATS:
        assert_int_equal(a->u.stats.count, b->u.stats.count);
        same_tensor(&a->u.stats.sum, &b->u.stats.sum);
        same_tensor(&a->u.stats.sumsq, &b->u.stats.sumsq);
        break;
    case TL_MSG_EVAL:
        assert_int_equal(a->u.eval.step, b->u.eval.step);
        assert_int_equal(a->u.eval.bins, b->u.eval.bins);
        same_tensor(&a->u.eval.params, &b->u.eval.params);
        break;
    case TL_MSG_EVAL_RESULT:
        assert_int_equal(a->u.eval_result.step, b->u.eval_result.step);
        same_tensor(&a->u.eval_result.stats, &b->u.eval_result.stats);
        break;
    default: fail();
    }
}

/* m -> bytes -> reader (1 byte at a time, then all at once) -> decode == m;
 * also every strict prefix of the payload fails to decode. */
static void roundtrip(const tl_msg *m) {
    size_t len, used;
    uint8_t *bytes = encode_frame(m, &len);
    tl_msg *d = malloc(sizeof *d);
    tl_frame f;
    tl_frame_reader r;

    tl_frame_reader_init(&r, 0);
    for (size_t i = 0; i < len; i++) {
        int rc = tl_frame_reader_feed(&r, bytes + i, 1, &used, &f);
        assert_int_equal(used, 1);
        assert_int_equal(rc, i + 1 == len ? 0 : TL_EAGAIN);
    }
    memset(d, 0xa5, sizeof *d);
    if (tl_msg_decode(&f, d) < 0) fail_msg("decode %s: %s", tl_msg_type_name(m->type), tl_errmsg());
    same_msg(m, d);
    tl_frame_reader_free(&r);

    tl_frame_reader_init(&r, 0);
    assert_int_equal(tl_frame_reader_feed(&r, bytes, len, &used, &f), 0);
    assert_int_equal(used, len);
    memset(d, 0x5a, sizeof *d);
    assert_int_equal(tl_msg_decode(&f, d), 0);
    same_msg(m, d);

    /* strict prefixes, each in an exactly sized buffer (ASan sees over-reads) */
    for (uint64_t k = 0; k < f.len; k++) {
        uint8_t *p = malloc(k ? k : 1);
        memcpy(p, f.payload, k);
        assert_int_equal(tl_msg_decode_payload(f.type, p, k, d), TL_EPROTO);
        free(p);
    }
    /* one more byte is trailing garbage */
    uint8_t *p = malloc(f.len + 8);
    memcpy(p, f.payload, f.len);
    p[f.len] = 0;
    assert_int_equal(tl_msg_decode_payload(f.type, p, f.len + 1, d), TL_EPROTO);
    expect_errmsg("trailing");
    free(p);

    tl_frame_reader_free(&r);
    free(d);
    free(bytes);
}

static void test_roundtrip_handshake(void **state) {
    (void)state;
    tl_msg *m = calloc(1, sizeof *m);
    m->type = TL_MSG_HELLO;
    // clang-format off
    m->u.hello = (tl_msg_hello){7, TL_PROTO_VERSION, TL_HELLO_F_ZSTD, 60000, 0xdeadbeefcafef00dull,
                                "", 10, TL_ELEM_WIRE_U8, 3, {1, 28, 28}, 10000, 0, 0, {0}};
    // clang-format on
    strcpy(m->u.hello.version, "0.1.0");
    roundtrip(m);
    m->u.hello.labels_hash = 0x8877665544332211ull; /* string labels */
    m->u.hello.elem = TL_ELEM_WIRE_F32;
    m->u.hello.rank = 1;
    m->u.hello.shape[0] = 30, m->u.hello.shape[1] = m->u.hello.shape[2] = 0;
    roundtrip(m);
    m->u.hello.version[0] = 0; /* empty string */
    roundtrip(m);
    memset(m->u.hello.version, 'v', TL_MSG_STR_MAX); /* longest string */
    m->u.hello.version[TL_MSG_STR_MAX] = 0;
    roundtrip(m);
    m->u.hello.privacy = TL_PRIVACY_SEALED; /* sealed: the group key's id */
    for (int i = 0; i < 16; i++) m->u.hello.key_id[i] = (uint8_t)(0xa0 + i);
    roundtrip(m);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_WELCOME;
    // clang-format off
    m->u.welcome = (tl_msg_welcome){0x1122334455667788ull, TL_WELCOME_F_ZSTD, 4, 1, 10, 784,
                                    0.1307f, 0.3081f, 2000, "", 0, 0, {0, 0, 0}, {0}, {0}, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    // clang-format on
    strcpy(m->u.welcome.model, "linear:256,linear:128,linear:64,linear:10");
    roundtrip(m); /* what a protocol-2 orchestrator filled in: scalar norm, no shape */
    m->u.welcome.privacy = TL_PRIVACY_SEALED; /* sealed: MAC period, node-side optimizer */
    m->u.welcome.mac_every = 50;
    m->u.welcome.opt_kind = 3;
    m->u.welcome.opt_nesterov = 1;
    m->u.welcome.opt_lr = 1e-3;
    m->u.welcome.opt_beta2 = 0.999;
    m->u.welcome.opt_steps = 12;
    roundtrip(m);
    m->u.welcome.rank = 3;
    m->u.welcome.shape[0] = 1, m->u.welcome.shape[1] = m->u.welcome.shape[2] = 28;
    roundtrip(m);
    /* per-feature descriptor, odd width (the second tensor needs padding) */
    uint32_t *mf = rnd_words(31), *sf = rnd_words(31);
    m->u.welcome.input_dim = 31;
    m->u.welcome.rank = 1;
    m->u.welcome.shape[0] = 31, m->u.welcome.shape[1] = m->u.welcome.shape[2] = 0;
    m->u.welcome.norm = TL_WELCOME_NORM_FEATURE;
    m->u.welcome.mean_f = tl_tensor_1d(TL_DT_F32, mf, 31);
    m->u.welcome.std_f = tl_tensor_1d(TL_DT_F32, sf, 31);
    roundtrip(m);
    free(mf);
    free(sf);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS_REQUEST;
    m->u.stats_request.what = TL_STATS_NORM;
    roundtrip(m);
    memset(m, 0, sizeof *m);
    double sums[7] = {1.5, -2, 3e300, 0, 5, 6, 7}, sq[7] = {2.25, 4, 1, 0, 25, 36, 49};
    m->type = TL_MSG_STATS;
    m->u.stats.count = 123456789012ull;
    m->u.stats.sum = tl_tensor_1d(TL_DT_F64, sums, 7);
    m->u.stats.sumsq = tl_tensor_1d(TL_DT_F64, sq, 7);
    roundtrip(m);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_REJECT;
    m->u.reject.code = TL_REJECT_FINGERPRINT;
    strcpy(m->u.reject.reason, "node 3: data fingerprint changed since its first connection");
    roundtrip(m);
    free(m);
}

static void test_roundtrip_step(void **state) {
    (void)state;
    tl_msg *m = calloc(1, sizeof *m);
    /* several row counts: odd counts need padding before the next tensor */
    for (uint32_t n = 1; n <= 9; n += 4) {
        uint32_t P = 1000 + n, dc = 5, classes = 3;
        uint32_t *rows = rnd_words(n), *params = rnd_words(P), *h = rnd_words(n * dc),
                 *g = rnd_words(n * classes), *labels = rnd_words(n), *dh = rnd_words(n * dc);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_FORWARD;
        m->u.forward.step = 1ull << 40 | n;
        m->u.forward.rows = tl_tensor_1d(TL_DT_U32, rows, n);
        m->u.forward.params = tl_tensor_1d(TL_DT_F32, params, P);
        roundtrip(m);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_FORWARD_RESULT;
        m->u.fwd_result.step = 99;
        m->u.fwd_result.loss_sum = -123.456e-7;
        m->u.fwd_result.correct = n - 1;
        m->u.fwd_result.h = tl_tensor_2d(TL_DT_F32, h, n, dc);
        m->u.fwd_result.g = tl_tensor_2d(TL_DT_F32, g, n, classes);
        roundtrip(m); /* traverse */
        memset(&m->u.fwd_result.g, 0, sizeof(tl_tensor));
        m->u.fwd_result.labels = tl_tensor_1d(TL_DT_I32, labels, n);
        roundtrip(m); /* split */

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_BACKWARD;
        m->u.backward.step = 3;
        m->u.backward.dh = tl_tensor_2d(TL_DT_F32, dh, n, dc);
        roundtrip(m);
        m->u.backward.attempt = 7; /* sealed */
        m->u.backward.participants = tl_tensor_1d(TL_DT_U32, rows, n);
        roundtrip(m);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_SEALED_STEP;
        m->u.sealed_step.step = 5;
        m->u.sealed_step.attempt = 2;
        m->u.sealed_step.flags = TL_SEALED_F_MAC;
        m->u.sealed_step.lr = 0.125;
        m->u.sealed_step.participants = tl_tensor_1d(TL_DT_U32, rows, n);
        m->u.sealed_step.sum = tl_tensor_1d(TL_DT_U64, params, P / 2);
        roundtrip(m);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_FINAL;
        m->u.final.step = 9;
        m->u.final.params = tl_tensor_1d(TL_DT_F32, params, P);
        roundtrip(m);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_BACKWARD_RESULT; /* sealed: masked fixed point */
        m->u.bwd_result.step = 4;
        m->u.bwd_result.grads = tl_tensor_1d(TL_DT_U64, params, P / 2);
        roundtrip(m);

        memset(m, 0, sizeof *m);
        m->type = TL_MSG_BACKWARD_RESULT;
        m->u.bwd_result.step = UINT64_MAX;
        m->u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, params, P - 1);
        roundtrip(m);

        free(rows);
        free(params);
        free(h);
        free(g);
        free(labels);
        free(dh);
    }
    /* zero-element tensors are legal on the wire */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_FORWARD;
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, NULL, 0);
    m->u.forward.params = tl_tensor_1d(TL_DT_F32, NULL, 0);
    roundtrip(m);
    free(m);
}

static void test_roundtrip_control(void **state) {
    (void)state;
    tl_msg *m = calloc(1, sizeof *m);
    m->type = TL_MSG_HEARTBEAT;
    m->u.heartbeat.nonce = 0x0123456789abcdefull;
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_DONE;
    strcpy(m->u.done.reason, "training finished: 10 epochs");
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_ERROR;
    m->u.error.code = (uint32_t)-TL_ENUMERIC;
    strcpy(m->u.error.message, "grads: element 17 is NaN \xc3\xa9"); /* UTF-8 passes */
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_READY;
    m->u.ready.run_id = 0x1122334455667788ull;
    roundtrip(m);
    m->u.ready.state_step = TL_STATE_NONE;
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATE_REQUEST;
    m->u.state_request.step = 1234;
    m->u.state_request.to = 3;
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATE_BLOB;
    m->u.state_blob.step = 1234;
    m->u.state_blob.from = 1;
    m->u.state_blob.to = 3;
    uint8_t blob[37];
    for (int i = 0; i < 37; i++) blob[i] = (uint8_t)(i * 11 + 1);
    m->u.state_blob.blob = tl_tensor_1d(TL_DT_U8, blob, 37); /* odd length: the last field */
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_CHECKPOINT;
    m->u.checkpoint.step = 50;
    roundtrip(m);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_PARAM_MAC;
    m->u.param_mac.step = 1000;
    for (int i = 0; i < 32; i++) m->u.param_mac.mac[i] = (uint8_t)(i * 7);
    roundtrip(m);

    uint32_t *params = rnd_words(1001);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL;
    m->u.eval.step = 938;
    m->u.eval.bins = TL_EVAL_BINS;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, params, 1001);
    roundtrip(m);
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, NULL, 0); /* shared memory */
    roundtrip(m);
    /* a real evaluation's words */
    tl_evalstats es;
    assert_int_equal(tl_evalstats_init(&es, 3, 8), 0);
    float z[6] = {1, 2, 3, 3, 2, 1};
    int32_t y[2] = {2, 1};
    assert_int_equal(tl_evalstats_add(&es, z, y, 2), 0);
    size_t size = tl_evalstats_size(3, 8);
    uint8_t *w = malloc(size);
    tl_evalstats_encode(&es, w);
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL_RESULT;
    m->u.eval_result.step = 938;
    m->u.eval_result.stats = tl_tensor_1d(TL_DT_U64, w, (uint32_t)(size / 8));
    roundtrip(m);
    free(w);
    free(params);
    tl_evalstats_free(&es);
    free(m);
}

/* ------------------------------------------------------------ doc examples */

static void check_golden(const tl_msg *m, const uint8_t *want, size_t want_len) {
    size_t len;
    uint8_t *b = encode_frame(m, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(b, want, len);
    /* and it decodes back */
    tl_frame_reader r;
    tl_frame f;
    tl_msg *d = malloc(sizeof *d);
    tl_frame_reader_init(&r, TL_FRAME_HANDSHAKE_MAX);
    assert_int_equal(tl_frame_reader_feed(&r, want, want_len, NULL, &f), 0);
    assert_int_equal(tl_msg_decode(&f, d), 0);
    same_msg(m, d);
    tl_frame_reader_free(&r);
    free(d);
    free(b);
}

static void test_doc_examples(void **state) {
    (void)state;
    tl_msg *m = calloc(1, sizeof *m);

    static const uint8_t hello[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x04, 0x00, 0x01, 0x00, 0x20, 0x4e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xef, 0xcd,
        0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0x05, 0x00, 0x00, 0x00, 0x30, 0x2e, 0x31, 0x2e,
        0x30, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x1e,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x39, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
        0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
    m->type = TL_MSG_HELLO;
    // clang-format off
    m->u.hello = (tl_msg_hello){2, TL_PROTO_VERSION, 1, 20000, 0x0123456789ABCDEFull, "0.1.0",
                                2, TL_ELEM_WIRE_F32, 1, {30, 0, 0}, 57, 0, TL_PRIVACY_SEALED,
                                {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa,
                                 0xab, 0xac, 0xad, 0xae, 0xaf}};
    // clang-format on
    check_golden(m, hello, sizeof hello);

    static const uint8_t welcome[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
        0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f,
        0x00, 0x00, 0x00, 0x00, 0x16, 0x00, 0x00, 0x00, 0x6c, 0x69, 0x6e, 0x65, 0x61, 0x72, 0x3a,
        0x32, 0x2c, 0x72, 0x65, 0x6c, 0x75, 0x2c, 0x6c, 0x69, 0x6e, 0x65, 0x61, 0x72, 0x3a, 0x32,
        0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f, 0xcd,
        0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xec, 0x3f, 0x8d, 0xed, 0xb5, 0xa0, 0xf7, 0xc6, 0xb0, 0x3e,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcd, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
        0xec, 0x3f, 0x2b, 0x87, 0x16, 0xd9, 0xce, 0xf7, 0xef, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x20, 0x41, 0x00, 0x00, 0x00, 0xbf, 0x01, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x40, 0x00, 0x00, 0x80, 0x3e};
    float wmean[2] = {10.0f, -0.5f}, wstd[2] = {2.0f, 0.25f};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_WELCOME;
    // clang-format off
    m->u.welcome = (tl_msg_welcome){0x1122334455667788ull, 0, 1, 0, 2, 2, 0.0f, 1.0f, 0,
                                    "linear:2,relu,linear:2", TL_WELCOME_NORM_FEATURE, 1,
                                    {2, 0, 0}, tl_tensor_1d(TL_DT_F32, wmean, 2),
                                    tl_tensor_1d(TL_DT_F32, wstd, 2), TL_PRIVACY_SEALED, 50,
                                    TL_OPT_ADADELTA, 0, 1.0, 0.9, 1e-6, 0, 0, 0, 0.9, 0.999, 0};
    // clang-format on
    check_golden(m, welcome, sizeof welcome);

    static const uint8_t sealed_step[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xe0, 0x3f, 0x03, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x00, 0x06, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint32_t ss_ids[2] = {1, 3};
    static const uint64_t ss_sum[2] = {1, UINT64_MAX};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_SEALED_STEP;
    m->u.sealed_step.step = 5;
    m->u.sealed_step.attempt = 1;
    m->u.sealed_step.flags = TL_SEALED_F_MAC;
    m->u.sealed_step.lr = 0.5;
    m->u.sealed_step.participants = tl_tensor_1d(TL_DT_U32, ss_ids, 2);
    m->u.sealed_step.sum = tl_tensor_1d(TL_DT_U64, ss_sum, 2);
    check_golden(m, sealed_step, sizeof sealed_step);

    static const uint8_t param_mac[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
        0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
        0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_PARAM_MAC;
    m->u.param_mac.step = 7;
    for (int i = 0; i < 32; i++) m->u.param_mac.mac[i] = (uint8_t)i;
    check_golden(m, param_mac, sizeof param_mac);

    static const uint8_t stats_request[] = {0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x0c, 0x00,
                                            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                            0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS_REQUEST;
    m->u.stats_request.what = TL_STATS_NORM;
    check_golden(m, stats_request, sizeof stats_request);

    static const uint8_t stats[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x05, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x18, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0xbf,
        0x05, 0x01, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x2c, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe8, 0x3f};
    double ssum[2] = {6.0, -1.5}, ssq[2] = {14.0, 0.75};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS;
    m->u.stats.count = 3;
    m->u.stats.sum = tl_tensor_1d(TL_DT_F64, ssum, 2);
    m->u.stats.sumsq = tl_tensor_1d(TL_DT_F64, ssq, 2);
    check_golden(m, stats, sizeof stats);

    static const uint8_t eval[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x03,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f};
    float eparams[3] = {1.0f, -2.0f, 0.5f};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL;
    m->u.eval.step = 5;
    m->u.eval.bins = 4096;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, eparams, 3);
    check_golden(m, eval, sizeof eval);

    static const uint8_t eval_result[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x0f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x98, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x06, 0x01, 0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x74, 0x6c, 0x65, 0x76, 0x61,
        0x6c, 0x30, 0x31, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0xf8, 0x3f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    /* the words are a valid evaluation of 3 rows, 2 classes, 2 bins (docs) */
    tl_evalstats es;
    assert_int_equal(tl_evalstats_init(&es, 2, 2), 0);
    assert_int_equal(tl_evalstats_decode(&es, eval_result + 40, 136), 0);
    assert_int_equal(es.n, 3);
    assert_true(es.loss_sum == 1.5);
    assert_int_equal(es.confusion[2], 1); /* true 1 predicted 0 */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL_RESULT;
    m->u.eval_result.step = 5;
    m->u.eval_result.stats = tl_tensor_1d(TL_DT_U64, eval_result + 40, 17);
    check_golden(m, eval_result, sizeof eval_result);
    tl_evalstats_free(&es);

    static const uint8_t forward[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x34, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00,
        0x00, 0x03, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00,
        0x01, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f};
    uint32_t rows[3] = {3, 5, 9};
    float params[3] = {1.0f, -2.0f, 0.5f};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_FORWARD;
    m->u.forward.step = 7;
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, rows, 3);
    m->u.forward.params = tl_tensor_1d(TL_DT_F32, params, 3);
    check_golden(m, forward, sizeof forward);

    static const uint8_t reject[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x23, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x1b, 0x00,
        0x00, 0x00, 0x6e, 0x6f, 0x64, 0x65, 0x20, 0x32, 0x20, 0x69, 0x73, 0x20, 0x61, 0x6c, 0x72,
        0x65, 0x61, 0x64, 0x79, 0x20, 0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x65, 0x64};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_REJECT;
    m->u.reject.code = TL_REJECT_DUPLICATE_ID;
    strcpy(m->u.reject.reason, "node 2 is already connected");
    check_golden(m, reject, sizeof reject);

    static const uint8_t heartbeat[] = {0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x08, 0x00,
                                        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                        0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_HEARTBEAT;
    m->u.heartbeat.nonce = 42;
    check_golden(m, heartbeat, sizeof heartbeat);

    /* READY (docs/protocol.md §10): the run_id of WELCOME, echoed; a sealed
     * node holding no node side of the run */
    static const uint8_t ready[] = {0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x0b, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                                    0x22, 0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_READY;
    m->u.ready.run_id = 0x1122334455667788ull;
    m->u.ready.state_step = TL_STATE_NONE;
    check_golden(m, ready, sizeof ready);

    /* STATE_REQUEST (§10): the node side of step 300 for node 3 */
    static const uint8_t state_request[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATE_REQUEST;
    m->u.state_request.step = 300;
    m->u.state_request.to = 3;
    check_golden(m, state_request, sizeof state_request);

    /* STATE_BLOB (§10): step 300, from node 1 to node 3, 5 bytes (a real
     * one is the sealed node side: nodestate.h) */
    static const uint8_t state_blob[] = {
        0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0x01,
        0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x01};
    static const uint8_t five[5] = {0xde, 0xad, 0xbe, 0xef, 0x01};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATE_BLOB;
    m->u.state_blob.step = 300;
    m->u.state_blob.from = 1;
    m->u.state_blob.to = 3;
    m->u.state_blob.blob = tl_tensor_1d(TL_DT_U8, five, 5);
    check_golden(m, state_blob, sizeof state_blob);

    /* CHECKPOINT (§10): save (or saved) the node side of step 50 */
    static const uint8_t checkpoint[] = {0x54, 0x4c, 0x4e, 0x31, 0x01, 0x00, 0x15, 0x00,
                                         0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                         0x32, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_CHECKPOINT;
    m->u.checkpoint.step = 50;
    check_golden(m, checkpoint, sizeof checkpoint);
    free(m);
}

/* ------------------------------------------------------------ malformed */

/* A hand-built payload. */
typedef struct bytes {
    _Alignas(8) uint8_t b[9000];
    size_t n;
} bytes;

static void b_raw(bytes *x, const void *p, size_t n) {
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void b_u8(bytes *x, uint8_t v) { b_raw(x, &v, 1); }
static void b_u32(bytes *x, uint32_t v) {
    for (int i = 0; i < 4; i++) b_u8(x, (uint8_t)(v >> (8 * i)));
}
static void b_u64(bytes *x, uint64_t v) {
    b_u32(x, (uint32_t)v);
    b_u32(x, (uint32_t)(v >> 32));
}
/* Tensor header + zero pad (as an encoder would), no data. */
static void b_thdr(bytes *x, int dtype, int rank, const uint32_t *dims) {
    b_u8(x, (uint8_t)dtype);
    b_u8(x, (uint8_t)rank);
    b_u8(x, 0);
    b_u8(x, 0);
    for (int i = 0; i < rank; i++) b_u32(x, dims[i]);
    while (x->n % 8) b_u8(x, 0);
}

static int dec(uint16_t type, const bytes *x) {
    static tl_msg m;
    return tl_msg_decode_payload(type, x->b, x->n, &m);
}

static void test_malformed_strings(void **state) {
    (void)state;
    bytes x = {0};
    /* HELLO with a string length past the end */
    b_u32(&x, 1);
    b_u32(&x, 1 | (0 << 16));
    b_u64(&x, 10);
    b_u64(&x, 0);
    size_t fixed = x.n;
    b_u32(&x, 10);
    b_raw(&x, "0.1.0", 5);
    assert_int_equal(dec(TL_MSG_HELLO, &x), TL_EPROTO);
    expect_errmsg("HELLO: software version needs 10 bytes");

    /* over the cap, even though the bytes are there */
    x.n = 0;
    b_u32(&x, TL_REJECT_RUN_FULL);
    b_u32(&x, TL_MSG_STR_MAX + 1);
    memset(x.b + x.n, 'a', TL_MSG_STR_MAX + 1);
    x.n += TL_MSG_STR_MAX + 1;
    assert_int_equal(dec(TL_MSG_REJECT, &x), TL_EPROTO);
    expect_errmsg("over the 4096-byte limit");
    /* exactly at the cap is fine */
    x.n = 4;
    b_u32(&x, TL_MSG_STR_MAX);
    x.n += TL_MSG_STR_MAX;
    assert_int_equal(dec(TL_MSG_REJECT, &x), 0);

    /* a NUL inside */
    x.n = fixed;
    b_u32(&x, 3);
    b_raw(&x, "a\0b", 3);
    assert_int_equal(dec(TL_MSG_HELLO, &x), TL_EPROTO);
    expect_errmsg("NUL");

    /* string length 0xFFFFFFFF */
    x.n = 0;
    b_u32(&x, 0xffffffffu);
    assert_int_equal(dec(TL_MSG_DONE, &x), TL_EPROTO);
}

static void test_malformed_tensors(void **state) {
    (void)state;
    bytes x;
    uint32_t d3[5] = {3, 1, 1, 1, 1};

    /* rank 0 and rank 5 */
    for (int rank = 0; rank <= 5; rank += 5) {
        x.n = 0;
        b_u64(&x, 1);
        b_thdr(&x, TL_DT_U32, rank, d3);
        assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
        expect_errmsg("rank");
    }

    /* dims whose product overflows (BACKWARD dh is f32 rank 2) */
    x.n = 0;
    b_u64(&x, 1);
    b_u64(&x, 0); /* attempt, pad */
    uint32_t huge[2] = {0xffffffffu, 0xffffffffu};
    b_thdr(&x, TL_DT_F32, 2, huge);
    assert_int_equal(dec(TL_MSG_BACKWARD, &x), TL_EPROTO);
    expect_errmsg("overflows");

    /* data past the end */
    x.n = 0;
    b_u64(&x, 1);
    uint32_t big[1] = {1000};
    b_thdr(&x, TL_DT_U32, 1, big);
    memset(x.b + x.n, 0, 3996);
    x.n += 3996;
    assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
    expect_errmsg("run past the end");

    /* a 0-row dh is fine, then trailing bytes are not */
    x.n = 0;
    b_u64(&x, 1);
    b_u64(&x, 0); /* attempt, pad */
    uint32_t zero[2] = {0, 64}, none[1] = {0};
    b_thdr(&x, TL_DT_F32, 2, zero);
    b_thdr(&x, TL_DT_U32, 1, none);
    assert_int_equal(dec(TL_MSG_BACKWARD, &x), 0);
    b_u8(&x, 0);
    assert_int_equal(dec(TL_MSG_BACKWARD, &x), TL_EPROTO);
    expect_errmsg("1 trailing bytes");

    /* wrong dtype for a field: rows as f32; dh of rank 1; unknown dtype */
    x.n = 0;
    b_u64(&x, 1);
    b_thdr(&x, TL_DT_F32, 1, d3);
    b_raw(&x, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
    expect_errmsg("rows must be u32 rank 1, got f32 rank 1");
    x.n = 0;
    b_u64(&x, 1);
    b_u64(&x, 0); /* attempt, pad */
    b_thdr(&x, TL_DT_F32, 1, d3);
    b_raw(&x, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    assert_int_equal(dec(TL_MSG_BACKWARD, &x), TL_EPROTO);
    expect_errmsg("dh must be f32 rank 2");
    x.n = 0;
    b_u64(&x, 1);
    b_thdr(&x, 9, 1, d3);
    assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
    expect_errmsg("unknown dtype 9");

    /* nonzero reserved byte; nonzero padding */
    x.n = 0;
    b_u64(&x, 1);
    b_thdr(&x, TL_DT_U32, 1, d3);
    x.b[10] = 1;
    assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
    expect_errmsg("reserved");
    x.n = 0;
    b_u64(&x, 1);
    b_thdr(&x, TL_DT_U32, 1, d3);
    b_raw(&x, "\0\0\0\0\0\0\0\0\0\0\0\0", 12); /* rows data ends at 28 */
    b_thdr(&x, TL_DT_F32, 1, d3);              /* header to 36, pad to 40 */
    assert_int_equal(x.n, 40);
    b_raw(&x, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    assert_int_equal(dec(TL_MSG_FORWARD, &x), 0);
    x.b[37] = 1;
    assert_int_equal(dec(TL_MSG_FORWARD, &x), TL_EPROTO);
    expect_errmsg("params has nonzero padding");

    /* FORWARD_RESULT: second tensor of a third kind, row mismatch, pad */
    uint32_t hd[2] = {2, 3}, gd[2] = {3, 10};
    float zeros[64] = {0};
    x.n = 0;
    b_u64(&x, 5);
    b_u64(&x, 0);
    b_u32(&x, 0);
    b_u32(&x, 0);
    b_thdr(&x, TL_DT_F32, 2, hd);
    b_raw(&x, zeros, 24);
    size_t after_h = x.n;
    b_thdr(&x, TL_DT_U32, 1, hd);
    b_raw(&x, zeros, 8);
    assert_int_equal(dec(TL_MSG_FORWARD_RESULT, &x), TL_EPROTO);
    expect_errmsg("g/labels must be f32 rank 2 or i32 rank 1, got u32 rank 1");
    x.n = after_h;
    b_thdr(&x, TL_DT_F32, 2, gd);
    b_raw(&x, zeros, 120);
    assert_int_equal(dec(TL_MSG_FORWARD_RESULT, &x), TL_EPROTO);
    expect_errmsg("h has 2 rows but g has 3");
    x.n = after_h;
    b_thdr(&x, TL_DT_I32, 1, hd);
    b_raw(&x, zeros, 8);
    assert_int_equal(dec(TL_MSG_FORWARD_RESULT, &x), 0);
    x.b[20] = 1;
    assert_int_equal(dec(TL_MSG_FORWARD_RESULT, &x), TL_EPROTO);
    expect_errmsg("pad");
}

static void test_malformed_misc(void **state) {
    (void)state;
    bytes x = {0};
    tl_msg *m = calloc(1, sizeof *m);
    /* WELCOME with unknown flag bits or mode */
    m->type = TL_MSG_WELCOME;
    m->u.welcome.mode = 1;
    strcpy(m->u.welcome.model, "linear:10");
    size_t len;
    uint8_t *fr = encode_frame(m, &len);
    memcpy(x.b, fr + 24, len - 24);
    x.n = len - 24;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), 0);
    x.b[9] = 1;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("flags");
    x.b[9] = 0;
    x.b[16] = 2;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("mode");
    x.b[16] = 1;
    /* protocol 3 fields: model "linear:10" ends at 53; norm 53, rank 57, shape 61..73 */
    x.b[53] = 2;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("unknown norm 2");
    x.b[53] = TL_WELCOME_NORM_FEATURE; /* input_dim 4, but mean_f and std_f are F32 [0] */
    x.b[24] = 4;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("per-feature norm needs mean_f and std_f of input_dim 4, got 0 and 0");
    x.b[53] = 0;
    x.b[24] = 0;
    x.b[57] = 2; /* rank 2 */
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("sample rank 2");
    x.b[57] = 1; /* rank 1, shape [0] but input_dim 0 is fine; shape [5] is not */
    assert_int_equal(dec(TL_MSG_WELCOME, &x), 0);
    x.b[61] = 5;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("rank-1 shape [5] is not input_dim 0");
    x.b[57] = 0; /* a shape without a rank */
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("a shape without a rank");
    x.b[61] = 0;
    assert_int_equal(dec(TL_MSG_WELCOME, &x), 0);
    /* scalar norm with a one-element mean_f */
    size_t cut = 73 + 88; /* shape, then the sealed-mode fields (88 bytes) */
    x.n = cut;
    uint32_t one = 1, zero = 0;
    b_thdr(&x, TL_DT_F32, 1, &one);
    b_raw(&x, "\0\0\0\0", 4);
    b_thdr(&x, TL_DT_F32, 1, &zero);
    assert_int_equal(dec(TL_MSG_WELCOME, &x), TL_EPROTO);
    expect_errmsg("scalar norm with per-feature arrays");
    free(fr);

    /* HELLO: a protocol-2 HELLO has no data fields (decoded as zeros, refused
     * by version later); a protocol-3 one without them is cut short; a newer
     * version's extra bytes are left to the version check */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_HELLO;
    m->u.hello.node_id = 1;
    m->u.hello.proto_version = 2;
    m->u.hello.sample_count = 10;
    fr = encode_frame(m, &len);
    memcpy(x.b, fr + 24, len - 24);
    x.n = len - 24;
    assert_int_equal(x.n, 28);
    m->u.hello.classes = 99;
    assert_int_equal(tl_msg_decode_payload(TL_MSG_HELLO, x.b, x.n, m), 0);
    assert_int_equal(m->u.hello.proto_version, 2);
    assert_int_equal(m->u.hello.classes, 0);
    x.b[4] = 3;
    assert_int_equal(dec(TL_MSG_HELLO, &x), TL_EPROTO);
    expect_errmsg("HELLO: classes needs 4 bytes");
    x.b[4] = TL_PROTO_VERSION; /* 4: the protocol-3 fields are read too */
    assert_int_equal(dec(TL_MSG_HELLO, &x), TL_EPROTO);
    expect_errmsg("HELLO: classes needs 4 bytes");
    x.b[4] = TL_PROTO_VERSION + 1;
    b_raw(&x, "future", 6);
    assert_int_equal(tl_msg_decode_payload(TL_MSG_HELLO, x.b, x.n, m), 0);
    assert_int_equal(m->u.hello.proto_version, TL_PROTO_VERSION + 1);
    free(fr);

    /* STATS_REQUEST: unknown what, nonzero pad */
    x.n = 0;
    b_u32(&x, 2);
    b_u32(&x, 0);
    assert_int_equal(dec(TL_MSG_STATS_REQUEST, &x), TL_EPROTO);
    expect_errmsg("unknown what 2");
    x.n = 0;
    b_u32(&x, TL_STATS_NORM);
    b_u32(&x, 1);
    assert_int_equal(dec(TL_MSG_STATS_REQUEST, &x), TL_EPROTO);
    expect_errmsg("pad");

    /* STATS: sums of different lengths; sums as f32 */
    double dz[4] = {0};
    uint32_t two = 2, three = 3;
    x.n = 0;
    b_u64(&x, 5);
    b_thdr(&x, TL_DT_F64, 1, &two);
    b_raw(&x, dz, 16);
    b_thdr(&x, TL_DT_F64, 1, &three);
    b_raw(&x, dz, 24);
    assert_int_equal(dec(TL_MSG_STATS, &x), TL_EPROTO);
    expect_errmsg("sum has 2 features but sumsq 3");
    x.n = 0;
    b_u64(&x, 5);
    b_thdr(&x, TL_DT_F32, 1, &two);
    b_raw(&x, dz, 8);
    assert_int_equal(dec(TL_MSG_STATS, &x), TL_EPROTO);
    expect_errmsg("sum must be f64 rank 1");

    /* EVAL: nonzero pad; EVAL_RESULT: words as u32 */
    x.n = 0;
    b_u64(&x, 1);
    b_u32(&x, 64);
    b_u32(&x, 7);
    b_thdr(&x, TL_DT_F32, 1, &zero);
    assert_int_equal(dec(TL_MSG_EVAL, &x), TL_EPROTO);
    expect_errmsg("EVAL: nonzero pad");
    x.n = 0;
    b_u64(&x, 1);
    b_thdr(&x, TL_DT_U32, 1, &two);
    b_raw(&x, dz, 8);
    assert_int_equal(dec(TL_MSG_EVAL_RESULT, &x), TL_EPROTO);
    expect_errmsg("stats must be u64 rank 1");

    /* trailing bytes after a HEARTBEAT */
    x.n = 0;
    b_u64(&x, 1);
    b_u8(&x, 0);
    assert_int_equal(dec(TL_MSG_HEARTBEAT, &x), TL_EPROTO);

    /* unknown type; unaligned payload */
    x.n = 8;
    assert_int_equal(dec(TL_MSG_EVAL_RESULT + 1, &x), TL_EPROTO);
    x.n = 0; /* READY without its run_id */
    assert_int_equal(dec(TL_MSG_READY, &x), TL_EPROTO);
    x.n = 8;
    assert_int_equal(tl_msg_decode_payload(TL_MSG_HEARTBEAT, x.b + 1, 8, m), TL_EINVAL);
    assert_string_equal(tl_msg_type_name(5), "FORWARD_RESULT");
    assert_string_equal(tl_msg_type_name(42), "type 42");
    free(m);
}

static void test_encode_errors(void **state) {
    (void)state;
    tl_msg *m = calloc(1, sizeof *m);
    tl_msg_enc *e = malloc(sizeof *e);
    float f[4] = {0};

    m->type = TL_MSG_DONE;
    memset(m->u.done.reason, 'x', TL_MSG_STR_MAX + 1); /* no NUL within the cap */
    assert_int_equal(tl_msg_encode(m, e), TL_ERANGE);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_FORWARD;
    m->u.forward.rows = tl_tensor_1d(TL_DT_F32, f, 4); /* wrong dtype */
    m->u.forward.params = tl_tensor_1d(TL_DT_F32, f, 4);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, f, 4);
    m->u.forward.rows.numel = 3; /* not the product of dims */
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, NULL, 4);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, f, 4);
    assert_int_equal(tl_msg_encode(m, e), 0);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_FORWARD_RESULT;
    m->u.fwd_result.h = tl_tensor_2d(TL_DT_F32, f, 2, 2);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL); /* neither g nor labels */
    m->u.fwd_result.g = tl_tensor_2d(TL_DT_F32, f, 2, 2);
    m->u.fwd_result.labels = tl_tensor_1d(TL_DT_I32, f, 2);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL); /* both */
    memset(&m->u.fwd_result.g, 0, sizeof(tl_tensor));
    m->u.fwd_result.labels = tl_tensor_1d(TL_DT_I32, f, 3);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL); /* row mismatch */
    m->u.fwd_result.labels = tl_tensor_1d(TL_DT_I32, f, 2);
    assert_int_equal(tl_msg_encode(m, e), 0);

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_WELCOME;
    m->u.welcome.mode = 2;
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.welcome.mode = 0;
    m->u.welcome.input_dim = 4;
    m->u.welcome.norm = TL_WELCOME_NORM_FEATURE; /* arrays missing */
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.welcome.mean_f = tl_tensor_1d(TL_DT_F32, f, 4);
    m->u.welcome.std_f = tl_tensor_1d(TL_DT_F32, f, 3);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.welcome.std_f = tl_tensor_1d(TL_DT_F32, f, 4);
    assert_int_equal(tl_msg_encode(m, e), 0);
    m->u.welcome.rank = 3;
    m->u.welcome.shape[0] = 1, m->u.welcome.shape[1] = 2, m->u.welcome.shape[2] = 3;
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL); /* 6 != 4 */

    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS_REQUEST;
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL); /* what 0 */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS;
    double d2[2] = {0};
    m->u.stats.sum = tl_tensor_1d(TL_DT_F64, d2, 2);
    m->u.stats.sumsq = tl_tensor_1d(TL_DT_F64, d2, 1);
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    m->u.stats.sumsq = tl_tensor_1d(TL_DT_F64, d2, 2);
    assert_int_equal(tl_msg_encode(m, e), 0);
    m->type = 0;
    assert_int_equal(tl_msg_encode(m, e), TL_EINVAL);
    free(e);
    free(m);
}

/* ------------------------------------------------------------ validation */

static void test_validation_helpers(void **state) {
    (void)state;
    float v[6] = {1, 2, 3, 4, 5, 6};
    tl_tensor t = tl_tensor_2d(TL_DT_F32, v, 2, 3);
    uint32_t ok[2] = {2, 3}, bad[2] = {2, 4};
    assert_int_equal(tl_tensor_check(&t, TL_DT_F32, 2, ok, "h"), 0);
    assert_int_equal(tl_tensor_check(&t, TL_DT_F32, 2, bad, "h"), TL_EPROTO);
    expect_errmsg("h: expected f32 [2, 4], got f32 [2, 3]");
    assert_int_equal(tl_tensor_check(&t, TL_DT_F32, 1, ok, "h"), TL_EPROTO);
    assert_int_equal(tl_tensor_check(&t, TL_DT_I32, 2, ok, "h"), TL_EPROTO);

    assert_int_equal(tl_tensor_check_finite(&t, "h"), 0);
    uint32_t nan = 0x7fc00001u, ninf = 0xff800000u;
    memcpy(&v[4], &nan, 4);
    assert_int_equal(tl_tensor_check_finite(&t, "grads"), TL_ENUMERIC);
    expect_errmsg("grads: element 4 is NaN");
    memcpy(&v[1], &ninf, 4);
    assert_int_equal(tl_tensor_check_finite(&t, "grads"), TL_ENUMERIC);
    expect_errmsg("element 1 is -Inf");
    /* large tensor, bad value far in */
    size_t n = 100000;
    float *big = calloc(n, 4);
    big[n - 1] = 1e38f * 10.0f; /* +Inf */
    tl_tensor tb = tl_tensor_1d(TL_DT_F32, big, (uint32_t)n);
    assert_int_equal(tl_tensor_check_finite(&tb, "p"), TL_ENUMERIC);
    expect_errmsg("element 99999 is +Inf");
    big[n - 1] = -0.0f;
    assert_int_equal(tl_tensor_check_finite(&tb, "p"), 0);
    free(big);
    tl_tensor ti = tl_tensor_1d(TL_DT_I32, v, 2);
    assert_int_equal(tl_tensor_check_finite(&ti, "x"), TL_EINVAL);

    int32_t labels[4] = {0, 9, 3, 10};
    tl_tensor tl = tl_tensor_1d(TL_DT_I32, labels, 4);
    assert_int_equal(tl_tensor_check_below(&tl, 10, "labels"), TL_EPROTO);
    expect_errmsg("labels: element 3 is 10, outside 0..9");
    labels[3] = -1;
    assert_int_equal(tl_tensor_check_below(&tl, 10, "labels"), TL_EPROTO);
    labels[3] = 1;
    assert_int_equal(tl_tensor_check_below(&tl, 10, "labels"), 0);
    uint32_t rows[3] = {0, 5, 0xffffffffu};
    tl_tensor tr = tl_tensor_1d(TL_DT_U32, rows, 3);
    assert_int_equal(tl_tensor_check_below(&tr, 6, "rows"), TL_EPROTO);
    tr.numel = tr.dims[0] = 2;
    assert_int_equal(tl_tensor_check_below(&tr, 6, "rows"), 0);
    int64_t l64[2] = {1, 7};
    tl_tensor t64 = tl_tensor_1d(TL_DT_I64, l64, 2);
    assert_int_equal(tl_tensor_check_below(&t64, 7, "x"), TL_EPROTO);
    assert_int_equal(tl_tensor_check_below(&t, 7, "x"), TL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_handshake), cmocka_unit_test(test_roundtrip_step),
        cmocka_unit_test(test_roundtrip_control),   cmocka_unit_test(test_doc_examples),
        cmocka_unit_test(test_malformed_strings),   cmocka_unit_test(test_malformed_tensors),
        cmocka_unit_test(test_malformed_misc),      cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_validation_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
