/* test_nodeeval.c - the node's side of issue 10: its data description in
 * HELLO, its per-feature sums on STATS_REQUEST, the per-feature normalization
 * from WELCOME in its forward pass, its evaluation sums on EVAL (equal to the
 * central evaluation of the same rows, bit for bit), and the refusals (a
 * WELCOME whose sample shape or normalization does not fit, EVAL with bad
 * bins). A real node (tl_node_run in a child process) talks to a scripted
 * orchestrator over loopback TCP. Also: tl_evaluate_sums against tl_evaluate. */
#include <math.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/conn.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/frame.h"
#include "tl/model.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/node.h"
#include "tl/norm.h"
#include "tl/trainer.h"

#define DIM 3
#define CLASSES 3
#define SPEC "linear:4,relu,linear:3"
#define CUT 2 /* node-side modules: linear:4, relu */
#define DEADLINE_MS 10000

/* n rows of DIM float32 features far from zero mean / unit scale (so that
 * standardizing them matters), labels cycling through the classes. */
static void make_data(tl_dataset *d, size_t n, uint32_t seed) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->dim = DIM;
    d->rows = 1;
    d->cols = DIM;
    d->dtype = TL_ELEM_F32;
    d->rank = 1;
    d->shape[0] = DIM;
    d->classes = CLASSES;
    d->feats = malloc(sizeof(float) * n * DIM);
    d->labels = malloc(n);
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++) {
        d->labels[i] = (uint8_t)(i % CLASSES);
        for (int f = 0; f < DIM; f++) {
            s = s * 1664525u + 1013904223u;
            d->feats[i * DIM + f] = 100.0f * (float)f + (float)(s >> 8) / (float)(1u << 20) +
                                    3.0f * (float)d->labels[i];
        }
    }
}

static int wait_child(pid_t pid, int timeout_ms) {
    int st;
    for (int t = 0; t < timeout_ms; t += 10) {
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -2;
}

/* A node process serving train/test at port; exits 0 after DONE, 3 when
 * refused, 4 on a timeout, 1 otherwise. */
static pid_t start_node(int lfd, int port, const tl_dataset *train, const tl_dataset *test) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(lfd); /* only the parent listens: a node coming back finds nobody */
        tl_node_cfg cfg = {.host = "127.0.0.1",
                           .port = port,
                           .id = 1,
                           .data = train,
                           .test = test,
                           .give_up_s = 2};
        int rc = tl_node_run(&cfg);
        _exit(rc == 0 ? 0 : rc == TL_EREFUSED ? 3 : rc == TL_ETIMEDOUT ? 4 : 1);
    }
    return pid;
}

typedef struct orch {
    int lfd, port;
    pid_t node;
    tl_conn *c;
    tl_frame_reader r;
    tl_frame_writer w;
} orch;

