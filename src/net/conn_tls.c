/*
 * conn_tls.c - the TLS 1.3 transport of tl_conn: OpenSSL over a non-blocking
 * socket. The want-read/want-write dance stays in here: an operation that
 * would block sets c->want (POLLIN or POLLOUT) and returns TL_EAGAIN.
 *
 * OpenSSL talks to the socket through a small BIO of our own that uses
 * send(MSG_NOSIGNAL)/recv, so that writing to a vanished peer is an error
 * (EPIPE) and never a SIGPIPE in a library caller.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls_int.h"
#include "tl/error.h"
#include "tl/tls.h"

typedef struct tls_state {
    SSL *ssl;
    int done;           /* handshake complete and identity checked */
    int broken;         /* fatal error seen: no more I/O, no close_notify */
    int peer_node_id;   /* the peer's node id (server side), else 0 */
    char why[192];      /* our own reason for refusing the peer's certificate */
    char failed_cn[64]; /* CN of the certificate that failed verification */
} tls_state;

/* ---- the socket BIO ---------------------------------------------------- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

/* The socket a BIO of ours reads and writes. */
static int bio_fd(BIO *b) { return (int)(intptr_t)BIO_get_data(b); }

/* Writes what the socket takes now: 1 with *written, or 0 (retry flag set if
 * it would block; errno tells otherwise). */
static int bio_write_ex(BIO *b, const char *buf, size_t len, size_t *written) {
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = send(bio_fd(b), buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            *written = (size_t)n;
            return 1;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
        return 0;
    }
}

/* Reads what the socket has: 1 with *readbytes > 0, or 0 (retry flag set if it
 * would block, EOF flag set at end of stream). */
static int bio_read_ex(BIO *b, char *buf, size_t len, size_t *readbytes) {
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(bio_fd(b), buf, len, 0);
        if (n > 0) {
            *readbytes = (size_t)n;
            return 1;
        }
        if (n == 0) {
            BIO_set_flags(b, BIO_FLAGS_IN_EOF);
            errno = 0;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
        return 0;
    }
}

/* The few controls OpenSSL's record layer asks of a socket BIO. */
static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_EOF: return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    default: return 0;
    }
}

/* A new BIO is ready at once; its fd is set with BIO_set_data(). */
static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* Builds the BIO method once per process (pthread_once); NULL on failure. */
static void bio_method_init(void) {
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tl socket");
    if (!m) return;
    BIO_meth_set_write_ex(m, bio_write_ex);
    BIO_meth_set_read_ex(m, bio_read_ex);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    bio_method = m;
}

/* ---- certificate checks during the handshake --------------------------- */

/* OpenSSL's verification callback: keeps OpenSSL's verdict, remembers which
 * certificate failed, and on the peer's own certificate (depth 0) adds the
 * identity rule: a server accepts only node certificates, a client only the
 * orchestrator's. */
static int verify_cb(int ok, X509_STORE_CTX *xs) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    tls_state *t = ssl ? SSL_get_app_data(ssl) : NULL;
    X509 *x = X509_STORE_CTX_get_current_cert(xs);
    int id = 0, role;

    if (!t) return ok;
    if (!ok) { /* name the peer's own certificate, whichever in its chain failed */
        X509 *leaf = X509_STORE_CTX_get0_cert(xs);
        X509_NAME *n = leaf ? X509_get_subject_name(leaf) : NULL;
        if (!t->failed_cn[0] && n &&
            X509_NAME_get_text_by_NID(n, NID_commonName, t->failed_cn, sizeof t->failed_cn) < 0)
            t->failed_cn[0] = '\0';
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(xs) != 0 || !x) return 1;
    role = tl__tls_cert_role(x, &id, t->why, sizeof t->why);
    if (role > 0 && role != (SSL_is_server(ssl) ? TL_TLS_NODE : TL_TLS_ORCHESTRATOR)) {
        snprintf(t->why, sizeof t->why, "the peer presented %s",
                 role == TL_TLS_NODE ? "a node certificate, not the orchestrator's"
                                     : "the orchestrator's certificate, not a node's");
        role = -1;
    }
    if (role < 0) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, t->failed_cn,
                                  sizeof t->failed_cn);
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    t->peer_node_id = id;
    return 1;
}

