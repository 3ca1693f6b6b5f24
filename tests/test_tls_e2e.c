/*
 * test_tls_e2e.c - issue 5's refusal cases against a real `tl orchestrator`
 * process (TL_BIN), over TCP on 127.0.0.1.
 *
 * Once: `tl provision --nodes 3 --out KIT`, a second CA `--out OTHER`, an
 * expired node-1 kit signed by KIT's CA (tl_provision_add_node on a copy of
 * KIT/ca with a validity period in the past), a hybrid kit that trusts KIT's
 * CA but presents OTHER's node-1 certificate, and `tl partition --nodes 3`.
 *
 * Each case starts `tl orchestrator --nodes 3 --max-steps 5 --tls-dir ...`,
 * throws one bad client at it, then starts the three legitimate nodes and
 * checks that
 *   - the bad client was refused (non-zero exit and the reason on stderr, or
 *     for a raw client the failure it got); a `tl node` refused on certificate
 *     grounds stops at its first attempt (no "retrying" line). Where that
 *     depends on timing (whether the node's HELLO leaves before the
 *     orchestrator's alert and reset arrive) the bad node runs REPEAT times,
 *   - the orchestrator logged one line saying whom it refused and why,
 *   - the orchestrator still finished the run with the legitimate nodes
 *     (exit 0, --save file written).
 * Plus: no --tls-dir and no --insecure is a usage error (2); --insecure warns.
 *
 * Every child is killed and reaped in the teardown, also after a failed
 * assertion, and an alarm bounds each case.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tl/conn.h"
#include "tl/error.h"
#include "tl/frame.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/provision.h"
#include "tl/tls.h"

#define CASE_ALARM_S 90 /* hard bound on one case */
#define NODE_TIMEOUT_MS 60000
/* Cases where the node's reaction depends on timing (whether its HELLO goes
 * out before the orchestrator's alert and reset arrive) run it this often. */
#define REPEAT 3

static int have_setup; /* group setup succeeded */

#include "harness.h"

/* Runs TL_BIN to completion (bounded) and returns its exit code. */
static int run_tl(const char *log, int timeout_ms, const char *const *argv) {
    return wait_exit(spawn(log, argv), timeout_ms);
}

/* ---- the orchestrator and the legitimate nodes -------------------------- */

typedef struct orch {
    pid_t pid;
    int port;
    char dir[PATH_MAX]; /* this case's working directory */
    char log[PATH_MAX + 32];
    char out[PATH_MAX + 32];
} orch;

/* Starts `tl orchestrator` with the given kit (NULL: --insecure) in
 * scratch_dir/<name>/ and waits for its port. */
static void orch_start(orch *o, const char *name, const char *kit) {
    snprintf(o->dir, sizeof o->dir, "%s/%s", scratch_dir, name);
    assert_int_equal(mkdir(o->dir, 0700), 0);
    snprintf(o->log, sizeof o->log, "%s/orch.log", o->dir);
    snprintf(o->out, sizeof o->out, "%s/out.st", o->dir);
    const char *pf = pathf("%s/port", o->dir);
    // clang-format off
    const char *argv[] = {"tl", "orchestrator", "--privacy", "open", "--listen", "127.0.0.1:0",
                          "--port-file", pf, "--nodes", "3", "--max-steps", "5", "--heartbeat",
                          "500", "--wait-timeout", "60", "--test-data", fmnist_dir(), "--save",
                          o->out, kit ? "--tls-dir" : "--insecure",
                          kit ? pathf("%s/orchestrator", kit) : NULL, NULL};
    // clang-format on
    o->pid = spawn(o->log, argv);
    o->port = wait_port(pf, o->pid, 15000);
    if (!o->port && !alive(o->pid)) {
        int code = wait_exit(o->pid, 1000);
        char *s = slurp(o->log);
        print_error("orchestrator exited early (%d):\n%s\n", code, s);
        free(s);
        fail();
    }
    if (!o->port) fail_msg("orchestrator wrote no port file in 15 s");
}

static const char *addr(const orch *o) { return pathf("127.0.0.1:%d", o->port); }

/* `tl node` as node `id` with kit dir `kitdir` and node-`data_k`'s data. */
static pid_t node_start(const orch *o, const char *log, int id, const char *kitdir, int data_k,
                        const char *extra) {
    char ids[16];
    snprintf(ids, sizeof ids, "%d", id);
    const char *argv[16] = {
        "tl",    "node", "--privacy", "open",   "--connect",
        addr(o), "--id", ids,         "--data", pathf("%s/parts/node-%d", scratch_dir, data_k)};
    int n = 10;
    if (kitdir) {
        argv[n++] = "--tls-dir";
        argv[n++] = kitdir;
    } else {
        argv[n++] = "--insecure";
    }
    if (extra) argv[n++] = extra;
    argv[n] = NULL;
    return spawn(log, argv);
}

