/*
 * test_tls.c - mutual TLS 1.3 over real sockets (the kits are made as
 * test_provision.c checks them, kits.h): the success case with a multi-MiB writev,
 * and every refusal of issue 5 (plaintext client, no client certificate, a kit
 * from another CA in both directions, an expired certificate, a wrong host
 * name, the wrong role, node 2's kit claiming id 3), each with the one-line
 * message it produces. Both ends run non-blocking in this process over a
 * socketpair, driven with poll; one case runs the node in a child process over
 * TCP on 127.0.0.1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls_int.h"
#include "tl/conn.h"
#include "tl/error.h"
#include "tl/provision.h"
#include "tl/tls.h"

#include "harness.h"
#include "kits.h"

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

/* ---- one end of a connection under test ------------------------------- */

typedef struct side {
    tl_tls_ctx *ctx; /* tl end: ctx + c */
    tl_conn *c;
    SSL *raw; /* a foreign OpenSSL end (stranger, rogue) */
    int fd;   /* raw/plaintext ends: the socket */
    int done, rc;
    short want;
    char err[512];
} side;

static int side_fd(const side *s) { return s->c ? s->c->fd : s->fd; }

/* Advances one end's handshake by one step. */
static void side_step(side *s) {
    if (s->done) return;
    if (s->c) {
        int rc = tl_conn_handshake(s->c);
        if (rc == TL_EAGAIN) {
            s->want = tl_conn_want(s->c);
            return;
        }
        s->rc = rc;
        if (rc < 0) snprintf(s->err, sizeof s->err, "%s", tl_errmsg());
    } else if (s->raw) {
        int r = SSL_do_handshake(s->raw), e;
        if (r == 1) {
            s->rc = 0;
        } else if ((e = SSL_get_error(s->raw, r)) == SSL_ERROR_WANT_READ ||
                   e == SSL_ERROR_WANT_WRITE) {
            s->want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            return;
        } else {
            s->rc = -1;
            ERR_error_string_n(ERR_get_error(), s->err, sizeof s->err);
        }
        ERR_clear_error();
    } else {
        s->rc = 0; /* plaintext: nothing to do */
    }
    s->done = 1;
    if (s->rc < 0) shutdown(side_fd(s), SHUT_WR); /* let the other end see EOF */
}

/* Runs both handshakes until each has finished or failed (10 s stall limit). */
static void handshake_both(side *a, side *b) {
    for (;;) {
        side_step(a);
        side_step(b);
        if (a->done && b->done) return;
        struct pollfd p[2];
        int n = 0;
        if (!a->done) p[n++] = (struct pollfd){.fd = side_fd(a), .events = a->want};
        if (!b->done) p[n++] = (struct pollfd){.fd = side_fd(b), .events = b->want};
        assert_true(poll(p, n, 10000) > 0);
    }
}

static void side_free(side *s) {
    tl_conn_free(s->c);
    tl_tls_ctx_free(s->ctx);
    if (s->raw) SSL_free(s->raw);
    if (!s->c && s->fd >= 0) close(s->fd);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

static void socket_pair(int fds[2]) {
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblock(fds[0]);
    nonblock(fds[1]);
}

/* A tl orchestrator end on fd with the kit in dir. */
static void tl_server(side *s, const char *dir, int fd) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    assert_int_equal(tl_tls_ctx_new(dir, TL_TLS_ORCHESTRATOR, &s->ctx), 0);
    assert_int_equal(tl_conn_tls_new(fd, s->ctx, 1, "node-peer:4711", NULL, &s->c), 0);
}

/* A tl node end on fd with the kit in dir, expecting the orchestrator at host. */
static void tl_client(side *s, const char *dir, int fd, const char *host) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    assert_int_equal(tl_tls_ctx_new(dir, TL_TLS_NODE, &s->ctx), 0);
    assert_int_equal(tl_conn_tls_new(fd, s->ctx, 0, "orch-peer:7000", host, &s->c), 0);
}