/* ---- errors ------------------------------------------------------------ */

/* A hint for common OpenSSL verification failures, or "". */
static const char *verify_hint(long v, int server) {
    switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return " (not issued by this run's CA: use a kit from the same 'tl provision')";
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return " (the orchestrator's certificate does not list the address connected to; "
               "provision it with --host)";
    case X509_V_ERR_INVALID_PURPOSE:
        return server ? " (not a node certificate)" : " (not the orchestrator's certificate)";
    default: return "";
    }
}

/* Builds the one-line message for a failed handshake or I/O call and returns
 * its code. ret is the OpenSSL call's return value, err_no the errno right
 * after it. Sets c->want and returns TL_EAGAIN when the call would block. */
static int tls_fail(tl_conn *c, int ret, int err_no, const char *what) {
    tls_state *t = c->impl;
    char r[192];
    int e = SSL_get_error(t->ssl, ret);
    unsigned long ossl = ERR_peek_last_error();
    int reason = ERR_GET_REASON(ossl);

    if (e == SSL_ERROR_WANT_READ) {
        c->want = POLLIN;
        return TL_EAGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->want = POLLOUT;
        return TL_EAGAIN;
    }
    t->broken = 1;
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        if (!t->done)
            return tl_error(TL_ECLOSED, "%s: %s failed: the peer closed the connection", c->peer,
                            what);
        return tl_error(TL_ECLOSED, "%s: connection closed by the peer", c->peer);
    }
    if (e == SSL_ERROR_SYSCALL && !ossl) {
        ERR_clear_error();
        if (err_no == 0 || err_no == EPIPE || err_no == ECONNRESET)
            return tl_error(TL_ECLOSED, "%s: %s: connection %s by the peer%s", c->peer, what,
                            err_no == ECONNRESET ? "reset" : "closed",
                            t->done ? "" : " during the TLS handshake");
        return tl_error(TL_ENET, "%s: %s: %s", c->peer, what, strerror(err_no));
    }
    if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        if (!t->done)
            return tl_error(TL_ECLOSED, "%s: %s failed: the peer closed the connection", c->peer,
                            what);
        return tl_error(TL_ECLOSED, "%s: connection closed by the peer (without close_notify)",
                        c->peer);
    }

    long v = SSL_get_verify_result(t->ssl);
    if (!t->done && v != X509_V_OK) {
        ERR_clear_error();
        return tl_error(TL_ETLS, "%s: %s failed: certificate verify failed%s%s%s: %s%s", c->peer,
                        what, t->failed_cn[0] ? " for '" : "", t->failed_cn,
                        t->failed_cn[0] ? "'" : "",
                        v == X509_V_ERR_APPLICATION_VERIFICATION && t->why[0]
                            ? t->why
                            : X509_verify_cert_error_string(v),
                        verify_hint(v, SSL_is_server(t->ssl)));
    }
    tl__tls_reason(r, sizeof r);
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
        return tl_error(TL_ETLS, "%s: %s failed: the peer refused the TLS session: %s", c->peer,
                        what, r);
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
        reason == SSL_R_PACKET_LENGTH_TOO_LONG || reason == SSL_R_RECORD_LENGTH_MISMATCH ||
        reason == SSL_R_UNSUPPORTED_PROTOCOL)
        return tl_error(TL_ETLS,
                        "%s: %s failed: %s (the peer does not speak TLS 1.3: plaintext "
                        "needs --insecure on both sides)",
                        c->peer, what, r);
    return tl_error(TL_ETLS, "%s: %s failed: %s", c->peer, what, r);
}

/* ---- the operations ---------------------------------------------------- */

static const tl_conn_ops tls_ops;