/* Starts nodes 1..3 with kit/node-K (kit NULL: --insecure), checks they and
 * the orchestrator finish cleanly and out.st is written. */
static void finish_with_legit_nodes(orch *o, const char *kit) {
    pid_t p[3];
    for (int k = 1; k <= 3; k++)
        p[k - 1] = node_start(o, pathf("%s/node%d.log", o->dir, k), k,
                              kit ? pathf("%s/node-%d", kit, k) : NULL, k, "--quiet");
    for (int k = 1; k <= 3; k++) {
        int code = wait_exit(p[k - 1], NODE_TIMEOUT_MS);
        if (code != 0) {
            char *s = slurp(pathf("%s/node%d.log", o->dir, k)), *l = slurp(o->log);
            print_error("legitimate node %d: exit %d\n%s\norchestrator log:\n%s\n", k, code, s, l);
            free(s);
            free(l);
            fail();
        }
    }
    int code = wait_exit(o->pid, 30000);
    if (code != 0) {
        char *l = slurp(o->log);
        print_error("orchestrator: exit %d\n%s\n", code, l);
        free(l);
        fail();
    }
    for (int k = 1; k <= 3; k++) expect_in_file(o->log, pathf("node %d joined", k), "joined");
    assert_true(file_size(o->out) > 0);
}

/* A bad `tl node`: started, then waited for with a bound; its outcome is
 * checked last (bad_check), after the orchestrator's behaviour, so that a
 * failure there does not hide what the orchestrator did. */
typedef struct bad {
    pid_t pid;
    char name[64];
    char log[PATH_MAX + 96];
    int64_t t0, ms;
    int code; /* exit code, -1: had to be killed */
} bad;

static void bad_start(bad *b, const orch *o, const char *name, int id, const char *kitdir,
                      int data_k, const char *extra) {
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->log, sizeof b->log, "%s/%s.log", o->dir, name);
    b->t0 = now_ms();
    b->pid = node_start(o, b->log, id, kitdir, data_k, extra);
}

static void bad_wait(bad *b, int timeout_ms) {
    b->code = wait_exit(b->pid, timeout_ms);
    b->ms = now_ms() - b->t0;
    if (b->code == -1)
        print_message("    %s: still running after %lld ms: killed\n", b->name, (long long)b->ms);
    else print_message("    %s: exit %d after %lld ms\n", b->name, b->code, (long long)b->ms);
}

/* Asserts that the bad node stopped by itself with a non-zero exit and that
 * its output contains want. */
static void bad_check(const bad *b, const char *want) {
    if (b->code == 0 || b->code == -1) {
        char *s = slurp(b->log);
        print_error("%s: expected it to stop by itself with a non-zero exit, got %s; its "
                    "output:\n%s\n",
                    b->name, b->code == 0 ? "exit 0" : "no exit (killed)", s);
        free(s);
        fail();
    }
    expect_in_file(b->log, want, "client");
}

/* A refusal on certificate grounds is final: the node must stop at its first
 * attempt, not report "cannot reach the orchestrator ...; retrying". */
static void bad_check_no_retry(const bad *b) {
    char *s = slurp(b->log);
    int retried = strstr(s, "retrying") != NULL;
    if (retried)
        print_error("%s: a certificate refusal must be final, but the node retried:\n%s\n", b->name,
                    s);
    free(s);
    if (retried) fail();
}

/* ---- group setup: kits and data ---------------------------------------- */

