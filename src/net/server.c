/* server.c - the poll server: listening socket, peers, queues, reads, closes (server.h). */
#include "tl/server.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl/error.h"
#include "tl/net.h"

#define QUEUE_LEN 4                    /* outgoing messages a peer may have waiting */
#define READ_BUDGET_FRAMES 16          /* a peer's frames handled per round, at most */
#define READ_BUDGET_BYTES (256u << 10) /* and its bytes (frames may be larger: one then) */

struct tl_peer {
    tl_server *srv;
    tl_conn *c;
    tl_frame_reader r;
    tl_frame_writer w;
    tl_peer_state st;
    int registered;   /* does not count against max_pending */
    int dead;         /* dropped during a round: freed after the handlers */
    int sniffed;      /* TL_PEER_TLS: the first byte has been looked at */
    int64_t deadline; /* closing deadline */
    int64_t last_recv, last_sent;
    tl_fd_handover fds;
    const tl_shm *fd_params, *fd_grads;
    tl_msg_enc q[QUEUE_LEN];
    int qhead, qlen;
    max_align_t user[]; /* cfg.user_size bytes */
};

struct tl_server {
    tl_server_cfg cfg;
    int lfd, port;
    tl_peer **peers;
    int n_peers, cap_peers;
    int in_round;
    int64_t last_flood_log;
    int flood_dropped;
    uint64_t bytes_out;
};