/* Checks the verified peer certificate once more and records the identity. */
static int finish_handshake(tl_conn *c) {
    tls_state *t = c->impl;
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    int id = 0, role;
    char why[192];

    if (!x || SSL_get_verify_result(t->ssl) != X509_V_OK) {
        t->broken = 1;
        return tl_error(
            TL_ETLS, "%s: TLS handshake failed: the peer's certificate was not verified", c->peer);
    }
    role = tl__tls_cert_role(x, &id, why, sizeof why);
    if (role != (SSL_is_server(t->ssl) ? TL_TLS_NODE : TL_TLS_ORCHESTRATOR)) {
        t->broken = 1;
        return tl_error(TL_ETLS, "%s: TLS handshake failed: %s", c->peer,
                        role < 0 ? why : "the peer's certificate has the wrong role");
    }
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, c->identity,
                                  sizeof c->identity) < 0) {
        t->broken = 1;
        return tl_error(TL_ETLS, "%s: TLS handshake failed: no common name", c->peer);
    }
    t->peer_node_id = id;
    t->done = 1;
    return 0;
}

/* Advances the handshake: 0 when done, TL_EAGAIN, or a negative code. */
static int tls_handshake(tl_conn *c) {
    tls_state *t = c->impl;
    int ret;
    if (t->done) return 0;
    if (t->broken) return tl_error(TL_ETLS, "%s: the TLS session has already failed", c->peer);
    ERR_clear_error();
    errno = 0;
    ret = SSL_do_handshake(t->ssl);
    if (ret == 1) return finish_handshake(c);
    return tls_fail(c, ret, errno, "TLS handshake");
}

/* Reads up to len decrypted bytes; finishes the handshake first if needed. */
static ssize_t tls_read(tl_conn *c, void *buf, size_t len) {
    tls_state *t = c->impl;
    size_t n = 0;
    int rc;
    if (!t->done && (rc = tls_handshake(c)) < 0) return rc;
    if (t->broken) return tl_error(TL_ETLS, "%s: the TLS session has already failed", c->peer);
    if (len == 0) return 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(t->ssl, buf, len, &n) == 1) return (ssize_t)n;
    return tls_fail(c, 0, errno, "TLS read");
}

/* Encrypts and sends from iov, one TLS record at a time, until the socket is
 * full: returns the bytes taken (> 0), TL_EAGAIN if none, or an error. */
static ssize_t tls_writev(tl_conn *c, const struct iovec *iov, int iovcnt) {
    tls_state *t = c->impl;
    size_t total = 0;
    int rc;
    if (!t->done && (rc = tls_handshake(c)) < 0) return rc;
    if (t->broken) return tl_error(TL_ETLS, "%s: the TLS session has already failed", c->peer);
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(t->ssl, p, left, &w) != 1) {
                rc = tls_fail(c, 0, errno, "TLS write");
                if (rc == TL_EAGAIN && total > 0) return (ssize_t)total;
                return rc;
            }
            total += w;
            p += w;
            left -= w;
        }
    }
    return (ssize_t)total;
}

/* Decrypted bytes OpenSSL holds that the socket will not signal again. Not
 * SSL_has_pending(): that also counts the start of a record still waiting for
 * its remaining bytes, and a poll loop would spin on it. Without read-ahead
 * (we leave it off) OpenSSL never buffers more raw bytes than one record. */
static size_t tls_pending(tl_conn *c) {
    tls_state *t = c->impl;
    int n;
    if (!t || !t->done || t->broken) return 0;
    n = SSL_pending(t->ssl);
    return n > 0 ? (size_t)n : 0;
}

/* Sends close_notify if that cannot block, frees the session, closes fd. */
static void tls_close(tl_conn *c) {
    tls_state *t = c->impl;
    if (t) {
        if (t->done && !t->broken) {
            ERR_clear_error();
            SSL_shutdown(t->ssl);
        }
        SSL_free(t->ssl);
        ERR_clear_error();
        free(t);
        c->impl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static const tl_conn_ops tls_ops = {
    .name = "tls",
    .read = tls_read,
    .writev = tls_writev,
    .handshake = tls_handshake,
    .pending = tls_pending,
    .close = tls_close,
};

/* Tells OpenSSL which name or address the server's certificate must carry. */
static int set_expected_host(SSL *ssl, const char *host) {
    unsigned char addr[16];
    X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(p, host) == 1 ? 0 : -1;
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, host) != 1) return -1;
    SSL_set_tlsext_host_name(ssl, host); /* SNI: harmless, and proxies expect it */
    return 0;
}

