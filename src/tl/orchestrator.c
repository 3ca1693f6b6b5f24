/* orchestrator.c - handshakes and the distributed gradient of a batch, over server.h. */
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
#include "tl/fixed.h"
#include "tl/groupkey.h"
#include "tl/sched.h"
#include "tl/seal.h"
#include "tl/error.h"
#include "tl/frame.h"
#include "tl/loss.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/server.h"
#include "tl/shm.h"

#define CLOSE_GRACE_MS 2000  /* a refused peer gets this long to read its REJECT */
#define FLOOD_FRAMES_PER_S 100           /* heartbeats a node may send in a second, at least */
#define FLOOD_SECONDS 3                  /* ... over that for this many seconds in a row: lost */
#define MAX_ATTEMPTS_LOGGED 16           /* failed attempts of one batch named in the message */

/* Where a connection is in the TL handshake (the server's peer state says
 * where its transport is). */
typedef enum peer_state {
    PEER_HELLO,   /* waiting for HELLO (after the TLS handshake, if any) */
    PEER_STATS,   /* STATS_REQUEST sent (standardize): its STATS, then every other
                   * node's, before WELCOME; not registered */
    PEER_WELCOMED,/* WELCOME sent, waiting for READY: not registered, leaves no trace */
    PEER_READY,   /* a registered node */
    PEER_GONE,    /* closed with a last message */
} peer_state;

/* The orchestrator's state of a connection: the user area of its tl_peer. */
typedef struct peer {
    peer_state st;
    int node;              /* node index once WELCOMED, else -1 */
    uint64_t count, fingerprint; /* from HELLO; the node's identity once READY */
    uint64_t test_count;   /* from HELLO: the node's held-out rows */
    uint16_t hello_flags;  /* HELLO's capabilities, for a WELCOME sent later */
    char version[64];      /* HELLO's software version, for the log */
    uint8_t key_id[16];    /* HELLO's group key id (sealed) */
    int64_t hb_window;     /* start of the current second of heartbeat counting */
    int hb_count;          /* heartbeats received in it */
    int hb_over;           /* consecutive seconds over the flood limit */
    int64_t deadline;      /* handshake deadline */
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
    tl_peer *p;            /* NULL while disconnected */
    tl_peer *pending;        /* a connection welcomed for this id, READY awaited */
    int seen;              /* registered at least once */
    uint64_t count, fingerprint;
    uint64_t test_count;   /* held-out rows (HELLO) */
    tl_evalstats ev;       /* its last EVAL_RESULT (ev.classes 0: not set up) */
    tl_norm_stats st;      /* its STATS (standardize), once st_in */
    int st_in;
    /* batch state */
    expect exp;
    size_t first, n;       /* the node's rows in the batch */
    int64_t task_deadline;
    double loss_sum;
    uint32_t correct;
    uint32_t *rows_u32;    /* the node's rows of the batch as sent (batch_size) */
    void *gbuf;            /* BACKWARD_RESULT payload kept until the plan-order sum */
    size_t gcap;
    const float *grads;
    tl_shm gshm;           /* the node's gradient region, created for this connection
                            * when it shares memory (gshm.p NULL: it does not) */
    /* sealed mode */
    const uint64_t *q;     /* the node's masked vector (payload kept in gbuf, or gshm) */
    int have_mac;          /* mac is the node's PARAM_MAC at mac_step */
    int sums_sent;         /* a sum went into gshm on this connection */
    uint64_t mac_step;
    uint8_t mac[32];
    /* sealed mode, faults: a node without the node side of the run's step
     * gets a live node's, sealed, relayed by us (docs/protocol.md §8.2) */
    int need_state;        /* READY said it holds no node side of o->step */
    int donor;             /* the node asked for it (index); -1: none yet */
    int64_t state_until;   /* the donor answers by then or is lost */
    void *blob_buf;        /* the relayed STATE_BLOB's payload, kept until it is sent */
    size_t blob_cap;
    int ckpt_wait;         /* a CHECKPOINT is not confirmed yet */
} node_slot;

struct tl_orch {
    tl_orch_cfg cfg;
    tl_server *srv;
    node_slot *nodes;
    int registered;
    uint64_t run_id;
    /* model split */
    int cut;               /* node-side modules */
    size_t p_node;         /* node-side parameters */
    int dc, classes;
    /* central step buffers, batch_size rows */
    tl_ws ws;
    float *G, *dH;
    int32_t *labels;
    uint64_t step;
    const tl_batch *cur_batch; /* the batch in progress and its gradient block */
    float *cur_grads;
    int acc_next;              /* parts already added into cur_grads */
    tl_orch_stats stats;
    tl_shm shm;            /* the parameters for nodes on a unix socket (shm.p NULL: none) */
    size_t p_sent;         /* parameters a FORWARD carries */
    tl_bounds bounds;      /* what an honest node can send this step (bounds.h) */
    /* sealed mode */
    int sealed;
    uint32_t attempt;      /* of the current step: grows on every replay (fresh masks) */
    uint64_t *qsum;        /* the masked sum of the step, p_node */
    uint32_t *ids;         /* the step's participants (node ids, plan order) */
    tl_sched sched;        /* the learning rate SEALED_STEP carries */
    int have_key_id;
    uint8_t key_id[16];
    char diverged[512];    /* set when two nodes' PARAM_MACs differ */
    /* the last node lost (lose_node), for the replay bound's message */
    int lost_node;         /* index, -1: none since the attempt began */
    char lost_why[256];
    /* what the nodes' data is (HELLO, protocol 3): the first registered node's,
     * which every other must match */
    int have_desc;
    uint32_t elem, rank, shape[3];
    uint64_t labels_hash;
    uint64_t eval_step;    /* the step EVAL was sent for */
    /* --normalize standardize: the nodes' STATS, combined once all are in */
    int std_pending;
    int norm_ready;
    tl_norm norm;          /* owned, once norm_ready */
};

static void olog(tl_orch *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void olog(tl_orch *o, const char *fmt, ...) {
    if (!o->cfg.log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    o->cfg.log(o->cfg.log_ud, buf);
}

static void server_log(void *ud, const char *msg) {
    tl_orch *o = ud;
    o->cfg.log(o->cfg.log_ud, msg);
}

void tl_orch_cfg_defaults(tl_orch_cfg *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->heartbeat_ms = 2000;
    cfg->task_timeout_ms = 120000;
    cfg->reconnect_timeout_s = 120;
    cfg->handshake_timeout_ms = 10000;
    cfg->max_pending = 64;
    cfg->max_replays = 5;
}

/* ---------------------------------------------------------------- peers */

/* The server drops p: the node slots forget it. */
static void on_dropped(void *ud, tl_peer *p) {
    tl_orch *o = ud;
    int k = OP(p)->node;
    if (k >= 0 && o->nodes[k].p == p) o->nodes[k].p = NULL;
    if (k >= 0 && o->nodes[k].pending == p) o->nodes[k].pending = NULL;
}

/* Sends a last message (REJECT or ERROR) and closes once it is out. */
static void close_with(tl_orch *o, tl_peer *p, const tl_msg *m) {
    on_dropped(o, p);
    OP(p)->node = -1;
    OP(p)->st = PEER_GONE;
    tl_peer_close(p, m, CLOSE_GRACE_MS);
}

static void close_with_error(tl_orch *o, tl_peer *p, int code, const char *why) {
    tl_msg m = {.type = TL_MSG_ERROR};
    m.u.error.code = (uint32_t)(code < 0 ? -code : code);
    snprintf(m.u.error.message, sizeof m.u.error.message, "%s", why);
    close_with(o, p, &m);
}

static void reject(tl_orch *o, tl_peer *p, uint32_t code, const char *why) {
    olog(o, "refused %s: %s", tl_peer_name(p), why);
    tl_msg m = {.type = TL_MSG_REJECT};
    m.u.reject.code = code;
    snprintf(m.u.reject.reason, sizeof m.u.reject.reason, "%s", why);
    close_with(o, p, &m);
}

/* A registered node is gone (or misbehaved): log, drop its connection. */
static void lose_node(tl_orch *o, tl_peer *p, const char *why) {
    int k = OP(p)->node;
    olog(o, "node %d (%s) lost: %s", k + 1, tl_peer_name(p), why);
    o->lost_node = k;
    snprintf(o->lost_why, sizeof o->lost_why, "%s", why);
    close_with_error(o, p, TL_EPROTO, why);
}

/* ------------------------------------------------------------ sealed mode */
/* DESIGN §4, docs/protocol.md §8.2: the node side stays at the nodes; the
 * orchestrator adds their masked vectors mod 2^64 and sends the sum to all. */

/* WELCOME's sealed fields: privacy, MAC period, the node-side optimizer. */
static void sealed_welcome(tl_orch *o, tl_msg_welcome *w) {
    const tl_optim_cfg *oc = &o->cfg.run->optim;
    w->privacy = TL_PRIVACY_SEALED;
    w->mac_every = (uint32_t)(o->cfg.mac_every > 0 ? o->cfg.mac_every : 0);
    w->opt_kind = (uint32_t)oc->kind;
    w->opt_nesterov = (uint32_t)oc->nesterov;
    w->opt_lr = oc->lr;
    w->opt_rho = oc->rho;
    w->opt_eps = oc->eps;
    w->opt_momentum = oc->momentum;
    w->opt_dampening = oc->dampening;
    w->opt_weight_decay = oc->weight_decay;
    w->opt_beta1 = oc->beta1;
    w->opt_beta2 = oc->beta2;
    w->opt_steps = o->step;
}

/* Adds the masked vectors that have arrived into qsum (mod 2^64; the order
 * does not matter in the ring, plan order is kept anyway). No check is
 * possible on a masked vector: it is uniform noise to us. */
static void sealed_accumulate(tl_orch *o) {
    const tl_batch *b = o->cur_batch;
    while (o->acc_next < b->n_parts) {
        node_slot *s = &o->nodes[b->parts[o->acc_next].node];
        if (!s->q) return;
        if (o->acc_next == 0) memset(o->qsum, 0, sizeof(uint64_t) * o->p_node);
        tl_ring_add(o->qsum, s->q, o->p_node);
        if (s->gbuf && s->p) tl_peer_recycle_payload(s->p, s->gbuf, s->gcap);
        else free(s->gbuf);
        s->gbuf = NULL;
        s->q = NULL;
        o->acc_next++;
    }
}

/* PARAM_MAC from node k: compared with every other node's of the same step. */
static int on_param_mac(tl_orch *o, int k, const tl_msg_param_mac *m) {
    if (!o->sealed) return tl_error(TL_EPROTO, "PARAM_MAC in an open run");
    node_slot *s = &o->nodes[k];
    for (int j = 0; j < o->cfg.n_nodes && !o->diverged[0]; j++) {
        const node_slot *t = &o->nodes[j];
        if (j == k || !t->have_mac || t->mac_step != m->step) continue;
        if (!tl_param_mac_equal(t->mac, m->mac)) {
            int a = j < k ? k : j, b = j < k ? j : k;
            snprintf(o->diverged, sizeof o->diverged,
                     "node %d's node-side parameters differ from node %d's at step %llu "
                     "(divergence is a bug)", a + 1, b + 1, (unsigned long long)m->step);
            olog(o, "%s", o->diverged);
        }
    }
    s->have_mac = 1;
    s->mac_step = m->step;
    memcpy(s->mac, m->mac, sizeof s->mac);
    return 0;
}

/* Pumps until nothing is queued for any registered node (the SEALED_STEP
 * frames point at qsum and ids, which the next step overwrites); a node that
 * does not take its frames within the task timeout is lost. */
static void pump(tl_orch *o, int64_t until);
static void sealed_drain(tl_orch *o) {
    const int64_t until = tl_now_ms() + o->cfg.task_timeout_ms;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            if (!s->p || tl_peer_idle(s->p)) continue;
            if (tl_now_ms() > until) lose_node(o, s->p, "did not take SEALED_STEP in time");
            else busy = 1;
        }
        if (!busy) return;
        pump(o, until);
    }
}