static int group_setup(void **state) {
    (void)state;
    harness_init("test_tls_e2e", 0, CASE_ALARM_S);
    if (require_fmnist() < 0) return -1;
    if (make_root(scratch_dir, PATH_MAX, "tl-tls-e2e") < 0) return -1;
    char kit[PATH_MAX + 16], other[PATH_MAX + 16], exp[PATH_MAX + 16], hyb[PATH_MAX + 16];
    snprintf(kit, sizeof kit, "%s/kit", scratch_dir);
    snprintf(other, sizeof other, "%s/other", scratch_dir);
    snprintf(exp, sizeof exp, "%s/expired", scratch_dir);
    snprintf(hyb, sizeof hyb, "%s/hybrid", scratch_dir);
    const char *prov1[] = {"tl", "provision", "--nodes", "3", "--out", kit, NULL};
    const char *prov2[] = {"tl", "provision", "--nodes", "3", "--out", other, NULL};
    const char *part[] = {"tl",     "partition",  "--nodes", "3",
                          "--data", fmnist_dir(), "--out",   pathf("%s/parts", scratch_dir),
                          NULL};
    pid_t pp = spawn(pathf("%s/partition.log", scratch_dir), part);
    if (run_tl(pathf("%s/provision.log", scratch_dir), 30000, prov1) != 0) return -1;
    if (run_tl(pathf("%s/provision2.log", scratch_dir), 30000, prov2) != 0) return -1;

    /* An expired node-1 kit signed by KIT's CA: a copy of KIT/ca, then
     * tl_provision_add_node with a period that ended an hour ago. */
    if (mkdir(exp, 0700) || mkdir(pathf("%s/ca", exp), 0700)) return -1;
    copy_file(pathf("%s/ca/ca.pem", kit), pathf("%s/ca/ca.pem", exp), 0644);
    copy_file(pathf("%s/ca/ca-key.pem", kit), pathf("%s/ca/ca-key.pem", exp), 0600);
    tl_provision_opts po;
    tl_provision_opts_init(&po);
    po.not_before_s = -2 * 86400;
    po.not_after_s = -3600;
    if (tl_provision_add_node(exp, 1, &po) < 0) {
        print_error("tl_provision_add_node: %s\n", tl_errmsg());
        return -1;
    }

    /* A kit that trusts KIT's CA (so the node accepts the orchestrator) but
     * presents OTHER's node-1 certificate (so the orchestrator must refuse it). */
    if (mkdir(hyb, 0700)) return -1;
    copy_file(pathf("%s/node-1/cert.pem", other), pathf("%s/cert.pem", hyb), 0644);
    copy_file(pathf("%s/node-1/key.pem", other), pathf("%s/key.pem", hyb), 0600);
    copy_file(pathf("%s/ca/ca.pem", kit), pathf("%s/ca.pem", hyb), 0644);

    if (wait_exit(pp, 60000) != 0) {
        char *s = slurp(pathf("%s/partition.log", scratch_dir));
        print_error("tl partition failed:\n%s\n", s);
        free(s);
        return -1;
    }
    alarm(0);
    have_setup = 1;
    return 0;
}

static int case_setup(void **state) {
    (void)state;
    if (!have_setup) return -1;
    alarm(CASE_ALARM_S);
    return 0;
}

static int case_teardown(void **state) {
    (void)state;
    kids_kill_all();
    alarm(0);
    return 0;
}

static const char *KIT(void) {
    static char b[PATH_MAX + 16];
    snprintf(b, sizeof b, "%s/kit", scratch_dir);
    return b;
}

static const char *OTHER(void) {
    static char b[PATH_MAX + 16];
    snprintf(b, sizeof b, "%s/other", scratch_dir);
    return b;
}

/* ---- cases ------------------------------------------------------------- */

/* a. A plaintext node against the TLS orchestrator. */
static void test_plaintext_node(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "a_plaintext", KIT());
    /* The orchestrator sees "TLN1" where a ClientHello belongs and answers in
     * the node's own protocol: a REJECT the node can read, so it stops at
     * once with the reason instead of retrying until --give-up. */
    bad b;
    bad_start(&b, &o, "plaintext", 1, NULL, 1, "--give-up=30");
    wait_for_text(o.log, "refused", 10000);
    bad_wait(&b, 15000);
    expect_in_file(o.log, "speaks plaintext", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    finish_with_legit_nodes(&o, KIT());
    bad_check(&b, "requires TLS 1.3");
    bad_check_no_retry(&b);
}

/* a2. The reverse: a TLS node against a plaintext (--insecure) orchestrator.
 * The orchestrator refuses the ClientHello in plaintext; the node's TLS stack
 * cannot parse that, and the node stops at once saying why. */
static void test_tls_node_plaintext_orchestrator(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "a2_tlsnode", NULL);
    bad b;
    bad_start(&b, &o, "tlsnode", 1, pathf("%s/node-1", KIT()), 1, "--give-up=30");
    wait_for_text(o.log, "refused", 10000);
    bad_wait(&b, 15000);
    expect_in_file(o.log, "runs --insecure", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    finish_with_legit_nodes(&o, NULL);
    bad_check(&b, "does not speak TLS 1.3");
    bad_check_no_retry(&b);
}