/* A foreign OpenSSL end: optional certificate and key, no verification. */
static void raw_end(side *s, int server, const char *cert, const char *key, int fd) {
    SSL_CTX *x = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    memset(s, 0, sizeof *s);
    assert_non_null(x);
    SSL_CTX_set_min_proto_version(x, TLS1_3_VERSION);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate_file(x, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_verify(x, SSL_VERIFY_NONE, NULL);
    s->raw = SSL_new(x);
    SSL_CTX_free(x);
    SSL_set_fd(s->raw, fd);
    if (server) SSL_set_accept_state(s->raw);
    else SSL_set_connect_state(s->raw);
    s->fd = fd;
}

/* ---- moving data ------------------------------------------------------- */

/* Sends iov through w while receiving the same number of bytes from r into
 * dst, both non-blocking, with poll when neither can progress. */
static void pump(tl_conn *w, tl_conn *r, const struct iovec *iov_in, int iovcnt, unsigned char *dst,
                 size_t total) {
    struct iovec iov[8];
    int first = 0;
    size_t got = 0, sent = 0;
    assert_true(iovcnt <= 8);
    memcpy(iov, iov_in, sizeof iov[0] * iovcnt);
    while (got < total) {
        int progress = 0;
        if (first < iovcnt) {
            ssize_t n = tl_conn_writev(w, iov + first, iovcnt - first);
            if (n != TL_EAGAIN) {
                if (n < 0) fail_msg("writev: %s", tl_errmsg());
                sent += (size_t)n;
                progress = 1;
                while (n > 0) {
                    size_t k = (size_t)n < iov[first].iov_len ? (size_t)n : iov[first].iov_len;
                    iov[first].iov_base = (char *)iov[first].iov_base + k;
                    iov[first].iov_len -= k;
                    n -= (ssize_t)k;
                    if (iov[first].iov_len == 0) first++;
                }
                while (first < iovcnt && iov[first].iov_len == 0) first++;
            }
        }
        do {
            ssize_t n = tl_conn_read(r, dst + got, total - got);
            if (n == TL_EAGAIN) break;
            if (n < 0) fail_msg("read: %s", tl_errmsg());
            got += (size_t)n;
            progress = 1;
        } while (got < total && tl_conn_pending(r) > 0);
        if (!progress) {
            struct pollfd p[2] = {{.fd = r->fd, .events = tl_conn_want(r)},
                                  {.fd = w->fd, .events = first < iovcnt ? tl_conn_want(w) : 0}};
            assert_true(poll(p, 2, 10000) > 0);
        }
    }
    assert_int_equal(sent, total);
}

/* Blocking helpers for the child process of the TCP test (no cmocka there). */
static int wait_for(tl_conn *c) {
    struct pollfd p = {.fd = c->fd, .events = tl_conn_want(c)};
    return poll(&p, 1, 10000) > 0 ? 0 : -1;
}

static int read_full(tl_conn *c, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = tl_conn_read(c, (char *)buf + got, len - got);
        if (n == TL_EAGAIN) {
            if (wait_for(c) < 0) return TL_ETIMEDOUT;
            continue;
        }
        if (n < 0) return (int)n;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(tl_conn *c, const void *buf, size_t len) {
    size_t sent = 0;
    while (sent < len) {
        struct iovec v = {(char *)buf + sent, len - sent};
        ssize_t n = tl_conn_writev(c, &v, 1);
        if (n == TL_EAGAIN) {
            if (wait_for(c) < 0) return TL_ETIMEDOUT;
            continue;
        }
        if (n < 0) return (int)n;
        sent += (size_t)n;
    }
    return 0;
}

static int handshake_full(tl_conn *c) {
    int rc;
    while ((rc = tl_conn_handshake(c)) == TL_EAGAIN)
        if (wait_for(c) < 0) return TL_ETIMEDOUT;
    return rc;
}

static void fill(unsigned char *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (unsigned char)(seed >> 24);
    }
}

/* ---- contexts (the kits are kits.h's fixtures) ------------------------- */

static void test_ctx_errors(void **state) {
    tl_tls_ctx *ctx = NULL;
    assert_int_equal(tl_tls_ctx_new(pathf("%s/missing", kits_root), TL_TLS_NODE, &ctx), TL_EIO);
    assert_null(ctx);
    print_message("missing kit: %s\n", tl_errmsg());
    assert_int_equal(tl_tls_ctx_new(pathf("%s/node-1", kit_a), TL_TLS_ORCHESTRATOR, &ctx), TL_ETLS);
    print_message("wrong kit: %s\n", tl_errmsg());
    assert_non_null(strstr(tl_errmsg(), "node certificate"));
    assert_int_equal(tl_tls_ctx_new(pathf("%s/orchestrator", kit_a), TL_TLS_NODE, &ctx), TL_ETLS);

    /* a kit whose key belongs to another certificate */
    const char *mix = pathf("%s/mixed", kits_root);
    char cmd[PATH_MAX * 8];
    snprintf(
        cmd, sizeof cmd,
        "mkdir -p %s && cp %s/node-1/cert.pem %s/node-1/ca.pem %s/ && cp %s/node-2/key.pem %s/",
        mix, kit_a, kit_a, mix, kit_a, mix);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(tl_tls_ctx_new(mix, TL_TLS_NODE, &ctx), TL_ETLS);
    print_message("mixed kit: %s\n", tl_errmsg());
    assert_non_null(strstr(tl_errmsg(), "does not belong"));

    assert_int_equal(tl_tls_ctx_new(pathf("%s/node-3", kit_a), TL_TLS_NODE, &ctx), 0);
    assert_int_equal(tl_tls_ctx_node_id(ctx), 3);
    tl_conn *c = NULL;
    int fds[2];
    socket_pair(fds);
    /* a node kit cannot serve; a client must say which host it expects */
    assert_int_equal(tl_conn_tls_new(fds[0], ctx, 1, "x", NULL, &c), TL_EINVAL);
    assert_int_equal(tl_conn_tls_new(fds[1], ctx, 0, "x", NULL, &c), TL_EINVAL);
    assert_null(c);
    assert_int_equal(fcntl(fds[0], F_GETFD), -1); /* fds were taken over and closed */
    tl_tls_ctx_free(ctx);
    assert_int_equal(tl_tls_ctx_new(pathf("%s/orchestrator", kit_a), TL_TLS_ORCHESTRATOR, &ctx), 0);
    assert_true(tl_tls_ctx_node_id(ctx) < 0);
    tl_tls_ctx_free(ctx);
    tl_tls_ctx_free(NULL);
}

/* ---- handshakes -------------------------------------------------------- */

static void test_handshake_and_data(void **state) {
    side s, c;
    int fds[2];
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    tl_client(&c, pathf("%s/node-2", kit_a), fds[1], "127.0.0.1");
    assert_string_equal(s.c->ops->name, "tls");
    assert_int_equal(tl_tls_peer_node_id(s.c), TL_ETLS); /* not before the handshake */
    handshake_both(&s, &c);
    assert_int_equal(s.rc, 0);
    assert_int_equal(c.rc, 0);

    /* identities */
    assert_string_equal(s.c->identity, "tl-node-2");
    assert_string_equal(c.c->identity, "tl-orchestrator");
    assert_int_equal(tl_tls_peer_node_id(s.c), 2);
    assert_int_equal(tl_tls_check_node_id(s.c, 2), 0);
    assert_int_equal(tl_tls_check_node_id(s.c, 3), TL_EREFUSED);
    print_message("id check: %s\n", tl_errmsg());
    assert_string_equal(tl_errmsg(),
                        "node-peer:4711: claims node id 3 but its certificate is for node 2");
    assert_int_equal(tl_tls_peer_node_id(c.c), TL_ETLS); /* the orchestrator is not a node */
    assert_int_equal(tl_conn_handshake(s.c), 0);         /* idempotent */

    /* node -> orchestrator: three buffers, 5 MiB in all, in one writev */
    size_t n1 = 1, n2 = (5u << 20) - 100007, n3 = 100006, total = n1 + n2 + n3;
    unsigned char *src = malloc(total), *dst = malloc(total);
    fill(src, total, 42);
    struct iovec iov[3] = {{src, n1}, {src + n1, n2}, {src + n1 + n2, n3}};
    pump(c.c, s.c, iov, 3, dst, total);
    assert_memory_equal(src, dst, total);

    /* orchestrator -> node */
    memset(dst, 0, total);
    struct iovec back = {src, 70000};
    pump(s.c, c.c, &back, 1, dst, 70000);
    assert_memory_equal(src, dst, 70000);

    /* the node leaves (close_notify): the orchestrator reads TL_ECLOSED */
    tl_conn_free(c.c);
    c.c = NULL;
    ssize_t r;
    unsigned char b[16];
    while ((r = tl_conn_read(s.c, b, sizeof b)) == TL_EAGAIN) {
        struct pollfd p = {.fd = s.c->fd, .events = tl_conn_want(s.c)};
        assert_true(poll(&p, 1, 10000) > 0);
    }
    assert_int_equal(r, TL_ECLOSED);
    free(src);
    free(dst);
    side_free(&s);
    side_free(&c);
}

/* Writing to a peer that has gone is an error, not a SIGPIPE (this test
 * runs with SIGPIPE's default action, which would kill the process). */
static void test_peer_gone(void **state) {
    side s, c;
    int fds[2];
    assert_ptr_equal(signal(SIGPIPE, SIG_DFL), signal(SIGPIPE, SIG_DFL));
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    tl_client(&c, pathf("%s/node-1", kit_a), fds[1], "localhost");
    handshake_both(&s, &c);
    assert_int_equal(s.rc, 0);
    assert_int_equal(c.rc, 0);
    tl_conn_free(s.c);
    s.c = NULL;
    static unsigned char buf[1 << 16];
    struct iovec v = {buf, sizeof buf};
    ssize_t r = tl_conn_writev(c.c, &v, 1);
    assert_true(r == TL_ECLOSED || r == TL_ENET);
    print_message("write to a closed peer: %s\n", tl_errmsg());
    side_free(&s);
    side_free(&c);
}

/* Moves up to max bytes waiting on fd from to fd to; returns how many. */
static size_t relay(int from, int to, size_t max) {
    unsigned char buf[65536];
    size_t moved = 0;
    while (moved < max) {
        size_t want = max - moved < sizeof buf ? max - moved : sizeof buf;
        ssize_t n = recv(from, buf, want, 0);
        if (n <= 0) break;
        assert_int_equal(send(to, buf, (size_t)n, 0), n);
        moved += (size_t)n;
    }
    return moved;
}

/* tl_conn_pending() counts decrypted bytes only: half a TLS record on the
 * socket is not "pending" (a poll loop would spin on it), the unread rest of
 * a decrypted record is. The bytes pass through a relay we control. */
static void test_pending(void **state) {
    side s, c;
    int a[2], b[2];
    unsigned char msg[100], got[100];
    socket_pair(a);
    socket_pair(b);
    tl_server(&s, pathf("%s/orchestrator", kit_a), b[0]);
    tl_client(&c, pathf("%s/node-1", kit_a), a[0], "127.0.0.1");
    for (int i = 0; i < 2000 && !(s.done && c.done); i++) {
        side_step(&s);
        side_step(&c);
        if (!relay(a[1], b[1], SIZE_MAX) && !relay(b[1], a[1], SIZE_MAX)) {
            struct pollfd p[2] = {{.fd = a[1], .events = POLLIN}, {.fd = b[1], .events = POLLIN}};
            poll(p, 2, 5);
        }
    }
    assert_true(s.done && c.done);
    assert_int_equal(s.rc, 0);
    assert_int_equal(c.rc, 0);

    fill(msg, sizeof msg, 3);
    struct iovec v = {msg, sizeof msg};
    assert_int_equal(tl_conn_writev(c.c, &v, 1), (ssize_t)sizeof msg);
    assert_int_equal(relay(a[1], b[1], 10), 10); /* the first 10 bytes of the record */
    assert_int_equal(tl_conn_read(s.c, got, sizeof got), TL_EAGAIN);
    assert_int_equal(tl_conn_want(s.c), POLLIN);
    assert_int_equal(tl_conn_pending(s.c), 0);
    relay(a[1], b[1], SIZE_MAX);
    assert_int_equal(tl_conn_read(s.c, got, 30), 30);
    assert_int_equal(tl_conn_pending(s.c), 70);
    assert_int_equal(tl_conn_read(s.c, got + 30, 100), 70);
    assert_int_equal(tl_conn_pending(s.c), 0);
    assert_memory_equal(msg, got, sizeof msg);
    side_free(&s);
    side_free(&c);
    close(a[1]);
    close(b[1]);
}

/* Handshake between the tl orchestrator of kit_a and a tl node; returns both. */
static void hs_tl(const char *server_kit, const char *client_kit, const char *host, side *s,
                  side *c) {
    int fds[2];
    socket_pair(fds);
    tl_server(s, server_kit, fds[0]);
    tl_client(c, client_kit, fds[1], host);
    handshake_both(s, c);
}

static void test_host_names(void **state) {
    static const char *good[] = {"127.0.0.1",        "localhost",        "::1",
                                 "orch.example.org", "ORCH.Example.org", "10.1.2.3"};
    static const char *bad[] = {"evil.example.org", "10.9.9.9", "example.org", "::2",
                                "sub.orch.example.org"};
    side s, c;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        hs_tl(pathf("%s/orchestrator", kit_a), pathf("%s/node-1", kit_a), good[i], &s, &c);
        if (c.rc != 0) fail_msg("%s: %s", good[i], c.err);
        assert_int_equal(s.rc, 0);
        side_free(&s);
        side_free(&c);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hs_tl(pathf("%s/orchestrator", kit_a), pathf("%s/node-1", kit_a), bad[i], &s, &c);
        assert_int_equal(c.rc, TL_ETLS);
        assert_int_not_equal(s.rc, 0); /* the node's alert ends the server's handshake */
        assert_non_null(strstr(c.err, "mismatch"));
        assert_non_null(strstr(c.err, "--host"));
        assert_non_null(strstr(c.err, "orch-peer:7000"));
        if (i == 0) print_message("wrong host (node): %s\n     (orchestrator): %s\n", c.err, s.err);
        side_free(&s);
        side_free(&c);
    }
}

