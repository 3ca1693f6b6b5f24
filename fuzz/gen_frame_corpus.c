/* gen_frame_corpus.c - writes the seed corpus of fuzz_frame.
 *
 *     gen_frame_corpus DIR       (the committed seeds are fuzz/corpus/frame/)
 *
 * Each file is an input of fuzz_frame: a settings byte, a chunk-seed byte,
 * then a stream of frames made by the real encoder and frame writer: one
 * file per message type, a whole conversation, zstd-compressed frames, and
 * near-valid streams (each with one thing wrong) so the fuzzer starts next
 * to every rejection path. Deterministic: same bytes on every run. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/frame.h"
#include "tl/msg.h"

/* fuzz_frame's settings byte. */
enum { S_ZSTD = 1, S_HANDSHAKE_CAP = 2 };

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes;

static void die(const char *what) {
    fprintf(stderr, "gen_frame_corpus: %s: %s\n", what, tl_errmsg());
    exit(1);
}

static void append(bytes *b, const void *p, size_t n) {
    uint8_t *q = realloc(b->p, b->n + n + 1);
    if (!q) {
        fprintf(stderr, "gen_frame_corpus: out of memory\n");
        exit(1);
    }
    b->p = q;
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

/* Appends m as one frame (compressed if zstd and it is large enough). */
static void append_msg(bytes *b, const tl_msg *m, int zstd) {
    static tl_msg_enc e;
    tl_frame_writer w;
    tl_frame_writer_init(&w);
    tl_frame_writer_set_zstd(&w, zstd, 1);
    uint8_t *wire;
    size_t len;
    if (tl_msg_start(&w, &e, m) < 0) die("encode");
    if (tl_frame_writer_flush_mem(&w, &wire, &len) < 0) die("flush_mem");
    append(b, wire, len);
    free(wire);
    tl_frame_writer_free(&w);
}

static void write_file(const char *dir, const char *name, uint8_t settings, uint8_t seed,
                       const bytes *stream) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "gen_frame_corpus: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    uint8_t head[2] = {settings, seed};
    if (fwrite(head, 1, 2, f) != 2 ||
        (stream->n && fwrite(stream->p, 1, stream->n, f) != stream->n) || fclose(f) != 0) {
        fprintf(stderr, "gen_frame_corpus: %s: write failed\n", path);
        exit(1);
    }
}

/* Small payload data shared by the messages. */
static uint32_t rows[4] = {0, 3, 5, 7};
static float params[300];
static float h[4 * 3], g[4 * 2], dh[4 * 3];
static int32_t labels[4] = {0, 1, 1, 0};
static float mean_f[3] = {0.5f, 1.0f, -2.0f}, std_f[3] = {1.0f, 0.25f, 3.0f};
static double sums[3] = {1.5, 30.0, -4.0}, sumsq[3] = {2.25, 900.0, 16.0};
static uint64_t words[5 + 4 + 8]; /* an evaluation of 2 classes, 2 bins (evalstats.h) */
static uint32_t ids[2] = {1, 2};  /* a sealed step's participants, in plan order */
static uint64_t masked[5];        /* masked fixed-point vectors (mod 2^64) */
static uint8_t blob[13];          /* a sealed node side (its length is not a multiple of 8) */

#define N_MSGS 24

/* One message of each type, in protocol order, then the sealed forms of
 * BACKWARD and BACKWARD_RESULT. */