/* b. A client with no certificate: a raw OpenSSL TLS 1.3 client. */
static void test_no_client_certificate(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "b_nocert", KIT());
    int fd = -1;
    assert_int_equal(tl_net_connect("127.0.0.1", o.port, 5000, &fd), 0);
    /* blocking, with timeouts, for plain SSL_connect / SSL_read */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL_CTX *x = SSL_CTX_new(TLS_client_method());
    assert_non_null(x);
    SSL_CTX_set_min_proto_version(x, TLS1_3_VERSION);
    SSL_CTX_set_verify(x, SSL_VERIFY_NONE, NULL);
    SSL *s = SSL_new(x);
    assert_non_null(s);
    SSL_set_fd(s, fd);
    ERR_clear_error();
    int r = SSL_connect(s), err = 0;
    const char *stage = "handshake";
    char reason[256] = "";
    if (r == 1) { /* TLS 1.3: the server checks our (missing) certificate after */
        char b[16];
        stage = "first read";
        r = SSL_read(s, b, sizeof b);
        assert_true(r <= 0);
    }
    err = SSL_get_error(s, r);
    ERR_error_string_n(ERR_peek_error(), reason, sizeof reason);
    print_message("    client: %s failed: SSL_get_error %d: %s\n", stage, err, reason);
    /* An alert from the server, not a timeout or a silent close. */
    assert_int_equal(err, SSL_ERROR_SSL);
    assert_non_null(strstr(reason, "certificate required"));
    SSL_free(s);
    SSL_CTX_free(x);
    close(fd);
    expect_in_file(o.log, "did not return a certificate", "orchestrator");
    finish_with_legit_nodes(&o, KIT());
}

/* c. A kit from another CA. `tl node --tls-dir OTHER/node-1` refuses the
 * orchestrator first (it trusts OTHER's CA only); the hybrid kit trusts KIT's
 * CA but presents OTHER's certificate, so the orchestrator must refuse it. */
static void test_kit_from_another_ca(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "c_otherca", KIT());
    bad b1, b2[REPEAT];
    bad_start(&b1, &o, "other", 1, pathf("%s/node-1", OTHER()), 1, NULL);
    wait_for_text(o.log, "unknown ca", 10000);
    bad_wait(&b1, 10000);
    expect_in_file(o.log, "alert unknown ca", "orchestrator");
    for (int i = 0; i < REPEAT; i++) {
        bad_start(&b2[i], &o, pathf("hybrid%d", i + 1), 1, pathf("%s/hybrid", scratch_dir), 1,
                  NULL);
        bad_wait(&b2[i], 10000);
    }
    expect_in_file(o.log, "certificate verify failed for 'tl-node-1'", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    finish_with_legit_nodes(&o, KIT());
    bad_check(&b1, "certificate verify failed for 'tl-orchestrator'");
    bad_check_no_retry(&b1);
    /* the orchestrator refused its certificate: the node learns it from the
     * alert on its first read ("the peer refused the TLS session: ... unknown
     * ca") and must stop there, not retry */
    for (int i = 0; i < REPEAT; i++) {
        bad_check(&b2[i], "unknown ca");
        bad_check_no_retry(&b2[i]);
    }
}

/* d. An expired node certificate signed by the run's CA. */
static void test_expired_certificate(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "d_expired", KIT());
    bad b[REPEAT];
    for (int i = 0; i < REPEAT; i++) {
        bad_start(&b[i], &o, pathf("expired%d", i + 1), 1, pathf("%s/expired/node-1", scratch_dir),
                  1, NULL);
        bad_wait(&b[i], 10000);
    }
    expect_in_file(o.log, "certificate has expired", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    finish_with_legit_nodes(&o, KIT());
    /* "... the peer refused the TLS session: sslv3 alert certificate expired",
     * then a non-zero exit without retrying */
    for (int i = 0; i < REPEAT; i++) {
        bad_check(&b[i], "certificate expired");
        bad_check_no_retry(&b[i]);
    }
}

/* e. Node 2's kit claiming id 3: refused locally by `tl node`, and, from a raw
 * client on the library, by the orchestrator with NOT_AUTHENTICATED. */