static void test_plaintext_client(void **state) {
    side s, p;
    int fds[2];
    /* what a node started with --insecure sends first: a frame header */
    static const unsigned char hello[] =
        "TLF1\x01\x00\x01\x00\x20\x00\x00\x00 HELLO node 1 plaintext";
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    memset(&p, 0, sizeof p);
    p.fd = fds[1];
    assert_int_equal(write(p.fd, hello, sizeof hello), (ssize_t)sizeof hello);
    handshake_both(&s, &p);
    assert_int_equal(s.rc, TL_ETLS);
    print_message("plaintext node: %s\n", s.err);
    assert_non_null(strstr(s.err, "node-peer:4711"));
    assert_non_null(strstr(s.err, "--insecure"));
    side_free(&s);
    side_free(&p);

    /* a client that connects and hangs up */
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    close(fds[1]);
    memset(&p, 0, sizeof p);
    p.fd = -1;
    p.done = 1;
    handshake_both(&s, &p);
    assert_int_equal(s.rc, TL_ECLOSED);
    print_message("hang-up: %s\n", s.err);
    side_free(&s);
}

static void test_client_without_certificate(void **state) {
    side s, c;
    int fds[2];
    signal(SIGPIPE, SIG_IGN); /* the foreign end writes with write(2) */
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    raw_end(&c, 0, NULL, NULL, fds[1]);
    handshake_both(&s, &c);
    assert_int_equal(s.rc, TL_ETLS);
    print_message("no client certificate: %s\n", s.err);
    assert_non_null(strstr(s.err, "node-peer:4711"));
    assert_non_null(strstr(s.err, "did not return a certificate"));
    side_free(&s);
    side_free(&c);
    signal(SIGPIPE, SIG_DFL);
}