/* Whether node s (sharing memory) has applied every SEALED_STEP before this
 * one, i.e. read the last sum out of its region: its PARAM_MAC of o->step has
 * come (or this connection never got a SEALED_STEP). Pumps until then, up to
 * the task timeout; 0 if the node was lost. */
static int sealed_region_free(tl_orch *o, node_slot *s) {
    const int64_t until = tl_now_ms() + o->cfg.task_timeout_ms;
    while (s->p && s->sums_sent && !(s->have_mac && s->mac_step == o->step)) {
        if (tl_now_ms() > until) {
            lose_node(o, s->p, "no PARAM_MAC for the last SEALED_STEP in time");
            return 0;
        }
        pump(o, until);
    }
    if (s->p) s->sums_sent = 1;
    return s->p != NULL;
}

/* SEALED_STEP of the completed step to every registered node. */
static void sealed_send_step(tl_orch *o, const tl_batch *b) {
    tl_msg m = {.type = TL_MSG_SEALED_STEP};
    tl_msg_sealed_step *q = &m.u.sealed_step;
    q->step = o->step;
    q->attempt = o->attempt;
    q->flags = o->cfg.mac_every > 0 && (o->step + 1) % (uint64_t)o->cfg.mac_every == 0
                   ? TL_SEALED_F_MAC : 0;
    q->lr = tl_sched_lr(&o->sched, b->epoch);
    q->participants = tl_tensor_1d(TL_DT_U32, o->ids, (uint32_t)b->n_parts);
    const uint32_t flags = q->flags;
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        if (!s->p) continue;
        if (s->need_state) continue; /* it gets the node side after this step, sealed */
        /* shared memory: the sum goes into the node's gradient region, which it
         * writes only at its next BACKWARD (after this SEALED_STEP on the stream)
         * and reads when it applies this step; its PARAM_MAC after each such
         * step says it has read the last sum (sealed_region_free) */
        if (s->gshm.p && !sealed_region_free(o, s)) continue; /* lost */
        if (s->gshm.p) memcpy(s->gshm.p, o->qsum, sizeof(uint64_t) * o->p_node);
        q->flags = flags | (s->gshm.p ? TL_SEALED_F_MAC : 0);
        q->sum = s->gshm.p ? tl_tensor_1d(TL_DT_U64, NULL, 0)
                           : tl_tensor_1d(TL_DT_U64, o->qsum, (uint32_t)o->p_node);
        if (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0)
            lose_node(o, s->p, tl_errmsg()); /* it misses this step: it cannot go on */
    }
}

/* STATE_BLOB from node k (the donor): relayed as it is to the node it is
 * sealed for, which we asked it for; the payload is kept until sent. */
static int on_state_blob(tl_orch *o, tl_peer *p, int k, const tl_msg *m) {
    const tl_msg_state_blob *b = &m->u.state_blob;
    if (!o->sealed) return tl_error(TL_EPROTO, "STATE_BLOB in an open run");
    if (b->from != (uint32_t)k + 1 || b->to < 1 || b->to > (uint32_t)o->cfg.n_nodes ||
        b->step != o->step)
        return tl_error(TL_EPROTO, "STATE_BLOB from node %u to node %u at step %llu on node %d's "
                        "connection at step %llu", b->from, b->to, (unsigned long long)b->step,
                        k + 1, (unsigned long long)o->step);
    node_slot *t = &o->nodes[b->to - 1];
    if (t->donor != k) return tl_error(TL_EPROTO, "STATE_BLOB for node %u, not asked", b->to);
    t->donor = -1;
    if (!t->p || !t->need_state) return 0; /* it left meanwhile: asked again when back */
    free(t->blob_buf); /* never one in flight here: the last went out before we asked */
    t->blob_buf = tl_peer_take_payload(p, &t->blob_cap);
    if (tl_peer_send(t->p, m) < 0 || tl_peer_flush(t->p) < 0) {
        lose_node(o, t->p, tl_errmsg());
        return 0;
    }
    t->need_state = 0; /* it installs it before anything we send after it */
    olog(o, "node %u: gets the node side of step %llu from node %d (sealed, %llu bytes, "
         "relayed)", b->to, (unsigned long long)b->step, k + 1,
         (unsigned long long)b->blob.numel);
    return 0;
}

/* Drives the state transfers: each connected node that needs the node side
 * of o->step gets a live node's (STATE_REQUEST to the donor, its STATE_BLOB
 * relayed by on_state_blob). 0 when none is pending, 1 while one is, 2 while
 * a node needs it and no connected node holds it (*orphan: that node). */
static int sealed_sync(tl_orch *o, int *orphan) {
    int pending = 0;
    const int64_t now = tl_now_ms();
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        if (s->blob_buf && (!s->p || tl_peer_idle(s->p))) {
            free(s->blob_buf);
            s->blob_buf = NULL;
        }
        if (!s->p || !s->need_state) continue;
        if (s->donor >= 0) {
            node_slot *d = &o->nodes[s->donor];
            if (d->p && now <= s->state_until) {
                if (!pending) pending = 1;
                continue;
            }
            if (d->p) lose_node(o, d->p, "no STATE_BLOB within the task timeout");
            s->donor = -1;
        }
        int j = 0;
        while (j < o->cfg.n_nodes && (j == i || !o->nodes[j].p || o->nodes[j].need_state)) j++;
        if (j == o->cfg.n_nodes) {
            *orphan = i;
            pending = 2;
            continue;
        }
        tl_msg m = {.type = TL_MSG_STATE_REQUEST};
        m.u.state_request.step = o->step;
        m.u.state_request.to = (uint32_t)i + 1;
        if (tl_peer_send(o->nodes[j].p, &m) < 0 || tl_peer_flush(o->nodes[j].p) < 0) {
            lose_node(o, o->nodes[j].p, tl_errmsg());
            if (!pending) pending = 1; /* another donor next round */
            continue;
        }
        s->donor = j;
        s->state_until = now + o->cfg.task_timeout_ms;
        olog(o, "node %d holds no node side of step %llu: node %d's is sent to it, sealed",
             i + 1, (unsigned long long)o->step, j + 1);
        if (!pending) pending = 1;
    }
    return pending;
}

void tl_orch_checkpointing(void *ctx, int64_t steps) {
    tl_orch *o = ctx;
    if (!o->sealed) return;
    tl_msg m = {.type = TL_MSG_CHECKPOINT};
    m.u.checkpoint.step = (uint64_t)steps;
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        s->ckpt_wait = 0;
        if (!s->p || s->need_state) continue;
        if (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0) {
            lose_node(o, s->p, tl_errmsg());
            continue;
        }
        s->ckpt_wait = 1;
    }
    const int64_t until = tl_now_ms() + o->cfg.task_timeout_ms;
    for (;;) {
        int waiting = -1;
        for (int i = 0; i < o->cfg.n_nodes && waiting < 0; i++)
            if (o->nodes[i].p && o->nodes[i].ckpt_wait) waiting = i;
        if (waiting < 0) return;
        if (tl_now_ms() > until) {
            olog(o, "node %d did not confirm saving its node side of step %lld (a resumed run "
                 "gives it another node's)", waiting + 1, (long long)steps);
            return;
        }
        pump(o, until);
    }
}

int tl_orch_final(tl_orch *o, const float *params) {
    if (!o->sealed) return 0;
    sealed_drain(o);
    tl_msg m = {.type = TL_MSG_FINAL};
    m.u.final.step = o->step;
    m.u.final.params = tl_tensor_1d(TL_DT_F32, params + o->p_node,
                                    (uint32_t)(o->cfg.model->n_params - o->p_node));
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        s->have_mac = s->have_mac && s->mac_step == o->step;
        if (s->p && (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0))
            lose_node(o, s->p, tl_errmsg());
    }
    const int64_t until = tl_now_ms() + o->cfg.task_timeout_ms;
    for (;;) {
        int waiting = -1, present = 0;
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            if (s->p) present++;
            if (s->p && !(s->have_mac && s->mac_step == o->step) && waiting < 0) waiting = i;
        }
        if (o->diverged[0]) return tl_error(TL_ESTATE, "%s", o->diverged);
        if (waiting < 0) {
            if (!present) return tl_error(TL_ECLOSED, "no node left to take the final model");
            return 0;
        }
        if (tl_now_ms() > until)
            return tl_error(TL_ETIMEDOUT, "node %d did not confirm its final node side within "
                            "%d ms", waiting + 1, o->cfg.task_timeout_ms);
        pump(o, until);
    }
}

/* ------------------------------------------------------------ handshake */

/* Would node k (0-based) with this data conflict with what the run holds?
 * Fills why and returns the REJECT code, or 0 if not: node k came back with
 * other data, another node has the same data, or the run's sample total
 * would not fit in memory (the batcher indexes every sample, 8 bytes each). */