static void test_wrong_node_id(void **state) {
    (void)state;
    orch o;
    orch_start(&o, "e_wrongid", KIT());
    bad b;
    bad_start(&b, &o, "claim3", 3, pathf("%s/node-2", KIT()), 3, NULL);
    bad_wait(&b, 10000);
    bad_check(&b, "--id 3 but the certificate");

    tl_tls_ctx *ctx = NULL;
    tl_conn *c = NULL;
    int fd = -1;
    int64_t deadline = tl_now_ms() + 10000;
    assert_int_equal(tl_tls_ctx_new(pathf("%s/node-2", KIT()), TL_TLS_NODE, &ctx), 0);
    assert_int_equal(tl_tls_ctx_node_id(ctx), 2);
    assert_int_equal(tl_net_connect("127.0.0.1", o.port, 5000, &fd), 0);
    assert_int_equal(tl_conn_tls_new(fd, ctx, 0, addr(&o), "127.0.0.1", &c), 0);
    int rc = tl_conn_handshake_full(c, deadline);
    if (rc < 0) fail_msg("handshake: %s", tl_errmsg());
    client k;
    client_attach(&k, c, addr(&o), TL_FRAME_HANDSHAKE_MAX);
    static tl_msg m;
    char why[256];
    memset(&m, 0, sizeof m);
    rc = client_hello(&k, 3, 20000, 0x1234, "test_tls_e2e", 0, 10000, &m, why, sizeof why);
    if (rc == 0) fail_msg("HELLO as node 3 with node 2's certificate: welcomed");
    if (m.type != TL_MSG_REJECT) fail_msg("HELLO: %s", why); /* send, receive or other type */
    assert_int_equal(m.type, TL_MSG_REJECT);
    print_message("    raw client: REJECT code %u: %s\n", m.u.reject.code, m.u.reject.reason);
    assert_int_equal(m.u.reject.code, TL_REJECT_NOT_AUTHENTICATED);
    assert_non_null(
        strstr(m.u.reject.reason, "claims node id 3 but its certificate is for node 2"));
    client_close(&k);
    tl_tls_ctx_free(ctx);

    expect_in_file(o.log, "claims node id 3 but its certificate is for node 2", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    finish_with_legit_nodes(&o, KIT());
}

/* f. A node refusing an orchestrator certified by another CA: it must stop at
 * once (a certificate error is final), not retry. */
static void test_orchestrator_from_another_ca(void **state) {
    (void)state;
    orch o;
    const char *other = OTHER();
    orch_start(&o, "f_otherorch", other);
    bad b;
    bad_start(&b, &o, "kitnode", 1, pathf("%s/node-1", KIT()), 1, NULL);
    bad_wait(&b, 10000);
    bad_check(&b, "certificate verify failed for 'tl-orchestrator'");
    expect_in_file(b.log, "not issued by this run's CA", "client");
    bad_check_no_retry(&b);
    expect_in_file(o.log, "refused", "orchestrator");
    expect_not_in_file(o.log, "joined from");
    /* the orchestrator's own nodes (OTHER's kits) still complete the run */
    finish_with_legit_nodes(&o, other);
}

/* Neither --tls-dir nor --insecure: usage error; --insecure: a warning. */
static void test_orchestrator_security_flags(void **state) {
    (void)state;
    const char *dir = pathf("%s/flags", scratch_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    const char *log = pathf("%s/usage.log", dir);
    const char *a1[] = {"tl", "orchestrator", "--privacy",   "open", "--nodes",
                        "3",  "--listen",     "127.0.0.1:0", NULL};
    assert_int_equal(run_tl(log, 10000, a1), 2);
    expect_in_file(log, "--tls-dir", "usage");

    const char *log2 = pathf("%s/insecure.log", dir), *pf = pathf("%s/port", dir);
    const char *a2[] = {"tl",       "orchestrator", "--privacy",   "open", "--nodes",    "3",
                        "--listen", "127.0.0.1:0",  "--port-file", pf,     "--insecure", NULL};
    pid_t p = spawn(log2, a2);
    int64_t end = now_ms() + 10000;
    while (access(pf, R_OK) != 0 && now_ms() < end) sleep_ms(20);
    assert_int_equal(access(pf, R_OK), 0);
    kill(p, SIGTERM);
    wait_exit(p, 5000);
    expect_in_file(log2, "warning", "insecure");
    expect_in_file(log2, "plaintext", "insecure");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_orchestrator_security_flags, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_plaintext_node, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_tls_node_plaintext_orchestrator, case_setup,
                                        case_teardown),
        cmocka_unit_test_setup_teardown(test_no_client_certificate, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_kit_from_another_ca, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_expired_certificate, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_node_id, case_setup, case_teardown),
        cmocka_unit_test_setup_teardown(test_orchestrator_from_another_ca, case_setup,
                                        case_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, kids_scratch_teardown);
}
