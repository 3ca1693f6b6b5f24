/*
 * test_rogue.c - a rogue node that sends finite overflow (issue 8, finding 3),
 * against a live `tl orchestrator` (TL_BIN) with two real `tl node`s.
 *
 * The rogue registers as node 3 (a client written here with the library's
 * msg API) and answers every request well-formed but poisoned:
 *   - FORWARD with h = FLT_MAX in one element (finite, so the NaN/Inf check
 *     let it through, and the orchestrator's own forward overflowed: the run
 *     aborted without a recovery file);
 *   - BACKWARD with every gradient element 3e38 under --optimizer sgd (the
 *     step made huge finite parameters; then the honest nodes returned NaN and
 *     were dropped and replayed in a loop while the rogue was never blamed).
 * Each run must: name node 3 as lost with the bound message ("exceeds the
 * bound ... any honest node can produce"), never declare node 1 or 2 lost,
 * end by itself (no livelock), and leave a checkpoint whose every value is
 * finite. The rogue does not come back once dropped, so the run stops after
 * --reconnect-timeout with "node 3 did not come back" and its checkpoint. (A
 * rogue that keeps coming back is stopped, attributed, by the orchestrator's
 * replay bound, which is tested with the other replay cases.)
 *
 * Then --resume from that checkpoint with one NaN put into it must fail at
 * once (before any node joins), naming the tensor and index.
 */
#define _GNU_SOURCE
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/conn.h"
#include "tl/error.h"
#include "tl/frame.h"
#include "tl/model.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/safetensors.h"

#include "harness.h"

static int have_setup;

typedef enum rogue_kind { ROGUE_H_FLT_MAX, ROGUE_GRAD_3E38 } rogue_kind;

/* Registers as node 3 on port and answers as kind says until the
 * orchestrator closes the connection; puts its last ERROR message (or what
 * ended it) into why. Returns the number of requests answered. */
static int rogue(int port, rogue_kind kind, char *why, size_t cap) {
    client k;
    int answered = 0;
    snprintf(why, cap, "?");
    int64_t deadline = tl_now_ms() + 60000;
    tl_msg m;
    memset(&m, 0, sizeof m);
    if (client_open(&k, port) < 0) {
        snprintf(why, cap, "connect: %s", tl_errmsg());
        return 0;
    }
    char no[256];
    if (client_hello(&k, 3, 20000, 0x726f677565, "rogue", 1, 60000, &m, no, sizeof no) < 0) {
        snprintf(why, cap, "not welcomed: %s", no);
        goto out;
    }
    tl_model model;
    assert_int_equal(tl_model_parse(m.u.welcome.model, (int)m.u.welcome.input_dim, &model), 0);
    const int cut = (int)m.u.welcome.cut, classes = (int)m.u.welcome.n_classes;
    const uint32_t dc = (uint32_t)tl_model_width(&model, cut);
    const uint32_t p_node = (uint32_t)tl_model_param_offset(&model, cut);
    float *h = NULL, *g = NULL, *grads = calloc(p_node, sizeof(float));
    assert_non_null(grads);
    for (uint32_t i = 0; i < p_node; i++) grads[i] = 3e38f;
    for (;;) {
        if (tl_msg_recv(k.c, &k.r, &m, deadline) < 0) {
            snprintf(why + strlen(why), cap - strlen(why), " (then: %s)", tl_errmsg());
            break;
        }
        tl_msg out;
        memset(&out, 0, sizeof out);
        if (m.type == TL_MSG_FORWARD) {
            uint32_t n = (uint32_t)m.u.forward.rows.numel;
            free(h);
            free(g);
            h = calloc((size_t)n * dc, sizeof(float));
            g = calloc((size_t)n * classes, sizeof(float));
            assert_non_null(h);
            assert_non_null(g);
            if (kind == ROGUE_H_FLT_MAX) h[n * dc / 2] = FLT_MAX;
            out.type = TL_MSG_FORWARD_RESULT;
            out.u.fwd_result.step = m.u.forward.step;
            out.u.fwd_result.h = tl_tensor_2d(TL_DT_F32, h, n, dc);
            out.u.fwd_result.g = tl_tensor_2d(TL_DT_F32, g, n, (uint32_t)classes);
        } else if (m.type == TL_MSG_BACKWARD) {
            out.type = TL_MSG_BACKWARD_RESULT;
            out.u.bwd_result.step = m.u.backward.step;
            if (kind == ROGUE_GRAD_3E38)
                out.u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, grads, p_node);
            else out.u.bwd_result.grads = tl_tensor_1d(TL_DT_F32, calloc(p_node, 4), p_node);
        } else if (m.type == TL_MSG_HEARTBEAT) {
            out = m;
        } else {
            if (m.type == TL_MSG_ERROR) snprintf(why, cap, "ERROR \"%s\"", m.u.error.message);
            else snprintf(why, cap, "%s", tl_msg_type_name(m.type));
            continue; /* read on until the orchestrator closes */
        }
        int rc = tl_msg_send(k.c, &k.w, &out, deadline);
        if (out.type == TL_MSG_BACKWARD_RESULT && kind != ROGUE_GRAD_3E38)
            free((void *)out.u.bwd_result.grads.data);
        if (rc < 0) {
            snprintf(why, cap, "send: %s", tl_errmsg());
            break;
        }
        if (out.type != TL_MSG_HEARTBEAT) answered++;
    }
    free(h);
    free(g);
    free(grads);
