/*
 * net.h - socket helpers (after Redis's anet.c): they fill tl_errmsg() instead
 * of printing, and return 0 or a negative TL_E* code.
 */
#ifndef TL_NET_H
#define TL_NET_H

#include <stddef.h>
#include <stdint.h>

/* Besides "HOST:PORT", every address may be "unix:PATH": a unix-domain socket
 * for peers on the same machine (about twice the throughput of loopback TCP
 * here). Its port is 0. */

/* Whether host is "unix:PATH" (the one place that prefix is recognized). */
int tl_addr_is_unix(const char *host);

/* host and port as one address for logs and peer names: "HOST:PORT", or
 * "unix:PATH" as it is. */
void tl_addr_format(const char *host, int port, char *buf, size_t len);

/* The name an orchestrator at host must have in its certificate: host, or
 * "localhost" over a unix socket (the orchestrator is this machine). */
const char *tl_addr_tls_name(const char *host);

/* Splits "HOST:PORT" ("[::1]:7000" for IPv6; an empty HOST is allowed).
 * host gets at most hostlen-1 chars; port 0..65535. TL_EINVAL otherwise. */
int tl_net_parse_addr(const char *addr, char *host, int hostlen, int *port);

/* Listening TCP socket, non-blocking, close-on-exec, SO_REUSEADDR; host NULL,
 * "" or "*" means all interfaces; backlog <= 0 means 64; port 0 picks a free
 * port, reported through *bound_port (may be NULL). TL_ENET on failure. */
int tl_net_listen(const char *host, int port, int backlog, int *fd, int *bound_port);

/* Accepts one connection (non-blocking listener): 0 with *fd set (a
 * non-blocking socket; call tl_net_tune next), TL_EAGAIN if none is waiting,
 * TL_ENET (e.g. out of file descriptors). peer gets "ip:port" ("[ip6]:port"). */
int tl_net_accept(int lfd, int *fd, char *peer, int peerlen);

/* Connects with a timeout (timeout_ms < 0: the kernel's), trying each address
 * host resolves to; the returned socket is non-blocking. TL_ETIMEDOUT,
 * or TL_ENET with the reason ("connect to h:p: Connection refused"). */
int tl_net_connect(const char *host, int port, int timeout_ms, int *fd);

/* Per-connection settings for the data path: non-blocking, TCP_NODELAY,
 * keepalive after keepalive_idle_s idle seconds, then probes every idle/3 s
 * (at least 1), 3 of them (keepalive_idle_s <= 0: no keepalive), and 4 MiB
 * SO_SNDBUF/SO_RCVBUF where net.core.[rw]mem_max allows it (otherwise the
 * kernel's autotuning, which a smaller fixed size would only cap). */
int tl_net_tune(int fd, int keepalive_idle_s);

#endif
