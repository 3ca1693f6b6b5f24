/* fuzz_handshake.c - libFuzzer target for the orchestrator's side of the
 * handshake: the bytes a stranger sends first on a fresh connection.
 *
 * One orchestrator (2 nodes, a tiny model, plaintext) listens on a unix
 * socket for the whole fuzzing session. Each input is written, as it is, by a
 * new client connection, which then shuts its side down; the orchestrator's
 * event loop runs until it has dealt with the connection (REJECT, ERROR,
 * WELCOME then the connection closed before READY, or a plain close),
 * reading whatever it answers. A node registers only with READY carrying the
 * run's (random) run_id, which an input cannot know: every input meets an
 * orchestrator with no node registered, as a stranger would. ASan/UBSan and
 * libFuzzer's crash detection catch the rest. */
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
#include "tl/model.h"
#include "tl/orchestrator.h"

static tl_orch *orch;
static tl_runcfg run;
static tl_model model;
static char path[108];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    tl_runcfg_defaults(&run);
    run.batch_size = 4;
    run.cut = 1;
    snprintf(run.model, sizeof run.model, "linear:8,linear:4");
    if (tl_model_parse(run.model, 4, &model) < 0) abort();
    snprintf(path, sizeof path, "/tmp/tl-fuzz-handshake-%d.sock", (int)getpid());
    static char host[128];
    snprintf(host, sizeof host, "unix:%s", path);
    tl_orch_cfg cfg;
    tl_orch_cfg_defaults(&cfg);
    cfg.host = host;
    cfg.n_nodes = 2;
    cfg.run = &run;
    cfg.model = &model;
    cfg.heartbeat_ms = 0;
    cfg.handshake_timeout_ms = 200;
    if (tl_orch_new(&cfg, &orch) < 0) abort();
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) abort();
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
    return 0;
}