/* The node's side of a refusal the server made after the client finished its
 * TLS 1.3 handshake: the first read returns TL_ETLS with the alert. */
static void expect_refused_on_read(side *c) {
    unsigned char b[8];
    ssize_t r;
    if (c->rc < 0) return; /* refused within the handshake */
    while ((r = tl_conn_read(c->c, b, sizeof b)) == TL_EAGAIN) {
        struct pollfd p = {.fd = c->c->fd, .events = tl_conn_want(c->c)};
        assert_true(poll(&p, 1, 10000) > 0);
    }
    assert_int_equal(r, TL_ETLS);
    snprintf(c->err, sizeof c->err, "%s", tl_errmsg());
    assert_non_null(strstr(c->err, "refused"));
}

static void test_node_from_another_ca(void **state) {
    side s, c;
    int fds[2];
    /* a whole kit of run B: each end refuses the other's CA; the node speaks first */
    hs_tl(pathf("%s/orchestrator", kit_a), pathf("%s/node-1", kit_b), "127.0.0.1", &s, &c);
    assert_int_equal(c.rc, TL_ETLS);
    assert_int_equal(s.rc, TL_ETLS);
    print_message("run B's node vs run A (orchestrator): %s\n       (node): %s\n", s.err, c.err);
    assert_non_null(strstr(s.err, "unknown ca"));
    side_free(&s);
    side_free(&c);

    /* a stranger with run B's node certificate who trusts anything */
    signal(SIGPIPE, SIG_IGN);
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    raw_end(&c, 0, pathf("%s/node-1/cert.pem", kit_b), pathf("%s/node-1/key.pem", kit_b), fds[1]);
    handshake_both(&s, &c);
    assert_int_equal(s.rc, TL_ETLS);
    print_message("stranger with run B's cert: %s\n", s.err);
    assert_non_null(strstr(s.err, "certificate verify failed for 'tl-node-1'"));
    assert_non_null(strstr(s.err, "this run's CA"));
    side_free(&s);
    side_free(&c);
    signal(SIGPIPE, SIG_DFL);
}