out:
    client_close(&k);
    return answered;
}

/* 1 if every F32 tensor of the safetensors file at path is finite. */
static int file_finite(const char *path, char *why, size_t cap) {
    tl_st *st;
    if (tl_st_read(path, &st) < 0) {
        snprintf(why, cap, "%s", tl_errmsg());
        return 0;
    }
    int ok = 1;
    for (int i = 0; ok && i < tl_st_count(st); i++) {
        const tl_st_tensor *t = tl_st_get(st, i);
        if (t->dtype != TL_ST_F32) continue;
        const float *x = t->data;
        for (size_t j = 0; j < tl_st_numel(t); j++)
            if (!isfinite(x[j])) {
                snprintf(why, cap, "%s[%zu] = %g", t->name, j, (double)x[j]);
                ok = 0;
                break;
            }
    }
    tl_st_free(st);
    return ok;
}

static void scenario(const char *name, rogue_kind kind, const char *expect) {
    assert_true(have_setup);
    const char *dir = pathf("%s/%s", scratch_dir, name);
    mkdir(dir, 0755);
    const char *log = pathf("%s/orch.log", dir), *portf = pathf("%s/orch.port", dir);
    const char *ck = pathf("%s/ck.st", dir);
    // clang-format off
    const char *argv[] = {"tl", "orchestrator", "--privacy", "open", "--nodes", "3", "--insecure",
                          "--listen", "127.0.0.1:0", "--port-file", portf, "--threads", "1",
                          "--optimizer", "sgd", "--max-steps", "40", "--heartbeat", "300",
                          "--reconnect-timeout", "3", "--checkpoint", ck, NULL};
    // clang-format on
    pid_t orch = spawn(log, argv);
    int port = wait_port(portf, orch, 20000);
    if (port <= 0) fail_msg("no port file: %s", slurp(log));
    pid_t nodes[2];
    for (int k = 1; k <= 2; k++) {
        const char *nargv[] = {"tl",         "node",
                               "--privacy",  "open",
                               "--connect",  pathf("127.0.0.1:%d", port),
                               "--id",       pathf("%d", k),
                               "--data",     pathf("%s/parts/node-%d", scratch_dir, k),
                               "--insecure", "--threads",
                               "1",          NULL};
        nodes[k - 1] = spawn(pathf("%s/node%d.log", dir, k), nargv);
    }
    char why[512];
    int answered = rogue(port, kind, why, sizeof why);
    /* the run must end by itself: lost rogue + reconnect timeout, no livelock */
    int rc = wait_exit(orch, 60000);
    char *text = slurp(log);
    printf("%s: the rogue answered %d request(s), then %s; orchestrator exit %d\n", name, answered,
           why, rc);
    if (rc == -1) fail_msg("the orchestrator did not stop within 60 s (livelock?):\n%s", text);
    assert_int_not_equal(rc, 0); /* node 3 never came back */
    int named = log_count(log, "node 3 (", expect) > 0 &&
                log_count(log, "node 3 (", "any honest node can produce") > 0;
    if (!named) fail_msg("the rogue is not named with '%s':\n%s", expect, text);
    if (log_count(log, "node 1 (", ") lost: ") || log_count(log, "node 2 (", ") lost: "))
        fail_msg("an honest node was declared lost:\n%s", text);
    if (!strstr(text, "node 3 did not come back")) fail_msg("unexpected ending:\n%s", text);
    char bad[128] = "";
    if (!file_finite(ck, bad, sizeof bad))
        fail_msg("the checkpoint %s is not finite or missing: %s\n%s", ck, bad, text);
    free(text);
    for (int k = 0; k < 2; k++) { /* they keep retrying for a --resume: stop them */
        kill(nodes[k], SIGTERM);
        wait_exit(nodes[k], 10000);
    }
}

