/* orch_int.h - private to the orchestrator (orchestrator.c, orch_*.c): state, shared internals. */
#ifndef TL_ORCH_INT_H
#define TL_ORCH_INT_H

#include "tl/orchestrator.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tl/bounds.h"
#include "tl/conn.h"
#include "tl/error.h"
#include "tl/finite.h"
#include "tl/fixed.h"
#include "tl/frame.h"
#include "tl/groupkey.h"
#include "tl/loss.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/sched.h"
#include "tl/seal.h"
#include "tl/server.h"
#include "tl/shm.h"

#define CLOSE_GRACE_MS 2000    /* a refused peer gets this long to read its REJECT */
#define FLOOD_FRAMES_PER_S 100 /* heartbeats a node may send in a second, at least */
#define FLOOD_SECONDS 3        /* ... over that for this many seconds in a row: lost */
#define MAX_ATTEMPTS_LOGGED 16 /* failed attempts of one batch named in the message */

/* Where a connection is in the TL handshake (the server's peer state says
 * where its transport is). */
typedef enum peer_state {
    PEER_HELLO,    /* waiting for HELLO (after the TLS handshake, if any) */
    PEER_STATS,    /* STATS_REQUEST sent (standardize): its STATS, then every other
                    * node's, before WELCOME; not registered */
    PEER_WELCOMED, /* WELCOME sent, waiting for READY: not registered, leaves no trace */
    PEER_READY,    /* a registered node */
    PEER_GONE,     /* closed with a last message */
} peer_state;

/* The orchestrator's state of a connection: the user area of its tl_peer. */
typedef struct peer {
    peer_state st;
    int node;                    /* node index once WELCOMED, else -1 */
    uint64_t count, fingerprint; /* from HELLO; the node's identity once READY */
    uint64_t test_count;         /* from HELLO: the node's held-out rows */
    uint16_t hello_flags;        /* HELLO's capabilities, for a WELCOME sent later */
    char version[64];            /* HELLO's software version, for the log */
    uint8_t key_id[16];          /* HELLO's group key id (sealed) */
    int64_t hb_window;           /* start of the current second of heartbeat counting */
    int hb_count;                /* heartbeats received in it */
    int hb_over;                 /* consecutive seconds over the flood limit */
    int64_t deadline;            /* handshake deadline */
} peer;

#define OP(p) ((peer *)tl_peer_user(p))

/* What the orchestrator expects from a node within the current batch. */
typedef enum expect {
    EXPECT_NONE,
    EXPECT_FWD,   /* FORWARD sent, its result awaited */
    EXPECT_BWD,   /* BACKWARD sent, its result awaited */
    EXPECT_EVAL,  /* EVAL sent, its result awaited */
    EXPECT_DONE,  /* this node's part of the current phase is in */
    EXPECT_STALE, /* the batch was abandoned while a request was out: its reply is
                   * dropped when it comes, and nothing new is sent before it
                   * (one outstanding request per connection) */
} expect;

typedef struct node_slot {
    tl_peer *p;       /* NULL while disconnected */
    tl_peer *pending; /* a connection welcomed for this id, READY awaited */
    int seen;         /* registered at least once */
    uint64_t count, fingerprint;
    uint64_t test_count; /* held-out rows (HELLO) */
    tl_evalstats ev;     /* its last EVAL_RESULT (ev.classes 0: not set up) */
    tl_norm_stats st;    /* its STATS (standardize), once st_in */
    int st_in;
    /* batch state */
    expect exp;
    size_t first, n; /* the node's rows in the batch */
    int64_t task_deadline;
    double loss_sum;
    uint32_t correct;
    uint32_t *rows_u32; /* the node's rows of the batch as sent (batch_size) */
    void *gbuf;         /* BACKWARD_RESULT payload kept until the plan-order sum */
    size_t gcap;
    const float *grads;
    tl_shm gshm; /* the node's gradient region, created for this connection
                  * when it shares memory (gshm.p NULL: it does not) */
    /* sealed mode */
    const uint64_t *q; /* the node's masked vector (payload kept in gbuf, or gshm) */
    int have_mac;      /* mac is the node's PARAM_MAC at mac_step */
    int sum_unread;    /* gshm holds the sum of sum_step, maybe not read yet */
    uint64_t sum_step;
    uint64_t mac_step;
    uint8_t mac[32];
    /* sealed mode, faults: a node without the node side of the run's step
     * gets a live node's, sealed, relayed by us (docs/protocol.md §8.2) */
    int need_state;      /* READY said it holds no node side of o->step */
    int donor;           /* the node asked for it (index); -1: none yet */
    int64_t state_until; /* the donor answers by then or is lost */
    void *blob_buf;      /* the relayed STATE_BLOB's payload, kept until it is sent */
    size_t blob_cap;
    int ckpt_wait; /* a CHECKPOINT is not confirmed yet */
} node_slot;