static void test_orchestrator_from_another_ca(void **state) {
    side s, c;
    hs_tl(pathf("%s/orchestrator", kit_b), pathf("%s/node-1", kit_a), "127.0.0.1", &s, &c);
    assert_int_equal(c.rc, TL_ETLS);
    assert_non_null(strstr(c.err, "orch-peer:7000"));
    assert_non_null(strstr(c.err, "certificate verify failed for 'tl-orchestrator'"));
    assert_int_equal(s.rc, TL_ETLS);
    print_message("foreign orchestrator (node): %s\n       (orchestrator): %s\n", c.err, s.err);
    side_free(&s);
    side_free(&c);
}

static void test_expired_certificate(void **state) {
    side s, c;
    hs_tl(pathf("%s/orchestrator", kit_a), pathf("%s/node-9", kit_a), "127.0.0.1", &s, &c);
    assert_int_equal(s.rc, TL_ETLS);
    assert_non_null(strstr(s.err, "certificate has expired"));
    assert_non_null(strstr(s.err, "tl-node-9"));
    expect_refused_on_read(&c);
    assert_non_null(strstr(c.err, "expired"));
    print_message("expired (orchestrator): %s\n        (node): %s\n", s.err, c.err);
    side_free(&s);
    side_free(&c);
}

/* The orchestrator's kit used by a client: refused (it is not a node). */
static void test_orchestrator_kit_as_node(void **state) {
    side s, c;
    int fds[2];
    signal(SIGPIPE, SIG_IGN);
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    raw_end(&c, 0, pathf("%s/orchestrator/cert.pem", kit_a),
            pathf("%s/orchestrator/key.pem", kit_a), fds[1]);
    handshake_both(&s, &c);
    assert_int_equal(s.rc, TL_ETLS);
    assert_non_null(strstr(s.err, "tl-orchestrator"));
    print_message("orchestrator kit as a node: %s\n", s.err);
    side_free(&s);
    side_free(&c);
    signal(SIGPIPE, SIG_DFL);
}

