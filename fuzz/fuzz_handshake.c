/* fuzz_handshake.c - libFuzzer target for the orchestrator's side of the
 * handshake: the bytes a stranger sends first on a fresh connection.
 *
 * One orchestrator (2 nodes, a tiny model, plaintext) listens on a unix
 * socket for the whole fuzzing session. Each input is written, as it is, by a
 * new client connection, which then shuts its side down; the orchestrator's
 * event loop runs until it has dealt with the connection (REJECT, ERROR,
 * WELCOME then the connection closed before READY, or a plain close),
 * reading whatever it answers.
 *
 * A node registers only with READY carrying the run's (random) run_id, which
 * an input cannot know. So the harness learns it once per orchestrator (a
 * HELLO of its own that describes no data, the WELCOME read, the connection
 * closed: nothing of it stays) and replaces every occurrence of the 8 bytes
 * of FUZZ_RUN_ID_PLACEHOLDER (handshake.h) in an input by it before writing:
 * a seed with HELLO, READY {placeholder} registers its node and reaches what
 * a registered node may send. An input after which a node is registered is
 * followed by a fresh orchestrator (with a new run_id), so every input meets
 * an orchestrator with no node registered. ASan/UBSan and libFuzzer's crash
 * detection catch the rest. With FUZZ_VERBOSE=1 in the environment the
 * orchestrator's log lines are printed (for looking at one input). */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tl/config.h"
#include "tl/error.h"
#include "tl/frame.h"
#include "tl/model.h"
#include "tl/msg.h"
#include "tl/orchestrator.h"

#include "check.h"
#include "handshake.h"

static tl_orch *orch;
static uint64_t run_id; /* orch's, from its WELCOME */
static tl_orch_cfg cfg;
static tl_runcfg run;
static tl_model model;
static char path[108];

/* A new non-blocking client connection to the orchestrator. */
static int dial(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) abort();
    return fd;
}

/* orch's run_id: node 1 says HELLO (no data description, so the orchestrator
 * records nothing of it), the WELCOME is read, the connection closed. */
static uint64_t learn_run_id(void) {
    static tl_msg m;
    static tl_msg_enc e;
    memset(&m, 0, sizeof m);
    m.type = TL_MSG_HELLO;
    m.u.hello.node_id = 1;
    m.u.hello.proto_version = TL_PROTO_VERSION;
    m.u.hello.sample_count = 1;
    m.u.hello.fingerprint = 1;
    tl_frame_writer w;
    uint8_t *hello;
    size_t n, off = 0;
    tl_frame_writer_init(&w);
    CHECK(tl_msg_start(&w, &e, &m) == 0 && tl_frame_writer_flush_mem(&w, &hello, &n) == 0);
    tl_frame_writer_free(&w);
    int fd = dial();
    tl_frame_reader r;
    tl_frame_reader_init(&r, TL_FRAME_HANDSHAKE_MAX);
    uint64_t id = 0;
    int got = 0;
    for (int round = 0; round < 2000 && !got; round++) {
        if (off < n) {
            ssize_t wr = write(fd, hello + off, n - off);
            if (wr > 0) off += (size_t)wr;
        }
        tl_orch_serve(orch, 1);
        uint8_t buf[4096];
        ssize_t rd = read(fd, buf, sizeof buf);
        for (size_t at = 0; rd > 0 && at < (size_t)rd && !got;) {
            tl_frame f;
            size_t used = 0;
            int rc = tl_frame_reader_feed(&r, buf + at, (size_t)rd - at, &used, &f);
            at += used;
            if (rc == TL_EAGAIN) break;
            CHECK(rc == 0 && tl_msg_decode(&f, &m) == 0 && m.type == TL_MSG_WELCOME);
            id = m.u.welcome.run_id;
            got = 1;
        }
    }
    CHECK(got);
    tl_frame_reader_free(&r);
    free(hello);
    close(fd);
    for (int i = 0; i < 20 && tl_orch_serve(orch, 0) > 0; i++) {
    }
    return id;
}

static void log_line(void *ud, const char *msg) {
    (void)ud;
    fprintf(stderr, "orchestrator: %s\n", msg);
}

static void start_orch(void) {
    if (tl_orch_new(&cfg, &orch) < 0) abort();
    run_id = learn_run_id();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tl_runcfg_defaults(&run);
    run.batch_size = 4;
    run.cut = 1;
    snprintf(run.model, sizeof run.model, "linear:8,linear:4");
    if (tl_model_parse(run.model, 4, &model) < 0) abort();
    snprintf(path, sizeof path, "/tmp/tl-fuzz-handshake-%d.sock", (int)getpid());
    static char host[128];
    snprintf(host, sizeof host, "unix:%s", path);
    tl_orch_cfg_defaults(&cfg);
    cfg.host = host;
    cfg.n_nodes = 2;
    cfg.run = &run;
    cfg.model = &model;
    cfg.heartbeat_ms = 0;
    cfg.handshake_timeout_ms = 200;
    if (getenv("FUZZ_VERBOSE") && atoi(getenv("FUZZ_VERBOSE")) > 0) cfg.log = log_line;
    start_orch();
    return 0;
}

/* Reads and drops what the orchestrator sent; 1 once it closed. */
static int drain(int fd) {
    char buf[4096];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) continue;
        return r == 0 || (errno != EAGAIN && errno != EINTR);
    }
}

/* A copy of data (caller frees) with every FUZZ_RUN_ID_PLACEHOLDER replaced
 * by run_id (both as 8 little-endian bytes, as a READY carries them). */
static uint8_t *with_run_id(const uint8_t *data, size_t size) {
    uint8_t *b = malloc(size ? size : 1), ph[8], id[8];
    CHECK(b);
    if (size) memcpy(b, data, size);
    for (int k = 0; k < 8; k++) {
        ph[k] = (uint8_t)(FUZZ_RUN_ID_PLACEHOLDER >> (8 * k));
        id[k] = (uint8_t)(run_id >> (8 * k));
    }
    for (size_t i = 0; i + 8 <= size; i++)
        if (memcmp(b + i, ph, 8) == 0) {
            memcpy(b + i, id, 8);
            i += 7;
        }
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *input, size_t size) {
    uint8_t *data = with_run_id(input, size);
    int fd = dial();
    size_t off = 0;
    int closed = 0;
    /* write the input as the socket takes it, letting the orchestrator read */
    for (int round = 0; round < 2000 && !closed; round++) {
        if (off < size) {
            ssize_t w = write(fd, data + off, size - off);
            if (w > 0) off += (size_t)w;
            else if (w < 0 && errno != EAGAIN) closed = 1;
            if (off == size) shutdown(fd, SHUT_WR);
        } else if (size == 0 && round == 0) {
            shutdown(fd, SHUT_WR);
        }
        tl_orch_serve(orch, 0);
        closed |= drain(fd);
    }
    close(fd);
    /* let the orchestrator see the close and forget the connection */
    for (int i = 0; i < 20 && tl_orch_serve(orch, 0) > 0; i++) {
    }
    free(data);
    if (tl_orch_registered(orch) > 0) { /* the next input meets no registered node */
        tl_orch_free(orch);
        start_orch();
    }
    return 0;
}
