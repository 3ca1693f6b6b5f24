/*
 * conn.h - one connection type for all socket I/O (TCP or TLS).
 *
 * Every byte between an orchestrator and a node goes through a tl_conn. A
 * transport (conn_tcp.c, conn_tls.c) fills in a table of operations; the rest
 * of the code never knows which one it has. TLS's want-read/want-write dance
 * stays inside conn_tls.c.
 *
 * Connections are non-blocking. The primitive operations may do a short read
 * or write and return TL_EAGAIN when they would block; tl_conn_want() then says
 * which poll event (POLLIN or POLLOUT) lets the operation progress. Because TLS
 * buffers decrypted bytes, a poll loop must also call the read op again while
 * tl_conn_pending() is nonzero.
 *
 * The *_full helpers block (with poll) until all bytes moved or the absolute
 * deadline (tl_now_ms() clock) passes: what a node, with one connection, uses.
 *
 *     tl_conn *c;
 *     tl_conn_tcp_new(fd, "127.0.0.1:7000", &c);  // takes ownership of fd
 *     tl_conn_handshake_full(c, deadline);          // no-op for TCP
 *     tl_conn_writev_full(c, iov, 3, deadline);
 *     tl_conn_free(c);                              // closes the fd
 */
#ifndef TL_CONN_H
#define TL_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct tl_conn tl_conn;

typedef struct tl_conn_ops {
    const char *name; /* "tcp" or "tls" */
    /* Reads up to len bytes. Returns bytes read (> 0), TL_EAGAIN, TL_ECLOSED on
     * orderly close by the peer, or another negative code (message set). */
    ssize_t (*read)(tl_conn *c, void *buf, size_t len);
    /* Writes from iov; a short write is possible. Returns bytes written (> 0),
     * TL_EAGAIN, or a negative code. */
    ssize_t (*writev)(tl_conn *c, const struct iovec *iov, int iovcnt);
    /* Advances the transport handshake: 0 when done, TL_EAGAIN to call again
     * after tl_conn_want() is ready, or a negative code. TCP: always 0. */
    int (*handshake)(tl_conn *c);
    /* Bytes already decrypted and buffered inside the transport. */
    size_t (*pending)(tl_conn *c);
    /* Closes the transport and frees its state (not the tl_conn itself). */
    void (*close)(tl_conn *c);
} tl_conn_ops;

struct tl_conn {
    const tl_conn_ops *ops;
    int fd;
    short want;        /* POLLIN/POLLOUT the last TL_EAGAIN was waiting for */
    char peer[64];     /* "host:port", for log lines */
    char identity[64]; /* TLS: the peer certificate's CN once verified; "" for TCP */
    void *impl;        /* transport state */
};

/* Monotonic milliseconds. */
int64_t tl_now_ms(void);

/* Wraps a connected socket; the conn owns fd from then on (even on failure). */
int tl_conn_tcp_new(int fd, const char *peer, tl_conn **out);

/* The one place a transport is made, for both sides: TLS over fd with tls
 * (tl_conn_tls_new; server_name: the name the server's certificate must
 * carry, client side only), plaintext TCP with tls NULL. Owns fd from then on. */
typedef struct tl_tls_ctx tl_tls_ctx;
int tl_conn_open(int fd, tl_tls_ctx *tls, int is_server, const char *peer, const char *server_name,
                 tl_conn **out);

/* The client side in one call: connects to host:port (net.h's forms,
 * unix:PATH included) within timeout_ms, tunes the socket and opens the
 * transport over it (TLS with tls, checking the name the host implies). */
int tl_conn_connect(const char *host, int port, int timeout_ms, tl_tls_ctx *tls, tl_conn **out);

/* Whether descriptors can travel on c (a unix socket: shm.h). */
int tl_conn_can_pass_fds(const tl_conn *c);

/* Descriptors on c's socket, beside the transport's byte stream (shm.h's
 * tl_shm_send_fds / tl_shm_recv_fds on c's fd; only where tl_conn_can_pass_fds).
 * send: n fds (n <= 4); 0, TL_EAGAIN (wait for POLLOUT, call again) or TL_ENET.
 * recv: exactly n fds, waiting until deadline_ms (tl_now_ms clock); 0, or
 * TL_EPROTO when the transport already holds bytes read past them (the fds must
 * be the next thing on the socket), or tl_shm_recv_fds's codes. The caller owns
 * the fds received. */
int tl_conn_send_fds(tl_conn *c, const int *fds, int n);
int tl_conn_recv_fds(tl_conn *c, int64_t deadline_ms, int *fds, int n);

static inline ssize_t tl_conn_read(tl_conn *c, void *buf, size_t len) {
    return c->ops->read(c, buf, len);
}
static inline ssize_t tl_conn_writev(tl_conn *c, const struct iovec *iov, int n) {
    return c->ops->writev(c, iov, n);
}
static inline int tl_conn_handshake(tl_conn *c) { return c->ops->handshake(c); }
static inline size_t tl_conn_pending(tl_conn *c) { return c->ops->pending(c); }
/* Poll events that would let the last TL_EAGAIN operation progress. */
static inline short tl_conn_want(const tl_conn *c) { return c->want; }

/* Waits (poll) until c's fd is ready for tl_conn_want(c) (POLLIN if unset),
 * returning at once if tl_conn_pending(c) > 0; POLLERR/POLLHUP count as ready
 * (the next operation reports the error). Call it only after an operation
 * returned TL_EAGAIN. 0, or TL_ETIMEDOUT once deadline_ms (absolute, tl_now_ms
 * clock; < 0 means none) has passed, or TL_ENET. Retries on EINTR. */
int tl_conn_wait(tl_conn *c, int64_t deadline_ms);

/* Blocking helpers: loop with poll until done or deadline_ms (absolute,
 * tl_now_ms clock; < 0 means no deadline). 0 or a negative code
 * (TL_ETIMEDOUT, TL_ECLOSED, ...). The deadline bounds the whole operation,
 * also when the peer keeps sending or receiving slowly. */
int tl_conn_read_full(tl_conn *c, void *buf, size_t len, int64_t deadline_ms);
int tl_conn_writev_full(tl_conn *c, const struct iovec *iov, int iovcnt, int64_t deadline_ms);
int tl_conn_handshake_full(tl_conn *c, int64_t deadline_ms);

/* Closes and frees; NULL-safe. */
void tl_conn_free(tl_conn *c);

#endif