/* Signs a certificate with run A's CA: CN cn, SAN URI uri (NULL: none),
 * extended key usage eku; writes cert and key under kits_root/name. */
static const char *forge(const char *name, const char *cn, const char *uri, const char *eku) {
    X509 *ca = load_cert(pathf("%s/ca/ca.pem", kit_a));
    EVP_PKEY *ca_key = load_key(pathf("%s/ca/ca-key.pem", kit_a));
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509V3_CTX v3;
    const char *dir = pathf("%s/%s", kits_root, name);
    char dirbuf[PATH_MAX + 64], san[128];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    assert_non_null(ca);
    assert_non_null(ca_key);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(ca));
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, ca, x, NULL, NULL, 0);
    const char *exts[][2] = {{"subjectKeyIdentifier", "hash"},
                             {"authorityKeyIdentifier", "keyid:always"},
                             {"basicConstraints", "critical,CA:FALSE"},
                             {"keyUsage", "critical,digitalSignature"},
                             {"extendedKeyUsage", eku}};
    for (int i = 0; i < 5; i++) {
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        assert_non_null(e);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1%s%s", uri ? ",URI:" : "", uri ? uri : "");
    X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, "subjectAltName", san);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
    mkdir(dirbuf, 0700);
    FILE *f = fopen(pathf("%s/cert.pem", dirbuf), "w");
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(pathf("%s/key.pem", dirbuf), "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    return pathf("%s", dirbuf);
}