static void orch_start(orch *o, const tl_dataset *train, const tl_dataset *test) {
    memset(o, 0, sizeof *o);
    assert_int_equal(tl_net_listen("127.0.0.1", 0, 4, &o->lfd, &o->port), 0);
    o->node = start_node(o->lfd, o->port, train, test);
    int fd;
    char peer[64];
    int64_t end = tl_now_ms() + DEADLINE_MS;
    int rc;
    while ((rc = tl_net_accept(o->lfd, &fd, peer, sizeof peer)) == TL_EAGAIN) {
        assert_true(tl_now_ms() < end);
        struct pollfd p = {o->lfd, POLLIN, 0};
        poll(&p, 1, 100);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(tl_conn_tcp_new(fd, peer, &o->c), 0);
    tl_frame_reader_init(&o->r, 0);
    tl_frame_writer_init(&o->w);
}

static void orch_send(orch *o, const tl_msg *m) {
    if (tl_msg_send(o->c, &o->w, m, tl_now_ms() + DEADLINE_MS) < 0)
        fail_msg("send %s: %s", tl_msg_type_name(m->type), tl_errmsg());
}

static void orch_recv(orch *o, tl_msg *m, int type) {
    if (tl_msg_recv(o->c, &o->r, m, tl_now_ms() + DEADLINE_MS) < 0)
        fail_msg("receive: %s", tl_errmsg());
    if (m->type != type)
        fail_msg("expected %s, got %s%s%s", tl_msg_type_name(type), tl_msg_type_name(m->type),
                 m->type == TL_MSG_ERROR ? ": " : "",
                 m->type == TL_MSG_ERROR ? m->u.error.message : "");
}

/* Ends the scripted side; returns the node's exit status. */
static int orch_end(orch *o, int done) {
    if (done) {
        tl_msg *m = calloc(1, sizeof *m);
        m->type = TL_MSG_DONE;
        strcpy(m->u.done.reason, "test over");
        orch_send(o, m);
        free(m);
    }
    tl_conn_free(o->c);
    close(o->lfd); /* a node that reconnects finds nobody and gives up */
    tl_frame_reader_free(&o->r);
    tl_frame_writer_free(&o->w);
    return wait_child(o->node, DEADLINE_MS);
}

/* WELCOME for SPEC with per-feature normalization nm (or scalar if NULL). */
static void welcome(tl_msg *m, const tl_norm *nm, uint32_t rank, const uint32_t shape[3]) {
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_WELCOME;
    tl_msg_welcome *w = &m->u.welcome;
    w->run_id = 0xabcdef;
    w->cut = CUT;
    w->mode = 0;
    w->n_classes = CLASSES;
    w->input_dim = DIM;
    w->mean = 0.0f;
    w->std = 1.0f;
    snprintf(w->model, sizeof w->model, "%s", SPEC);
    w->rank = rank;
    memcpy(w->shape, shape, sizeof w->shape);
    if (nm) {
        w->norm = TL_WELCOME_NORM_FEATURE;
        w->mean_f = tl_tensor_1d(TL_DT_F32, nm->mean_f, DIM);
        w->std_f = tl_tensor_1d(TL_DT_F32, nm->std_f, DIM);
    }
}

/* The whole node conversation: HELLO's description, STATS == our sums,
 * per-feature WELCOME, a FORWARD normalized with it, EVAL == central. */
static void test_node_stats_forward_eval(void **state) {
    (void)state;
    tl_dataset train, test;
    make_data(&train, 40, 1);
    make_data(&test, 23, 2);
    tl_msg *m = calloc(1, sizeof *m);
    orch o;
    orch_start(&o, &train, &test);

    orch_recv(&o, m, TL_MSG_HELLO);
    const tl_msg_hello *h = &m->u.hello;
    assert_int_equal(h->proto_version, TL_PROTO_VERSION);
    assert_int_equal(h->sample_count, 40);
    assert_int_equal(h->classes, CLASSES);
    assert_int_equal(h->elem, TL_ELEM_WIRE_F32);
    assert_int_equal(h->rank, 1);
    assert_int_equal(h->shape[0], DIM);
    assert_int_equal(h->shape[1], 0);
    assert_int_equal(h->test_count, 23);
    assert_int_equal(h->labels_hash, 0);

    /* STATS: exactly tl_norm_stats of the training rows */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_STATS_REQUEST;
    m->u.stats_request.what = TL_STATS_NORM;
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_STATS);
    tl_norm_stats want;
    assert_int_equal(tl_norm_stats_init(&want, DIM), 0);
    assert_int_equal(tl_norm_stats_add(&want, &train, NULL, train.n), 0);
    assert_int_equal(m->u.stats.count, 40);
    uint32_t dim = DIM;
    assert_int_equal(tl_tensor_check(&m->u.stats.sum, TL_DT_F64, 1, &dim, "sum"), 0);
    assert_memory_equal(m->u.stats.sum.data, want.sum, sizeof(double) * DIM);
    assert_memory_equal(m->u.stats.sumsq.data, want.sumsq, sizeof(double) * DIM);
    tl_norm nm;
    assert_int_equal(tl_norm_finish(&want, &nm), 0);
    assert_true(nm.mean_f[2] > 150.0f); /* far from 0: the descriptor matters */

    /* a HEARTBEAT while the orchestrator waits for the other nodes' STATS */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_HEARTBEAT;
    orch_send(&o, m);
    const uint32_t shape[3] = {DIM, 0, 0};
    welcome(m, &nm, 1, shape);
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_READY);
    assert_int_equal(m->u.ready.run_id, 0xabcdef);

    tl_model model;
    assert_int_equal(tl_model_parse(SPEC, DIM, &model), 0);
    float *params = malloc(sizeof(float) * model.n_params);
    tl_model_init(&model, params, 5);

    /* FORWARD rows 3..7: h at the cut is the model on standardized rows */
    uint32_t rows[5] = {3, 4, 5, 6, 7};
    size_t rows_z[5] = {3, 4, 5, 6, 7};
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_FORWARD;
    m->u.forward.step = 1;
    m->u.forward.rows = tl_tensor_1d(TL_DT_U32, rows, 5);
    m->u.forward.params = tl_tensor_1d(TL_DT_F32, params, (uint32_t)model.n_params);
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_FORWARD_RESULT);
    tl_ws ws;
    assert_int_equal(tl_ws_init(&ws, &model, 5), 0);
    tl_dataset_gather_norm(&train, rows_z, 5, &nm, ws.h[0], NULL);
    tl_model_forward(&model, params, &ws, 5, 0, model.n_modules);
    const int dc = tl_model_width(&model, CUT);
    assert_int_equal(m->u.fwd_result.h.numel, (uint64_t)5 * dc);
    assert_memory_equal(m->u.fwd_result.h.data, ws.h[CUT], sizeof(float) * 5 * dc);
    tl_ws_free(&ws);

    /* EVAL: the node's sums are the central evaluation of its test rows */
    for (int i = 0; i < (int)model.n_params; i++) params[i] *= 1.5f; /* new parameters */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL;
    m->u.eval.step = 9;
    m->u.eval.bins = 64;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, params, (uint32_t)model.n_params);
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_EVAL_RESULT);
    assert_int_equal(m->u.eval_result.step, 9);
    tl_evalstats got, central;
    assert_int_equal(tl_evalstats_init(&got, CLASSES, 64), 0);
    assert_int_equal(tl_evalstats_init(&central, CLASSES, 64), 0);
    const tl_tensor *st = &m->u.eval_result.stats;
    assert_int_equal(tl_evalstats_decode(&got, st->data, st->numel * 8), 0);
    assert_int_equal(tl_evaluate_sums(&model, params, &test, &nm, &central), 0);
    assert_int_equal(got.n, 23);
    assert_memory_equal(&got.loss_sum, &central.loss_sum, sizeof(double));
    assert_memory_equal(got.confusion, central.confusion, sizeof(uint64_t) * CLASSES * CLASSES);
    assert_memory_equal(got.pos, central.pos, sizeof(uint64_t) * CLASSES * 64);
    assert_memory_equal(got.neg, central.neg, sizeof(uint64_t) * CLASSES * 64);
    /* and scalar normalization would have given other sums: the descriptor was used */
    tl_evalstats plain;
    assert_int_equal(tl_evalstats_init(&plain, CLASSES, 64), 0);
    tl_norm none = {.kind = TL_NORM_SCALAR, .mean = 0.0f, .std = 1.0f};
    assert_int_equal(tl_evaluate_sums(&model, params, &test, &none, &plain), 0);
    assert_true(memcmp(&plain.loss_sum, &got.loss_sum, sizeof(double)) != 0);

    assert_int_equal(orch_end(&o, 1), 0);
    tl_evalstats_free(&got);
    tl_evalstats_free(&central);
    tl_evalstats_free(&plain);
    tl_norm_free(&nm);
    tl_norm_stats_free(&want);
    free(params);
    free(m);
    tl_dataset_free(&train);
    tl_dataset_free(&test);
}

