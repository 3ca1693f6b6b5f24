/* net.c - socket helpers (net.h): address parsing, listen, accept, connect
 * with a timeout, and data-path tuning. */
#define _GNU_SOURCE /* accept4 */
#include "tl/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tl/conn.h"
#include "tl/error.h"

#ifndef SOCK_BUF_BYTES
#define SOCK_BUF_BYTES (4 << 20)
#endif

#define UNIX_PREFIX "unix:"

/* The socket path of a "unix:PATH" host, or NULL for a network host. */
static const char *unix_path(const char *host) {
    return host && !strncmp(host, UNIX_PREFIX, strlen(UNIX_PREFIX)) ? host + strlen(UNIX_PREFIX)
                                                                    : NULL;
}

int tl_addr_is_unix(const char *host) { return unix_path(host) != NULL; }

void tl_addr_format(const char *host, int port, char *buf, size_t len) {
    if (unix_path(host)) snprintf(buf, len, "%s", host);
    else snprintf(buf, len, "%s:%d", host, port);
}

const char *tl_addr_tls_name(const char *host) { return unix_path(host) ? "localhost" : host; }

/* Fills a sockaddr_un for path; TL_EINVAL if it does not fit. */
static int unix_addr(const char *path, struct sockaddr_un *sa) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (!*path || strlen(path) >= sizeof sa->sun_path)
        return tl_error(TL_EINVAL, "unix socket path \"%s\" is empty or too long", path);
    memcpy(sa->sun_path, path, strlen(path));
    return 0;
}

int tl_net_parse_addr(const char *addr, char *host, int hostlen, int *port) {
    const char *h, *colon;
    size_t hl;
    if (!addr || hostlen < 1) return tl_error(TL_EINVAL, "no address given");
    if (unix_path(addr)) {
        struct sockaddr_un sa;
        int rc = unix_addr(unix_path(addr), &sa);
        if (rc < 0) return rc;
        if (strlen(addr) + 1 > (size_t)hostlen)
            return tl_error(TL_EINVAL, "address \"%s\" is too long", addr);
        memcpy(host, addr, strlen(addr) + 1);
        *port = 0;
        return 0;
    }
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':')
            return tl_error(TL_EINVAL, "bad address \"%s\": expected [IPV6]:PORT", addr);
        h = addr + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return tl_error(TL_EINVAL, "bad address \"%s\": expected HOST:PORT", addr);
        h = addr;
        hl = (size_t)(colon - addr);
        if (memchr(h, ':', hl))
            return tl_error(TL_EINVAL, "bad address \"%s\": write IPv6 addresses as [ADDR]:PORT",
                            addr);
    }
    const char *ps = colon + 1;
    char *endp;
    errno = 0;
    long p = strtol(ps, &endp, 10);
    if (!*ps || *endp || errno || p < 0 || p > 65535 || *ps == '-' || *ps == '+' || *ps == ' ')
        return tl_error(TL_EINVAL, "bad port in \"%s\" (expected 0..65535)", addr);
    if (hl + 1 > (size_t)hostlen)
        return tl_error(TL_EINVAL, "host name in \"%s\" is too long", addr);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}

/* "ip:port" or "[ip6]:port" of a socket address. */
static void format_addr(const struct sockaddr *sa, socklen_t len, char *out, int outlen) {
    char h[NI_MAXHOST], s[NI_MAXSERV];
    if (sa->sa_family == AF_UNIX) {
        snprintf(out, (size_t)outlen, "unix");
        return;
    }
    if (getnameinfo(sa, len, h, sizeof h, s, sizeof s, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, (size_t)outlen, "?");
        return;
    }
    if (sa->sa_family == AF_INET6) snprintf(out, (size_t)outlen, "[%s]:%s", h, s);
    else snprintf(out, (size_t)outlen, "%s:%s", h, s);
}

static int set_nonblock(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return tl_error(TL_ENET, "fcntl(O_NONBLOCK): %s", strerror(errno));
    return 0;
}

/* Listens on a unix socket at path; a stale socket file there is replaced. */
static int listen_unix(const char *path, int backlog, int *fd, int *bound_port) {
    struct sockaddr_un sa;
    struct stat st;
    int rc = unix_addr(path, &sa);
    if (rc < 0) return rc;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return tl_error(TL_ENET, "listen on unix:%s: %s", path, strerror(errno));
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(s, backlog > 0 ? backlog : 64) < 0) {
        int err = errno;
        close(s);
        return tl_error(TL_ENET, "listen on unix:%s: %s", path, strerror(err));
    }
    if (bound_port) *bound_port = 0;
    *fd = s;
    return 0;
}

int tl_net_listen(const char *host, int port, int backlog, int *fd, int *bound_port) {
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char ps[16];
    int s = -1, rc, err = 0;
    if (unix_path(host)) return listen_unix(unix_path(host), backlog, fd, bound_port);
    const char *hn = (host && host[0] && strcmp(host, "*") != 0) ? host : NULL;
    *fd = -1;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(ps, sizeof ps, "%d", port);
    if ((rc = getaddrinfo(hn, ps, &hints, &res)) != 0)
        return tl_error(TL_ENET, "listen on %s:%d: %s", hn ? hn : "*", port, gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (s < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, backlog > 0 ? backlog : 64) == 0)
            break;
        err = errno;
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    if (s < 0) return tl_error(TL_ENET, "listen on %s:%d: %s", hn ? hn : "*", port, strerror(err));
    if (bound_port) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(s, (struct sockaddr *)&ss, &sl) < 0) {
            err = errno;
            close(s);
            return tl_error(TL_ENET, "getsockname: %s", strerror(err));
        }
        *bound_port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    *fd = s;
    return 0;
}