/* A rogue node posing as the orchestrator, with its own kit or with a CA-signed
 * node identity that even carries serverAuth: the node refuses both. */
static void test_node_posing_as_orchestrator(void **state) {
    char dir[PATH_MAX + 64];
    const char *kits[2];
    side s, c;
    int fds[2];
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "%s",
             forge("rogue", "tl-node-1", "tl:node:1", "serverAuth,clientAuth"));
    kits[0] = pathf("%s/node-1", kit_a);
    kits[1] = dir;
    for (int i = 0; i < 2; i++) {
        socket_pair(fds);
        raw_end(&s, 1, pathf("%s/cert.pem", kits[i]), pathf("%s/key.pem", kits[i]), fds[0]);
        tl_client(&c, pathf("%s/node-2", kit_a), fds[1], "127.0.0.1");
        handshake_both(&s, &c);
        assert_int_equal(c.rc, TL_ETLS);
        assert_non_null(strstr(c.err, "tl-node-1"));
        print_message("node posing as orchestrator (%s): %s\n", i ? "forged EKU" : "own kit",
                      c.err);
        if (i == 1) assert_non_null(strstr(c.err, "not the orchestrator's"));
        side_free(&s);
        side_free(&c);
    }
    signal(SIGPIPE, SIG_DFL);
}

/* Certificates that break the identity convention. */
static void test_identity_convention(void **state) {
    static const struct {
        const char *cn, *uri;
        int role, id;
    } cases[] = {
        {"tl-node-7", "tl:node:7", TL_TLS_NODE, 7},
        {"tl-orchestrator", "tl:orchestrator", TL_TLS_ORCHESTRATOR, 0},
        {"tl-node-2", "tl:node:3", -1, 0},
        {"tl-node-02", "tl:node:2", -1, 0},
        {"tl-node-0", "tl:node:0", -1, 0},
        {"tl-node-2", NULL, -1, 0},
        {"tl-node-2x", "tl:node:2", -1, 0},
        {"tl-orchestrator", "tl:node:1", -1, 0},
        {"somebody", "tl:node:1", -1, 0},
        {"tl-node-1000001", "tl:node:1000001", -1, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[160] = "";
        int id = -1;
        const char *dir = forge("conv", cases[i].cn, cases[i].uri, "clientAuth");
        X509 *x = load_cert(pathf("%s/cert.pem", dir));
        int role = tl__tls_cert_role(x, &id, why, sizeof why);
        if (role != cases[i].role)
            fail_msg("%s/%s: role %d (%s)", cases[i].cn, cases[i].uri, role, why);
        if (role == TL_TLS_NODE) assert_int_equal(id, cases[i].id);
        if (role < 0) assert_true(why[0] != '\0');
        X509_free(x);
    }

    /* a CA-signed client certificate with a broken identity is refused in the handshake */
    char dir[PATH_MAX + 64];
    side s, c;
    int fds[2];
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "%s", forge("mismatch", "tl-node-2", "tl:node:3", "clientAuth"));
    socket_pair(fds);
    tl_server(&s, pathf("%s/orchestrator", kit_a), fds[0]);
    raw_end(&c, 0, pathf("%s/cert.pem", dir), pathf("%s/key.pem", dir), fds[1]);
    handshake_both(&s, &c);
    assert_int_equal(s.rc, TL_ETLS);
    assert_non_null(strstr(s.err, "does not match"));
    print_message("CN/URI mismatch: %s\n", s.err);
    side_free(&s);
    side_free(&c);
    signal(SIGPIPE, SIG_DFL);
}

