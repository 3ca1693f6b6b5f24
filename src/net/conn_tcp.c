/* conn_tcp.c - the plain TCP transport of tl_conn (conn.h). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl/conn.h"
#include "tl/error.h"

#ifndef IOV_MAX
#define IOV_MAX 1024 /* Linux's UIO_MAXIOV */
#endif

/* Maps a failed socket call's errno: TL_EAGAIN (recording the poll event that
 * lets it progress), TL_ECLOSED for a peer reset, TL_ENET otherwise. */
static ssize_t sock_error(tl_conn *c, int err, short ev, const char *op) {
    if (err == EAGAIN || err == EWOULDBLOCK) {
        c->want = ev;
        return TL_EAGAIN;
    }
    if (err == ECONNRESET || err == EPIPE || err == ENOTCONN)
        return tl_error(TL_ECLOSED, "%s: connection closed by peer (%s)", c->peer, strerror(err));
    return tl_error(TL_ENET, "%s: %s: %s", c->peer, op, strerror(err));
}

/* recv(): bytes read (> 0), TL_EAGAIN, TL_ECLOSED on EOF or reset, TL_ENET. */
static ssize_t tcp_read(tl_conn *c, void *buf, size_t len) {
    if (len == 0) return 0;
    if (len > SSIZE_MAX) len = SSIZE_MAX;
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n > 0) return n;
        if (n == 0) return tl_error(TL_ECLOSED, "%s: connection closed by peer", c->peer);
        if (errno == EINTR) continue;
        return sock_error(c, errno, POLLIN, "recv");
    }
}

/* sendmsg() with MSG_NOSIGNAL (a closed peer gives TL_ECLOSED, never
 * SIGPIPE): bytes written (> 0, possibly short), TL_EAGAIN, or an error. */
static ssize_t tcp_writev(tl_conn *c, const struct iovec *iov, int iovcnt) {
    if (iovcnt > IOV_MAX) iovcnt = IOV_MAX; /* a short write, as the contract allows */
    struct msghdr mh = {0};
    mh.msg_iov = (struct iovec *)iov;
    mh.msg_iovlen = (size_t)iovcnt;
    for (;;) {
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        return sock_error(c, errno, POLLOUT, "send");
    }
}

static int tcp_handshake(tl_conn *c) {
    (void)c;
    return 0;
}

static size_t tcp_pending(tl_conn *c) {
    (void)c;
    return 0;
}

static void tcp_close(tl_conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static const tl_conn_ops tcp_ops = {
    .name = "insecure", /* plaintext: TCP or a unix socket, no TLS */
    .read = tcp_read,
    .writev = tcp_writev,
    .handshake = tcp_handshake,
    .pending = tcp_pending,
    .close = tcp_close,
};

int tl_conn_tcp_new(int fd, const char *peer, tl_conn **out) {
    *out = NULL;
    tl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return tl_error(TL_ENOMEM, "out of memory for a connection to %s", peer ? peer : "?");
    }
    c->ops = &tcp_ops;
    c->fd = fd;
    c->want = POLLIN;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    *out = c;
    return 0;
}
