/* gen_handshake_corpus.c - writes the seed corpus of fuzz_handshake: what a
 * node (or a stranger) sends first, encoded by the real encoder, and nodes
 * that register (HELLO, READY with FUZZ_RUN_ID_PLACEHOLDER, which the target
 * replaces by the run's run_id) and then send what a registered node may.
 * Deterministic: same bytes on every run.
 * usage: gen_handshake_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/frame.h"
#include "tl/msg.h"

#include "handshake.h"

static void put(const char *dir, const char *name, const uint8_t *a, size_t na, const uint8_t *b,
                size_t nb) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f)) {
        fprintf(stderr, "gen_handshake_corpus: cannot write %s\n", path);
        exit(1);
    }
}

/* Encodes m as a whole frame into a malloc'd buffer. */
static uint8_t *frame(const tl_msg *m, size_t *len) {
    tl_msg_enc e;
    tl_frame_writer w;
    uint8_t *out;
    tl_frame_writer_init(&w);
    if (tl_msg_start(&w, &e, m) < 0 || tl_frame_writer_flush_mem(&w, &out, len) < 0) exit(1);
    tl_frame_writer_free(&w);
    return out;
}

static uint8_t *hello(uint32_t id, uint16_t version, uint64_t count, uint64_t fp, size_t *len) {
    tl_msg m = {.type = TL_MSG_HELLO};
    m.u.hello.node_id = id;
    m.u.hello.proto_version = version;
    m.u.hello.sample_count = count;
    m.u.hello.fingerprint = fp;
    snprintf(m.u.hello.version, sizeof m.u.hello.version, "tl 0.1.0");
    return frame(&m, len);
}

/* HELLO of node 1, READY {run_id}, then m (if any): a node that registers and
 * speaks; the frames concatenated into a malloc'd buffer. */
static uint8_t *registered(uint64_t run_id, const tl_msg *m, size_t *len) {
    size_t nh, nr, nm = 0;
    uint8_t *h = hello(1, TL_PROTO_VERSION, 20000, 0x1234, &nh);
    tl_msg ready = {.type = TL_MSG_READY};
    ready.u.ready.run_id = run_id;
    uint8_t *r = frame(&ready, &nr), *f = m ? frame(m, &nm) : NULL;
    uint8_t *out = malloc(nh + nr + nm);
    if (!out) exit(1);
    memcpy(out, h, nh);
    memcpy(out + nh, r, nr);
    if (nm) memcpy(out + nh + nr, f, nm);
    *len = nh + nr + nm;
    free(h), free(r), free(f);
    return out;
}

/* The registered-node seeds: READY then each message a node sends after it. */
static void registered_seeds(const char *dir) {
    static float h[2 * 8], g[2 * 4];
    static uint8_t blob[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    static tl_msg ms[8];
    static const char *names[8] = {
        "ready",           "ready-heartbeat",  "ready-forward-result", "ready-backward-result",
        "ready-param-mac", "ready-state-blob", "ready-checkpoint",     "ready-error",
    };
    memset(ms, 0, sizeof ms);
    ms[1].type = TL_MSG_HEARTBEAT;
    ms[2].type = TL_MSG_FORWARD_RESULT; /* no FORWARD was sent: unexpected */
    ms[2].u.fwd_result.h = tl_tensor_2d(TL_DT_F32, h, 2, 8);
    ms[2].u.fwd_result.g = tl_tensor_2d(TL_DT_F32, g, 2, 4);
    ms[3].type = TL_MSG_BACKWARD_RESULT;
    ms[3].u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, h, 16);
    ms[4].type = TL_MSG_PARAM_MAC;
    ms[5].type = TL_MSG_STATE_BLOB;
    ms[5].u.state_blob.from = 1;
    ms[5].u.state_blob.to = 2;
    ms[5].u.state_blob.blob = tl_tensor_1d(TL_DT_U8, blob, 9);
    ms[6].type = TL_MSG_CHECKPOINT;
    ms[7].type = TL_MSG_ERROR;
    ms[7].u.error.code = 5;
    snprintf(ms[7].u.error.message, sizeof ms[7].u.error.message, "node failed");
    for (int i = 0; i < 8; i++) {
        size_t n;
        uint8_t *b = registered(FUZZ_RUN_ID_PLACEHOLDER, i ? &ms[i] : NULL, &n);
        put(dir, names[i], b, n, NULL, 0);
        free(b);
    }
    /* READY for another run: refused */
    size_t n;
    uint8_t *b = registered(0x0123456789abcdefull, &ms[1], &n);
    put(dir, "ready-wrong-run", b, n, NULL, 0);
    free(b);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_handshake_corpus DIR\n");
        return 2;
    }
    size_t n1, n2, n3, n4, n5, n6;
    uint8_t *h1 = hello(1, TL_PROTO_VERSION, 20000, 0x1234, &n1);
    uint8_t *h2 = hello(2, TL_PROTO_VERSION, 100, 0x99, &n2);
    uint8_t *h3 = hello(3, TL_PROTO_VERSION, 10, 1, &n3);
    uint8_t *hv = hello(1, TL_PROTO_VERSION + 1, 10, 1, &n4);
    uint8_t *h0 = hello(1, TL_PROTO_VERSION, 0, 1, &n5);
    tl_msg hb = {.type = TL_MSG_HEARTBEAT};
    uint8_t *fh = frame(&hb, &n6);
    put(argv[1], "hello-1", h1, n1, NULL, 0);
    put(argv[1], "hello-2", h2, n2, NULL, 0);
    put(argv[1], "hello-out-of-range", h3, n3, NULL, 0);
    put(argv[1], "hello-version-next", hv, n4, NULL, 0);
    put(argv[1], "hello-no-samples", h0, n5, NULL, 0);
    put(argv[1], "heartbeat-first", fh, n6, NULL, 0);
    put(argv[1], "hello-then-heartbeat", h2, n2, fh, n6);
    put(argv[1], "hello-1-other-data", h1, n1 - 3, (const uint8_t *)"xyz", 3);
    put(argv[1], "http", (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, NULL, 0);
    free(h1), free(h2), free(h3), free(hv), free(h0), free(fh);
    registered_seeds(argv[1]);
    return 0;
}