static uint32_t data_conflict(tl_orch *o, int k, uint64_t count, uint64_t fp, char *why,
                              size_t cap) {
    const node_slot *s = &o->nodes[k];
    if (s->seen && (s->count != count || s->fingerprint != fp)) {
        snprintf(why, cap,
                 "node %d came back with different data (%llu samples, fingerprint %016llx; "
                 "it had %llu, %016llx)",
                 k + 1, (unsigned long long)count, (unsigned long long)fp,
                 (unsigned long long)s->count, (unsigned long long)s->fingerprint);
        return TL_REJECT_FINGERPRINT;
    }
    uint64_t total = count;
    for (int j = 0; j < o->cfg.n_nodes; j++) {
        const node_slot *t = &o->nodes[j];
        if (j == k || !t->seen) continue;
        if (t->fingerprint == fp && t->count == count) {
            snprintf(why, cap, "node %d holds the same data as node %d (%llu samples, "
                     "fingerprint %016llx)", k + 1, j + 1, (unsigned long long)count,
                     (unsigned long long)fp);
            return TL_REJECT_FINGERPRINT;
        }
        total += t->count; /* each count is below 2^32: no overflow */
    }
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : UINT64_MAX;
    if (total > mem / 2 / sizeof(uint64_t)) {
        snprintf(why, cap, "with node %d's %llu samples the run would hold %llu, more than "
                 "this orchestrator can index in memory", k + 1, (unsigned long long)count,
                 (unsigned long long)total);
        return TL_REJECT_BAD_HELLO;
    }
    return 0;
}

/* "[30]" or "[1, 28, 28]". */
static const char *shape_str(char *buf, size_t n, uint32_t rank, const uint32_t *shape) {
    if (rank == 3) snprintf(buf, n, "[%u, %u, %u]", shape[0], shape[1], shape[2]);
    else snprintf(buf, n, "[%u]", shape[0]);
    return buf;
}

/* A node whose data cannot join the run (HELLO's description, protocol 3):
 * samples of another width than the model's input, labels beyond its
 * classes, or data of another kind than the first node's (element type,
 * sample shape, class names). 1 with the reason in why, else 0. */
static int data_mismatch(const tl_orch *o, const tl_msg_hello *h, char *why, size_t cap) {
    char a[64], b[64];
    uint64_t dim = h->rank == 3 ? (uint64_t)h->shape[0] * h->shape[1] * h->shape[2]
                                : h->shape[0];
    if (h->rank == 0) return 0; /* not described (a hand-made client): WELCOME is checked
                                 * by the node against its data all the same */
    if ((h->rank != 1 && h->rank != 3) || h->elem > TL_ELEM_WIRE_F32) {
        snprintf(why, cap, "HELLO describes samples of rank %u, element type %u (want rank 1 "
                 "or 3, type 0 or 1)", h->rank, h->elem);
        return 1;
    }
    if (dim != (uint64_t)o->cfg.model->in_dim) {
        snprintf(why, cap, "node %u's samples %s have %llu features, the model's input %d",
                 h->node_id, shape_str(a, sizeof a, h->rank, h->shape), (unsigned long long)dim,
                 o->cfg.model->in_dim);
        return 1;
    }
    if (h->classes > (uint32_t)o->classes) {
        snprintf(why, cap, "node %u has %u classes, the model's output %d", h->node_id,
                 h->classes, o->classes);
        return 1;
    }
    if (!o->have_desc) return 0;
    if (h->rank != o->rank || memcmp(h->shape, o->shape, sizeof o->shape) || h->elem != o->elem) {
        snprintf(why, cap, "node %u's samples are %s %s, the other nodes' %s %s", h->node_id,
                 h->elem ? "float32" : "uint8", shape_str(a, sizeof a, h->rank, h->shape),
                 o->elem ? "float32" : "uint8", shape_str(b, sizeof b, o->rank, o->shape));
        return 1;
    }
    if (h->labels_hash != o->labels_hash) {
        snprintf(why, cap, "node %u's label names differ from the other nodes' (their class "
                 "numbers would not agree)", h->node_id);
        return 1;
    }
    return 0;
}

/* WELCOME for the node of p (its HELLO recorded in p's peer): the run's
 * configuration, compression and shared memory if it offered them. */
static void send_welcome(tl_orch *o, tl_peer *p) {
    peer *u = OP(p);
    node_slot *s = &o->nodes[u->node];
    const uint16_t flags = u->hello_flags;
    tl_msg m = {.type = TL_MSG_WELCOME};
    tl_msg_welcome *w = &m.u.welcome;
    const tl_runcfg *run = o->cfg.run;
    int zstd = o->cfg.zstd && (flags & TL_HELLO_F_ZSTD);
    /* shared memory: offered by the node, possible on this connection (a
     * unix socket, nothing queued before WELCOME) */
    int shm = o->shm.p && (flags & TL_HELLO_F_SHM) && tl_peer_can_pass_fds(p);
    /* a fresh gradient region for every connection: whatever an old process of
     * this node still writes goes to the old one */
    if (s->grads && s->grads == s->gshm.p) s->grads = NULL; /* that batch is replayed */
    if (s->q && (const void *)s->q == (const void *)s->gshm.p) s->q = NULL;
    if (s->gshm.p) tl_shm_free(&s->gshm);
    if (shm && tl_shm_create((o->sealed ? sizeof(uint64_t) : sizeof(float)) * o->p_node,
                             &s->gshm) < 0) {
        olog(o, "node %d: no shared memory (%s): using the socket", u->node + 1, tl_errmsg());
        shm = 0;
    }
    w->run_id = o->run_id;
    w->flags = (zstd ? TL_WELCOME_F_ZSTD : 0) | (shm ? TL_WELCOME_F_SHM : 0);
    w->cut = (uint32_t)o->cut;
    w->mode = (uint32_t)run->mode;
    w->n_classes = (uint32_t)o->classes;
    w->input_dim = (uint32_t)o->cfg.model->in_dim;
    tl_norm nm;
    if (o->norm_ready) nm = o->norm; /* combined from the nodes' STATS */
    else tl_runcfg_norm(run, &nm);
    w->mean = nm.kind == TL_NORM_SCALAR ? nm.mean : 0.0f; /* none: (v - 0) / 1, exact */
    w->std = nm.kind == TL_NORM_SCALAR ? nm.std : 1.0f;
    if (nm.kind == TL_NORM_FEATURE) { /* dim checked by tl_orch_new */
        w->norm = TL_WELCOME_NORM_FEATURE;
        w->mean_f = tl_tensor_1d(TL_DT_F32, nm.mean_f, (uint32_t)nm.dim);
        w->std_f = tl_tensor_1d(TL_DT_F32, nm.std_f, (uint32_t)nm.dim);
    }
    w->heartbeat_ms = (uint32_t)o->cfg.heartbeat_ms;
    if (o->sealed) sealed_welcome(o, w);
    snprintf(w->model, sizeof w->model, "%s", o->cfg.model->spec);
    if (tl_peer_send(p, &m) < 0) {
        close_with_error(o, p, TL_ENOMEM, tl_errmsg());
        return;
    }
    if (shm) tl_peer_pass_shm(p, &o->shm, &s->gshm);
    if (zstd) tl_peer_set_zstd(p);
    /* nothing is recorded for the node until it says READY */
    u->st = PEER_WELCOMED;
}

static void on_hello(tl_orch *o, tl_peer *p, const tl_msg_hello *h) {
    char why[512];
    const int n = o->cfg.n_nodes;
    if (h->proto_version != TL_PROTO_VERSION) {
        snprintf(why, sizeof why, "protocol version %u, this orchestrator speaks %d",
                 h->proto_version, TL_PROTO_VERSION);
        reject(o, p, TL_REJECT_VERSION, why);
        return;
    }
    if (h->node_id < 1 || h->node_id > (uint32_t)n) {
        snprintf(why, sizeof why, "node id %u is out of range: this run has nodes 1..%d",
                 h->node_id, n);
        reject(o, p, TL_REJECT_ID_OUT_OF_RANGE, why);
        return;
    }
    if (o->cfg.tls && tl_tls_check_node_id(tl_peer_conn(p), (int)h->node_id) < 0) {
        reject(o, p, TL_REJECT_NOT_AUTHENTICATED, tl_errmsg());
        return;
    }
    if (h->sample_count == 0) {
        reject(o, p, TL_REJECT_BAD_HELLO, "a node needs samples");
        return;
    }
    if (h->sample_count > UINT32_MAX) { /* FORWARD's rows are u32 local indices */
        snprintf(why, sizeof why, "%llu samples: rows travel as u32, so a node holds at most "
                 "%u", (unsigned long long)h->sample_count, UINT32_MAX);
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return;
    }
    if ((int)h->privacy != o->cfg.privacy) {
        snprintf(why, sizeof why, "node %u wants %s mode, this run is %s (both sides' "
                 "--privacy must agree)", h->node_id, h->privacy ? "sealed" : "open",
                 o->cfg.privacy ? "sealed" : "open");
        reject(o, p, TL_REJECT_PRIVACY, why);
        return;
    }
    if (o->sealed && o->have_key_id && memcmp(h->key_id, o->key_id, sizeof o->key_id)) {
        char mine[33], theirs[33];
        tl_group_key_id_hex(o->key_id, mine);
        tl_group_key_id_hex(h->key_id, theirs);
        snprintf(why, sizeof why, "node %u holds another group's key (key id %s, the run's is "
                 "%s%s)", h->node_id, theirs, mine,
                 o->cfg.have_key_id ? ", from the orchestrator's kit" : ", the first node's");
        reject(o, p, TL_REJECT_GROUP_KEY, why);
        return;
    }
    node_slot *s = &o->nodes[h->node_id - 1];
    tl_peer *old = s->p ? s->p : s->pending;
    if (old && o->cfg.tls && s->seen && s->fingerprint == h->fingerprint &&
        s->count == h->sample_count) {
        /* authenticated by its certificate, with the same data: the node came
         * back on a new connection while the old one looks open (a silent
         * path). The new one wins. */
        char msg[400];
        snprintf(msg, sizeof msg, "superseded by a new connection from %s", tl_peer_name(p));
        if (old == s->p) lose_node(o, old, msg);
        else {
            olog(o, "closed %s: %s", tl_peer_name(old), msg);
            close_with_error(o, old, TL_ECLOSED, msg);
        }
        old = NULL;
    }
    if (old) {
        snprintf(why, sizeof why, "node %u is already connected (from %s)", h->node_id,
                 tl_peer_name(old));
        reject(o, p, TL_REJECT_DUPLICATE_ID, why);
        return;
    }
    uint32_t code = data_conflict(o, (int)h->node_id - 1, h->sample_count, h->fingerprint, why,
                                  sizeof why);
    if (code) {
        reject(o, p, code, why);
        return;
    }
    if (data_mismatch(o, h, why, sizeof why)) {
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return;
    }
    /* nothing is recorded for the node until it says READY */
    s->pending = p;
    peer *u = OP(p);
    u->count = h->sample_count;
    u->fingerprint = h->fingerprint;
    u->test_count = h->test_count;
    u->node = (int)h->node_id - 1;
    u->hello_flags = h->flags;
    snprintf(u->version, sizeof u->version, "%s", h->version);
    memcpy(u->key_id, h->key_id, sizeof u->key_id);
    if (!o->have_desc && h->rank) { /* the run's data is this node's kind from now on */
        o->have_desc = 1;
        o->elem = h->elem;
        o->rank = h->rank;
        memcpy(o->shape, h->shape, sizeof o->shape);
        o->labels_hash = h->labels_hash;
        /* float samples may be anything: no bound on |x| (nor on what follows from it) */
        if (h->elem == TL_ELEM_WIRE_F32) o->bounds.x_max = INFINITY;
    }
    if (o->std_pending && !o->norm_ready) {
        /* standardize: the node's sums first; WELCOME once every node's are in */
        tl_msg m = {.type = TL_MSG_STATS_REQUEST};
        m.u.stats_request.what = TL_STATS_NORM;
        tl_peer_set_max_frame(p, TL_FRAME_HANDSHAKE_MAX + (uint64_t)16 * o->cfg.model->in_dim);
        if (tl_peer_send(p, &m) < 0) {
            s->pending = NULL;
            close_with_error(o, p, TL_ENOMEM, tl_errmsg());
            return;
        }
        u->st = PEER_STATS;
        return;
    }
    send_welcome(o, p);
}

