/* orchestrator.c - peers, batch results, server callbacks, public API, the batch state machine. */
#include "tl/orch_int.h"

void tl__orch_log(tl_orch *o, const char *fmt, ...) {
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

void tl__orch_close_with_error(tl_orch *o, tl_peer *p, int code, const char *why) {
    tl_msg m = {.type = TL_MSG_ERROR};
    m.u.error.code = (uint32_t)(code < 0 ? -code : code);
    snprintf(m.u.error.message, sizeof m.u.error.message, "%s", why);
    close_with(o, p, &m);
}

void tl__orch_reject(tl_orch *o, tl_peer *p, uint32_t code, const char *why) {
    tl__orch_log(o, "refused %s: %s", tl_peer_name(p), why);
    tl_msg m = {.type = TL_MSG_REJECT};
    m.u.reject.code = code;
    snprintf(m.u.reject.reason, sizeof m.u.reject.reason, "%s", why);
    close_with(o, p, &m);
}

/* A registered node is gone (or misbehaved): log, drop its connection. */
void tl__orch_lose_node(tl_orch *o, tl_peer *p, const char *why) {
    int k = OP(p)->node;
    tl__orch_log(o, "node %d (%s) lost: %s", k + 1, tl_peer_name(p), why);
    o->lost_node = k;
    snprintf(o->lost_why, sizeof o->lost_why, "%s", why);
    tl__orch_close_with_error(o, p, TL_EPROTO, why);
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
            (rc = tl_tensor_check_below(&r->labels, (uint64_t)o->classes,
                                        "FORWARD_RESULT labels")) < 0)
            return rc;
        memcpy(o->labels + s->first, r->labels.data, sizeof(int32_t) * s->n);
    }
    memcpy(o->ws.h[o->cut] + s->first * o->dc, r->h.data, sizeof(float) * s->n * o->dc);
    /* finite is not enough (FLT_MAX overflows the step): no more than an honest node can send */
    /* sealed: without the node side there is no bound on h or the loss, only on g */
    if ((!o->sealed && (rc = tl_bounds_check_h(&o->bounds, o->ws.h[o->cut] + s->first * o->dc, s->n,
                                               "FORWARD_RESULT h")) < 0) ||
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
            bad |= TL_NONFINITE_BITS(u);
        }
    else
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &g[i], sizeof u);
            acc[i] += g[i];
            bad |= TL_NONFINITE_BITS(u);
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
        tl__orch_sealed_accumulate(o);
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
        int bad = rc < 0    ? 1
                  : s->gbuf ? add_checked(o->cur_grads, s->grads, o->p_node, o->acc_next == 0)
                            : add_checked_shared(o->cur_grads, s->grads, o->p_node,
                                                 o->acc_next == 0, &o->bounds, &rc);
        if (s->gbuf && s->p) tl_peer_recycle_payload(s->p, s->gbuf, s->gcap);
        else free(s->gbuf);
        s->gbuf = NULL;
        s->grads = NULL;
        if (bad) {
            if (s->p)
                tl__orch_lose_node(o, s->p,
                                   rc < 0 ? tl_errmsg()
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
            if (s->sum_unread && r->step > s->sum_step) s->sum_unread = 0; /* applied it */
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
        return tl_error(TL_EPROTO,
                        "EVAL_RESULT: %llu rows evaluated, but the node has %llu "
                        "held-out rows",
                        (unsigned long long)s->ev.n, (unsigned long long)s->test_count);
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
        if (u->st == PEER_READY) tl__orch_lose_node(o, p, tl_errmsg());
        else {
            tl__orch_log(o, "closed %s: %s", tl_peer_name(p), tl_errmsg());
            tl__orch_close_with_error(o, p, rc, tl_errmsg());
        }
        return -1;
    }
    if (u->st == PEER_HELLO) {
        if (m.type != TL_MSG_HELLO) {
            char why[128];
            snprintf(why, sizeof why, "expected HELLO, got %s", tl_msg_type_name(m.type));
            tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
            return -1;
        }
        tl__orch_on_hello(o, p, &m.u.hello);
        return u->st == PEER_WELCOMED || u->st == PEER_STATS ? 0 : -1;
    }
    if (u->st == PEER_STATS || u->st == PEER_WELCOMED) { /* between WELCOME and READY */
        const int stats = u->st == PEER_STATS;
        char why[TL_MSG_STR_MAX + 64];
        if (stats && m.type == TL_MSG_STATS) return tl__orch_on_stats(o, p, &m.u.stats);
        if (!stats && m.type == TL_MSG_READY) {
            tl__orch_on_ready(o, p, &m.u.ready);
            return u->st == PEER_READY ? 0 : -1;
        }
        if (m.type == TL_MSG_HEARTBEAT) return 0;
        if (m.type == TL_MSG_ERROR) { /* the node cannot take part (its data does not fit) */
            snprintf(why, sizeof why, "node %d declined the run: %s", u->node + 1,
                     m.u.error.message);
            tl__orch_log(o, "closed %s: %s", tl_peer_name(p), why);
            tl__orch_close_with_error(o, p, TL_ECLOSED, why);
            return -1;
        }
        snprintf(why, sizeof why, "expected %s, got %s", stats ? "STATS" : "READY",
                 tl_msg_type_name(m.type));
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
        return -1;
    }
    if (u->st != PEER_READY) return -1;
    node_slot *s = &o->nodes[u->node];
    switch (m.type) {
    case TL_MSG_FORWARD_RESULT: rc = on_fwd_result(o, s, &m.u.fwd_result); break;
    case TL_MSG_BACKWARD_RESULT: rc = on_bwd_result(o, p, s, &m.u.bwd_result); break;
    case TL_MSG_PARAM_MAC: rc = tl__orch_on_param_mac(o, u->node, &m.u.param_mac); break;
    case TL_MSG_EVAL_RESULT: rc = on_eval_result(o, s, &m.u.eval_result); break;
    case TL_MSG_STATE_BLOB: rc = tl__orch_on_state_blob(o, p, u->node, &m); break;
    case TL_MSG_CHECKPOINT:
        if (!o->sealed || !s->ckpt_wait || m.u.checkpoint.step != o->step)
            rc = tl_error(TL_EPROTO, "unexpected CHECKPOINT (step %llu)",
                          (unsigned long long)m.u.checkpoint.step);
        else s->ckpt_wait = 0;
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
                rc = tl_error(TL_EPROTO,
                              "flooding: more than %d heartbeats a second for %d "
                              "seconds (the interval is %d ms)",
                              limit, FLOOD_SECONDS, hb);
        }
        u->hb_count++;
        break;
    }
    case TL_MSG_ERROR: rc = tl_error(TL_EPROTO, "the node reported: %s", m.u.error.message); break;
    default: rc = tl_error(TL_EPROTO, "a node may not send %s", tl_msg_type_name(m.type));
    }
    if (rc < 0) {
        tl__orch_lose_node(o, p, tl_errmsg());
        return -1;
    }
    return 0;
}