int tl_conn_tls_new(int fd, tl_tls_ctx *ctx, int is_server, const char *peer,
                    const char *expect_host, tl_conn **out) {
    tl_conn *c = NULL;
    tls_state *t = NULL;
    BIO *bio = NULL;
    char r[160];
    int rc = 0;

    *out = NULL;
    if (!ctx || fd < 0) {
        rc = tl_error(TL_EINVAL, "tls: a socket and a TLS context are required");
        goto fail;
    }
    if (!!is_server != (ctx->role == TL_TLS_ORCHESTRATOR)) {
        rc = tl_error(TL_EINVAL, "tls: the %s kit cannot be used as a TLS %s",
                      ctx->role == TL_TLS_ORCHESTRATOR ? "orchestrator" : "node",
                      is_server ? "server" : "client");
        goto fail;
    }
    if (!is_server && (!expect_host || !*expect_host)) {
        rc = tl_error(TL_EINVAL, "tls: a node must name the host it expects the orchestrator at");
        goto fail;
    }
    pthread_once(&bio_once, bio_method_init);
    if (!bio_method) {
        rc = tl_error(TL_ENOMEM, "tls: cannot create the socket BIO");
        goto fail;
    }
    if (!(c = calloc(1, sizeof *c))) {
        rc = tl_error(TL_ENOMEM, "tls: out of memory");
        goto fail;
    }
    c->ops = &tls_ops;
    c->fd = fd; /* from here on tls_close() closes it */
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    if (!(t = calloc(1, sizeof *t))) {
        rc = tl_error(TL_ENOMEM, "tls: out of memory");
        goto fail;
    }
    c->impl = t;

    ERR_clear_error();
    if (!(t->ssl = SSL_new(ctx->ssl)) || !(bio = BIO_new(bio_method))) {
        rc = tl_error(TL_ETLS, "%s: %s", c->peer, tl__tls_reason(r, sizeof r));
        goto fail;
    }
    BIO_set_data(bio, (void *)(intptr_t)fd);
    SSL_set_bio(t->ssl, bio, bio); /* the SSL owns bio now */
    SSL_set_app_data(t->ssl, t);
    SSL_set_verify(t->ssl, SSL_get_verify_mode(t->ssl), verify_cb);
    if (is_server) {
        SSL_set_accept_state(t->ssl);
    } else {
        if (set_expected_host(t->ssl, expect_host) < 0) {
            rc = tl_error(TL_EINVAL, "tls: cannot expect host '%s': %s", expect_host,
                          tl__tls_reason(r, sizeof r));
            goto fail;
        }
        SSL_set_connect_state(t->ssl);
    }
    *out = c;
    return 0;

fail:
    if (c) {
        tls_close(c);
        free(c);
    } else if (fd >= 0) {
        close(fd);
    }
    return rc;
}

int tl_tls_peer_node_id(const tl_conn *c) {
    const tls_state *t;
    if (!c || c->ops != &tls_ops || !(t = c->impl))
        return tl_error(TL_ETLS, "%s: not a TLS connection: no certified node id",
                        c ? c->peer : "?");
    if (!t->done) return tl_error(TL_ETLS, "%s: the TLS handshake has not completed", c->peer);
    if (t->peer_node_id <= 0) return tl_error(TL_ETLS, "%s: the peer is not a node", c->peer);
    return t->peer_node_id;
}

int tl_tls_check_node_id(const tl_conn *c, int claimed_id) {
    int id = tl_tls_peer_node_id(c);
    if (id < 0) return id;
    if (id != claimed_id)
        return tl_error(TL_EREFUSED, "%s: claims node id %d but its certificate is for node %d",
                        c->peer, claimed_id, id);
    return 0;
}