/* READY: the node checked WELCOME against its data and takes part. Only now
 * is it registered, with the sample count and fingerprint of its HELLO. */
static void on_ready(tl_orch *o, tl_peer *p, const tl_msg_ready *r) {
    char why[512];
    peer *u = OP(p);
    const int k = u->node;
    node_slot *s = &o->nodes[k];
    if (r->run_id != o->run_id) {
        snprintf(why, sizeof why, "READY for run %016llx, this run is %016llx",
                 (unsigned long long)r->run_id, (unsigned long long)o->run_id);
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return;
    }
    /* another node may have registered the same data since our HELLO */
    uint32_t code = data_conflict(o, k, u->count, u->fingerprint, why, sizeof why);
    if (code) {
        reject(o, p, code, why);
        return;
    }
    const tl_runcfg *run = o->cfg.run;
    /* From now on the largest legitimate frame from the node is its gradient,
     * a full batch of cut activations with output gradients (or labels), or an
     * ERROR (a string). */
    uint64_t big = (uint64_t)o->p_node * (o->sealed ? 4 * (1 + TL_OPTIM_MAX_STATE) : 4) +
                   (o->sealed ? 64 * 1024 : 0), /* sealed: a STATE_BLOB */
             rows = (uint64_t)run->batch_size * ((uint64_t)o->dc + (uint64_t)o->classes) * 4;
    uint64_t cap = (big > rows ? big : rows) + 4096;
    const uint64_t ev = tl_evalstats_size(o->classes, TL_EVAL_BINS) + 64; /* EVAL_RESULT */
    if (cap < ev) cap = ev;
    tl_peer_set_max_frame(p, cap > TL_FRAME_HANDSHAKE_MAX ? cap : TL_FRAME_HANDSHAKE_MAX);
    if (o->sealed && !o->have_key_id) { /* no kit: the first node's key is the group's */
        if (o->registered == 0) {
            memcpy(o->key_id, u->key_id, sizeof o->key_id);
            o->have_key_id = 1;
        } else if (memcmp(u->key_id, o->key_id, sizeof o->key_id)) {
            snprintf(why, sizeof why, "node %d holds another group's key", k + 1);
            reject(o, p, TL_REJECT_GROUP_KEY, why);
            return;
        }
    }
    tl_peer_set_registered(p, 1);
    if (!s->seen) o->registered++;
    s->seen = 1;
    s->count = u->count;
    s->fingerprint = u->fingerprint;
    s->test_count = u->test_count;
    s->pending = NULL;
    s->p = p;
    s->exp = EXPECT_NONE;
    u->st = PEER_READY;
    u->hb_window = tl_now_ms();
    u->hb_count = u->hb_over = 0;
    s->have_mac = 0;
    s->sums_sent = 0;
    s->ckpt_wait = 0;
    s->donor = -1;
    s->need_state = o->sealed && r->state_step != o->step;
    if (s->need_state && r->state_step != TL_STATE_NONE)
        olog(o, "node %d holds the node side of step %llu, the run is at step %llu", k + 1,
             (unsigned long long)r->state_step, (unsigned long long)o->step);
    olog(o, "node %d joined from %s (%llu samples, %s%s, %s%s)", k + 1, tl_peer_name(p),
         (unsigned long long)u->count, tl_peer_transport(p), s->gshm.p ? ", shared memory" : "",
         u->version, o->sealed ? ", sealed" : "");
}

/* ------------------------------------------------------- batch results */

/* FORWARD_RESULT: check it, then copy its rows into the concatenated buffers. */
static int on_fwd_result(tl_orch *o, node_slot *s, const tl_msg_forward_result *r) {
    if (s->exp == EXPECT_STALE && r->step == o->step) {
        s->exp = EXPECT_NONE; /* the answer to an abandoned request */
        return 0;
    }
    if (s->exp != EXPECT_FWD || r->step != o->step)
        return tl_error(TL_EPROTO, "unexpected FORWARD_RESULT (step %llu)",
                        (unsigned long long)r->step);
    uint32_t hd[2] = {(uint32_t)s->n, (uint32_t)o->dc};
    int rc = tl_tensor_check(&r->h, TL_DT_F32, 2, hd, "FORWARD_RESULT h");
    if (rc == 0) rc = tl_tensor_check_finite(&r->h, "FORWARD_RESULT h");
    if (rc < 0) return rc;
    if (o->cfg.run->mode == TL_MODE_TRAVERSE) {
        uint32_t gd[2] = {(uint32_t)s->n, (uint32_t)o->classes};
        if ((rc = tl_tensor_check(&r->g, TL_DT_F32, 2, gd, "FORWARD_RESULT g")) < 0 ||
            (rc = tl_tensor_check_finite(&r->g, "FORWARD_RESULT g")) < 0)
            return rc;
        if (!isfinite(r->loss_sum) || r->loss_sum < 0 || r->correct > s->n)
            return tl_error(TL_EPROTO, "FORWARD_RESULT: loss %g / correct %u make no sense",
                            r->loss_sum, r->correct);
        memcpy(o->G + s->first * o->classes, r->g.data, sizeof(float) * s->n * o->classes);
        s->loss_sum = r->loss_sum;
        s->correct = r->correct;
    } else {
        uint32_t ld = (uint32_t)s->n;
        if ((rc = tl_tensor_check(&r->labels, TL_DT_I32, 1, &ld, "FORWARD_RESULT labels")) < 0 ||
            (rc = tl_tensor_check_below(&r->labels, (uint64_t)o->classes, "FORWARD_RESULT labels")) < 0)
            return rc;
        memcpy(o->labels + s->first, r->labels.data, sizeof(int32_t) * s->n);
    }
    memcpy(o->ws.h[o->cut] + s->first * o->dc, r->h.data, sizeof(float) * s->n * o->dc);
    /* finite is not enough (FLT_MAX overflows the step): no more than an honest node can send */
    /* sealed: without the node side there is no bound on h or the loss, only on g */
    if ((!o->sealed && (rc = tl_bounds_check_h(&o->bounds, o->ws.h[o->cut] + s->first * o->dc,
                                               s->n, "FORWARD_RESULT h")) < 0) ||
        (o->cfg.run->mode == TL_MODE_TRAVERSE &&
         ((rc = tl_bounds_check_g(o->G + s->first * o->classes, s->n * o->classes,
                                  "FORWARD_RESULT g")) < 0 ||
          (!o->sealed &&
           (rc = tl_bounds_check_loss(&o->bounds, r->loss_sum, s->n, "FORWARD_RESULT")) < 0))))
        return rc;
    s->exp = EXPECT_DONE;
    return 0;
}

/* acc = g (first) or acc += g, in one pass that also notes whether g holds a
 * NaN or Inf (exponent all ones); returns nonzero if it does. */
static int add_checked(float *restrict acc, const float *restrict g, size_t n, int first) {
    uint32_t bad = 0;
    if (first)
        for (size_t i = 0; i < n; i++) {
            uint32_t u; /* the bits, read without type punning (compiles to a load) */
            memcpy(&u, &g[i], sizeof u);
            acc[i] = g[i];
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
    else
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &g[i], sizeof u);
            acc[i] += g[i];
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
    return bad != 0;
}

/* add_checked on memory the node may still be writing: each element is read
 * once (copied a chunk at a time, then checked against bd and for NaN/Inf,
 * and added from the copy), so what is checked is what is added. Returns
 * nonzero on NaN/Inf; *rc < 0 (the message recorded) if bd fails. */
static int add_checked_shared(float *restrict acc, const float *g, size_t n, int first,
                              const tl_bounds *bd, int *rc) {
    enum { CHUNK = 2048 };
    float tmp[CHUNK];
    int bad = 0;
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        memcpy(tmp, g + i, sizeof(float) * k);
        __asm__ volatile("" ::: "memory"); /* the copy is taken before the checks */
        if ((*rc = tl_bounds_check_grads(bd, tmp, i, k, "BACKWARD_RESULT grads")) < 0) return 1;
        bad |= add_checked(acc + i, tmp, k, first);
    }
    return bad;
}

/* Adds the node gradients that have arrived into the batch's gradient, in
 * plan order: part k only after parts 0..k-1. Done as results come in, so the
 * sum overlaps the wait for slower nodes. A gradient with NaN or Inf loses
 * its node (the batch is then replayed). */