/* ------------------------------------------------- the server's callbacks */

/* The reasons given to a node whose setting does not match ours. */
#define WANT_TLS                                                               \
    "this orchestrator requires TLS 1.3 with certificates: run the node with " \
    "--tls-dir, not --insecure"
#define WANT_PLAIN                                                             \
    "this orchestrator runs --insecure (plaintext): give the node --insecure " \
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
    if (u->st == PEER_READY) tl__orch_lose_node(o, p, tl_errmsg());
    else if (writing) return;
    else if (u->st == PEER_HELLO && rc == TL_ETLS && !o->cfg.tls) /* a TLS node */
        tl__orch_reject(o, p, TL_REJECT_NOT_AUTHENTICATED, WANT_PLAIN);
    else tl__orch_log(o, "closed %s", tl_errmsg());
}

/* A plaintext node at a TLS orchestrator: refused in its own protocol. */
static void on_plaintext(void *ud, tl_peer *p) {
    tl_orch *o = ud;
    tl__orch_log(o,
                 "refused %s: the node speaks plaintext (it runs --insecure) and this orchestrator "
                 "requires TLS",
                 tl_peer_name(p));
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
                tl__orch_log(o, "closed %s: no handshake within %d ms", tl_peer_name(p),
                             o->cfg.handshake_timeout_ms);
                tl__orch_close_with_error(o, p, TL_ETIMEDOUT, "handshake timed out");
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
                tl__orch_lose_node(o, p, "silent for more than 4 heartbeats");
            } else if (now - tl_peer_last_sent(p) >= hb && tl_peer_idle(p)) {
                tl_msg m = {.type = TL_MSG_HEARTBEAT};
                m.u.heartbeat.nonce = (uint64_t)now;
                tl_peer_send(p, &m);
            }
        }
    }
}

/* One round of the server: I/O, then the timers. */
void tl__orch_pump(tl_orch *o, int64_t deadline) { tl_server_round(o->srv, deadline); }

/* -------------------------------------------------------------- public */