static void test_forward_h_flt_max(void **state) {
    (void)state;
    scenario("h", ROGUE_H_FLT_MAX, "lost: FORWARD_RESULT h: element [");
}

static void test_backward_grads_3e38_sgd(void **state) {
    (void)state;
    scenario("g", ROGUE_GRAD_3E38, "lost: BACKWARD_RESULT grads: 0.weight[0,0] = 3e+38 exceeds");
}

/* --resume from a checkpoint holding a NaN fails at once with the reason
 * (uses the checkpoint the "g" run left). */
static void test_resume_nan_refused(void **state) {
    (void)state;
    assert_true(have_setup);
    const char *ck = pathf("%s/g/ck.st", scratch_dir), *bad = pathf("%s/g/nan.st", scratch_dir);
    const char *log = pathf("%s/g/resume.log", scratch_dir),
               *portf = pathf("%s/g/resume.port", scratch_dir);
    struct stat st;
    if (stat(ck, &st) != 0) fail_msg("no checkpoint from the g run");
    st_forge(ck, bad, "2.weight", 5 * 128 + 7, NAN); /* 2.weight [64, 128]: [5,7] */
    const char *argv[] = {
        "tl",          "orchestrator", "--privacy",   "open",        "--nodes",
        "3",           "--insecure",   "--listen",    "127.0.0.1:0", "--port-file",
        portf,         "--threads",    "1",           "--optimizer", "sgd",
        "--max-steps", "40",           "--heartbeat", "300",         "--reconnect-timeout",
        "3",           "--checkpoint", bad,           "--resume",    NULL};
    int rc = wait_exit(spawn(log, argv), 20000);
    char *text = slurp(log);
    printf("--resume from a checkpoint with a NaN: exit %d: %s", rc, text);
    assert_int_equal(rc, 1);
    if (!strstr(text, "nan.st: 2.weight[5,7] is NaN")) fail_msg("reason not given:\n%s", text);
    assert_true(stat(portf, &st) != 0); /* it never listened */
    free(text);
}

static int group_setup(void **state) {
    (void)state;
    harness_init("test_rogue", 180, 400);
    if (require_fmnist() < 0) return -1;
    if (make_root(scratch_dir, PATH_MAX, "tl-rogue") < 0) return -1;
    const char *argv[] = {"tl",      "partition", "--data", fmnist_dir(),
                          "--nodes", "3",         "--out",  pathf("%s/parts", scratch_dir),
                          NULL};
    int rc = wait_exit(spawn(pathf("%s/partition.log", scratch_dir), argv), 120000);
    if (rc != 0) {
        fprintf(stderr, "tl partition failed (%d)\n", rc);
        return -1;
    }
    have_setup = 1;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_forward_h_flt_max, kids_teardown),
        cmocka_unit_test_teardown(test_backward_grads_3e38_sgd, kids_teardown),
        cmocka_unit_test_teardown(test_resume_nan_refused, kids_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, kids_scratch_teardown);
}
