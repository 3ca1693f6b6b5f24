/* orch_eval.c - the orchestrator's evaluation at the nodes (EVAL rounds, replays). */
#include "tl/orch_int.h"

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
            tl__orch_lose_node(o, s->p, tl_errmsg());
            return 1;
        }
    }
    return tl__orch_await_replies(o, NULL, "evaluation");
}

int tl_orch_eval_fn(void *ctx, const float *params, int64_t steps, tl_evalstats *sums) {
    tl_orch *o = ctx;
    int failures = 0;
    (void)steps; /* the orchestrator counts them itself (o->step) */
    for (;;) {
        int rc = tl__orch_await_nodes(o, NULL);
        if (rc < 0) return tl__orch_stop_run(o, rc);
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
            return tl__orch_stop_run(o, tl_error(TL_ESTATE,
                                                 "the evaluation at the nodes failed %d times "
                                                 "(--max-replays %d); last: node %d (%s)",
                                                 failures, o->cfg.max_replays, o->lost_node + 1,
                                                 o->lost_why));
        tl__orch_log(o,
                     "evaluation: node %d lost (%s); waiting up to %d s for it, then asking again",
                     o->lost_node + 1, o->lost_why, o->cfg.reconnect_timeout_s);
    }
}