/* A node without held-out rows says so in HELLO and answers EVAL with empty
 * sums; parameters of the wrong size are an error it reports. */
static void test_node_eval_without_test_rows(void **state) {
    (void)state;
    tl_dataset train;
    make_data(&train, 12, 3);
    tl_msg *m = calloc(1, sizeof *m);
    orch o;
    orch_start(&o, &train, NULL);
    orch_recv(&o, m, TL_MSG_HELLO);
    assert_int_equal(m->u.hello.test_count, 0);
    const uint32_t shape[3] = {0, 0, 0};
    welcome(m, NULL, 0, shape); /* a protocol-2 style WELCOME: scalar, no shape */
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_READY);
    tl_model model;
    assert_int_equal(tl_model_parse(SPEC, DIM, &model), 0);
    float *params = calloc(model.n_params, sizeof(float));
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL;
    m->u.eval.bins = 16;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, params, (uint32_t)model.n_params);
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_EVAL_RESULT);
    tl_evalstats got;
    assert_int_equal(tl_evalstats_init(&got, CLASSES, 16), 0);
    assert_int_equal(
        tl_evalstats_decode(&got, m->u.eval_result.stats.data, m->u.eval_result.stats.numel * 8),
        0);
    assert_int_equal(got.n, 0);
    /* one parameter short */
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_EVAL;
    m->u.eval.bins = 16;
    m->u.eval.params = tl_tensor_1d(TL_DT_F32, params, (uint32_t)model.n_params - 1);
    orch_send(&o, m);
    orch_recv(&o, m, TL_MSG_ERROR);
    assert_non_null(strstr(m->u.error.message, "EVAL params"));
    assert_int_equal(orch_end(&o, 0), 4); /* it tried to come back, then gave up */
    tl_evalstats_free(&got);
    free(params);
    free(m);
    tl_dataset_free(&train);
}

/* WELCOMEs the node cannot take part with: ERROR naming the reason, and the
 * node stops (refused: final). */
