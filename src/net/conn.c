/* conn.c - the transport-independent parts of tl_conn (conn.h). */
#include "tl/conn.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tl/error.h"
#include "tl/net.h"
#include "tl/shm.h"
#include "tl/tls.h"

int64_t tl_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tl_conn_wait(tl_conn *c, int64_t deadline_ms) {
    if (tl_conn_pending(c) > 0) return 0;
    short ev = c->want ? c->want : POLLIN;
    for (;;) {
        int timeout = -1;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - tl_now_ms();
            if (left <= 0) return tl_error(TL_ETIMEDOUT, "%s: timed out", c->peer);
            timeout = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p = {c->fd, ev, 0};
        int n = poll(&p, 1, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            return tl_error(TL_ENET, "%s: poll: %s", c->peer, strerror(errno));
        }
        if (n == 0) continue; /* the deadline check above decides */
        if (p.revents & POLLNVAL) return tl_error(TL_ENET, "%s: poll: invalid socket", c->peer);
        return 0; /* ready, or POLLERR/POLLHUP: the next operation reports it */
    }
}

/* 0 if the deadline has not passed yet, else TL_ETIMEDOUT naming what. */
static int check_deadline(tl_conn *c, int64_t deadline_ms, const char *what) {
    if (deadline_ms >= 0 && tl_now_ms() >= deadline_ms)
        return tl_error(TL_ETIMEDOUT, "%s: timed out %s", c->peer, what);
    return 0;
}

int tl_conn_read_full(tl_conn *c, void *buf, size_t len, int64_t deadline_ms) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = tl_conn_read(c, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            if (len > 0 && check_deadline(c, deadline_ms, "reading") < 0) return TL_ETIMEDOUT;
            continue;
        }
        if (n == 0) return tl_error(TL_ECLOSED, "%s: connection closed by peer", c->peer);
        if (n != TL_EAGAIN) return (int)n;
        int rc = tl_conn_wait(c, deadline_ms);
        if (rc < 0) return rc == TL_ETIMEDOUT ? tl_error(rc, "%s: timed out reading", c->peer) : rc;
    }
    return 0;
}

int tl_conn_writev_full(tl_conn *c, const struct iovec *iov, int iovcnt, int64_t deadline_ms) {
    struct iovec small[16], *v = small;
    int rc = 0;
    if (iovcnt < 0) return tl_error(TL_EINVAL, "negative iovec count");
    if (iovcnt > 16 && !(v = malloc(sizeof *v * (size_t)iovcnt)))
        return tl_error(TL_ENOMEM, "out of memory for %d iovecs", iovcnt);
    memcpy(v, iov, sizeof *v * (size_t)iovcnt);
    int cur = 0;
    for (;;) {
        while (cur < iovcnt && v[cur].iov_len == 0) cur++;
        if (cur == iovcnt) break;
        ssize_t n = tl_conn_writev(c, v + cur, iovcnt - cur);
        if (n == TL_EAGAIN) {
            if ((rc = tl_conn_wait(c, deadline_ms)) < 0) {
                if (rc == TL_ETIMEDOUT) tl_error(rc, "%s: timed out writing", c->peer);
                goto cleanup;
            }
            continue;
        }
        if (n < 0) {
            rc = (int)n;
            goto cleanup;
        }
        size_t done = (size_t)n;
        while (done > 0) {
            if (done < v[cur].iov_len) {
                v[cur].iov_base = (uint8_t *)v[cur].iov_base + done;
                v[cur].iov_len -= done;
                done = 0;
            } else {
                done -= v[cur].iov_len;
                v[cur].iov_len = 0;
                cur++;
            }
        }
        if ((rc = check_deadline(c, deadline_ms, "writing")) < 0) {
            /* only a failure if bytes remain */
            while (cur < iovcnt && v[cur].iov_len == 0) cur++;
            if (cur == iovcnt) rc = 0;
            goto cleanup;
        }
    }
cleanup:
    if (v != small) free(v);
    return rc;
}

int tl_conn_handshake_full(tl_conn *c, int64_t deadline_ms) {
    for (;;) {
        int rc = tl_conn_handshake(c);
        if (rc != TL_EAGAIN) return rc;
        if ((rc = tl_conn_wait(c, deadline_ms)) < 0)
            return rc == TL_ETIMEDOUT ? tl_error(rc, "%s: timed out in the handshake", c->peer)
                                      : rc;
    }
}

void tl_conn_free(tl_conn *c) {
    if (!c) return;
    if (c->ops && c->ops->close) c->ops->close(c);
    free(c);
}

int tl_conn_open(int fd, tl_tls_ctx *tls, int is_server, const char *peer, const char *server_name,
                 tl_conn **out) {
    return tls ? tl_conn_tls_new(fd, tls, is_server, peer, server_name, out)
               : tl_conn_tcp_new(fd, peer, out);
}

int tl_conn_connect(const char *host, int port, int timeout_ms, tl_tls_ctx *tls, tl_conn **out) {
    int fd, rc;
    char peer[300];
    tl_addr_format(host, port, peer, sizeof peer);
    if ((rc = tl_net_connect(host, port, timeout_ms, &fd)) < 0) return rc;
    tl_net_tune(fd, 10);
    return tl_conn_open(fd, tls, 0, peer, tl_addr_tls_name(host), out);
}

int tl_conn_can_pass_fds(const tl_conn *c) { return tl_shm_possible(c->fd); }

int tl_conn_send_fds(tl_conn *c, const int *fds, int n) { return tl_shm_send_fds(c->fd, fds, n); }

int tl_conn_recv_fds(tl_conn *c, int64_t deadline_ms, int *fds, int n) {
    if (tl_conn_pending(c))
        return tl_error(TL_EPROTO, "%s: bytes buffered where descriptors belong", c->peer);
    return tl_shm_recv_fds(c->fd, deadline_ms, fds, n);
}
