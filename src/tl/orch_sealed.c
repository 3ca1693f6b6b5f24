/* orch_sealed.c - the orchestrator's sealed mode: masked sums, MACs, state relay, checkpoints. */
#include "tl/orch_int.h"

/* ------------------------------------------------------------ sealed mode */
/* DESIGN §4, docs/protocol.md §8.2: the node side stays at the nodes; the
 * orchestrator adds their masked vectors mod 2^64 and sends the sum to all. */

/* WELCOME's sealed fields: privacy, MAC period, the node-side optimizer. */
void tl__orch_sealed_welcome(tl_orch *o, tl_msg_welcome *w) {
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
void tl__orch_sealed_accumulate(tl_orch *o) {
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
int tl__orch_on_param_mac(tl_orch *o, int k, const tl_msg_param_mac *m) {
    if (!o->sealed) return tl_error(TL_EPROTO, "PARAM_MAC in an open run");
    node_slot *s = &o->nodes[k];
    for (int j = 0; j < o->cfg.n_nodes && !o->diverged[0]; j++) {
        const node_slot *t = &o->nodes[j];
        if (j == k || !t->have_mac || t->mac_step != m->step) continue;
        if (!tl_param_mac_equal(t->mac, m->mac)) {
            int a = j < k ? k : j, b = j < k ? j : k;
            snprintf(o->diverged, sizeof o->diverged,
                     "node %d's node-side parameters differ from node %d's at step %llu "
                     "(divergence is a bug)",
                     a + 1, b + 1, (unsigned long long)m->step);
            tl__orch_log(o, "%s", o->diverged);
        }
    }
    if (s->sum_unread && m->step > s->sum_step) s->sum_unread = 0; /* applied it */
    s->have_mac = 1;
    s->mac_step = m->step;
    memcpy(s->mac, m->mac, sizeof s->mac);
    return 0;
}

/* Pumps until nothing is queued for any registered node (the SEALED_STEP
 * frames point at qsum and ids, which the next step overwrites); a node that
 * does not take its frames within the task timeout is lost. */
void tl__orch_sealed_drain(tl_orch *o) {
    const int64_t until = tl_now_ms() + o->cfg.task_timeout_ms;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < o->cfg.n_nodes; i++) {
            node_slot *s = &o->nodes[i];
            if (!s->p || tl_peer_idle(s->p)) continue;
            if (tl_now_ms() > until)
                tl__orch_lose_node(o, s->p, "did not take SEALED_STEP in time");
            else busy = 1;
        }
        if (!busy) return;
        tl__orch_pump(o, until);
    }
}

/* SEALED_STEP of the completed step to every registered node. */
void tl__orch_sealed_send_step(tl_orch *o, const tl_batch *b) {
    tl_msg m = {.type = TL_MSG_SEALED_STEP};
    tl_msg_sealed_step *q = &m.u.sealed_step;
    q->step = o->step;
    q->attempt = o->attempt;
    q->flags = o->cfg.mac_every > 0 && (o->step + 1) % (uint64_t)o->cfg.mac_every == 0
                   ? TL_SEALED_F_MAC
                   : 0;
    q->lr = tl_sched_lr(&o->sched, b->epoch);
    q->participants = tl_tensor_1d(TL_DT_U32, o->ids, (uint32_t)b->n_parts);
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        if (!s->p) continue;
        if (s->need_state) continue; /* it gets the node side after this step, sealed */
        /* shared memory: the sum goes into the node's gradient region when the
         * node has read the last one there: it has, once it has written a
         * later masked vector into the region (BACKWARD_RESULT) or sent a
         * later PARAM_MAC, since it applies SEALED_STEPs in stream order
         * before either. Otherwise (it sat out the step) the sum travels in
         * the frame, and nothing waits (docs/protocol.md §8.2). */
        const int region = s->gshm.p && !s->sum_unread;
        if (region) {
            memcpy(s->gshm.p, o->qsum, sizeof(uint64_t) * o->p_node);
            s->sum_unread = 1;
            s->sum_step = o->step;
        }
        q->sum = region ? tl_tensor_1d(TL_DT_U64, NULL, 0)
                        : tl_tensor_1d(TL_DT_U64, o->qsum, (uint32_t)o->p_node);
        if (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0)
            tl__orch_lose_node(o, s->p, tl_errmsg()); /* it misses this step: it cannot go on */
    }
}