static void accumulate(tl_orch *o) {
    const tl_batch *b = o->cur_batch;
    if (o->sealed) {
        sealed_accumulate(o);
        return;
    }
    while (o->acc_next < b->n_parts) {
        node_slot *s = &o->nodes[b->parts[o->acc_next].node];
        if (!s->grads) return;
        /* no more than an honest node can produce from the dH rows it was sent */
        const tl_batch_part *part = &b->parts[o->acc_next];
        tl_bounds_backward(&o->bounds, o->dH + part->first * o->dc, part->count);
        int rc = s->gbuf ? tl_bounds_check_grads(&o->bounds, s->grads, 0, o->p_node,
                                                 "BACKWARD_RESULT grads")
                         : 0;
        int bad = rc < 0 ? 1
                  : s->gbuf ? add_checked(o->cur_grads, s->grads, o->p_node, o->acc_next == 0)
                            : add_checked_shared(o->cur_grads, s->grads, o->p_node,
                                                 o->acc_next == 0, &o->bounds, &rc);
        if (s->gbuf && s->p) tl_peer_recycle_payload(s->p, s->gbuf, s->gcap);
        else free(s->gbuf);
        s->gbuf = NULL;
        s->grads = NULL;
        if (bad) {
            if (s->p)
                lose_node(o, s->p, rc < 0 ? tl_errmsg()
                                          : "BACKWARD_RESULT grads: not all finite (NaN or Inf)");
            return;
        }
        o->acc_next++;
    }
}

/* BACKWARD_RESULT: check it and add it in (accumulate keeps plan order). */
static int on_bwd_result(tl_orch *o, tl_peer *p, node_slot *s, const tl_msg_backward_result *r) {
    if (s->exp == EXPECT_STALE && r->step == o->step) {
        s->exp = EXPECT_NONE; /* the answer to an abandoned request */
        return 0;
    }
    if (s->exp != EXPECT_BWD || r->step != o->step)
        return tl_error(TL_EPROTO, "unexpected BACKWARD_RESULT (step %llu)",
                        (unsigned long long)r->step);
    uint32_t pd = s->gshm.p ? 0 : (uint32_t)o->p_node; /* shared: the node wrote them in gshm */
    int rc = tl_tensor_check(&r->grads, o->sealed ? TL_DT_U64 : TL_DT_F32, 1, &pd,
                             "BACKWARD_RESULT grads");
    if (rc < 0) return rc;
    if (o->sealed) {
        if (s->gshm.p) {
            s->q = (const uint64_t *)(void *)s->gshm.p;
        } else {
            s->gbuf = tl_peer_take_payload(p, &s->gcap);
            s->q = r->grads.data;
        }
    } else if (s->gshm.p) {
        s->grads = s->gshm.p;
    } else {
        s->gbuf = tl_peer_take_payload(p, &s->gcap);
        s->grads = r->grads.data;
    }
    s->exp = EXPECT_DONE;
    accumulate(o);
    return 0;
}

/* One complete frame from peer p. Returns 0, or < 0 if p was dropped/closed. */
/* STATS: a node's count, per-feature sums and sums of squares (its training
 * rows; docs/protocol.md §5.2), checked: the run's width, HELLO's count,
 * finite, sums of squares >= 0. Once every node's are in: combined in node
 * order, finished (norm.h), and every node waiting gets its WELCOME. A bad
 * STATS is refused (REJECT BAD_HELLO) with the reason. */
static int on_stats(tl_orch *o, tl_peer *p, const tl_msg_stats *st) {
    peer *u = OP(p);
    node_slot *s = &o->nodes[u->node];
    const uint32_t dim = (uint32_t)o->cfg.model->in_dim;
    char why[256];
    int rc = tl_tensor_check(&st->sum, TL_DT_F64, 1, &dim, "STATS sum");
    if (rc == 0) rc = tl_tensor_check(&st->sumsq, TL_DT_F64, 1, &dim, "STATS sumsq");
    if (rc == 0 && st->count != u->count)
        rc = tl_error(TL_EPROTO, "STATS: %llu rows, but HELLO said %llu",
                      (unsigned long long)st->count, (unsigned long long)u->count);
    const double *sum = st->sum.data, *sq = st->sumsq.data;
    for (uint32_t f = 0; rc == 0 && f < dim; f++)
        if (!isfinite(sum[f]) || !isfinite(sq[f]) || sq[f] < 0)
            rc = tl_error(TL_EPROTO, "STATS: feature %u has sum %g, sum of squares %g", f,
                          sum[f], sq[f]);
    if (rc < 0) {
        snprintf(why, sizeof why, "%s", tl_errmsg());
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return -1;
    }
    tl_norm_stats_free(&s->st);
    if ((rc = tl_norm_stats_init(&s->st, dim)) < 0) {
        close_with_error(o, p, rc, tl_errmsg());
        return -1;
    }
    s->st.count = st->count;
    memcpy(s->st.sum, sum, sizeof(double) * dim);
    memcpy(s->st.sumsq, sq, sizeof(double) * dim);
    s->st_in = 1;
    for (int k = 0; k < o->cfg.n_nodes; k++)
        if (!o->nodes[k].st_in) return 0; /* WELCOME when all are in */
    tl_norm_stats total;
    if ((rc = tl_norm_stats_init(&total, dim)) < 0) return rc;
    for (int k = 0; k < o->cfg.n_nodes && rc == 0; k++)
        rc = tl_norm_stats_combine(&total, &o->nodes[k].st);
    if (rc == 0) rc = tl_norm_finish(&total, &o->norm);
    const uint64_t rows = total.count;
    tl_norm_stats_free(&total);
    if (rc < 0) {
        olog(o, "standardize: %s", tl_errmsg());
        close_with_error(o, p, rc, tl_errmsg());
        return -1;
    }
    o->norm_ready = 1;
    olog(o, "standardize: per-feature means and deviations of the nodes' %llu training rows, "
            "from their sums", (unsigned long long)rows);
    const int64_t now = tl_now_ms();
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *q = tl_server_peer(o->srv, i);
        if (OP(q)->st != PEER_STATS) continue;
        OP(q)->deadline = now + o->cfg.handshake_timeout_ms; /* from now on to READY */
        send_welcome(o, q);
    }
    return 0;
}

/* EVAL_RESULT: the node's evaluation sums, decoded as hostile (evalstats.h)
 * with the classes and bins asked for; n must be its held-out row count. */
static int on_eval_result(tl_orch *o, node_slot *s, const tl_msg_eval_result *r) {
    if (s->exp == EXPECT_STALE && r->step == o->eval_step) {
        s->exp = EXPECT_NONE; /* the answer to an abandoned request */
        return 0;
    }
    if (s->exp != EXPECT_EVAL || r->step != o->eval_step)
        return tl_error(TL_EPROTO, "unexpected EVAL_RESULT (step %llu)",
                        (unsigned long long)r->step);
    uint32_t words = (uint32_t)(tl_evalstats_size(s->ev.classes, s->ev.bins) / 8);
    int rc = tl_tensor_check(&r->stats, TL_DT_U64, 1, &words, "EVAL_RESULT stats");
    if (rc == 0) rc = tl_evalstats_decode(&s->ev, r->stats.data, (size_t)words * 8);
    if (rc < 0) return rc;
    if (s->ev.n != s->test_count)
        return tl_error(TL_EPROTO, "EVAL_RESULT: %llu rows evaluated, but the node has %llu "
                        "held-out rows", (unsigned long long)s->ev.n,
                        (unsigned long long)s->test_count);
    s->exp = EXPECT_DONE;
    return 0;
}

static int on_frame(void *ud, tl_peer *p, const tl_frame *f) {
    tl_orch *o = ud;
    peer *u = OP(p);
    tl_msg m;
    int rc = tl_msg_decode(f, &m);
    o->stats.bytes_in += f->wire_len;
    if (rc < 0) {
        if (u->st == PEER_READY) lose_node(o, p, tl_errmsg());
        else {
            olog(o, "closed %s: %s", tl_peer_name(p), tl_errmsg());
            close_with_error(o, p, rc, tl_errmsg());
        }
        return -1;
    }
    if (u->st == PEER_HELLO) {
        if (m.type != TL_MSG_HELLO) {
            char why[128];
            snprintf(why, sizeof why, "expected HELLO, got %s", tl_msg_type_name(m.type));
            reject(o, p, TL_REJECT_BAD_HELLO, why);
            return -1;
        }
        on_hello(o, p, &m.u.hello);
        return u->st == PEER_WELCOMED || u->st == PEER_STATS ? 0 : -1;
    }
    if (u->st == PEER_STATS) {
        char why[TL_MSG_STR_MAX + 64];
        if (m.type == TL_MSG_STATS) return on_stats(o, p, &m.u.stats);
        if (m.type == TL_MSG_HEARTBEAT) return 0;
        if (m.type == TL_MSG_ERROR) {
            snprintf(why, sizeof why, "node %d declined the run: %s", u->node + 1,
                     m.u.error.message);
            olog(o, "closed %s: %s", tl_peer_name(p), why);
            close_with_error(o, p, TL_ECLOSED, why);
            return -1;
        }
        snprintf(why, sizeof why, "expected STATS, got %s", tl_msg_type_name(m.type));
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return -1;
    }
    if (u->st == PEER_WELCOMED) {
        char why[TL_MSG_STR_MAX + 64];
        if (m.type == TL_MSG_READY) {
            on_ready(o, p, &m.u.ready);
            return u->st == PEER_READY ? 0 : -1;
        }
        if (m.type == TL_MSG_HEARTBEAT) return 0;
        if (m.type == TL_MSG_ERROR) { /* the node cannot take part (its data does not fit) */
            snprintf(why, sizeof why, "node %d declined the run: %s", u->node + 1,
                     m.u.error.message);
            olog(o, "closed %s: %s", tl_peer_name(p), why);
            close_with_error(o, p, TL_ECLOSED, why);
            return -1;
        }
        snprintf(why, sizeof why, "expected READY, got %s", tl_msg_type_name(m.type));
        reject(o, p, TL_REJECT_BAD_HELLO, why);
        return -1;
    }
    if (u->st != PEER_READY) return -1;
    node_slot *s = &o->nodes[u->node];
    switch (m.type) {
    case TL_MSG_FORWARD_RESULT: rc = on_fwd_result(o, s, &m.u.fwd_result); break;
    case TL_MSG_BACKWARD_RESULT: rc = on_bwd_result(o, p, s, &m.u.bwd_result); break;
    case TL_MSG_PARAM_MAC: rc = on_param_mac(o, u->node, &m.u.param_mac); break;
    case TL_MSG_EVAL_RESULT: rc = on_eval_result(o, s, &m.u.eval_result); break;
    case TL_MSG_STATE_BLOB: rc = on_state_blob(o, p, u->node, &m); break;
    case TL_MSG_CHECKPOINT:
        if (!o->sealed || !s->ckpt_wait || m.u.checkpoint.step != o->step)
            rc = tl_error(TL_EPROTO, "unexpected CHECKPOINT (step %llu)",
                          (unsigned long long)m.u.checkpoint.step);
        else
            s->ckpt_wait = 0;
        break;
    case TL_MSG_HEARTBEAT: {
        /* a node sends one per heartbeat interval when it has nothing else to
         * say: far more, second after second, is a flood (a backlog after we
         * were busy arrives at once, but only once) */
        const int hb = o->cfg.heartbeat_ms;
        const int limit = hb > 0 && 10000 / hb > FLOOD_FRAMES_PER_S ? 10000 / hb
                                                                    : FLOOD_FRAMES_PER_S;
        int64_t now = tl_now_ms();
        rc = 0;
        if (now - u->hb_window >= 1000) {
            u->hb_over = u->hb_count > limit && now - u->hb_window < 2000 ? u->hb_over + 1 : 0;
            u->hb_window = now;
            u->hb_count = 0;
            if (u->hb_over >= FLOOD_SECONDS)
                rc = tl_error(TL_EPROTO, "flooding: more than %d heartbeats a second for %d "
                              "seconds (the interval is %d ms)", limit, FLOOD_SECONDS, hb);
        }
        u->hb_count++;
        break;
    }
    case TL_MSG_ERROR:
        rc = tl_error(TL_EPROTO, "the node reported: %s", m.u.error.message);
        break;
    default: rc = tl_error(TL_EPROTO, "a node may not send %s", tl_msg_type_name(m.type));
    }
    if (rc < 0) {
        lose_node(o, p, tl_errmsg());
        return -1;
    }
    return 0;
}