int tl_orch_new(const tl_orch_cfg *cfg, tl_orch **out) {
    int rc;
    tl_orch *o = calloc(1, sizeof *o);
    if (!o) return tl_error(TL_ENOMEM, "orchestrator: out of memory");
    o->cfg = *cfg;
    o->lost_node = -1;
    const tl_model *m = cfg->model;
    const tl_runcfg *run = cfg->run;
    if (run->norm.kind == TL_NORM_FEATURE && run->norm.dim && run->norm.dim != (size_t)m->in_dim) {
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
        if ((rc = tl_sched_init(&o->sched, run->sched, run->optim.lr, run->gamma, run->step_size,
                                run->epochs)) < 0)
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
     * per-feature normalization (or float data, see tl__orch_on_hello) bounds nothing */
    const double x_max = run->norm.kind == TL_NORM_FEATURE ? INFINITY
                         : run->norm.kind == TL_NORM_NONE  ? tl_bounds_x_max(0.0f, 1.0f)
                                                           : tl_bounds_x_max(run->mean, run->std);
    if ((rc = tl_bounds_init(&o->bounds, m, o->cut, x_max)) < 0) goto fail;
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
        .cb = {.ud = o,
               .accepted = on_accepted,
               .frame = on_frame,
               .failed = on_failed,
               .plaintext = on_plaintext,
               .dropped = on_dropped,
               .timer = on_timer,
               .log = o->cfg.log ? server_log : NULL},
    };
    if ((rc = tl_server_new(&sc, &o->srv)) < 0) goto fail;
    if (!cfg->no_shm && o->p_sent && tl_server_local(o->srv) &&
        tl_shm_create_readonly(sizeof(float) * o->p_sent, &o->shm) < 0)
        tl__orch_log(o, "parameters go over the sockets: %s", tl_errmsg());
    *out = o;
    return 0;
fail:
    tl_orch_free(o);
    return rc;
}

int tl_orch_port(const tl_orch *o) { return tl_server_port(o->srv); }

void tl_orch_set_step(tl_orch *o, uint64_t step) { o->step = step; }

int tl_orch_serve(tl_orch *o, int timeout_ms) {
    tl__orch_pump(o, tl_now_ms() + (timeout_ms > 0 ? timeout_ms : 0));
    return tl_server_npeers(o->srv);
}

int tl_orch_registered(const tl_orch *o) { return o->registered; }

int tl_orch_wait_nodes(tl_orch *o, int timeout_s, uint64_t *counts, uint64_t *fingerprints) {
    const int n = o->cfg.n_nodes;
    int64_t start = tl_now_ms(), last_note = start;
    char where[600];
    tl_addr_format(o->cfg.host, tl_orch_port(o), where, sizeof where);
    tl__orch_log(o, "listening on %s for %d node%s (%s)", where, n, n == 1 ? "" : "s",
                 o->cfg.tls ? "TLS" : "plaintext");
    while (o->registered < n) {
        tl__orch_pump(o, -1);
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
                if (!o->nodes[i].p)
                    len += snprintf(missing + len, sizeof missing - len, " %d", i + 1);
            tl__orch_log(o, "waiting for node%s%s", strchr(missing + 1, ' ') ? "s" : "", missing);
            last_note = now;
        }
    }
    for (int i = 0; i < n; i++) {
        counts[i] = o->nodes[i].count;
        if (fingerprints) fingerprints[i] = o->nodes[i].fingerprint;
    }
    return 0;
}

/* Contract in orch_int.h. */
int tl__orch_await_replies(tl_orch *o, const tl_batch *b, const char *what) {
    const int n = b ? b->n_parts : o->cfg.n_nodes;
    for (;;) {
        int waiting = 0;
        int64_t now = tl_now_ms();
        for (int i = 0; i < n; i++) {
            node_slot *s = &o->nodes[b ? b->parts[i].node : i];
            if (!s->p) return 1;
            if (s->exp == EXPECT_DONE) continue;
            if (now > s->task_deadline) {
                char why[96];
                snprintf(why, sizeof why, "no %s within %d ms", what, o->cfg.task_timeout_ms);
                tl__orch_lose_node(o, s->p, why);
                return 1;
            }
            waiting = 1;
        }
        if (!waiting) return 0;
        tl__orch_pump(o, -1);
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
            tl__orch_lose_node(o, s->p, tl_errmsg());
            return 1;
        }
    }
    /* while the nodes compute (no reply is read before the wait): what an
     * honest node can send back for these params */
    if (exp == EXPECT_FWD && !o->sealed) tl_bounds_forward(&o->bounds, params);
    return tl__orch_await_replies(o, b, "reply");
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
        s->exp = s->p && (s->exp == EXPECT_FWD || s->exp == EXPECT_BWD) ? EXPECT_STALE
                                                                        : EXPECT_NONE;
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