static void slog(tl_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void slog(tl_server *s, const char *fmt, ...) {
    if (!s->cfg.cb.log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->cfg.cb.log(s->cfg.cb.ud, buf);
}

/* ---------------------------------------------------------------- peers */

void *tl_peer_user(tl_peer *p) { return p->user; }
tl_peer_state tl_peer_get_state(const tl_peer *p) { return p->st; }
const char *tl_peer_name(const tl_peer *p) { return p->c->peer; }
const char *tl_peer_transport(const tl_peer *p) { return p->c->ops->name; }
tl_conn *tl_peer_conn(tl_peer *p) { return p->c; }
int64_t tl_peer_last_recv(const tl_peer *p) { return p->last_recv; }
int64_t tl_peer_last_sent(const tl_peer *p) { return p->last_sent; }
int tl_peer_idle(const tl_peer *p) { return !tl_frame_writer_busy(&p->w) && !p->qlen; }
void tl_peer_set_registered(tl_peer *p, int on) { p->registered = on; }
void tl_peer_set_max_frame(tl_peer *p, uint64_t max) { tl_frame_reader_set_max(&p->r, max); }

void tl_peer_set_zstd(tl_peer *p) {
    p->r.zstd = 1;
    tl_frame_writer_set_zstd(&p->w, 1, 1);
}

int tl_peer_can_pass_fds(const tl_peer *p) {
    return !p->qlen && !tl_frame_writer_busy(&p->w) && tl_conn_can_pass_fds(p->c);
}

void tl_peer_pass_shm(tl_peer *p, const tl_shm *params, const tl_shm *grads) {
    p->fd_params = params;
    p->fd_grads = grads;
    p->fds = TL_FDS_OWED;
}

void *tl_peer_take_payload(tl_peer *p, size_t *cap) { return tl_frame_reader_take(&p->r, cap); }

void tl_peer_recycle_payload(tl_peer *p, void *buf, size_t cap) {
    tl_frame_reader_recycle(&p->r, buf, cap);
}

static void peer_free(tl_peer *p) {
    if (!p) return;
    tl_conn_free(p->c);
    tl_frame_reader_free(&p->r);
    tl_frame_writer_free(&p->w);
    free(p);
}

int tl_peer_send(tl_peer *p, const tl_msg *m) {
    if (p->qlen == QUEUE_LEN) return tl_error(TL_ERANGE, "%s: send queue full", p->c->peer);
    tl_msg_enc *e = &p->q[(p->qhead + p->qlen) % QUEUE_LEN];
    int rc = tl_msg_encode(m, e);
    if (rc < 0) return rc;
    p->qlen++;
    return 0;
}

int tl_peer_flush(tl_peer *p) {
    for (;;) {
        if (tl_frame_writer_busy(&p->w)) {
            int rc = tl_frame_writer_flush(&p->w, p->c);
            if (rc == TL_EAGAIN) return 0;
            if (rc < 0) return rc;
            p->last_sent = tl_now_ms();
        }
        if (p->fds == TL_FDS_NEXT) { /* the first frame is out: the fds go next */
            int fds[2] = {p->fd_params->fd_ro, p->fd_grads->fd};
            int rc = tl_conn_send_fds(p->c, fds, 2);
            if (rc == TL_EAGAIN) return 0;
            if (rc < 0) return rc;
            p->fds = TL_FDS_NONE;
        }
        if (!p->qlen) return 0;
        tl_msg_enc *e = &p->q[p->qhead];
        int rc = tl_frame_writer_start(&p->w, e->type, e->iov, e->iovcnt);
        if (rc < 0) return rc;
        p->srv->bytes_out += TL_FRAME_HEADER_SIZE + e->len;
        p->qhead = (p->qhead + 1) % QUEUE_LEN;
        p->qlen--;
        if (p->fds == TL_FDS_OWED) p->fds = TL_FDS_NEXT;
    }
}

void tl_peer_close(tl_peer *p, const tl_msg *last, int grace_ms) {
    p->registered = 0;
    p->qlen = 0;
    p->fds = TL_FDS_NONE;
    if (p->st != TL_PEER_TLS && !tl_frame_writer_busy(&p->w)) tl_peer_send(p, last);
    p->st = TL_PEER_CLOSING;
    p->deadline = tl_now_ms() + grace_ms;
}

int tl_peer_close_after(tl_peer *p, const tl_msg *last, int grace_ms) {
    int rc = tl_peer_send(p, last);
    if (rc < 0) return rc;
    p->registered = 0;
    p->st = TL_PEER_CLOSING;
    p->deadline = tl_now_ms() + grace_ms;
    return 0;
}

/* Shuts our side down and waits (briefly) for the peer to close. */
static void start_drain(tl_peer *p, int grace_ms) {
    shutdown(p->c->fd, SHUT_WR);
    p->st = TL_PEER_DRAIN;
    p->deadline = tl_now_ms() + grace_ms;
}

#define CLOSE_GRACE_MS 2000 /* a refused peer gets this long to read our last words */

/* Discards bytes from a draining peer, at most READ_BUDGET_BYTES a round (the
 * caller checks the deadline between rounds). 0 while it is still open. */
static int drain(tl_peer *p) {
    char buf[4096];
    for (size_t got = 0; got < READ_BUDGET_BYTES;) {
        ssize_t r = recv(p->c->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (r < 0 && errno == EINTR) continue;
        return -1; /* closed or failed */
    }
    return 0;
}

/* ---------------------------------------------------------------- server */

/* Marks p dropped (its user forgets it now); freed by reap(). */
static void kill_peer(tl_server *s, tl_peer *p) {
    if (p->dead) return;
    p->dead = 1;
    if (s->cfg.cb.dropped) s->cfg.cb.dropped(s->cfg.cb.ud, p);
}

/* Frees the dead peers. */
static void reap(tl_server *s) {
    for (int i = 0; i < s->n_peers;) {
        tl_peer *p = s->peers[i];
        if (!p->dead) {
            i++;
            continue;
        }
        peer_free(p);
        s->peers[i] = s->peers[--s->n_peers];
    }
}

void tl_server_drop(tl_server *s, tl_peer *p) {
    kill_peer(s, p);
    if (!s->in_round) reap(s);
}

void tl_server_log_dropped(tl_server *s) {
    if (!s->flood_dropped) return;
    slog(s, "dropped %d connection%s beyond %d in handshake", s->flood_dropped,
         s->flood_dropped == 1 ? "" : "s", s->cfg.max_pending);
    s->flood_dropped = 0;
}

static void accept_all(tl_server *s) {
    for (;;) {
        int fd;
        char addr[64];
        int rc = tl_net_accept(s->lfd, &fd, addr, sizeof addr);
        if (rc == TL_EAGAIN) return;
        if (rc < 0) {
            slog(s, "accept: %s", tl_errmsg());
            return;
        }
        int pending = 0;
        for (int i = 0; i < s->n_peers; i++) pending += !s->peers[i]->registered;
        if (pending >= s->cfg.max_pending) {
            close(fd);
            s->flood_dropped++;
            int64_t now = tl_now_ms();
            if (now - s->last_flood_log > 5000) {
                slog(s,
                     "too many connections still in handshake (%d): dropping new ones "
                     "(latest from %s)",
                     pending, addr);
                s->last_flood_log = now;
            }
            continue;
        }
        tl_net_tune(fd, 10);
        tl_peer *p = calloc(1, sizeof *p + s->cfg.user_size);
        if (!p) {
            close(fd);
            return;
        }
        rc = tl_conn_open(fd, s->cfg.tls, 1, addr, NULL, &p->c);
        if (rc < 0) {
            slog(s, "%s: %s", addr, tl_errmsg());
            free(p);
            continue;
        }
        p->srv = s;
        tl_frame_reader_init(&p->r, TL_FRAME_HANDSHAKE_MAX);
        tl_frame_writer_init(&p->w);
        p->st = s->cfg.tls ? TL_PEER_TLS : TL_PEER_OPEN;
        p->last_recv = p->last_sent = tl_now_ms();
        if (s->n_peers == s->cap_peers) {
            int cap = s->cap_peers ? 2 * s->cap_peers : 16;
            tl_peer **np = realloc(s->peers, sizeof *np * cap);
            if (!np) {
                peer_free(p);
                return;
            }
            s->peers = np;
            s->cap_peers = cap;
        }
        s->peers[s->n_peers++] = p;
        if (s->cfg.cb.accepted) s->cfg.cb.accepted(s->cfg.cb.ud, p);
    }
}

/* Before a TLS handshake: does the peer speak our plaintext protocol? A TLS
 * ClientHello starts with 0x16; a tl frame with 'T' ("TLN1"), which no TLS
 * record does. 1 if so (then the peer is answered in plaintext, with a REJECT
 * it can read, instead of with a TLS alert it cannot), 0 if not or unknown. */
static int speaks_plaintext(tl_peer *p) {
    uint8_t b;
    ssize_t n = recv(p->c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 1 && b == (TL_FRAME_MAGIC & 0xff); /* little-endian: its first byte */
}

/* A plaintext peer at a TLS server: drop the TLS session (nothing was read or
 * sent through it) and hand the peer to the user in plaintext. */
static void open_plaintext(tl_server *s, tl_peer *p) {
    int fd = dup(p->c->fd);
    char addr[sizeof p->c->peer];
    snprintf(addr, sizeof addr, "%s", p->c->peer);
    tl_conn_free(p->c);
    p->c = NULL;
    if (fd < 0 || tl_conn_tcp_new(fd, addr, &p->c) < 0) {
        slog(s, "refused %s: plaintext peer (could not answer it: %s)", addr, tl_errmsg());
        return;
    }
    p->st = TL_PEER_OPEN;
    if (s->cfg.cb.plaintext) s->cfg.cb.plaintext(s->cfg.cb.ud, p);
}

/* A peer in the TLS handshake has something for us: advance it. Returns 0 if
 * the peer is to be dropped at once. */
static int tls_step(tl_server *s, tl_peer *p) {
    if (!p->sniffed) {
        p->sniffed = 1;
        if (speaks_plaintext(p)) {
            open_plaintext(s, p); /* the REJECT goes out on the next round */
            return p->c != NULL;
        }
    }
    int h = tl_conn_handshake(p->c);
    if (h == 0) {
        p->st = TL_PEER_OPEN;
    } else if (h != TL_EAGAIN) {
        /* the TLS alert is on its way: let the peer read it (the message names the peer) */
        slog(s, "refused %s", tl_errmsg());
        start_drain(p, CLOSE_GRACE_MS);
    }
    return 1;
}

/* Reads the complete frames p has for us, up to a budget per round
 * (READ_BUDGET_FRAMES, READ_BUDGET_BYTES) so that no peer keeps the loop from
 * the others: the rest waits for the next round. 0, or < 0 if p is finished. */
static int peer_read(tl_server *s, tl_peer *p) {
    uint64_t bytes = 0;
    for (int frames = 0; frames < READ_BUDGET_FRAMES && bytes < READ_BUDGET_BYTES; frames++) {
        tl_frame f;
        int rc = tl_frame_read(&p->r, p->c, &f);
        if (rc == TL_EAGAIN) return 0;
        if (rc < 0) {
            if (p->st != TL_PEER_CLOSING && s->cfg.cb.failed)
                s->cfg.cb.failed(s->cfg.cb.ud, p, rc, 0);
            return -1;
        }
        bytes += f.wire_len;
        if (p->st == TL_PEER_CLOSING) continue; /* draining; ignore */
        p->last_recv = tl_now_ms();
        if (s->cfg.cb.frame(s->cfg.cb.ud, p, &f) < 0) return -1;
    }
    return 0;
}

void tl_server_round(tl_server *s, int64_t deadline) {
    int n = s->n_peers;
    struct pollfd *fds = calloc((size_t)n + 1, sizeof *fds);
    if (!fds) return;
    fds[0].fd = s->lfd;
    fds[0].events = POLLIN;
    int timeout = 0, ready_now = 0;
    for (int i = 0; i < n; i++) {
        tl_peer *p = s->peers[i];
        fds[i + 1].fd = p->c->fd;
        if (p->st == TL_PEER_TLS) {
            fds[i + 1].events = tl_conn_want(p->c) ? tl_conn_want(p->c) : POLLIN;
        } else {
            fds[i + 1].events = POLLIN;
            if (tl_frame_writer_busy(&p->w) || p->qlen || p->fds != TL_FDS_NONE)
                fds[i + 1].events |= POLLOUT;
            if (tl_conn_pending(p->c)) ready_now = 1;
        }
    }
    if (!ready_now) {
        int64_t now = tl_now_ms(), until = deadline;
        int64_t tick = now + s->cfg.tick_ms; /* wake for the nearest timer too */
        if (until < 0 || tick < until) until = tick;
        timeout = until > now ? (int)(until - now) : 0;
    }
    int rc = poll(fds, (nfds_t)n + 1, timeout);
    if (rc > 0 && (fds[0].revents & POLLIN)) accept_all(s);
    /* accept_all only appends; nothing is removed before the handlers are
     * through (a peer dropped meanwhile is marked dead), so peers[i] is still
     * the peer of fds[i + 1] */
    s->in_round = 1;
    for (int i = 0; i < n; i++) {
        tl_peer *p = s->peers[i];
        if (p->dead) continue;
        short re = fds[i + 1].revents;
        int alive = 1;
        if (p->st == TL_PEER_DRAIN) {
            if (re && drain(p) < 0) alive = 0;
        } else if (p->st == TL_PEER_TLS) {
            if (!re) continue;
            alive = tls_step(s, p);
        } else {
            if (re & (POLLIN | POLLHUP | POLLERR) || tl_conn_pending(p->c))
                alive = peer_read(s, p) == 0 || p->st == TL_PEER_CLOSING;
            int frc;
            if (alive && !p->dead && (frc = tl_peer_flush(p)) < 0) {
                if (p->st != TL_PEER_CLOSING && s->cfg.cb.failed)
                    s->cfg.cb.failed(s->cfg.cb.ud, p, frc, 1);
                alive = 0;
            }
            if (alive && p->st == TL_PEER_CLOSING && tl_peer_idle(p))
                start_drain(p, CLOSE_GRACE_MS);
        }
        if ((p->st == TL_PEER_CLOSING || p->st == TL_PEER_DRAIN) && tl_now_ms() > p->deadline)
            alive = 0;
        if (!alive) kill_peer(s, p);
    }
    s->in_round = 0;
    reap(s);
    free(fds);
    if (s->flood_dropped && tl_now_ms() - s->last_flood_log > 5000) {
        tl_server_log_dropped(s);
        s->last_flood_log = tl_now_ms();
    }
    if (s->cfg.cb.timer) s->cfg.cb.timer(s->cfg.cb.ud);
}

int tl_server_new(const tl_server_cfg *cfg, tl_server **out) {
    tl_server *s = calloc(1, sizeof *s);
    if (!s) return tl_error(TL_ENOMEM, "server: out of memory");
    s->cfg = *cfg;
    s->cfg.user_size = (cfg->user_size + sizeof(max_align_t) - 1) / sizeof(max_align_t) *
                       sizeof(max_align_t);
    if (s->cfg.tick_ms < 0) s->cfg.tick_ms = 0;
    s->lfd = -1;
    int rc = tl_net_listen(cfg->host, cfg->port, 128, &s->lfd, &s->port);
    if (rc < 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void tl_server_free(tl_server *s) {
    if (!s) return;
    for (int i = 0; i < s->n_peers; i++) peer_free(s->peers[i]);
    free(s->peers);
    if (s->lfd >= 0) close(s->lfd);
    free(s);
}

int tl_server_port(const tl_server *s) { return s->port; }
int tl_server_local(const tl_server *s) { return tl_shm_possible(s->lfd); }
int tl_server_npeers(const tl_server *s) { return s->n_peers; }
tl_peer *tl_server_peer(const tl_server *s, int i) { return s->peers[i]; }
uint64_t tl_server_bytes_out(const tl_server *s) { return s->bytes_out; }

int tl_server_count(const tl_server *s, tl_peer_state st) {
    int n = 0;
    for (int i = 0; i < s->n_peers; i++) n += s->peers[i]->st == st && !s->peers[i]->dead;
    return n;
}