/* ------------------------------------------------- the server's callbacks */

/* The reasons given to a node whose setting does not match ours. */
#define WANT_TLS "this orchestrator requires TLS 1.3 with certificates: run the node with " \
                 "--tls-dir, not --insecure"
#define WANT_PLAIN "this orchestrator runs --insecure (plaintext): give the node --insecure " \
                   "too, or the orchestrator --tls-dir"

static void on_accepted(void *ud, tl_peer *p) {
    tl_orch *o = ud;
    OP(p)->node = -1;
    OP(p)->st = PEER_HELLO;
    OP(p)->deadline = tl_now_ms() + o->cfg.handshake_timeout_ms;
}

/* Reading (or writing) p failed: transport and frame errors already name the peer. */
static void on_failed(void *ud, tl_peer *p, int rc, int writing) {
    tl_orch *o = ud;
    peer *u = OP(p);
    if (u->st == PEER_READY) lose_node(o, p, tl_errmsg());
    else if (writing) return;
    else if (u->st == PEER_HELLO && rc == TL_ETLS && !o->cfg.tls) /* a TLS node */
        reject(o, p, TL_REJECT_NOT_AUTHENTICATED, WANT_PLAIN);
    else olog(o, "closed %s", tl_errmsg());
}

/* A plaintext node at a TLS orchestrator: refused in its own protocol. */
static void on_plaintext(void *ud, tl_peer *p) {
    tl_orch *o = ud;
    olog(o, "refused %s: the node speaks plaintext (it runs --insecure) and this orchestrator "
            "requires TLS", tl_peer_name(p));
    tl_msg m = {.type = TL_MSG_REJECT};
    m.u.reject.code = TL_REJECT_NOT_AUTHENTICATED;
    snprintf(m.u.reject.reason, sizeof m.u.reject.reason, "%s", WANT_TLS);
    close_with(o, p, &m);
}

/* Timers: handshake deadlines, heartbeats, silent nodes. */
static void on_timer(void *ud) {
    tl_orch *o = ud;
    int64_t now = tl_now_ms();
    const int hb = o->cfg.heartbeat_ms;
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *p = tl_server_peer(o->srv, i);
        peer *u = OP(p);
        tl_peer_state ps = tl_peer_get_state(p);
        if ((ps == TL_PEER_TLS || ps == TL_PEER_OPEN) &&
            (u->st == PEER_HELLO || u->st == PEER_WELCOMED)) {
            if (now > u->deadline) {
                olog(o, "closed %s: no handshake within %d ms", tl_peer_name(p),
                     o->cfg.handshake_timeout_ms);
                close_with_error(o, p, TL_ETIMEDOUT, "handshake timed out");
            }
        } else if (u->st == PEER_STATS) {
            /* waiting for the other nodes' STATS: keep its handshake alive */
            if (now - tl_peer_last_sent(p) >= 5000 && tl_peer_idle(p)) {
                tl_msg m = {.type = TL_MSG_HEARTBEAT};
                m.u.heartbeat.nonce = (uint64_t)now;
                tl_peer_send(p, &m);
            }
        } else if (u->st == PEER_READY && hb > 0) {
            if (now - tl_peer_last_recv(p) > 4 * (int64_t)hb) {
                lose_node(o, p, "silent for more than 4 heartbeats");
            } else if (now - tl_peer_last_sent(p) >= hb && tl_peer_idle(p)) {
                tl_msg m = {.type = TL_MSG_HEARTBEAT};
                m.u.heartbeat.nonce = (uint64_t)now;
                tl_peer_send(p, &m);
            }
        }
    }
}

/* One round of the server: I/O, then the timers. */
static void pump(tl_orch *o, int64_t deadline) { tl_server_round(o->srv, deadline); }

/* -------------------------------------------------------------- public */

int tl_orch_new(const tl_orch_cfg *cfg, tl_orch **out) {
    int rc;
    tl_orch *o = calloc(1, sizeof *o);
    if (!o) return tl_error(TL_ENOMEM, "orchestrator: out of memory");
    o->cfg = *cfg;
    o->lost_node = -1;
    const tl_model *m = cfg->model;
    const tl_runcfg *run = cfg->run;
    if (run->norm.kind == TL_NORM_FEATURE && run->norm.dim &&
        run->norm.dim != (size_t)m->in_dim) {
        rc = tl_error(TL_EINVAL, "the normalization has %zu features, the model's input %d",
                      run->norm.dim, m->in_dim);
        goto fail;
    }
    /* standardize without the values: from the nodes' STATS (§5.2) */
    o->std_pending = run->norm.kind == TL_NORM_FEATURE && run->norm.dim == 0;
    if ((rc = tl_model_cut_modules(m, run->cut, &o->cut)) < 0) goto fail;
    o->p_node = tl_model_param_offset(m, o->cut);
    o->p_sent = run->mode == TL_MODE_TRAVERSE ? m->n_params : o->p_node;
    o->sealed = cfg->privacy == TL_PRIVACY_SEALED;
    if (o->sealed) { /* FORWARD carries the orchestrator side (traverse) or nothing */
        o->p_sent = run->mode == TL_MODE_TRAVERSE ? m->n_params - o->p_node : 0;
        o->have_key_id = cfg->have_key_id;
        memcpy(o->key_id, cfg->key_id, sizeof o->key_id);
        o->qsum = malloc(sizeof(uint64_t) * (o->p_node ? o->p_node : 1));
        o->ids = malloc(sizeof(uint32_t) * (size_t)cfg->n_nodes);
        if (!o->qsum || !o->ids) {
            rc = tl_error(TL_ENOMEM, "orchestrator: out of memory");
            goto fail;
        }
        if ((rc = tl_sched_init(&o->sched, run->sched, run->optim.lr, run->gamma,
                                run->step_size, run->epochs)) < 0)
            goto fail;
    }
    o->dc = tl_model_width(m, o->cut);
    o->classes = m->n_classes;
    o->nodes = calloc((size_t)cfg->n_nodes, sizeof *o->nodes);
    o->G = malloc(sizeof(float) * (size_t)run->batch_size * o->classes);
    o->dH = malloc(sizeof(float) * (size_t)run->batch_size * o->dc);
    o->labels = malloc(sizeof(int32_t) * (size_t)run->batch_size);
    if (!o->nodes || !o->G || !o->dH || !o->labels) {
        rc = tl_error(TL_ENOMEM, "orchestrator: out of memory");
        goto fail;
    }
    for (int i = 0; i < cfg->n_nodes; i++)
        if (!(o->nodes[i].rows_u32 = malloc(sizeof(uint32_t) * (size_t)run->batch_size))) {
            rc = tl_error(TL_ENOMEM, "orchestrator: out of memory");
            goto fail;
        }
    if ((rc = tl_ws_init(&o->ws, m, run->batch_size)) < 0) goto fail;
    /* |x| is bounded for bytes scaled to [0, 1] then normalized by a scalar;
     * per-feature normalization (or float data, see on_hello) bounds nothing */
    const double x_max = run->norm.kind == TL_NORM_FEATURE ? INFINITY
                         : run->norm.kind == TL_NORM_NONE  ? tl_bounds_x_max(0.0f, 1.0f)
                                                           : tl_bounds_x_max(run->mean, run->std);
    if ((rc = tl_bounds_init(&o->bounds, m, o->cut, x_max)) < 0)
        goto fail;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    o->run_id = ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 40);
    tl_server_cfg sc = {
        .host = cfg->host,
        .port = cfg->port,
        .tls = cfg->tls,
        .max_pending = cfg->max_pending,
        .tick_ms = cfg->heartbeat_ms > 0 ? cfg->heartbeat_ms / 4 : 500,
        .user_size = sizeof(peer),
        .cb = {.ud = o, .accepted = on_accepted, .frame = on_frame, .failed = on_failed,
               .plaintext = on_plaintext, .dropped = on_dropped, .timer = on_timer,
               .log = o->cfg.log ? server_log : NULL},
    };
    if ((rc = tl_server_new(&sc, &o->srv)) < 0) goto fail;
    if (!cfg->no_shm && o->p_sent && tl_server_local(o->srv) &&
        tl_shm_create_readonly(sizeof(float) * o->p_sent, &o->shm) < 0)
        olog(o, "parameters go over the sockets: %s", tl_errmsg());
    *out = o;
    return 0;
fail:
    tl_orch_free(o);
    return rc;
}

int tl_orch_port(const tl_orch *o) { return tl_server_port(o->srv); }

void tl_orch_set_step(tl_orch *o, uint64_t step) { o->step = step; }

int tl_orch_serve(tl_orch *o, int timeout_ms) {
    pump(o, tl_now_ms() + (timeout_ms > 0 ? timeout_ms : 0));
    return tl_server_npeers(o->srv);
}

int tl_orch_registered(const tl_orch *o) { return o->registered; }