/* Waits for the nodes of b (NULL: every node, before an evaluation) to be
 * connected again (up to the reconnect timeout) and to have answered any
 * request of an abandoned attempt (up to the task timeout; a node that does
 * not is lost); in sealed mode also until each holds the run's node side. */
int tl__orch_await_nodes(tl_orch *o, const tl_batch *b) {
    int64_t now = tl_now_ms(), until = now + (int64_t)o->cfg.reconnect_timeout_s * 1000;
    int64_t stale_until = now + o->cfg.task_timeout_ms;
    for (;;) {
        int missing = -1, stale = 0;
        now = tl_now_ms();
        const int n = b ? b->n_parts : o->cfg.n_nodes;
        for (int i = 0; i < n; i++) {
            const int k = b ? b->parts[i].node : i;
            node_slot *s = &o->nodes[k];
            if (!s->p) {
                if (missing < 0) missing = k;
            } else if (s->exp == EXPECT_STALE) {
                if (now > stale_until)
                    tl__orch_lose_node(o, s->p, "no reply to an abandoned request");
                else stale = 1;
            }
        }
        int orphan = -1, sync = o->sealed ? tl__orch_sealed_sync(o, &orphan) : 0;
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
        tl__orch_pump(o, until);
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
    size_t len = (size_t)snprintf(msg, sizeof msg,
                                  "batch %zu of epoch %d failed %d times "
                                  "(--max-replays %d): ",
                                  b->index, b->epoch + 1, failures, o->cfg.max_replays);
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
    tl__orch_log(o, "%s", msg);
    return tl_error(TL_ESTATE, "%s", msg);
}

/* The run stops with an error: tell every registered node why (ERROR; it
 * logs the reason and keeps retrying, for an orchestrator restarted with
 * --resume), waiting briefly for the messages to go out. rc is returned. */
int tl__orch_stop_run(tl_orch *o, int rc) {
    char msg[TL_MSG_STR_MAX], why[TL_MSG_STR_MAX + 32];
    snprintf(msg, sizeof msg, "%s", tl_errmsg());
    snprintf(why, sizeof why, "the orchestrator stops: %s", msg);
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *p = tl_server_peer(o->srv, i);
        if (OP(p)->st == PEER_READY) tl__orch_close_with_error(o, p, rc, why);
    }
    int64_t until = tl_now_ms() + CLOSE_GRACE_MS;
    for (;;) {
        int busy = tl_server_count(o->srv, TL_PEER_CLOSING) > 0;
        if (!busy || tl_now_ms() >= until) break;
        tl__orch_pump(o, until);
    }
    return tl_error(rc, "%s", msg); /* the loop may have set another message */
}

int tl_orch_grad_fn(void *ctx, const tl_batch *b, const float *params, float *grads,
                    double *loss_sum, int64_t *correct) {
    tl_orch *o = ctx;
    const size_t n_params = o->cfg.model->n_params;
    int failures = 0, who[MAX_ATTEMPTS_LOGGED];
    char why[MAX_ATTEMPTS_LOGGED][256];
    if (o->sealed)
        tl__orch_sealed_drain(o); /* the last SEALED_STEP is out: qsum and ids are free */
    for (;;) {
        if (o->diverged[0]) return tl__orch_stop_run(o, tl_error(TL_ESTATE, "%s", o->diverged));
        int rc = tl__orch_await_nodes(o, b);
        if (rc < 0) return tl__orch_stop_run(o, rc);
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
            if (o->sealed) tl__orch_sealed_send_step(o, b);
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
            return tl__orch_stop_run(o, replay_bound(o, b, failures, who, why));
        o->stats.replays++;
        tl__orch_log(o,
                     "epoch %d batch %zu: discarded partial results; waiting up to %d s for the "
                     "node to return, then replaying the batch (replay %d of at most %d)",
                     b->epoch + 1, b->index, o->cfg.reconnect_timeout_s, failures,
                     o->cfg.max_replays);
    }
}

const tl_norm *tl_orch_norm(const tl_orch *o) { return o->norm_ready ? &o->norm : NULL; }

uint64_t tl_orch_test_rows(const tl_orch *o) {
    uint64_t n = 0;
    for (int i = 0; i < o->cfg.n_nodes; i++) n += o->nodes[i].test_count;
    return n;
}

void tl_orch_stop(tl_orch *o, const char *reason) {
    tl_error(TL_ESTATE, "%s", reason);
    tl__orch_stop_run(o, TL_ESTATE);
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
    while (tl_server_npeers(o->srv) > 0 && tl_now_ms() < until) tl__orch_pump(o, until);
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
