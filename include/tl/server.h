/* server.h - a poll server for tl frames: the listening socket, its peers, their
 * send queues, reads with a per-round budget, TLS handshakes (and the sniffing
 * of a plaintext peer at a TLS server), closing with a last message, and the
 * hand-over of shared-memory descriptors after a peer's first frame.
 *
 * It knows frames and transports, not the TL protocol: its user (the
 * orchestrator) gets callbacks for each peer accepted, each frame, each failed
 * peer, each peer dropped, and once per round for its timers. Peers are opaque
 * handles; each carries user_size bytes of the user's own state
 * (tl_peer_user). A peer is freed only between the rounds' handlers (after the
 * dropped callback), never while another peer is being handled.
 */
#ifndef TL_SERVER_H
#define TL_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "tl/conn.h"
#include "tl/frame.h"
#include "tl/msg.h"
#include "tl/shm.h"
#include "tl/tls.h"

typedef struct tl_server tl_server;
typedef struct tl_peer tl_peer;

/* A peer's transport state, as the server sees it. */
typedef enum tl_peer_state {
    TL_PEER_TLS,     /* transport handshake in progress */
    TL_PEER_OPEN,    /* frames flow */
    TL_PEER_CLOSING, /* flushing a last message, then TL_PEER_DRAIN */
    TL_PEER_DRAIN,   /* our side shut down; discarding what the peer still sends until it
                      * closes, so that closing does not reset the connection before the
                      * peer read our last words (a REJECT, a TLS alert) */
} tl_peer_state;

/* The shared-memory hand-over of a peer (shm.h): descriptors travel right
 * after the first frame queued on the peer (WELCOME), before any other. */
typedef enum tl_fd_handover {
    TL_FDS_NONE, /* nothing owed */
    TL_FDS_OWED, /* owed after the first frame queued */
    TL_FDS_NEXT, /* that frame is being written: the descriptors go when it is out */
} tl_fd_handover;

typedef struct tl_server_cb {
    void *ud;
    /* a new peer (TL_PEER_TLS or TL_PEER_OPEN); its user area is zeroed */
    void (*accepted)(void *ud, tl_peer *p);
    /* one complete frame from an open peer; < 0 if the user finished the peer
     * (closed it with tl_peer_close) */
    int (*frame)(void *ud, tl_peer *p, const tl_frame *f);
    /* reading (writing: 1) the peer failed with rc (tl_errmsg() names the
     * peer). The peer is dropped after this unless the user closed it with a
     * last message (on a read failure only). Not called for closing peers. */
    void (*failed)(void *ud, tl_peer *p, int rc, int writing);
    /* a plaintext peer at a TLS server, now open in plaintext: the user
     * refuses it (tl_peer_close with a REJECT it can read) */
    void (*plaintext)(void *ud, tl_peer *p);
    /* p is about to be freed */
    void (*dropped)(void *ud, tl_peer *p);
    /* once per round, after the I/O */
    void (*timer)(void *ud);
    void (*log)(void *ud, const char *msg);
} tl_server_cb;

typedef struct tl_server_cfg {
    const char *host;         /* listen address: host or unix:PATH (net.h) */
    int port;                 /* 0: a free one */
    tl_tls_ctx *tls;          /* NULL: plaintext */
    int max_pending;          /* connections not registered at once, at most (beyond: closed) */
    int handshake_timeout_ms; /* unused by the server; for the user's timers */
    int tick_ms;              /* a round waits at most this long (timers); 0: no wait */
    size_t user_size;         /* bytes of user state per peer */
    tl_server_cb cb;
} tl_server_cfg;

/* Listens. 0 with *out, or < 0. */
int tl_server_new(const tl_server_cfg *cfg, tl_server **out);
/* Closes every peer (no callbacks) and the socket. NULL-safe. */
void tl_server_free(tl_server *s);
int tl_server_port(const tl_server *s);
/* Whether the listening socket is a unix socket (descriptors can be passed). */
int tl_server_local(const tl_server *s);
/* One round: poll every socket once (until deadline, tl_now_ms; < 0: the
 * tick), then accept, read, write, close what is due, then the timer. */
void tl_server_round(tl_server *s, int64_t deadline);
/* Peers: the count and the i-th (valid until the next round or drop). */
int tl_server_npeers(const tl_server *s);
tl_peer *tl_server_peer(const tl_server *s, int i);
/* Peers in state st. */
int tl_server_count(const tl_server *s, tl_peer_state st);
/* Closes p at once (its dropped callback runs); during a round, after the
 * handlers. */
void tl_server_drop(tl_server *s, tl_peer *p);
/* Logs (and resets) the count of connections dropped beyond max_pending. */
void tl_server_log_dropped(tl_server *s);
uint64_t tl_server_bytes_out(const tl_server *s);

void *tl_peer_user(tl_peer *p);
tl_peer_state tl_peer_get_state(const tl_peer *p);
const char *tl_peer_name(const tl_peer *p);      /* "host:port", for logs */
const char *tl_peer_transport(const tl_peer *p); /* "tcp" or "tls" */
tl_conn *tl_peer_conn(tl_peer *p);               /* for TLS identity checks */
int64_t tl_peer_last_recv(const tl_peer *p);
int64_t tl_peer_last_sent(const tl_peer *p);
/* Nothing queued or being written. */
int tl_peer_idle(const tl_peer *p);
/* A registered peer does not count against max_pending (cleared by close). */
void tl_peer_set_registered(tl_peer *p, int on);
void tl_peer_set_max_frame(tl_peer *p, uint64_t max_payload);
void tl_peer_set_zstd(tl_peer *p);
/* Whether descriptors can travel to p (a unix socket, nothing sent yet). */
int tl_peer_can_pass_fds(const tl_peer *p);
/* After the first frame queued (WELCOME): params->fd_ro then grads->fd. */
void tl_peer_pass_shm(tl_peer *p, const tl_shm *params, const tl_shm *grads);
/* Queues m (encoded now; tensor data must stay put until sent). */
int tl_peer_send(tl_peer *p, const tl_msg *m);
/* Writes what is queued until the socket would block. 0 or < 0. */
int tl_peer_flush(tl_peer *p);
/* Drops what is queued, queues last (if the transport can carry it) and
 * closes p once it is out, within grace_ms. */
void tl_peer_close(tl_peer *p, const tl_msg *last, int grace_ms);
/* Queues last behind what is queued, then closes within grace_ms; < 0 (p
 * untouched) if the queue is full. */
int tl_peer_close_after(tl_peer *p, const tl_msg *last, int grace_ms);
/* The payload buffer of the last frame read (tl_frame_reader_take) and its
 * return (tl_frame_reader_recycle). */
void *tl_peer_take_payload(tl_peer *p, size_t *cap);
void tl_peer_recycle_payload(tl_peer *p, void *buf, size_t cap);

#endif