int tl_orch_wait_nodes(tl_orch *o, int timeout_s, uint64_t *counts, uint64_t *fingerprints) {
    const int n = o->cfg.n_nodes;
    int64_t start = tl_now_ms(), last_note = start;
    char where[600];
    tl_addr_format(o->cfg.host, tl_orch_port(o), where, sizeof where);
    olog(o, "listening on %s for %d node%s (%s)", where, n, n == 1 ? "" : "s",
         o->cfg.tls ? "TLS" : "plaintext");
    while (o->registered < n) {
        pump(o, -1);
        if (o->cfg.stop && *o->cfg.stop)
            return tl_error(TL_ESTATE, "stopped by a signal while %d of %d nodes had joined",
                            o->registered, n);
        int64_t now = tl_now_ms();
        if (timeout_s > 0 && now - start > (int64_t)timeout_s * 1000)
            return tl_error(TL_ETIMEDOUT, "only %d of %d nodes joined within %d s", o->registered,
                            n, timeout_s);
        if (now - last_note > 10000) {
            char missing[256] = "";
            size_t len = 0;
            for (int i = 0; i < n && len < sizeof missing - 16; i++)
                if (!o->nodes[i].p) len += snprintf(missing + len, sizeof missing - len, " %d", i + 1);
            olog(o, "waiting for node%s%s", strchr(missing + 1, ' ') ? "s" : "", missing);
            last_note = now;
        }
    }
    for (int i = 0; i < n; i++) {
        counts[i] = o->nodes[i].count;
        if (fingerprints) fingerprints[i] = o->nodes[i].fingerprint;
    }
    return 0;
}

/* Pumps until every node of the batch reached EXPECT_DONE. 0, or 1 if one of
 * them was lost (or timed out; it is dropped). */
static int await_batch(tl_orch *o, const tl_batch *b) {
    for (;;) {
        int waiting = 0;
        int64_t now = tl_now_ms();
        for (int i = 0; i < b->n_parts; i++) {
            node_slot *s = &o->nodes[b->parts[i].node];
            if (!s->p) return 1;
            if (s->exp == EXPECT_DONE) continue;
            if (now > s->task_deadline) {
                char why[96];
                snprintf(why, sizeof why, "no reply within %d ms", o->cfg.task_timeout_ms);
                lose_node(o, s->p, why);
                return 1;
            }
            waiting = 1;
        }
        if (!waiting) return 0;
        pump(o, -1);
    }
}

/* Sends each node of the batch its FORWARD (or BACKWARD) and waits for all
 * the replies. 0, or 1 if a node was lost. */
static int exchange(tl_orch *o, const tl_batch *b, expect exp, const float *params) {
    const uint32_t p_sent = (uint32_t)o->p_sent;
    int64_t deadline = tl_now_ms() + o->cfg.task_timeout_ms;
    const float *sent = o->sealed ? params + o->p_node : params; /* sealed: our side only */
    if (exp == EXPECT_FWD && o->shm.p) /* written once for every node that maps it */
        for (int i = 0; i < b->n_parts; i++)
            if (o->nodes[b->parts[i].node].gshm.p) {
                memcpy(o->shm.p, sent, sizeof(float) * p_sent);
                break;
            }
    if (o->sealed)
        for (int i = 0; i < b->n_parts; i++) o->ids[i] = (uint32_t)b->parts[i].node + 1;
    for (int i = 0; i < b->n_parts; i++) {
        const tl_batch_part *part = &b->parts[i];
        node_slot *s = &o->nodes[part->node];
        if (!s->p) return 1;
        tl_msg m;
        if (exp == EXPECT_FWD) {
            /* the batcher's local indices are u64; the wire carries u32 (kept in the slot
             * until the frame is out) */
            for (size_t r = 0; r < part->count; r++)
                s->rows_u32[r] = (uint32_t)b->local[part->first + r];
            m.type = TL_MSG_FORWARD;
            m.u.forward.step = o->step;
            m.u.forward.rows = tl_tensor_1d(TL_DT_U32, s->rows_u32, (uint32_t)part->count);
            m.u.forward.params = s->gshm.p && o->shm.p ? tl_tensor_1d(TL_DT_F32, NULL, 0)
                                                       : tl_tensor_1d(TL_DT_F32, sent, p_sent);
        } else {
            m.type = TL_MSG_BACKWARD;
            m.u.backward.step = o->step;
            m.u.backward.dh = tl_tensor_2d(TL_DT_F32, o->dH + part->first * o->dc,
                                           (uint32_t)part->count, (uint32_t)o->dc);
            if (o->sealed) {
                m.u.backward.attempt = o->attempt;
                m.u.backward.participants = tl_tensor_1d(TL_DT_U32, o->ids, (uint32_t)b->n_parts);
            }
        }
        s->first = part->first;
        s->n = part->count;
        s->exp = exp;
        s->task_deadline = deadline;
        if (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0) {
            lose_node(o, s->p, tl_errmsg());
            return 1;
        }
    }
    /* while the nodes compute (no reply is read before await_batch): what an
     * honest node can send back for these params */
    if (exp == EXPECT_FWD && !o->sealed) tl_bounds_forward(&o->bounds, params);
    return await_batch(o, b);
}

/* Releases the kept gradient payloads and resets the batch state. */
static void batch_reset(tl_orch *o, const tl_batch *b) {
    for (int i = 0; i < b->n_parts; i++) {
        node_slot *s = &o->nodes[b->parts[i].node];
        if (s->gbuf) {
            if (s->p) tl_peer_recycle_payload(s->p, s->gbuf, s->gcap);
            else free(s->gbuf);
        }
        s->gbuf = NULL;
        s->grads = NULL;
        s->q = NULL;
        /* a node that still owes a reply keeps owing it */
        s->exp = s->p && (s->exp == EXPECT_FWD || s->exp == EXPECT_BWD) ? EXPECT_STALE : EXPECT_NONE;
    }
}

/* The orchestrator's half of a step, between FORWARD and BACKWARD: rows of
 * H_c are in ws.h[cut]; computes the orchestrator-side gradients into grads
 * and dL/dH_c into dH. Adds the loss and correct count. */
static void central_step(tl_orch *o, const tl_batch *b, const float *params, float *grads,
                         double *loss_sum, int64_t *correct) {
    const tl_model *m = o->cfg.model;
    const int n = (int)b->n, L = m->n_modules;
    tl_model_forward(m, params, &o->ws, n, o->cut, L);
    if (o->cfg.run->mode == TL_MODE_TRAVERSE) {
        for (int i = 0; i < b->n_parts; i++) {
            node_slot *s = &o->nodes[b->parts[i].node];
            *loss_sum += s->loss_sum;
            *correct += s->correct;
        }
    } else {
        int64_t c;
        *loss_sum += tl_nll_forward(o->ws.h[L], o->labels, n, o->classes, &c);
        *correct += c;
        tl_nll_grad(o->G, o->ws.h[L], o->labels, n, o->classes);
    }
    /* G = (softmax - onehot) / B: the same two steps as centralized training. */
    tl_nll_scale(o->G, (long)n * o->classes, n);
    tl_model_backward(m, params, grads, &o->ws, n, o->cut, L, o->G, o->dH);
}

/* Waits for the nodes of b to be connected again (up to the reconnect
 * timeout) and to have answered any request of an abandoned attempt (up to
 * the task timeout; a node that does not is lost). */
static int await_nodes(tl_orch *o, const tl_batch *b) {
    int64_t now = tl_now_ms(), until = now + (int64_t)o->cfg.reconnect_timeout_s * 1000;
    int64_t stale_until = now + o->cfg.task_timeout_ms;
    for (;;) {
        int missing = -1, stale = 0;
        now = tl_now_ms();
        for (int i = 0; i < b->n_parts; i++) {
            node_slot *s = &o->nodes[b->parts[i].node];
            if (!s->p) {
                if (missing < 0) missing = b->parts[i].node;
            } else if (s->exp == EXPECT_STALE) {
                if (now > stale_until) lose_node(o, s->p, "no reply to an abandoned request");
                else stale = 1;
            }
        }
        int orphan = -1, sync = o->sealed ? sealed_sync(o, &orphan) : 0;
        if (missing < 0 && !stale && !sync) return 0;
        if (missing >= 0 && now > until)
            return tl_error(TL_ETIMEDOUT,
                            "node %d did not come back within %d s (--reconnect-timeout)",
                            missing + 1, o->cfg.reconnect_timeout_s);
        if (sync == 2 && now > until)
            return tl_error(TL_ESTATE,
                            "node %d needs the node side of step %llu and no connected node "
                            "holds it (nodes keep it in memory, and on disk for the steps the "
                            "orchestrator checkpointed: tl node --state)",
                            orphan + 1, (unsigned long long)o->step);
        if (o->cfg.stop && *o->cfg.stop)
            return tl_error(TL_ESTATE, "stopped by a signal while waiting for a lost node");
        pump(o, until);
    }
}

/* The message that stops a run whose batch failed too often: per attempt,
 * the node lost and why ("node 2 each time (...)" when it is always the same). */
static int replay_bound(tl_orch *o, const tl_batch *b, int failures, const int *who,
                        char (*why)[256]) {
    int n = failures < MAX_ATTEMPTS_LOGGED ? failures : MAX_ATTEMPTS_LOGGED, same = 1;
    for (int i = 1; i < n; i++)
        if (who[i] != who[0] || strcmp(why[i], why[0])) same = 0;
    char msg[3072];
    size_t len = (size_t)snprintf(msg, sizeof msg, "batch %zu of epoch %d failed %d times "
                                  "(--max-replays %d): ", b->index, b->epoch + 1, failures,
                                  o->cfg.max_replays);
    for (int i = 0; i < (same ? 1 : n) && len < sizeof msg; i++) {
        if (who[i] < 0)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%sattempt %d: no node named",
                                    i ? "; " : "", i + 1);
        else if (same)
            len += (size_t)snprintf(msg + len, sizeof msg - len, "node %d each time (%s)",
                                    who[i] + 1, why[i]);
        else
            len += (size_t)snprintf(msg + len, sizeof msg - len, "%sattempt %d: node %d (%s)",
                                    i ? "; " : "", i + 1, who[i] + 1, why[i]);
    }
    olog(o, "%s", msg);
    return tl_error(TL_ESTATE, "%s", msg);
}

/* The run stops with an error: tell every registered node why (ERROR; it
 * logs the reason and keeps retrying, for an orchestrator restarted with
 * --resume), waiting briefly for the messages to go out. rc is returned. */
