/*
 * net.h - socket helpers (after Redis's anet.c): they fill tl_errmsg() instead
 * of printing, and return 0 or a negative TL_E* code.
 */
#ifndef TL_NET_H
#define TL_NET_H

#include <stdint.h>

/* Splits "HOST:PORT" ("[::1]:7000" for IPv6). host gets at most hostlen-1 chars. */
int tl_net_parse_addr(const char *addr, char *host, int hostlen, int *port);

/* Listening TCP socket, non-blocking, SO_REUSEADDR; port 0 picks a free port,
 * reported through *bound_port (may be NULL). */
int tl_net_listen(const char *host, int port, int backlog, int *fd, int *bound_port);

/* Accepts one connection (non-blocking listener): 0 with *fd set, TL_EAGAIN if
 * none is waiting. peer gets "ip:port". */
int tl_net_accept(int lfd, int *fd, char *peer, int peerlen);

/* Connects with a timeout; the returned socket is non-blocking. */
int tl_net_connect(const char *host, int port, int timeout_ms, int *fd);

/* Per-connection settings for the data path: non-blocking, TCP_NODELAY,
 * keepalive (idle/interval/count in seconds), large socket buffers. */
int tl_net_tune(int fd, int keepalive_idle_s);

#endif
