/* orch_handshake.c - the orchestrator's handshake: HELLO, STATS, WELCOME, READY, data checks. */
#include "tl/orch_int.h"

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
            snprintf(why, cap,
                     "node %d holds the same data as node %d (%llu samples, "
                     "fingerprint %016llx)",
                     k + 1, j + 1, (unsigned long long)count, (unsigned long long)fp);
            return TL_REJECT_FINGERPRINT;
        }
        total += t->count; /* each count is below 2^32: no overflow */
    }
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : UINT64_MAX;
    if (total > mem / 2 / sizeof(uint64_t)) {
        snprintf(why, cap,
                 "with node %d's %llu samples the run would hold %llu, more than "
                 "this orchestrator can index in memory",
                 k + 1, (unsigned long long)count, (unsigned long long)total);
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
    uint64_t dim = h->rank == 3 ? (uint64_t)h->shape[0] * h->shape[1] * h->shape[2] : h->shape[0];
    if (h->rank == 0)
        return 0; /* not described (a hand-made client): WELCOME is checked
                   * by the node against its data all the same */
    if ((h->rank != 1 && h->rank != 3) || h->elem > TL_ELEM_WIRE_F32) {
        snprintf(why, cap,
                 "HELLO describes samples of rank %u, element type %u (want rank 1 "
                 "or 3, type 0 or 1)",
                 h->rank, h->elem);
        return 1;
    }
    if (dim != (uint64_t)o->cfg.model->in_dim) {
        snprintf(why, cap, "node %u's samples %s have %llu features, the model's input %d",
                 h->node_id, shape_str(a, sizeof a, h->rank, h->shape), (unsigned long long)dim,
                 o->cfg.model->in_dim);
        return 1;
    }
    if (h->classes > (uint32_t)o->classes) {
        snprintf(why, cap, "node %u has %u classes, the model's output %d", h->node_id, h->classes,
                 o->classes);
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
        snprintf(why, cap,
                 "node %u's label names differ from the other nodes' (their class "
                 "numbers would not agree)",
                 h->node_id);
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
    if (shm &&
        tl_shm_create((o->sealed ? sizeof(uint64_t) : sizeof(float)) * o->p_node, &s->gshm) < 0) {
        tl__orch_log(o, "node %d: no shared memory (%s): using the socket", u->node + 1,
                     tl_errmsg());
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
    if (o->sealed) tl__orch_sealed_welcome(o, w);
    snprintf(w->model, sizeof w->model, "%s", o->cfg.model->spec);
    if (tl_peer_send(p, &m) < 0) {
        tl__orch_close_with_error(o, p, TL_ENOMEM, tl_errmsg());
        return;
    }
    if (shm) tl_peer_pass_shm(p, &o->shm, &s->gshm);
    if (zstd) tl_peer_set_zstd(p);
    /* nothing is recorded for the node until it says READY */
    u->st = PEER_WELCOMED;
}

void tl__orch_on_hello(tl_orch *o, tl_peer *p, const tl_msg_hello *h) {
    char why[512];
    const int n = o->cfg.n_nodes;
    if (h->proto_version != TL_PROTO_VERSION) {
        snprintf(why, sizeof why, "protocol version %u, this orchestrator speaks %d",
                 h->proto_version, TL_PROTO_VERSION);
        tl__orch_reject(o, p, TL_REJECT_VERSION, why);
        return;
    }
    if (h->node_id < 1 || h->node_id > (uint32_t)n) {
        snprintf(why, sizeof why, "node id %u is out of range: this run has nodes 1..%d",
                 h->node_id, n);
        tl__orch_reject(o, p, TL_REJECT_ID_OUT_OF_RANGE, why);
        return;
    }
    if (o->cfg.tls && tl_tls_check_node_id(tl_peer_conn(p), (int)h->node_id) < 0) {
        tl__orch_reject(o, p, TL_REJECT_NOT_AUTHENTICATED, tl_errmsg());
        return;
    }
    if (h->sample_count == 0) {
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, "a node needs samples");
        return;
    }
    if (h->sample_count > UINT32_MAX) { /* FORWARD's rows are u32 local indices */
        snprintf(why, sizeof why,
                 "%llu samples: rows travel as u32, so a node holds at most "
                 "%u",
                 (unsigned long long)h->sample_count, UINT32_MAX);
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
        return;
    }
    if ((int)h->privacy != o->cfg.privacy) {
        snprintf(why, sizeof why,
                 "node %u wants %s mode, this run is %s (both sides' "
                 "--privacy must agree)",
                 h->node_id, h->privacy ? "sealed" : "open", o->cfg.privacy ? "sealed" : "open");
        tl__orch_reject(o, p, TL_REJECT_PRIVACY, why);
        return;
    }
    if (o->sealed && o->have_key_id && memcmp(h->key_id, o->key_id, sizeof o->key_id)) {
        char mine[33], theirs[33];
        tl_group_key_id_hex(o->key_id, mine);
        tl_group_key_id_hex(h->key_id, theirs);
        snprintf(why, sizeof why,
                 "node %u holds another group's key (key id %s, the run's is "
                 "%s%s)",
                 h->node_id, theirs, mine,
                 o->cfg.have_key_id ? ", from the orchestrator's kit" : ", the first node's");
        tl__orch_reject(o, p, TL_REJECT_GROUP_KEY, why);
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
        if (old == s->p) tl__orch_lose_node(o, old, msg);
        else {
            tl__orch_log(o, "closed %s: %s", tl_peer_name(old), msg);
            tl__orch_close_with_error(o, old, TL_ECLOSED, msg);
        }
        old = NULL;
    }
    if (old) {
        snprintf(why, sizeof why, "node %u is already connected (from %s)", h->node_id,
                 tl_peer_name(old));
        tl__orch_reject(o, p, TL_REJECT_DUPLICATE_ID, why);
        return;
    }
    uint32_t code = data_conflict(o, (int)h->node_id - 1, h->sample_count, h->fingerprint, why,
                                  sizeof why);
    if (code) {
        tl__orch_reject(o, p, code, why);
        return;
    }
    if (data_mismatch(o, h, why, sizeof why)) {
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
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
            tl__orch_close_with_error(o, p, TL_ENOMEM, tl_errmsg());
            return;
        }
        u->st = PEER_STATS;
        return;
    }
    send_welcome(o, p);
}