/* The node in a child process over TCP on 127.0.0.1: handshake, 3 MiB up, a
 * reply down, orderly close. */
static void test_tcp_child_process(void **state) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    const size_t len = 3u << 20;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    pid_t pid = fork_child();
    if (pid == 0) { /* the node */
        tl_tls_ctx *ctx;
        tl_conn *c;
        char reply[3] = "";
        unsigned char *buf = malloc(len);
        int fd = socket(AF_INET, SOCK_STREAM, 0), rc;
        alarm(30);
        close(lfd);
        fill(buf, len, 7);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) _exit(10);
        nonblock(fd);
        if (tl_tls_ctx_new(pathf("%s/node-3", kit_a), TL_TLS_NODE, &ctx) < 0) _exit(11);
        if (tl_conn_tls_new(fd, ctx, 0, "127.0.0.1:orch", "127.0.0.1", &c) < 0) _exit(12);
        if ((rc = handshake_full(c)) < 0) _exit(13);
        if ((rc = write_full(c, buf, len)) < 0) _exit(14);
        if ((rc = read_full(c, reply, 2)) < 0 || strcmp(reply, "ok") != 0) _exit(15);
        tl_conn_free(c);
        tl_tls_ctx_free(ctx);
        free(buf);
        _exit(0);
    }
    tl_tls_ctx *ctx;
    tl_conn *c;
    unsigned char *want = malloc(len), *got = malloc(len), b[4];
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    int fd;
    ssize_t r;
    fill(want, len, 7);
    assert_true(poll(&p, 1, 10000) > 0);
    fd = accept(lfd, NULL, NULL);
    assert_true(fd >= 0);
    nonblock(fd);
    close(lfd);
    assert_int_equal(tl_tls_ctx_new(pathf("%s/orchestrator", kit_a), TL_TLS_ORCHESTRATOR, &ctx), 0);
    assert_int_equal(tl_conn_tls_new(fd, ctx, 1, "127.0.0.1:node", NULL, &c), 0);
    assert_int_equal(handshake_full(c), 0);
    assert_int_equal(tl_tls_check_node_id(c, 3), 0);
    assert_int_equal(read_full(c, got, len), 0);
    assert_memory_equal(want, got, len);
    assert_int_equal(write_full(c, "ok", 2), 0);
    while ((r = tl_conn_read(c, b, sizeof b)) == TL_EAGAIN) assert_int_equal(wait_for(c), 0);
    assert_int_equal(r, TL_ECLOSED);
    tl_conn_free(c);
    tl_tls_ctx_free(ctx);
    int code = wait_exit(pid, 30000);
    assert_true(code != -1);  /* ended within 30 s */
    assert_true(code < 1000); /* not by a signal */
    assert_int_equal(code, 0);
    free(want);
    free(got);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_pending),
        cmocka_unit_test(test_host_names),
        cmocka_unit_test(test_plaintext_client),
        cmocka_unit_test(test_client_without_certificate),
        cmocka_unit_test(test_node_from_another_ca),
        cmocka_unit_test(test_orchestrator_from_another_ca),
        cmocka_unit_test(test_expired_certificate),
        cmocka_unit_test(test_orchestrator_kit_as_node),
        cmocka_unit_test(test_node_posing_as_orchestrator),
        cmocka_unit_test(test_identity_convention),
        cmocka_unit_test(test_tcp_child_process),
    };
    return cmocka_run_group_tests(tests, kits_setup, kits_teardown);
}