/* STATE_BLOB from node k (the donor): relayed as it is to the node it is
 * sealed for, which we asked it for; the payload is kept until sent. */
int tl__orch_on_state_blob(tl_orch *o, tl_peer *p, int k, const tl_msg *m) {
    const tl_msg_state_blob *b = &m->u.state_blob;
    if (!o->sealed) return tl_error(TL_EPROTO, "STATE_BLOB in an open run");
    if (b->from != (uint32_t)k + 1 || b->to < 1 || b->to > (uint32_t)o->cfg.n_nodes ||
        b->step != o->step)
        return tl_error(TL_EPROTO,
                        "STATE_BLOB from node %u to node %u at step %llu on node %d's "
                        "connection at step %llu",
                        b->from, b->to, (unsigned long long)b->step, k + 1,
                        (unsigned long long)o->step);
    node_slot *t = &o->nodes[b->to - 1];
    if (t->donor != k) return tl_error(TL_EPROTO, "STATE_BLOB for node %u, not asked", b->to);
    t->donor = -1;
    if (!t->p || !t->need_state) return 0; /* it left meanwhile: asked again when back */
    free(t->blob_buf); /* never one in flight here: the last went out before we asked */
    t->blob_buf = tl_peer_take_payload(p, &t->blob_cap);
    if (tl_peer_send(t->p, m) < 0 || tl_peer_flush(t->p) < 0) {
        tl__orch_lose_node(o, t->p, tl_errmsg());
        return 0;
    }
    t->need_state = 0; /* it installs it before anything we send after it */
    tl__orch_log(o,
                 "node %u: gets the node side of step %llu from node %d (sealed, %llu bytes, "
                 "relayed)",
                 b->to, (unsigned long long)b->step, k + 1, (unsigned long long)b->blob.numel);
    return 0;
}

/* Drives the state transfers: each connected node that needs the node side
 * of o->step gets a live node's (STATE_REQUEST to the donor, its STATE_BLOB
 * relayed by tl__orch_on_state_blob). 0 when none is pending, 1 while one is, 2 while
 * a node needs it and no connected node holds it (*orphan: that node). */
int tl__orch_sealed_sync(tl_orch *o, int *orphan) {
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
            if (d->p) tl__orch_lose_node(o, d->p, "no STATE_BLOB within the task timeout");
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
            tl__orch_lose_node(o, o->nodes[j].p, tl_errmsg());
            if (!pending) pending = 1; /* another donor next round */
            continue;
        }
        s->donor = j;
        s->state_until = now + o->cfg.task_timeout_ms;
        tl__orch_log(o, "node %d holds no node side of step %llu: node %d's is sent to it, sealed",
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
            tl__orch_lose_node(o, s->p, tl_errmsg());
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
            tl__orch_log(o,
                         "node %d did not confirm saving its node side of step %lld (a resumed run "
                         "gives it another node's)",
                         waiting + 1, (long long)steps);
            return;
        }
        tl__orch_pump(o, until);
    }
}

int tl_orch_final(tl_orch *o, const float *params) {
    if (!o->sealed) return 0;
    tl__orch_sealed_drain(o);
    tl_msg m = {.type = TL_MSG_FINAL};
    m.u.final.step = o->step;
    m.u.final.params = tl_tensor_1d(TL_DT_F32, params + o->p_node,
                                    (uint32_t)(o->cfg.model->n_params - o->p_node));
    for (int i = 0; i < o->cfg.n_nodes; i++) {
        node_slot *s = &o->nodes[i];
        s->have_mac = s->have_mac && s->mac_step == o->step;
        if (s->p && (tl_peer_send(s->p, &m) < 0 || tl_peer_flush(s->p) < 0))
            tl__orch_lose_node(o, s->p, tl_errmsg());
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
            return tl_error(TL_ETIMEDOUT,
                            "node %d did not confirm its final node side within "
                            "%d ms",
                            waiting + 1, o->cfg.task_timeout_ms);
        tl__orch_pump(o, until);
    }
}