static void refused_welcome(const tl_norm *nm, uint32_t rank, const uint32_t shape[3],
                            uint32_t bins_eval, const char *want) {
    tl_dataset train;
    make_data(&train, 12, 4);
    tl_msg *m = calloc(1, sizeof *m);
    orch o;
    orch_start(&o, &train, NULL);
    orch_recv(&o, m, TL_MSG_HELLO);
    welcome(m, nm, rank, shape);
    orch_send(&o, m);
    if (bins_eval) { /* a good WELCOME, then EVAL with bad bins */
        orch_recv(&o, m, TL_MSG_READY);
        memset(m, 0, sizeof *m);
        m->type = TL_MSG_EVAL;
        m->u.eval.bins = bins_eval;
        m->u.eval.params = tl_tensor_1d(TL_DT_F32, NULL, 0);
        orch_send(&o, m);
    }
    orch_recv(&o, m, TL_MSG_ERROR);
    if (!strstr(m->u.error.message, want))
        fail_msg("ERROR \"%s\" lacks \"%s\"", m->u.error.message, want);
    assert_int_equal(orch_end(&o, 0), bins_eval ? 4 : 3);
    free(m);
    tl_dataset_free(&train);
}

static void test_node_refusals(void **state) {
    (void)state;
    const uint32_t img[3] = {1, 1, DIM}, flat[3] = {DIM, 0, 0};
    refused_welcome(NULL, 3, img, 0, "the run's samples have shape [1, 1, 3], ours [3]");
    float mean[DIM] = {0, 0, 0}, std[DIM] = {1, 0, 1};
    tl_norm bad = {.kind = TL_NORM_FEATURE, .dim = DIM, .mean_f = mean, .std_f = std};
    refused_welcome(&bad, 1, flat, 0, "feature 1 normalizes with mean 0, std 0");
    std[1] = 1;
    mean[2] = NAN;
    refused_welcome(&bad, 1, flat, 0, "feature 2 normalizes with mean nan");
    refused_welcome(NULL, 1, flat, 1, "EVAL: 1 bins");
}

/* tl_evaluate_sums gives tl_evaluate's loss and accuracy bit for bit with the
 * same scalar normalization (uint8 data, more rows than one chunk). */
static void test_evaluate_sums_matches_evaluate(void **state) {
    (void)state;
    tl_dataset d = {0};
    d.n = 2500;
    d.dim = 6;
    d.rows = 2;
    d.cols = 3;
    d.classes = 4;
    d.images = malloc(d.n * d.dim);
    d.labels = malloc(d.n);
    uint32_t s = 9;
    for (size_t i = 0; i < d.n * d.dim; i++) {
        s = s * 1664525u + 1013904223u;
        d.images[i] = (uint8_t)(s >> 24);
    }
    for (size_t i = 0; i < d.n; i++) d.labels[i] = (uint8_t)(d.images[i * d.dim] % 4);
    tl_model model;
    assert_int_equal(tl_model_parse("linear:8,relu,linear:4", 6, &model), 0);
    float *params = malloc(sizeof(float) * model.n_params);
    tl_model_init(&model, params, 3);
    double loss, acc;
    assert_int_equal(tl_evaluate(&model, params, &d, 0.1307f, 0.3081f, &loss, &acc), 0);
    tl_evalstats es;
    assert_int_equal(tl_evalstats_init(&es, 4, TL_EVAL_BINS), 0);
    tl_norm nm = {.kind = TL_NORM_SCALAR, .mean = 0.1307f, .std = 0.3081f};
    assert_int_equal(tl_evaluate_sums(&model, params, &d, &nm, &es), 0);
    double l2 = es.loss_sum / (double)es.n;
    uint64_t hits = 0;
    for (int c = 0; c < 4; c++) hits += es.confusion[c * 4 + c];
    double a2 = (double)hits / (double)es.n;
    assert_memory_equal(&l2, &loss, sizeof loss);
    assert_memory_equal(&a2, &acc, sizeof acc);
    /* refusals: other width, other classes */
    tl_evalstats wrong;
    assert_int_equal(tl_evalstats_init(&wrong, 5, 16), 0);
    assert_int_equal(tl_evaluate_sums(&model, params, &d, &nm, &wrong), TL_EINVAL);
    tl_norm nf = {.kind = TL_NORM_FEATURE, .dim = 5};
    assert_int_equal(tl_evaluate_sums(&model, params, &d, &nf, &es), TL_EINVAL);
    tl_evalstats_free(&wrong);
    tl_evalstats_free(&es);
    free(params);
    tl_dataset_free(&d);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_stats_forward_eval),
        cmocka_unit_test(test_node_eval_without_test_rows),
        cmocka_unit_test(test_node_refusals),
        cmocka_unit_test(test_evaluate_sums_matches_evaluate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