static int stop_run(tl_orch *o, int rc) {
    char msg[TL_MSG_STR_MAX], why[TL_MSG_STR_MAX + 32];
    snprintf(msg, sizeof msg, "%s", tl_errmsg());
    snprintf(why, sizeof why, "the orchestrator stops: %s", msg);
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *p = tl_server_peer(o->srv, i);
        if (OP(p)->st == PEER_READY) close_with_error(o, p, rc, why);
    }
    int64_t until = tl_now_ms() + CLOSE_GRACE_MS;
    for (;;) {
        int busy = tl_server_count(o->srv, TL_PEER_CLOSING) > 0;
        if (!busy || tl_now_ms() >= until) break;
        pump(o, until);
    }
    return tl_error(rc, "%s", msg); /* the loop may have set another message */
}

int tl_orch_grad_fn(void *ctx, const tl_batch *b, const float *params, float *grads,
                    double *loss_sum, int64_t *correct) {
    tl_orch *o = ctx;
    const size_t n_params = o->cfg.model->n_params;
    int failures = 0, who[MAX_ATTEMPTS_LOGGED];
    char why[MAX_ATTEMPTS_LOGGED][256];
    if (o->sealed) sealed_drain(o); /* the last SEALED_STEP is out: qsum and ids are free */
    for (;;) {
        if (o->diverged[0]) return stop_run(o, tl_error(TL_ESTATE, "%s", o->diverged));
        int rc = await_nodes(o, b);
        if (rc < 0) return stop_run(o, rc);
        o->lost_node = -1;
        double ls = 0;
        int64_t corr = 0;
        o->cur_batch = b;
        o->cur_grads = grads;
        o->acc_next = 0;
        int lost = exchange(o, b, EXPECT_FWD, params);
        if (!lost) {
            central_step(o, b, params, grads, &ls, &corr);
            lost = exchange(o, b, EXPECT_BWD, params);
        }
        if (!lost && o->acc_next < b->n_parts) lost = 1; /* a gradient was not finite */
        if (!lost) {
            batch_reset(o, b);
            if (o->sealed) sealed_send_step(o, b);
            *loss_sum += ls;
            *correct += corr;
            o->stats.batches++;
            o->stats.node_batches += (uint64_t)b->n_parts;
            o->step++;
            o->attempt = 0;
            return 0;
        }
        o->attempt++; /* a replay never reuses a mask */
        /* A node was lost: forget everything this batch produced and replay it,
         * unless this batch has failed too often. */
        batch_reset(o, b);
        memset(grads, 0, sizeof(float) * n_params);
        if (failures < MAX_ATTEMPTS_LOGGED) {
            who[failures] = o->lost_node;
            snprintf(why[failures], sizeof why[failures], "%s",
                     o->lost_node >= 0 ? o->lost_why : "");
        }
        if (++failures > o->cfg.max_replays)
            return stop_run(o, replay_bound(o, b, failures, who, why));
        o->stats.replays++;
        olog(o, "epoch %d batch %zu: discarded partial results; waiting up to %d s for the "
                "node to return, then replaying the batch (replay %d of at most %d)",
             b->epoch + 1, b->index, o->cfg.reconnect_timeout_s, failures, o->cfg.max_replays);
    }
}

const tl_norm *tl_orch_norm(const tl_orch *o) { return o->norm_ready ? &o->norm : NULL; }

uint64_t tl_orch_test_rows(const tl_orch *o) {
    uint64_t n = 0;
    for (int i = 0; i < o->cfg.n_nodes; i++) n += o->nodes[i].test_count;
    return n;
}

/* Waits until every node is connected (up to the reconnect timeout) and has
 * answered any request of an abandoned attempt (up to the task timeout). */
static int await_all(tl_orch *o) {
    int64_t now = tl_now_ms(), until = now + (int64_t)o->cfg.reconnect_timeout_s * 1000;
    int64_t stale_until = now + o->cfg.task_timeout_ms;
    for (;;) {
        int missing = -1, stale = 0;
        now = tl_now_ms();
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            if (!s->p) {
                if (missing < 0) missing = i;
            } else if (s->exp == EXPECT_STALE) {
                if (now > stale_until) lose_node(o, s->p, "no reply to an abandoned request");
                else stale = 1;
            }
        }
        /* sealed: a node evaluates with its node side: it must have the run's */
        int orphan = -1, sync = o->sealed ? sealed_sync(o, &orphan) : 0;
        if (missing < 0 && !stale && !sync) return 0;
        if (missing >= 0 && now > until)
            return tl_error(TL_ETIMEDOUT,
                            "node %d did not come back within %d s (--reconnect-timeout)",
                            missing + 1, o->cfg.reconnect_timeout_s);
        if (sync == 2 && now > until)
            return tl_error(TL_ESTATE,
                            "node %d needs the node side of step %llu and no connected node "
                            "holds it", orphan + 1, (unsigned long long)o->step);
        pump(o, until);
    }
}

/* Sends every node EVAL and waits for all EVAL_RESULTs. 0, or 1 if a node
 * was lost (or timed out; it is dropped). */
static int eval_round(tl_orch *o, const float *params, int bins) {
    const int traverse = o->cfg.run->mode == TL_MODE_TRAVERSE;
    /* sealed: the orchestrator side only; each node adds its own node side */
    const float *sent = o->sealed ? params + o->p_node : params;
    const uint32_t P = (uint32_t)(o->cfg.model->n_params - (o->sealed ? o->p_node : 0));
    const int64_t deadline = tl_now_ms() + o->cfg.task_timeout_ms;
    int rc;
    if (traverse && o->shm.p) /* nodes that map it read all parameters there */
        memcpy(o->shm.p, sent, sizeof(float) * P);
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        if (!s->p) return 1;
        if (s->ev.bins != bins) {
            tl_evalstats_free(&s->ev);
            if ((rc = tl_evalstats_init(&s->ev, o->classes, bins)) < 0) return rc;
        }
        tl_msg m = {.type = TL_MSG_EVAL};
        m.u.eval.step = o->eval_step;
        m.u.eval.bins = (uint32_t)bins;
        /* all parameters, also in split mode (docs/security.md §2) */
        m.u.eval.params = traverse && s->gshm.p ? tl_tensor_1d(TL_DT_F32, NULL, 0)
                                                : tl_tensor_1d(TL_DT_F32, sent, P);
        s->exp = EXPECT_EVAL;
        s->task_deadline = deadline;
        if (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0) {
            lose_node(o, s->p, tl_errmsg());
            return 1;
        }
    }
    for (;;) {
        int waiting = 0;
        int64_t now = tl_now_ms();
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            if (!s->p) return 1;
            if (s->exp == EXPECT_DONE) continue;
            if (now > s->task_deadline) {
                char why[96];
                snprintf(why, sizeof why, "no evaluation within %d ms", o->cfg.task_timeout_ms);
                lose_node(o, s->p, why);
                return 1;
            }
            waiting = 1;
        }
        if (!waiting) return 0;
        pump(o, -1);
    }
}

int tl_orch_eval_fn(void *ctx, const float *params, int64_t steps, tl_evalstats *sums) {
    tl_orch *o = ctx;
    int failures = 0;
    (void)steps; /* the orchestrator counts them itself (o->step) */
    for (;;) {
        int rc = await_all(o);
        if (rc < 0) return stop_run(o, rc);
        o->lost_node = -1;
        o->eval_step = o->step;
        int lost = eval_round(o, params, sums->bins);
        if (lost < 0) return lost;
        if (!lost) {
            /* in node order: the counts are exact in any order, the loss sum
             * is the same bits every time */
            for (int i = 0; i < o->cfg.n_nodes && rc == 0; i++) {
                rc = tl_evalstats_merge(sums, &o->nodes[i].ev);
                o->nodes[i].exp = EXPECT_NONE;
            }
            return rc;
        }
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            s->exp = s->p && s->exp == EXPECT_EVAL ? EXPECT_STALE : EXPECT_NONE;
        }
        if (++failures > o->cfg.max_replays)
            return stop_run(o, tl_error(TL_ESTATE, "the evaluation at the nodes failed %d times "
                                        "(--max-replays %d); last: node %d (%s)", failures,
                                        o->cfg.max_replays, o->lost_node + 1, o->lost_why));
        olog(o, "evaluation: node %d lost (%s); waiting up to %d s for it, then asking again",
             o->lost_node + 1, o->lost_why, o->cfg.reconnect_timeout_s);
    }
}

void tl_orch_stop(tl_orch *o, const char *reason) {
    tl_error(TL_ESTATE, "%s", reason);
    stop_run(o, TL_ESTATE);
}

void tl_orch_finish(tl_orch *o, const char *reason) {
    for (int i = tl_server_npeers(o->srv) - 1; i >= 0; i--) { /* strangers still in handshake */
        tl_peer *p = tl_server_peer(o->srv, i);
        tl_peer_state ps = tl_peer_get_state(p);
        if (ps == TL_PEER_TLS || (ps == TL_PEER_OPEN && OP(p)->st != PEER_READY))
            tl_server_drop(o->srv, p); /* just close */
    }
    tl_server_log_dropped(o->srv);
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *p = tl_server_peer(o->srv, i);
        peer *u = OP(p);
        if (u->st != PEER_READY) continue;
        tl_msg m = {.type = TL_MSG_DONE};
        snprintf(m.u.done.reason, sizeof m.u.done.reason, "%s", reason);
        if (tl_peer_close_after(p, &m, 5000) == 0) {
            if (u->node >= 0) o->nodes[u->node].p = NULL;
            u->node = -1;
            u->st = PEER_GONE;
        }
    }
    int64_t until = tl_now_ms() + 5000;
    while (tl_server_npeers(o->srv) > 0 && tl_now_ms() < until) pump(o, until);
}

void tl_orch_get_stats(const tl_orch *o, tl_orch_stats *s) {
    *s = o->stats;
    s->bytes_out = o->srv ? tl_server_bytes_out(o->srv) : 0;
}

void tl_orch_free(tl_orch *o) {
    if (!o) return;
    tl_server_free(o->srv);
    if (o->nodes)
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            free(o->nodes[i].gbuf);
            free(o->nodes[i].blob_buf);
            free(o->nodes[i].rows_u32);
            if (o->nodes[i].gshm.p) tl_shm_free(&o->nodes[i].gshm);
            tl_evalstats_free(&o->nodes[i].ev);
            tl_norm_stats_free(&o->nodes[i].st);
        }
    free(o->nodes);
    if (o->shm.p) tl_shm_free(&o->shm);
    tl_ws_free(&o->ws);
    tl_bounds_free(&o->bounds);
    free(o->G);
    free(o->dH);
    free(o->labels);
    tl_norm_free(&o->norm);
    free(o->qsum);
    free(o->ids);
    free(o);
}
