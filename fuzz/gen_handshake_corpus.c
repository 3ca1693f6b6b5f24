/* gen_handshake_corpus.c - writes the seed corpus of fuzz_handshake: what a
 * node (or a stranger) sends first, encoded by the real encoder.
 * usage: gen_handshake_corpus DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/frame.h"
#include "tl/msg.h"

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
    return 0;
}