int tl_net_accept(int lfd, int *fd, char *peer, int peerlen) {
    struct sockaddr_storage ss;
    *fd = -1;
    for (;;) {
        socklen_t sl = sizeof ss;
        int s = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s >= 0) {
            if (peer && peerlen > 0) format_addr((struct sockaddr *)&ss, sl, peer, peerlen);
            *fd = s;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return TL_EAGAIN;
        return tl_error(TL_ENET, "accept: %s", strerror(errno));
    }
}

/* Waits for a non-blocking connect on s to finish within timeout_ms (< 0:
 * none). 0, TL_ETIMEDOUT, or the connect errno in *err with TL_ENET. */
static int finish_connect(int s, int64_t deadline, int *err) {
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - tl_now_ms();
            if (left <= 0) return TL_ETIMEDOUT;
            timeout = (int)left;
        }
        struct pollfd p = {s, POLLOUT, 0};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            *err = errno;
            return TL_ENET;
        }
        if (n == 0) continue;
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) < 0) e = errno;
        if (e) {
            *err = e;
            return TL_ENET;
        }
        return 0;
    }
}

/* Connects to a unix socket at path (non-blocking socket returned). */
static int connect_unix(const char *path, int64_t deadline, int timeout_ms, int *fd) {
    struct sockaddr_un sa;
    int rc = unix_addr(path, &sa), err = 0;
    if (rc < 0) return rc;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return tl_error(TL_ENET, "connect to unix:%s: %s", path, strerror(errno));
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno == EINPROGRESS || errno == EAGAIN) rc = finish_connect(s, deadline, &err);
        else {
            err = errno;
            rc = TL_ENET;
        }
        if (rc < 0) {
            close(s);
            if (rc == TL_ETIMEDOUT)
                return tl_error(TL_ETIMEDOUT, "connect to unix:%s: timed out after %d ms", path,
                                timeout_ms);
            return tl_error(TL_ENET, "connect to unix:%s: %s", path, strerror(err));
        }
    }
    *fd = s;
    return 0;
}

int tl_net_connect(const char *host, int port, int timeout_ms, int *fd) {
    struct addrinfo hints = {0}, *res = NULL, *ai;
    char ps[16];
    int s = -1, rc, err = 0, last = TL_ENET;
    int64_t deadline = timeout_ms >= 0 ? tl_now_ms() + timeout_ms : -1;
    *fd = -1;
    if (unix_path(host)) return connect_unix(unix_path(host), deadline, timeout_ms, fd);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ps, sizeof ps, "%d", port);
    if ((rc = getaddrinfo(host, ps, &hints, &res)) != 0)
        return tl_error(TL_ENET, "connect to %s:%d: cannot resolve: %s", host, port,
                        gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (s < 0) {
            err = errno;
            continue;
        }
        if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS) {
            last = finish_connect(s, deadline, &err);
            if (last == 0) break;
        } else {
            err = errno;
            last = TL_ENET;
        }
        close(s);
        s = -1;
        if (last == TL_ETIMEDOUT) break;
    }
    freeaddrinfo(res);
    if (s < 0) {
        if (last == TL_ETIMEDOUT)
            return tl_error(TL_ETIMEDOUT, "connect to %s:%d: timed out after %d ms", host, port,
                            timeout_ms);
        return tl_error(TL_ENET, "connect to %s:%d: %s", host, port, strerror(err));
    }
    *fd = s;
    return 0;
}

/* 1 if the kernel lets an unprivileged SO_RCVBUF/SO_SNDBUF reach bytes (Linux
 * caps them at net.core.[rw]mem_max; a capped explicit size would be smaller
 * than what autotuning reaches, so then we leave autotuning on). */
static int buf_allowed(const char *proc, int bytes) {
    FILE *f = fopen(proc, "r");
    long v = -1;
    if (!f) return 1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v < 0 || v >= bytes;
}

int tl_net_tune(int fd, int keepalive_idle_s) {
    int one = 1, rc;
    if ((rc = set_nonblock(fd)) < 0) return rc;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX) {
        /* No TCP options; unix sockets have no buffer autotuning, so ask for large
         * buffers (beyond wmem_max where we may: SO_*BUFFORCE needs CAP_NET_ADMIN). */
        int sz = SOCK_BUF_BYTES;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        return 0;
    }
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return tl_error(TL_ENET, "setsockopt(TCP_NODELAY): %s", strerror(errno));
    if (keepalive_idle_s > 0) {
        int intvl = keepalive_idle_s / 3 > 0 ? keepalive_idle_s / 3 : 1, cnt = 3;
        if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &keepalive_idle_s, sizeof(int)) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
            return tl_error(TL_ENET, "setsockopt(keepalive): %s", strerror(errno));
    }
    int sz = SOCK_BUF_BYTES;
    if (buf_allowed("/proc/sys/net/core/wmem_max", sz))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz); /* best effort */
    if (buf_allowed("/proc/sys/net/core/rmem_max", sz))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    return 0;
}