struct tl_orch {
    tl_orch_cfg cfg;
    tl_server *srv;
    node_slot *nodes;
    int registered;
    uint64_t run_id;
    /* model split */
    int cut;       /* node-side modules */
    size_t p_node; /* node-side parameters */
    int dc, classes;
    /* central step buffers, batch_size rows */
    tl_ws ws;
    float *G, *dH;
    int32_t *labels;
    uint64_t step;
    const tl_batch *cur_batch; /* the batch in progress and its gradient block */
    float *cur_grads;
    int acc_next; /* parts already added into cur_grads */
    tl_orch_stats stats;
    tl_shm shm;       /* the parameters for nodes on a unix socket (shm.p NULL: none) */
    size_t p_sent;    /* parameters a FORWARD carries */
    tl_bounds bounds; /* what an honest node can send this step (bounds.h) */
    /* sealed mode */
    int sealed;
    uint32_t attempt; /* of the current step: grows on every replay (fresh masks) */
    uint64_t *qsum;   /* the masked sum of the step, p_node */
    uint32_t *ids;    /* the step's participants (node ids, plan order) */
    tl_sched sched;   /* the learning rate SEALED_STEP carries */
    int have_key_id;
    uint8_t key_id[16];
    char diverged[512]; /* set when two nodes' PARAM_MACs differ */
    /* the last node lost (lose_node), for the replay bound's message */
    int lost_node; /* index, -1: none since the attempt began */
    char lost_why[256];
    /* what the nodes' data is (HELLO, protocol 3): the first registered node's,
     * which every other must match */
    int have_desc;
    uint32_t elem, rank, shape[3];
    uint64_t labels_hash;
    uint64_t eval_step; /* the step EVAL was sent for */
    /* --normalize standardize: the nodes' STATS, combined once all are in */
    int std_pending;
    int norm_ready;
    tl_norm norm; /* owned, once norm_ready */
};

/* orchestrator.c: logging, peers, the event loop */
void tl__orch_log(tl_orch *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tl__orch_close_with_error(tl_orch *o, tl_peer *p, int code, const char *why);
void tl__orch_reject(tl_orch *o, tl_peer *p, uint32_t code, const char *why);
void tl__orch_lose_node(tl_orch *o, tl_peer *p, const char *why);
void tl__orch_pump(tl_orch *o, int64_t deadline);
int tl__orch_stop_run(tl_orch *o, int rc);

/* orch_sealed.c: sealed mode */
void tl__orch_sealed_welcome(tl_orch *o, tl_msg_welcome *w);
void tl__orch_sealed_accumulate(tl_orch *o);
int tl__orch_on_param_mac(tl_orch *o, int k, const tl_msg_param_mac *m);
void tl__orch_sealed_drain(tl_orch *o);
void tl__orch_sealed_send_step(tl_orch *o, const tl_batch *b);
int tl__orch_on_state_blob(tl_orch *o, tl_peer *p, int k, const tl_msg *m);
int tl__orch_sealed_sync(tl_orch *o, int *orphan);
/* Waits until the nodes of b (NULL: every node) are back, have answered any
 * abandoned request and (sealed) hold the run's node side. 0 or < 0. */
int tl__orch_await_nodes(tl_orch *o, const tl_batch *b);

/* Pumps until every node of batch b (NULL: every node) has answered what it
 * was asked (EXPECT_DONE); one past its task deadline is lost, "no <what>
 * within N ms". 0, or 1 if a node was lost. */
int tl__orch_await_replies(tl_orch *o, const tl_batch *b, const char *what);

/* orch_handshake.c: HELLO, READY, STATS */
void tl__orch_on_hello(tl_orch *o, tl_peer *p, const tl_msg_hello *h);
void tl__orch_on_ready(tl_orch *o, tl_peer *p, const tl_msg_ready *r);
int tl__orch_on_stats(tl_orch *o, tl_peer *p, const tl_msg_stats *st);

#endif