static int make_msgs(tl_msg *ms) {
    memset(ms, 0, N_MSGS * sizeof *ms);
    int n = 0;
    tl_msg *m;
    m = &ms[n++];
    m->type = TL_MSG_HELLO;
    m->u.hello = (tl_msg_hello){.node_id = 1,
                                .proto_version = TL_PROTO_VERSION,
                                .flags = TL_HELLO_F_ZSTD,
                                .sample_count = 30000,
                                .fingerprint = 0x0123456789abcdefull,
                                .classes = 2,
                                .elem = TL_ELEM_WIRE_F32,
                                .rank = 1,
                                .shape = {3, 0, 0},
                                .test_count = 100};
    strcpy(m->u.hello.version, "0.1.0");
    m = &ms[n++];
    m->type = TL_MSG_WELCOME;
    m->u.welcome = (tl_msg_welcome){.run_id = 42,
                                    .flags = TL_WELCOME_F_ZSTD,
                                    .cut = 2,
                                    .mode = 0,
                                    .n_classes = 2,
                                    .input_dim = 3,
                                    .mean = 0.1307f,
                                    .std = 0.3081f,
                                    .heartbeat_ms = 1000,
                                    .norm = TL_WELCOME_NORM_FEATURE,
                                    .rank = 1,
                                    .shape = {3, 0, 0},
                                    .mean_f = tl_tensor_1d(TL_DT_F32, mean_f, 3),
                                    .std_f = tl_tensor_1d(TL_DT_F32, std_f, 3)};
    strcpy(m->u.welcome.model, "linear:3,relu,linear:2");
    m = &ms[n++];
    m->type = TL_MSG_REJECT;
    m->u.reject.code = TL_REJECT_FINGERPRINT;
    strcpy(m->u.reject.reason, "data fingerprint differs");
    m = &ms[n++];
    m->type = TL_MSG_FORWARD;
    m->u.forward.step = 7;
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, rows, 4);
    m->u.forward.params = tl_tensor_1d(TL_DT_F32, params, 20);
    m = &ms[n++];
    m->type = TL_MSG_FORWARD_RESULT; /* traverse mode: g */
    m->u.fwd_result.step = 7;
    m->u.fwd_result.loss_sum = 2.5;
    m->u.fwd_result.correct = 3;
    m->u.fwd_result.h = tl_tensor_2d(TL_DT_F32, h, 4, 3);
    m->u.fwd_result.g = tl_tensor_2d(TL_DT_F32, g, 4, 2);
    m = &ms[n++];
    m->type = TL_MSG_FORWARD_RESULT; /* split mode: labels */
    m->u.fwd_result.step = 8;
    m->u.fwd_result.h = tl_tensor_2d(TL_DT_F32, h, 4, 3);
    m->u.fwd_result.labels = tl_tensor_1d(TL_DT_I32, labels, 4);
    m = &ms[n++];
    m->type = TL_MSG_BACKWARD;
    m->u.backward.step = 8;
    m->u.backward.dh = tl_tensor_2d(TL_DT_F32, dh, 4, 3);
    m = &ms[n++];
    m->type = TL_MSG_BACKWARD_RESULT;
    m->u.bwd_result.step = 8;
    m->u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, params, 9);
    m = &ms[n++];
    m->type = TL_MSG_HEARTBEAT;
    m->u.heartbeat.nonce = 99;
    m = &ms[n++];
    m->type = TL_MSG_DONE;
    strcpy(m->u.done.reason, "training finished");
    m = &ms[n++];
    m->type = TL_MSG_ERROR;
    m->u.error.code = (uint32_t)-TL_EPROTO;
    strcpy(m->u.error.message, "bad frame");
    m = &ms[n++];
    m->type = TL_MSG_READY;
    m->u.ready.run_id = 0x1122334455667788ull;
    m = &ms[n++];
    m->type = TL_MSG_STATS_REQUEST;
    m->u.stats_request.what = TL_STATS_NORM;
    m = &ms[n++];
    m->type = TL_MSG_STATS;
    m->u.stats.count = 3;
    m->u.stats.sum = tl_tensor_1d(TL_DT_F64, sums, 3);
    m->u.stats.sumsq = tl_tensor_1d(TL_DT_F64, sumsq, 3);
    m = &ms[n++];
    m->type = TL_MSG_EVAL;
    m->u.eval.step = 9;
    m->u.eval.bins = 2;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, params, 20);
    m = &ms[n++];
    m->type = TL_MSG_EVAL_RESULT;
    m->u.eval_result.step = 9;
    /* 3 rows: true 0 -> 0, true 1 -> 1, true 1 -> 0; loss 1.5 */
    const uint64_t w[17] = {
        TL_EVAL_MAGIC, 2, 2, 3, 0x3ff8000000000000ull, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1};
    memcpy(words, w, sizeof w);
    m->u.eval_result.stats = tl_tensor_1d(TL_DT_U64, words, 17);
    /* sealed mode (docs/protocol.md §8.2) */
    m = &ms[n++];
    m->type = TL_MSG_SEALED_STEP;
    m->u.sealed_step.step = 10;
    m->u.sealed_step.attempt = 1;
    m->u.sealed_step.flags = TL_SEALED_F_MAC;
    m->u.sealed_step.lr = 0.01;
    m->u.sealed_step.participants = tl_tensor_1d(TL_DT_U32, ids, 2);
    m->u.sealed_step.sum = tl_tensor_1d(TL_DT_U64, masked, 5);
    m = &ms[n++];
    m->type = TL_MSG_PARAM_MAC;
    m->u.param_mac.step = 10;
    for (int i = 0; i < 32; i++) m->u.param_mac.mac[i] = (uint8_t)(0xa0 + i);
    m = &ms[n++];
    m->type = TL_MSG_FINAL;
    m->u.final.step = 11;
    m->u.final.params = tl_tensor_1d(TL_DT_F32, params, 11);
    m = &ms[n++];
    m->type = TL_MSG_STATE_REQUEST;
    m->u.state_request.step = 10;
    m->u.state_request.to = 2;
    m = &ms[n++];
    m->type = TL_MSG_STATE_BLOB;
    m->u.state_blob.step = 10;
    m->u.state_blob.from = 1;
    m->u.state_blob.to = 2;
    m->u.state_blob.blob = tl_tensor_1d(TL_DT_U8, blob, 13);
    m = &ms[n++];
    m->type = TL_MSG_CHECKPOINT;
    m->u.checkpoint.step = 10;
    m = &ms[n++];
    m->type = TL_MSG_BACKWARD; /* sealed: the mask attempt and the participants */
    m->u.backward.step = 10;
    m->u.backward.attempt = 1;
    m->u.backward.dh = tl_tensor_2d(TL_DT_F32, dh, 4, 3);
    m->u.backward.participants = tl_tensor_1d(TL_DT_U32, ids, 2);
    m = &ms[n++];
    m->type = TL_MSG_BACKWARD_RESULT; /* sealed: U64 masked gradient */
    m->u.bwd_result.step = 10;
    m->u.bwd_result.grads = tl_tensor_1d(TL_DT_U64, masked, 5);
    return n;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_frame_corpus DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    for (int i = 0; i < 300; i++) params[i] = (float)(i % 17) * 0.25f - 1.0f;
    for (int i = 0; i < 12; i++) h[i] = (float)i * 0.5f, dh[i] = -(float)i;
    for (int i = 0; i < 8; i++) g[i] = (float)i - 4.0f;
    for (int i = 0; i < 5; i++) masked[i] = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    for (int i = 0; i < 13; i++) blob[i] = (uint8_t)(i * 29 + 7);

    static tl_msg ms[N_MSGS];
    int n = make_msgs(ms);
    char name[64];

    /* One file per message (per FORWARD_RESULT variant), whole, in one chunk
     * pattern; HELLO under the handshake cap as the orchestrator reads it. */
    for (int i = 0; i < n; i++) {
        bytes b = {0};
        append_msg(&b, &ms[i], 0);
        snprintf(name, sizeof name, "%02d_%s", i, tl_msg_type_name(ms[i].type));
        write_file(dir, name, ms[i].type == TL_MSG_HELLO ? S_HANDSHAKE_CAP : 0, (uint8_t)(i * 37),
                   &b);
        free(b.p);
    }

    /* A conversation: all messages back to back, fed in varied chunks. */
    bytes conv = {0};
    for (int i = 0; i < n; i++) append_msg(&conv, &ms[i], 0);
    write_file(dir, "conversation", 0, 1, &conv);
    write_file(dir, "conversation_chunks", 0, 200, &conv);
    free(conv.p);

    /* Compressed frames (payload >= TL_FRAME_ZSTD_MIN): a FORWARD with 300
     * parameters and a long DONE reason, then a plain HEARTBEAT. */
    {
        static tl_msg big[3];
        memset(big, 0, sizeof big);
        big[0].type = TL_MSG_FORWARD;
        big[0].u.forward.step = 1;
        big[0].u.forward.rows = tl_tensor_1d(TL_DT_U32, rows, 4);
        big[0].u.forward.params = tl_tensor_1d(TL_DT_F32, params, 300);
        big[1].type = TL_MSG_DONE;
        memset(big[1].u.done.reason, 'z', 1500);
        big[2].type = TL_MSG_HEARTBEAT;
        big[2].u.heartbeat.nonce = 5;
        bytes b = {0};
        for (int i = 0; i < 3; i++) append_msg(&b, &big[i], 1);
        write_file(dir, "zstd_frames", S_ZSTD, 3, &b);
        /* The same bytes to a reader that did not negotiate zstd. */
        write_file(dir, "bad_zstd_not_negotiated", 0, 3, &b);
        /* A compressed payload whose zstd bytes are damaged. */
        if (b.n > 100) b.p[TL_FRAME_HEADER_SIZE + 40] ^= 0x55;
        write_file(dir, "bad_zstd_corrupt", S_ZSTD, 3, &b);
        free(b.p);
    }

    /* Near-valid: a good HEARTBEAT then one damaged header field each. */
    {
        bytes hb = {0};
        append_msg(&hb, &ms[8], 0);
        struct {
            const char *name;
            size_t off;
            uint8_t val;
        } bad[] = {
            {"bad_magic", 0, 'X'},
            {"bad_version", 4, 2},
            {"bad_type_0", 6, 0},
            {"bad_type_22", 6, TL_FRAME_TYPE_MAX + 1}, /* the first unknown type */
            {"bad_flags", 9, 1},
            {"bad_reserved", 12, 1},
            {"bad_len_over_cap", 19, 1}, /* payload_len += 16 MiB */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            bytes b = {0};
            append(&b, hb.p, hb.n);
            append(&b, hb.p, hb.n);
            b.p[hb.n + bad[i].off] = bad[i].val;
            write_file(dir, bad[i].name, 0, (uint8_t)i, &b);
            free(b.p);
        }
        /* A TLS record (a ClientHello's first bytes) where the second frame belongs. */
        bytes tb = {0};
        append(&tb, hb.p, hb.n);
        append(&tb, hb.p, hb.n);
        tb.p[hb.n] = 0x16, tb.p[hb.n + 1] = 0x03;
        write_file(dir, "bad_tls_record", 0, 10, &tb);
        free(tb.p);
        /* Truncated: a header and half of a FORWARD payload. */
        bytes fw = {0};
        append_msg(&fw, &ms[3], 0);
        fw.n = TL_FRAME_HEADER_SIZE + (fw.n - TL_FRAME_HEADER_SIZE) / 2;
        write_file(dir, "bad_truncated", 0, 9, &fw);
        free(fw.p);
        free(hb.p);
    }

    /* Near-valid payloads: well-framed, but the message inside is wrong. */
    {
        struct {
            const char *name;
            int msg;    /* index into ms */
            size_t off; /* payload offset to change */
            uint8_t val;
        } bad[] = {
            {"bad_fwd_dtype", 3, 8, TL_DT_I64},      /* rows must be U32 */
            {"bad_fwd_rank", 3, 9, 0},               /* rank 0 */
            {"bad_fwd_reserved", 3, 10, 1},          /* tensor reserved byte */
            {"bad_fwdres_hpad", 4, 36, 1},           /* h header padding */
            {"bad_fwd_dim", 3, 12, 0xff},            /* data runs past the end */
            {"bad_fwdres_pad", 4, 20, 1},            /* FORWARD_RESULT pad field */
            {"bad_fwdres_g_short", 4, 92, 5},        /* g data runs past the end */
            {"bad_welcome_mode", 1, 16, 2},          /* unknown mode */
            {"bad_welcome_flags", 1, 8, 4},          /* unknown flag (bit 2) */
            {"bad_hello_strlen", 0, 24, 0xff},       /* string past the end */
            {"bad_hello_nul", 0, 29, 0},             /* NUL in the string */
            {"bad_welcome_norm", 1, 66, 2},          /* unknown norm kind */
            {"bad_welcome_rank", 1, 70, 2},          /* sample rank 2 */
            {"bad_stats_what", 12, 0, 2},            /* STATS_REQUEST of an unknown kind */
            {"bad_stats_sumsq_dim", 13, 44, 2},      /* sumsq [2] after sum [3] */
            {"bad_eval_pad", 14, 12, 1},             /* EVAL pad field */
            {"bad_evalres_dtype", 15, 8, TL_DT_F64}, /* words must be U64 */
            /* sealed mode: SEALED_STEP is step, attempt, flags, lr, participants
             * (header at 24, data at 32), sum (header at 40, data at 48) */
            {"bad_sealed_flags", 16, 12, 2},             /* unknown flag (bit 1) */
            {"bad_sealed_participants_n", 16, 28, 3},    /* participants [3]: runs into sum */
            {"bad_sealed_participants_rank", 16, 25, 2}, /* participants must be rank 1 */
            {"bad_sealed_sum_dtype", 16, 40, TL_DT_F32}, /* sum must be U64 */
            {"bad_sealed_sum_len", 16, 44, 6},           /* sum [6]: runs past the end */
            {"bad_final_dtype", 18, 8, TL_DT_U64},       /* params must be F32 */
            {"bad_statereq_pad", 19, 12, 1},             /* STATE_REQUEST pad field */
            {"bad_blob_dtype", 20, 16, TL_DT_U32},       /* blob must be U8 */
            {"bad_blob_len", 20, 20, 14},                /* blob [14]: one byte past the end */
            {"bad_blob_reserved", 20, 18, 1},            /* tensor reserved byte */
            /* sealed BACKWARD: dh data at 32..80, participants header at 80 */
            {"bad_bwd_participants_dtype", 22, 80, TL_DT_I32}, /* participants must be U32 */
            {"bad_bwd_participants_n", 22, 84, 9},             /* participants [9]: past the end */
            {"bad_bwdres_u64_dtype", 23, 8, TL_DT_I64},        /* grads: F32 or U64 */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            bytes b = {0};
            append_msg(&b, &ms[bad[i].msg], 0);
            if (TL_FRAME_HEADER_SIZE + bad[i].off < b.n)
                b.p[TL_FRAME_HEADER_SIZE + bad[i].off] = bad[i].val;
            write_file(dir, bad[i].name, ms[bad[i].msg].type == TL_MSG_HELLO ? S_HANDSHAKE_CAP : 0,
                       (uint8_t)(i + 100), &b);
            free(b.p);
        }
        /* g as [2, 4] instead of [4, 2]: same size, rows differ from h's. */
        bytes b = {0};
        append_msg(&b, &ms[4], 0);
        b.p[TL_FRAME_HEADER_SIZE + 92] = 2;
        b.p[TL_FRAME_HEADER_SIZE + 96] = 4;
        write_file(dir, "bad_fwdres_rows", 0, 111, &b);
        free(b.p);
        /* A trailing byte after the last field (payload_len + 1). */
        b = (bytes){0};
        append_msg(&b, &ms[8], 0);
        b.p[16] += 1;
        uint8_t z = 0;
        append(&b, &z, 1);
        write_file(dir, "bad_trailing_byte", 0, 7, &b);
        free(b.p);
        /* The sealed fixed-size messages with one byte too many or too few
         * (payload_len adjusted to match): CHECKPOINT, PARAM_MAC's mac,
         * STATE_REQUEST, and a STATE_BLOB whose blob ends one byte early. */
        const struct {
            const char *name;
            int msg;
            int delta; /* +1: a trailing zero byte; -1: the last byte cut */
        } len_bad[] = {
            {"bad_checkpoint_trailing", 21, +1}, {"bad_parammac_short", 17, -1},
            {"bad_parammac_trailing", 17, +1},   {"bad_statereq_short", 19, -1},
            {"bad_blob_short", 20, -1},
        };
        for (size_t i = 0; i < sizeof len_bad / sizeof len_bad[0]; i++) {
            b = (bytes){0};
            append_msg(&b, &ms[len_bad[i].msg], 0);
            b.p[16] = (uint8_t)(b.p[16] + len_bad[i].delta); /* payload_len's low byte */
            if (len_bad[i].delta > 0) append(&b, &z, 1);
            else b.n--;
            write_file(dir, len_bad[i].name, 0, (uint8_t)(i + 120), &b);
            free(b.p);
        }
    }
    return 0;
}