/* READY: the node checked WELCOME against its data and takes part. Only now
 * is it registered, with the sample count and fingerprint of its HELLO. */
void tl__orch_on_ready(tl_orch *o, tl_peer *p, const tl_msg_ready *r) {
    char why[512];
    peer *u = OP(p);
    const int k = u->node;
    node_slot *s = &o->nodes[k];
    if (r->run_id != o->run_id) {
        snprintf(why, sizeof why, "READY for run %016llx, this run is %016llx",
                 (unsigned long long)r->run_id, (unsigned long long)o->run_id);
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
        return;
    }
    /* another node may have registered the same data since our HELLO */
    uint32_t code = data_conflict(o, k, u->count, u->fingerprint, why, sizeof why);
    if (code) {
        tl__orch_reject(o, p, code, why);
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
            tl__orch_reject(o, p, TL_REJECT_GROUP_KEY, why);
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
    s->sum_unread = 0;
    s->ckpt_wait = 0;
    s->donor = -1;
    s->need_state = o->sealed && r->state_step != o->step;
    if (s->need_state && r->state_step != TL_STATE_NONE)
        tl__orch_log(o, "node %d holds the node side of step %llu, the run is at step %llu", k + 1,
                     (unsigned long long)r->state_step, (unsigned long long)o->step);
    tl__orch_log(o, "node %d joined from %s (%llu samples, %s%s, %s%s)", k + 1, tl_peer_name(p),
                 (unsigned long long)u->count, tl_peer_transport(p),
                 s->gshm.p ? ", shared memory" : "", u->version, o->sealed ? ", sealed" : "");
}

/* STATS: a node's count, per-feature sums and sums of squares (its training
 * rows; docs/protocol.md §5.2), checked: the run's width, HELLO's count,
 * finite, sums of squares >= 0. Once every node's are in: combined in node
 * order, finished (norm.h), and every node waiting gets its WELCOME. A bad
 * STATS is refused (REJECT BAD_HELLO) with the reason. */
int tl__orch_on_stats(tl_orch *o, tl_peer *p, const tl_msg_stats *st) {
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
            rc = tl_error(TL_EPROTO, "STATS: feature %u has sum %g, sum of squares %g", f, sum[f],
                          sq[f]);
    if (rc < 0) {
        snprintf(why, sizeof why, "%s", tl_errmsg());
        tl__orch_reject(o, p, TL_REJECT_BAD_HELLO, why);
        return -1;
    }
    tl_norm_stats_free(&s->st);
    if ((rc = tl_norm_stats_init(&s->st, dim)) < 0) {
        tl__orch_close_with_error(o, p, rc, tl_errmsg());
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
        tl__orch_log(o, "standardize: %s", tl_errmsg());
        tl__orch_close_with_error(o, p, rc, tl_errmsg());
        return -1;
    }
    o->norm_ready = 1;
    tl__orch_log(o,
                 "standardize: per-feature means and deviations of the nodes' %llu training rows, "
                 "from their sums",
                 (unsigned long long)rows);
    const int64_t now = tl_now_ms();
    for (int i = 0; i < tl_server_npeers(o->srv); i++) {
        tl_peer *q = tl_server_peer(o->srv, i);
        if (OP(q)->st != PEER_STATS) continue;
        OP(q)->deadline = now + o->cfg.handshake_timeout_ms; /* from now on to READY */
        send_welcome(o, q);
    }
    return 0;
}
