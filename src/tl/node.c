/* node.c - the node: connect out, say HELLO, answer FORWARD/BACKWARD until DONE. */
#include "tl/node.h"

#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tl/config.h"
#include "tl/conn.h"
#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/fixed.h"
#include "tl/frame.h"
#include "tl/loss.h"
#include "tl/model.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/nodestate.h"
#include "tl/norm.h"
#include "tl/params.h"
#include "tl/sealed.h"
#include "tl/shm.h"
#include "tl/trainer.h"

#define CONNECT_TIMEOUT_MS 5000
#define HANDSHAKE_TIMEOUT_MS 30000
#define SEND_TIMEOUT_MS 60000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

/* One connection's worth of state: the run as WELCOME described it, and the
 * buffers of the step in progress. */
typedef struct session {
    const tl_node_cfg *cfg;
    uint64_t fingerprint; /* of our data, computed once */
    tl_conn *c;
    tl_frame_reader r;
    tl_frame_writer w;
    tl_model model;
    int cut; /* node-side modules */
    tl_mode mode;
    tl_norm norm;    /* WELCOME's descriptor (per-feature arrays owned) */
    uint64_t run_id; /* WELCOME's, echoed in READY */
    size_t p_node;   /* node-side parameters */
    size_t p_recv;   /* parameters FORWARD carries */
    int hb_ms;
    int64_t last_sent, last_recv;
    /* step state */
    tl_ws ws;
    int ws_rows;
    float *g; /* (rows, classes), traverse mode */
    int32_t *y;
    size_t *rows;
    float *grads;     /* p_node */
    void *params_buf; /* the FORWARD payload holding the parameters, kept until BACKWARD */
    size_t params_cap;
    const float *shm_params; /* the orchestrator's shared parameters, mapped (p_recv); */
    int shm_grads;           /* then grads is our shared gradient region, mapped (p_node) */
    const float *params;
    uint64_t step;
    int n; /* rows of the kept FORWARD; 0: none */
    /* sealed mode: the node side outlives connections (tl_node_run's) */
    struct sealed_ctx *sc;
    float *full; /* the whole parameter vector for our passes (sealed) */
    uint64_t *q; /* the masked gradient (sealed), p_node; shared region when q_shm */
    int q_shm;
} session;

/* What survives reconnections in sealed mode: the node side and its run. */
typedef struct sealed_ctx {
    tl_sealed_node sn;
    int ok;
    uint64_t run_id;
    int need_state;     /* the node side of the run's step comes from a live node (STATE_BLOB) */
    uint64_t want_step; /* ... of this step */
    char sig[256];      /* model, cut and optimizer the node side is for (WELCOME's) */
} sealed_ctx;

static void logf_(const tl_node_cfg *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(const tl_node_cfg *cfg, const char *fmt, ...) {
    if (!cfg->log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cfg->log(cfg->log_ud, buf);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void session_free(session *s) {
    tl_conn_free(s->c);
    tl_frame_reader_free(&s->r);
    tl_frame_writer_free(&s->w);
    tl_ws_free(&s->ws);
    free(s->g);
    free(s->y);
    free(s->rows);
    if (s->shm_grads) tl_shm_unmap(s->grads, sizeof(float) * s->p_node);
    else free(s->grads);
    free(s->params_buf);
    tl_shm_unmap(s->shm_params, sizeof(float) * s->p_recv);
    if (s->q_shm) tl_shm_unmap(s->q, sizeof(uint64_t) * s->p_node);
    else free(s->q);
    free(s->full);
    tl_norm_free(&s->norm);
    memset(s, 0, sizeof *s);
}

/* Sends m (blocking, with a deadline) and notes the time. */
static int send_msg(session *s, const tl_msg *m) {
    int rc = tl_msg_send(s->c, &s->w, m, tl_now_ms() + SEND_TIMEOUT_MS);
    s->last_sent = tl_now_ms();
    return rc;
}

/* Tells the orchestrator why we give up on this connection (best effort). */
static void send_error(session *s, int code, const char *msg) {
    tl_msg m = {.type = TL_MSG_ERROR};
    m.u.error.code = (uint32_t)-code;
    snprintf(m.u.error.message, sizeof m.u.error.message, "%s", msg);
    tl_msg_send(s->c, &s->w, &m, tl_now_ms() + 1000);
}

/* d's sample shape as (rank, shape): rank 0 is an image of rows x cols. */
static void sample_shape(const tl_dataset *d, uint32_t *rank, uint32_t shape[3]) {
    if (d->rank == 0) {
        *rank = 3;
        shape[0] = 1, shape[1] = d->rows, shape[2] = d->cols;
    } else {
        *rank = (uint32_t)d->rank;
        for (int i = 0; i < 3; i++) shape[i] = d->shape[i];
    }
}

/* "[1, 28, 28]" / "[30]" into buf. */
static const char *shape_str(char *buf, size_t n, uint32_t rank, const uint32_t *shape) {
    if (rank == 3) snprintf(buf, n, "[%u, %u, %u]", shape[0], shape[1], shape[2]);
    else snprintf(buf, n, "[%u]", shape[0]);
    return buf;
}

/* FNV-1a of the class names, each with its NUL, in class order; 0 for
 * integer labels (no names). Nodes whose string labels map to other classes
 * differ here. */
static uint64_t labels_hash(const tl_dataset *d) {
    if (!d->class_names) return 0;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int c = 0; c < d->classes; c++) {
        const char *p = d->class_names[c] ? d->class_names[c] : "";
        do {
            h ^= (uint8_t)*p;
            h *= 0x100000001b3ull;
        } while (*p++);
    }
    return h ? h : 1;
}

/* Makes room for n rows in the step buffers. */
static int grow_rows(session *s, int n) {
    if (n <= s->ws_rows) return 0;
    tl_ws_free(&s->ws);
    free(s->g);
    free(s->y);
    free(s->rows);
    s->g = malloc(sizeof(float) * (size_t)n * s->model.n_classes);
    s->y = malloc(sizeof(int32_t) * (size_t)n);
    s->rows = malloc(sizeof(size_t) * (size_t)n);
    s->ws_rows = 0;
    if (!s->g || !s->y || !s->rows || tl_ws_init(&s->ws, &s->model, n) < 0)
        return tl_error(TL_ENOMEM, "buffers for %d rows: out of memory", n);
    s->ws_rows = n;
    return 0;
}

/* Sealed WELCOME: the node side for this run (kept across reconnections to
 * the same run), and the buffers of sealed steps. */
static int sealed_restore(session *s, uint64_t step);
static int sealed_welcome(session *s, const tl_msg_welcome *w) {
    sealed_ctx *sc = s->sc;
    const tl_model *m = &s->model;
    int rc;
    char sig[sizeof sc->sig];
    snprintf(sig, sizeof sig, "%s cut=%u opt=%u,%u,%a,%a,%a,%a,%a,%a,%a,%a", w->model, w->cut,
             w->opt_kind, w->opt_nesterov, w->opt_lr, w->opt_rho, w->opt_eps, w->opt_momentum,
             w->opt_dampening, w->opt_weight_decay, w->opt_beta1, w->opt_beta2);
    /* the node side we hold is the run's if it is of the run's step (the same
     * run after a reconnection, or a run resumed at the step we are at) */
    const int keep = sc->ok && !sc->need_state && sc->sn.steps == w->opt_steps &&
                     !strcmp(sc->sig, sig);
    if (!keep) {
        tl_optim_cfg oc = {.kind = (tl_optim_kind)w->opt_kind,
                           .lr = w->opt_lr,
                           .rho = w->opt_rho,
                           .eps = w->opt_eps,
                           .momentum = w->opt_momentum,
                           .dampening = w->opt_dampening,
                           .weight_decay = w->opt_weight_decay,
                           .nesterov = (int)w->opt_nesterov,
                           .beta1 = w->opt_beta1,
                           .beta2 = w->opt_beta2};
        if (w->opt_kind < TL_OPT_ADADELTA || w->opt_kind > TL_OPT_ADAMW)
            return tl_error(TL_EPROTO, "WELCOME: unknown optimizer %u", w->opt_kind);
        float *init = NULL;
        if (s->cfg->init_path) {
            if (!(init = malloc(sizeof(float) * m->n_params)))
                return tl_error(TL_ENOMEM, "--init: out of memory");
            if ((rc = tl_params_load(s->cfg->init_path, m, init)) < 0) {
                free(init);
                return rc;
            }
        }
        /* within one run a mask already used stays used, whatever state comes */
        const int same_run = sc->ok && sc->run_id == w->run_id && sc->sn.sealed_any;
        const uint64_t last_step = sc->sn.last_step;
        const uint32_t last_attempt = sc->sn.last_attempt;
        if (sc->ok) tl_sealed_free(&sc->sn);
        sc->ok = 0;
        rc = tl_sealed_init(&sc->sn, s->cfg->group_key, m, s->cut, init, &oc);
        free(init);
        if (rc < 0) return rc;
        const char *perturb = getenv("TL_TEST_PERTURB_NODE_SIDE"); /* tests: force divergence */
        if (perturb && atoi(perturb) == s->cfg->id && sc->sn.p_node)
            sc->sn.params[0] += 0x1p-10f; /* survives the steps (one ulp may round away) */
        if (same_run) {
            sc->sn.sealed_any = 1;
            sc->sn.last_step = last_step;
            sc->sn.last_attempt = last_attempt;
        }
        sc->ok = 1;
        sc->need_state = 0;
        snprintf(sc->sig, sizeof sc->sig, "%s", sig);
        /* a run already under way: our saved node side of its step, or a live node's */
        if (w->opt_steps != 0 && (rc = sealed_restore(s, w->opt_steps)) < 0) return rc;
    } else if (sc->run_id != w->run_id)
        logf_(s->cfg, "kept its node side of step %llu for the resumed run",
              (unsigned long long)sc->sn.steps);
    sc->run_id = w->run_id;
    const size_t n = s->p_node ? s->p_node : 1;
    s->full = malloc(sizeof(float) * m->n_params);
    s->q = malloc(sizeof(uint64_t) * n);
    if (!s->full || !s->q) return tl_error(TL_ENOMEM, "sealed buffers: out of memory");
    return 0;
}

/* Applies WELCOME: the model, the cut, the mode; checks our data fits and
 * that every size the run implies fits the wire (u32 dims) and this process.
 * Sizes are compared in 64 bits. */
static int apply_welcome(session *s, const tl_msg_welcome *w) {
    const tl_dataset *d = s->cfg->data;
    int rc;
    if ((uint64_t)w->input_dim != (uint64_t)d->dim)
        return tl_error(TL_ESTATE, "the run's inputs have %u features, our data has %zu",
                        w->input_dim, d->dim);
    rc = tl_model_parse(w->model, (int)w->input_dim, &s->model);
    if (rc < 0) return rc;
    if ((uint64_t)s->model.n_params > UINT32_MAX)
        return tl_error(TL_ERANGE,
                        "the run's model has %llu parameters: more than a tensor can carry "
                        "(2^32 - 1); refusing it",
                        (unsigned long long)s->model.n_params);
    if ((int64_t)w->n_classes != (int64_t)s->model.n_classes || d->classes > s->model.n_classes)
        return tl_error(TL_ESTATE, "the run has %u classes, our labels go up to %d", w->n_classes,
                        d->classes - 1);
    const tl_dataset *t = s->cfg->test;
    if (t && t->classes > s->model.n_classes)
        return tl_error(TL_ESTATE, "the run has %u classes, our test labels go up to %d",
                        w->n_classes, t->classes - 1);
    if (w->cut < 1 || (int)w->cut >= s->model.n_modules)
        return tl_error(TL_ESTATE, "WELCOME: cut %u out of range for %s", w->cut, w->model);
    if ((int)w->privacy != s->cfg->privacy)
        return tl_error(TL_EREFUSED,
                        "the orchestrator runs %s mode, this node is %s (its "
                        "--privacy decides for it)",
                        w->privacy ? "sealed" : "open", s->cfg->privacy ? "sealed" : "open");
    if (w->rank) { /* the run states its sample shape: ours must be it */
        uint32_t rank, shape[3];
        char a[64], b[64];
        sample_shape(d, &rank, shape);
        if (rank != w->rank || memcmp(shape, w->shape, sizeof shape) != 0)
            return tl_error(TL_ESTATE, "the run's samples have shape %s, ours %s",
                            shape_str(a, sizeof a, w->rank, w->shape),
                            shape_str(b, sizeof b, rank, shape));
    }
    if (w->norm == TL_WELCOME_NORM_FEATURE) {
        /* the decoder checked both are F32 [input_dim] == our width */
        const size_t dim = d->dim;
        s->norm.kind = TL_NORM_FEATURE;
        s->norm.mean_f = malloc(sizeof(float) * dim);
        s->norm.std_f = malloc(sizeof(float) * dim);
        if (!s->norm.mean_f || !s->norm.std_f)
            return tl_error(TL_ENOMEM, "normalization of %zu features: out of memory", dim);
        s->norm.dim = dim;
        memcpy(s->norm.mean_f, w->mean_f.data, sizeof(float) * dim);
        memcpy(s->norm.std_f, w->std_f.data, sizeof(float) * dim);
        for (size_t f = 0; f < dim; f++)
            if (!isfinite(s->norm.mean_f[f]) || !isfinite(s->norm.std_f[f]) ||
                !(s->norm.std_f[f] > 0))
                return tl_error(TL_ESTATE,
                                "WELCOME: feature %zu normalizes with mean %g, "
                                "std %g (must be finite, std > 0)",
                                f, (double)s->norm.mean_f[f], (double)s->norm.std_f[f]);
    } else {
        if (!isfinite(w->mean) || !isfinite(w->std) || !(w->std > 0))
            return tl_error(TL_ESTATE,
                            "WELCOME: normalization mean %g, std %g (must be "
                            "finite, std > 0)",
                            (double)w->mean, (double)w->std);
        s->norm.kind = TL_NORM_SCALAR;
        s->norm.mean = w->mean;
        s->norm.std = w->std;
    }
    s->run_id = w->run_id;
    s->cut = (int)w->cut;
    s->mode = (tl_mode)w->mode;
    s->hb_ms = (int)w->heartbeat_ms;
    s->p_node = tl_model_param_offset(&s->model, s->cut);
    s->p_recv = s->mode == TL_MODE_TRAVERSE ? s->model.n_params : s->p_node;
    if (w->privacy) /* the node side is ours: FORWARD carries the rest (traverse) or nothing */
        s->p_recv = s->mode == TL_MODE_TRAVERSE ? s->model.n_params - s->p_node : 0;
    s->grads = malloc(sizeof(float) * (s->p_node ? s->p_node : 1));
    if (!s->grads)
        return tl_error(TL_ENOMEM,
                        "the run's model has %zu node-side parameters: more than "
                        "this node can hold",
                        s->p_node);
    if (w->privacy && (rc = sealed_welcome(s, w)) < 0) return rc;
    /* Largest frame we accept: FORWARD (every parameter and the rows) or
     * BACKWARD (dh, rows x d_c), whichever is larger. WELCOME does not say the
     * batch size, but our part of any batch has at most our sample count rows. */
    const uint64_t rows = (uint64_t)d->n, dc = (uint64_t)tl_model_width(&s->model, s->cut);
    const uint64_t fwd = (uint64_t)s->p_recv * 4 + rows * 4, bwd = rows * dc * 4 + 4096,
                   eval = (uint64_t)s->model.n_params * 4, /* EVAL, FINAL: all parameters */
        sum = w->privacy ? (uint64_t)s->p_node * 4 * (1 + TL_OPTIM_MAX_STATE) +
                               64 * 1024 /* a SEALED_STEP, or a STATE_BLOB */
                         : 0;
    uint64_t big = fwd > bwd ? fwd : bwd;
    big = big > eval ? big : eval;
    tl_frame_reader_set_max(&s->r, (big > sum ? big : sum) + (1 << 20));
    if (w->flags & TL_WELCOME_F_ZSTD) {
        s->r.zstd = 1;
        tl_frame_writer_set_zstd(&s->w, 1, 1);
    }
    return 0;
}

/* FORWARD: run our rows through the model, answer with h (and g or labels). */
static int on_forward(session *s, const tl_msg_forward *f) {
    const tl_dataset *d = s->cfg->data;
    uint32_t p = (uint32_t)s->p_recv;
    int rc;
    if (f->rows.dtype != TL_DT_U32 || f->rows.rank != 1 || f->rows.numel == 0 ||
        f->rows.numel > d->n)
        return tl_error(TL_EPROTO, "FORWARD: rows must be u32 [1..%zu]", d->n);
    if ((rc = tl_tensor_check_below(&f->rows, d->n, "FORWARD rows")) < 0) return rc;
    if (s->shm_params) p = 0; /* they are in shared memory */
    if ((rc = tl_tensor_check(&f->params, TL_DT_F32, 1, &p, "FORWARD params")) < 0) return rc;
    /* docs/protocol.md §4: receivers check finiteness (the shared block too) */
    tl_tensor all = s->shm_params ? tl_tensor_1d(TL_DT_F32, s->shm_params, (uint32_t)s->p_recv)
                                  : f->params;
    if ((rc = tl_tensor_check_finite(&all, "FORWARD params")) < 0) return rc;
    const int n = (int)f->rows.numel;
    if ((rc = grow_rows(s, n)) < 0) return rc;
    if (s->shm_params) {
        /* the orchestrator changes them only once every node has answered BACKWARD */
        s->params = s->shm_params;
    } else {
        /* Keep the parameters (they live in the frame's payload) until BACKWARD. */
        void *old = s->params_buf;
        size_t old_cap = s->params_cap;
        s->params_buf = tl_frame_reader_take(&s->r, &s->params_cap);
        tl_frame_reader_recycle(&s->r, old, old_cap); /* after the take: it may free */
        s->params = f->params.data;
    }
    if (s->full && s->sc->need_state)
        return tl_error(TL_EPROTO, "FORWARD before the node side of step %llu arrived",
                        (unsigned long long)s->sc->want_step);
    if (s->full) { /* sealed: our node side, then the orchestrator's (traverse) */
        const tl_sealed_node *sn = &s->sc->sn;
        memcpy(s->full, sn->params, sizeof(float) * s->p_node);
        if (s->p_recv) memcpy(s->full + s->p_node, s->params, sizeof(float) * s->p_recv);
        s->params = s->full;
    }
    s->step = f->step;
    s->n = n;

    const uint32_t *rows = f->rows.data;
    for (int i = 0; i < n; i++) s->rows[i] = rows[i];
    tl_dataset_gather_norm(d, s->rows, (size_t)n, &s->norm, s->ws.h[0], s->y);
    const tl_model *m = &s->model;
    const int dc = tl_model_width(m, s->cut);
    tl_msg out = {.type = TL_MSG_FORWARD_RESULT};
    tl_msg_forward_result *r = &out.u.fwd_result;
    r->step = f->step;
    r->h = tl_tensor_2d(TL_DT_F32, s->ws.h[s->cut], (uint32_t)n, (uint32_t)dc);
    if (s->mode == TL_MODE_TRAVERSE) {
        tl_model_forward(m, s->params, &s->ws, n, 0, m->n_modules);
        const float *z = s->ws.h[m->n_modules];
        int64_t correct;
        r->loss_sum = tl_nll_forward(z, s->y, n, m->n_classes, &correct);
        r->correct = (uint32_t)correct;
        tl_nll_grad(s->g, z, s->y, n, m->n_classes);
        r->g = tl_tensor_2d(TL_DT_F32, s->g, (uint32_t)n, (uint32_t)m->n_classes);
    } else {
        tl_model_forward(m, s->params, &s->ws, n, 0, s->cut);
        r->labels = tl_tensor_1d(TL_DT_I32, s->y, (uint32_t)n);
    }
    return send_msg(s, &out);
}

/* PARAM_MAC of our node side at its current step. */
static int send_mac(session *s) {
    tl_msg out = {.type = TL_MSG_PARAM_MAC};
    out.u.param_mac.step = s->sc->sn.steps;
    int rc = tl_sealed_mac(&s->sc->sn, out.u.param_mac.mac);
    return rc < 0 ? rc : send_msg(s, &out);
}

/* Sealed BACKWARD_RESULT: our gradient (in s->grads) as a masked fixed-point
 * vector (sealed.h), in the shared region when there is one. */
static int sealed_backward(session *s, const tl_msg_backward *b) {
    const tl_tensor *ids = &b->participants;
    if (ids->dtype != TL_DT_U32 || ids->numel < 1 || ids->numel > TL_FIXED_MAX_TERMS)
        return tl_error(TL_EPROTO, "BACKWARD: participants must be u32 [1..%d]",
                        TL_FIXED_MAX_TERMS);
    int rc = tl_sealed_seal(&s->sc->sn, s->run_id, b->step, b->attempt, ids->data, (int)ids->numel,
                            (uint32_t)s->cfg->id, s->grads, s->q);
    if (rc < 0) return rc;
    tl_msg out = {.type = TL_MSG_BACKWARD_RESULT};
    out.u.bwd_result.step = b->step;
    out.u.bwd_result.grads = s->q_shm ? tl_tensor_1d(TL_DT_U64, NULL, 0)
                                      : tl_tensor_1d(TL_DT_U64, s->q, (uint32_t)s->p_node);
    return send_msg(s, &out);
}

/* SEALED_STEP: remove the mask from the sum, decode, one optimizer step on
 * our node side; PARAM_MAC of the result when asked. */
static int on_sealed_step(session *s, const tl_msg_sealed_step *q) {
    if (!s->full) return tl_error(TL_EPROTO, "SEALED_STEP in an open run");
    if (s->sc->need_state) /* never a stale step: the state transfer comes first */
        return tl_error(TL_EPROTO, "SEALED_STEP %llu before the node side of step %llu arrived",
                        (unsigned long long)q->step, (unsigned long long)s->sc->want_step);
    /* shared memory: the sum is in our region, or in the frame when the
     * orchestrator could not know the region free (protocol.md §8.2) */
    const uint32_t pn = s->q_shm && q->sum.numel == 0 ? 0 : (uint32_t)s->p_node;
    int rc = tl_tensor_check(&q->sum, TL_DT_U64, 1, &pn, "SEALED_STEP sum");
    if (rc < 0) return rc;
    if (q->participants.numel < 1 || q->participants.numel > TL_FIXED_MAX_TERMS)
        return tl_error(TL_EPROTO, "SEALED_STEP: %llu participants",
                        (unsigned long long)q->participants.numel);
    if (!isfinite(q->lr) || q->lr < 0)
        return tl_error(TL_EPROTO, "SEALED_STEP: learning rate %g", q->lr);
    const uint64_t *sum = pn ? q->sum.data : s->q;
    tl_sealed_node *sn = &s->sc->sn;
    if ((rc = tl_sealed_apply(sn, s->run_id, q->step, q->attempt, q->participants.data,
                              (int)q->participants.numel, sum, q->lr)) < 0)
        return rc;
    return (q->flags & TL_SEALED_F_MAC) ? send_mac(s) : 0;
}

/* FINAL: the orchestrator's side; the whole model to --save, then PARAM_MAC. */
static int on_final(session *s, const tl_msg_final *f) {
    if (!s->full) return tl_error(TL_EPROTO, "FINAL in an open run");
    const tl_model *m = &s->model;
    const uint32_t po = (uint32_t)(m->n_params - s->p_node);
    int rc = tl_tensor_check(&f->params, TL_DT_F32, 1, &po, "FINAL params");
    if (rc == 0) rc = tl_tensor_check_finite(&f->params, "FINAL params");
    if (rc < 0) return rc;
    if (f->step != s->sc->sn.steps)
        return tl_error(TL_EPROTO, "FINAL at step %llu, but the node side is at step %llu",
                        (unsigned long long)f->step, (unsigned long long)s->sc->sn.steps);
    memcpy(s->full, s->sc->sn.params, sizeof(float) * s->p_node);
    memcpy(s->full + s->p_node, f->params.data, sizeof(float) * po);
    if (s->cfg->save_path) {
        char steps[32];
        snprintf(steps, sizeof steps, "%llu", (unsigned long long)f->step);
        /* what a user needs to feed it, from our data and WELCOME's normalization */
        tl_model_desc desc;
        if ((rc = tl_model_desc_init(&desc, m, s->cfg->data, &s->norm)) < 0) return rc;
        tl_st_kv meta[] = {{"format", "pt"}, {"steps", steps}, desc.meta[0],
                           desc.meta[1],     desc.meta[2],     {"producer", "tl node " TL_VERSION}};
        rc = tl_params_save(s->cfg->save_path, m, s->full, NULL, 0, meta, 6);
        tl_model_desc_free(&desc);
        if (rc < 0) return rc;
        logf_(s->cfg, "saved the whole model (step %llu) to %s", (unsigned long long)f->step,
              s->cfg->save_path);
    }
    return send_mac(s);
}

/* ------------------------------------------------ sealed: faults (nodestate.h)
 * A node that comes back without the node side of the run's step (killed and
 * restarted, left behind while stopped, or a run resumed at an older step)
 * takes it from its own saved states (kept at the orchestrator's
 * checkpoints) or else from a live node: sealed for it under the group's
 * transfer key, relayed by the orchestrator (docs/protocol.md §8.2). */

/* A view of our node side for nodestate.h. */
static tl_nodestate state_view(session *s) {
    tl_sealed_node *sn = &s->sc->sn;
    tl_nodestate v = {.params = sn->params,
                      .n = sn->p_node,
                      .optim = &sn->opt,
                      .run_id = s->run_id,
                      .step = sn->steps};
    return v;
}

/* WELCOME of a run at step `step` (> 0) and our node side is not of it:
 * roll back to our saved state of that step, or ask for it (READY says
 * TL_STATE_NONE). Only a local failure is an error. */
static int sealed_restore(session *s, uint64_t step) {
    sealed_ctx *sc = s->sc;
    const char *why = "no saved state (--state)";
    char buf[600];
    if (s->cfg->state_path) {
        tl_nodestate v = state_view(s);
        int rc = tl_nodestate_find(s->cfg->state_path, step, &v);
        if (rc == 0) {
            sc->sn.steps = v.step;
            logf_(s->cfg,
                  "took the node side of step %llu from %s.* (saved at the "
                  "orchestrator's checkpoint)",
                  (unsigned long long)step, s->cfg->state_path);
            return 0;
        }
        if (rc == TL_ENOMEM) return rc;
        snprintf(buf, sizeof buf, "%s", tl_errmsg());
        why = buf;
    }
    sc->need_state = 1;
    sc->want_step = step;
    logf_(s->cfg,
          "the run is at step %llu and this node holds no node side of it (%s): a live "
          "node's comes, sealed",
          (unsigned long long)step, why);
    return 0;
}

/* STATE_REQUEST: seal our node side (of the step asked, which must be ours)
 * for node `to` and send it back for relaying. */
static int on_state_request(session *s, const tl_msg_state_request *r) {
    if (!s->full) return tl_error(TL_EPROTO, "STATE_REQUEST in an open run");
    if (s->sc->need_state || r->step != s->sc->sn.steps)
        return tl_error(
            TL_EPROTO,
            "STATE_REQUEST for step %llu, but this node's node side is %s "
            "%llu",
            (unsigned long long)r->step, s->sc->need_state ? "missing, wanted at step" : "at step",
            (unsigned long long)(s->sc->need_state ? s->sc->want_step : s->sc->sn.steps));
    if (r->to < 1 || r->to == (uint32_t)s->cfg->id)
        return tl_error(TL_EPROTO, "STATE_REQUEST for node %u", r->to);
    tl_nodestate v = state_view(s);
    uint8_t *blob;
    size_t len;
    int rc = tl_nodestate_seal(s->cfg->group_key, &v, (uint32_t)s->cfg->id, r->to, &blob, &len);
    if (rc < 0) return rc;
    if (len > UINT32_MAX) {
        free(blob);
        return tl_error(TL_ERANGE, "the sealed node side is %zu bytes: too large for a tensor",
                        len);
    }
    tl_msg out = {.type = TL_MSG_STATE_BLOB};
    out.u.state_blob.step = r->step;
    out.u.state_blob.from = (uint32_t)s->cfg->id;
    out.u.state_blob.to = r->to;
    out.u.state_blob.blob = tl_tensor_1d(TL_DT_U8, blob, (uint32_t)len);
    rc = send_msg(s, &out);
    free(blob);
    if (rc == 0)
        logf_(s->cfg, "sent the node side of step %llu to node %u (sealed, %zu bytes)",
              (unsigned long long)r->step, r->to, len);
    return rc;
}

/* STATE_BLOB: the node side we wait for, from a live node; opened and
 * installed only if it authenticates as sealed for us, in this run, at the
 * step we need. */
static int on_state_blob(session *s, const tl_msg_state_blob *b) {
    sealed_ctx *sc = s->sc;
    if (!s->full || !sc->need_state)
        return tl_error(TL_EPROTO, "STATE_BLOB that this node did not ask for");
    if (b->to != (uint32_t)s->cfg->id || b->step != sc->want_step)
        return tl_error(TL_EPROTO,
                        "STATE_BLOB for node %u at step %llu, but this is node %d "
                        "waiting for step %llu",
                        b->to, (unsigned long long)b->step, s->cfg->id,
                        (unsigned long long)sc->want_step);
    tl_nodestate v = state_view(s);
    int rc = tl_nodestate_open(s->cfg->group_key, s->run_id, b->step, b->from, b->to, b->blob.data,
                               (size_t)b->blob.numel, &v);
    if (rc < 0) return rc;
    sc->sn.steps = v.step;
    sc->need_state = 0;
    logf_(s->cfg, "took the node side of step %llu from node %u (sealed, %llu bytes)",
          (unsigned long long)b->step, b->from, (unsigned long long)b->blob.numel);
    return 0;
}

/* CHECKPOINT: the orchestrator checkpoints at `step`; we keep our node side
 * of that step (the last two: nodestate.h), then confirm. */
static int on_checkpoint(session *s, const tl_msg_checkpoint *c) {
    if (!s->full) return tl_error(TL_EPROTO, "CHECKPOINT in an open run");
    sealed_ctx *sc = s->sc;
    if (!sc->need_state && sc->sn.steps == c->step && s->cfg->state_path) {
        tl_nodestate v = state_view(s);
        if (tl_nodestate_keep(s->cfg->state_path, &v) < 0)
            logf_(s->cfg,
                  "could not save the node side of step %llu: %s (a resumed run takes "
                  "it from another node)",
                  (unsigned long long)c->step, tl_errmsg());
    }
    tl_msg out = {.type = TL_MSG_CHECKPOINT};
    out.u.checkpoint.step = c->step;
    return send_msg(s, &out);
}

/* BACKWARD: back-propagate our rows of dL/dH_c through the node side. */
static int on_backward(session *s, const tl_msg_backward *b) {
    if (!s->n || b->step != s->step)
        return tl_error(TL_EPROTO, "BACKWARD for step %llu, but the last FORWARD was step %llu",
                        (unsigned long long)b->step, (unsigned long long)s->step);
    uint32_t dims[2] = {(uint32_t)s->n, (uint32_t)tl_model_width(&s->model, s->cut)};
    int rc = tl_tensor_check(&b->dh, TL_DT_F32, 2, dims, "BACKWARD dh");
    if (rc == 0) rc = tl_tensor_check_finite(&b->dh, "BACKWARD dh");
    if (rc < 0) return rc;
    memset(s->grads, 0, sizeof(float) * s->p_node);
    tl_model_backward(&s->model, s->params, s->grads, &s->ws, s->n, 0, s->cut, b->dh.data, NULL);
    if (s->full) return sealed_backward(s, b);
    tl_msg out = {.type = TL_MSG_BACKWARD_RESULT};
    out.u.bwd_result.step = b->step;
    /* shared: the orchestrator reads them where we computed them */
    out.u.bwd_result.grads = s->shm_grads ? tl_tensor_1d(TL_DT_F32, NULL, 0)
                                          : tl_tensor_1d(TL_DT_F32, s->grads, (uint32_t)s->p_node);
    return send_msg(s, &out);
}

/* STATS_REQUEST: the count, per-feature sums and sums of squares of our
 * training rows (norm.h), for the run's --normalize standardize. */
static int send_stats(session *s) {
    const tl_dataset *d = s->cfg->data;
    tl_norm_stats st;
    int rc = tl_norm_stats_init(&st, d->dim);
    if (rc < 0) return rc;
    if ((rc = tl_norm_stats_add(&st, d, NULL, d->n)) == 0) {
        tl_msg m = {.type = TL_MSG_STATS};
        m.u.stats.count = st.count;
        m.u.stats.sum = tl_tensor_1d(TL_DT_F64, st.sum, (uint32_t)d->dim);
        m.u.stats.sumsq = tl_tensor_1d(TL_DT_F64, st.sumsq, (uint32_t)d->dim);
        rc = send_msg(s, &m);
    }
    tl_norm_stats_free(&st);
    return rc;
}

/* EVAL: evaluate the given parameters on our held-out rows and answer with
 * the sums only (evalstats.h), computed as tl train computes them. */
static int on_eval(session *s, const tl_msg_eval *e) {
    const tl_model *m = &s->model;
    int rc;
    if (e->bins < 2 || e->bins > TL_EVAL_MAX_BINS)
        return tl_error(TL_EPROTO, "EVAL: %u bins (must be 2..%d)", e->bins, TL_EVAL_MAX_BINS);
    if (s->full && s->sc->need_state) /* sealed: never with a node side not the run's */
        return tl_error(TL_EPROTO, "EVAL before the node side of step %llu arrived",
                        (unsigned long long)s->sc->want_step);
    /* all parameters: the shared block holds them in traverse mode */
    const int shared = s->shm_params && s->mode == TL_MODE_TRAVERSE;
    /* sealed: the orchestrator side only, our node side goes in front */
    const uint32_t pe = (uint32_t)(m->n_params - (s->full ? s->p_node : 0));
    uint32_t p = shared ? 0 : pe;
    if ((rc = tl_tensor_check(&e->params, TL_DT_F32, 1, &p, "EVAL params")) < 0) return rc;
    tl_tensor all = shared ? tl_tensor_1d(TL_DT_F32, s->shm_params, pe) : e->params;
    if ((rc = tl_tensor_check_finite(&all, "EVAL params")) < 0) return rc;
    if (s->full) {
        memcpy(s->full, s->sc->sn.params, sizeof(float) * s->p_node);
        memcpy(s->full + s->p_node, all.data, sizeof(float) * pe);
        all = tl_tensor_1d(TL_DT_F32, s->full, (uint32_t)m->n_params);
    }
    tl_evalstats ev = {0};
    uint8_t *buf = NULL;
    if ((rc = tl_evalstats_init(&ev, m->n_classes, (int)e->bins)) < 0) {
        if (rc == TL_ERANGE) rc = tl_error(TL_EPROTO, "EVAL: %s", tl_errmsg());
        return rc;
    }
    const tl_dataset *t = s->cfg->test;
    if (t && (rc = tl_evaluate_sums(m, all.data, t, &s->norm, &ev)) < 0) goto cleanup;
    const size_t size = tl_evalstats_size(ev.classes, ev.bins);
    if (!(buf = malloc(size))) {
        rc = tl_error(TL_ENOMEM, "evaluation sums of %zu bytes: out of memory", size);
        goto cleanup;
    }
    tl_evalstats_encode(&ev, buf);
    tl_msg out = {.type = TL_MSG_EVAL_RESULT};
    out.u.eval_result.step = e->step;
    out.u.eval_result.stats = tl_tensor_1d(TL_DT_U64, buf, (uint32_t)(size / 8));
    rc = send_msg(s, &out);
    if (rc == 0)
        logf_(s->cfg, "evaluated step %llu on %zu held-out rows (sums sent)",
              (unsigned long long)e->step, t ? t->n : (size_t)0);
cleanup:
    free(buf);
    tl_evalstats_free(&ev);
    return rc;
}

/* WELCOME said shared memory: the two descriptors come on the byte after it
 * (shm.h); map the parameters read-only and our gradient region. */
static int take_shared_memory(session *s, int64_t deadline) {
    int fds[2], rc;
    void *pp, *gp;
    if (tl_conn_pending(s->c)) /* nothing of that byte may sit in a buffer */
        return tl_error(TL_EPROTO, "bytes after WELCOME where the shared memory belongs");
    if ((rc = tl_conn_recv_fds(s->c, deadline, fds, 2)) < 0) return rc;
    if ((rc = tl_shm_map(fds[0], sizeof(float) * s->p_recv, 0, &pp)) < 0) {
        close(fds[1]);
        return rc;
    }
    s->shm_params = pp;
    if (s->full) { /* sealed: the region holds our masked u64 vector */
        if ((rc = tl_shm_map(fds[1], sizeof(uint64_t) * s->p_node, 1, &gp)) < 0) return rc;
        free(s->q);
        s->q = gp;
        s->q_shm = 1;
        return 0;
    }
    if ((rc = tl_shm_map(fds[1], sizeof(float) * s->p_node, 1, &gp)) < 0) return rc;
    free(s->grads);
    s->grads = gp;
    s->shm_grads = 1;
    return 0;
}

/* Connects and handshakes. 0 when welcomed; TL_EREFUSED when rejected
 * (final); another code for a connection problem (retry). */
static int session_open(session *s) {
    const tl_node_cfg *cfg = s->cfg;
    int rc = tl_conn_connect(cfg->host, cfg->port, CONNECT_TIMEOUT_MS, cfg->tls, &s->c);
    if (rc < 0) return rc;
    int64_t deadline = tl_now_ms() + HANDSHAKE_TIMEOUT_MS;
    if ((rc = tl_conn_handshake_full(s->c, deadline)) < 0) return rc;
    tl_frame_reader_init(&s->r, TL_FRAME_HANDSHAKE_MAX);
    tl_frame_writer_init(&s->w);

    tl_msg m = {.type = TL_MSG_HELLO};
    m.u.hello.node_id = (uint32_t)cfg->id;
    m.u.hello.proto_version = TL_PROTO_VERSION;
    m.u.hello.flags = (cfg->zstd ? TL_HELLO_F_ZSTD : 0) |
                      (tl_conn_can_pass_fds(s->c) ? TL_HELLO_F_SHM : 0);
    m.u.hello.sample_count = cfg->data->n;
    m.u.hello.fingerprint = s->fingerprint;
    m.u.hello.privacy = (uint32_t)cfg->privacy;
    if (cfg->privacy) memcpy(m.u.hello.key_id, cfg->group_key->id, sizeof m.u.hello.key_id);
    snprintf(m.u.hello.version, sizeof m.u.hello.version, "tl %s", TL_VERSION);
    const tl_dataset *d = cfg->data;
    m.u.hello.classes = (uint32_t)d->classes;
    m.u.hello.elem = d->dtype == TL_ELEM_F32 ? TL_ELEM_WIRE_F32 : TL_ELEM_WIRE_U8;
    sample_shape(d, &m.u.hello.rank, m.u.hello.shape);
    m.u.hello.test_count = cfg->test ? cfg->test->n : 0;
    m.u.hello.labels_hash = labels_hash(d);
    if ((rc = send_msg(s, &m)) < 0) return rc;
    /* WELCOME may carry a per-feature descriptor: two floats per feature */
    tl_frame_reader_set_max(&s->r, TL_FRAME_HANDSHAKE_MAX + (uint64_t)8 * d->dim);
    for (;;) {
        if ((rc = tl_msg_recv(s->c, &s->r, &m, deadline)) < 0) return rc;
        s->last_recv = tl_now_ms();
        /* the orchestrator asks for our sums, then waits for every node's
         * before it says WELCOME; each frame restarts the handshake timeout */
        if (m.type == TL_MSG_STATS_REQUEST) {
            if ((rc = send_stats(s)) < 0) return rc;
        } else if (m.type != TL_MSG_HEARTBEAT) {
            break;
        }
        deadline = tl_now_ms() + HANDSHAKE_TIMEOUT_MS;
    }
    if (m.type == TL_MSG_REJECT && m.u.reject.code == TL_REJECT_DUPLICATE_ID)
        /* our old connection may still be open at the orchestrator (a silent
         * path): it goes away, so this is worth retrying */
        return tl_error(TL_EAGAIN, "the orchestrator refused node %d for now: %s", cfg->id,
                        m.u.reject.reason);
    if (m.type == TL_MSG_REJECT)
        return tl_error(TL_EREFUSED, "the orchestrator refused node %d: %s", cfg->id,
                        m.u.reject.reason);
    if (m.type == TL_MSG_ERROR)
        return tl_error(TL_EPROTO, "the orchestrator reported an error: %s", m.u.error.message);
    if (m.type != TL_MSG_WELCOME)
        return tl_error(TL_EPROTO, "expected WELCOME, got %s", tl_msg_type_name(m.type));
    if ((rc = apply_welcome(s, &m.u.welcome)) < 0) {
        send_error(s, rc, tl_errmsg());
        return TL_EREFUSED; /* our data cannot take part in this run: final */
    }
    if ((m.u.welcome.flags & TL_WELCOME_F_SHM) && (rc = take_shared_memory(s, deadline)) < 0) {
        /* the same would happen on every attempt (a proxy on the socket that
         * drops descriptors, say): final, with the way out */
        if (rc != TL_EPROTO) return rc;
        char why[512];
        snprintf(why, sizeof why, "%s", tl_errmsg());
        send_error(s, rc, why);
        return tl_error(TL_EREFUSED, "%s (the orchestrator's --no-shm avoids shared memory)", why);
    }
    /* WELCOME fits our data: we take part (the orchestrator registers us now) */
    tl_msg ready = {.type = TL_MSG_READY};
    ready.u.ready.run_id = s->run_id;
    if (cfg->privacy) /* the node side we hold, or none: a live node's comes (STATE_BLOB) */
        ready.u.ready.state_step = s->sc->need_state ? TL_STATE_NONE : s->sc->sn.steps;
    if ((rc = send_msg(s, &ready)) < 0) return rc;
    /* the first FORWARD comes once every node has joined: generate the
     * matrix-product kernels now rather than then */
    tl_model_warmup(&s->model, 64);
    logf_(cfg,
          "joined the run at %s as node %d (%zu samples, %s, cut after module %d, %s mode, "
          "%s)",
          s->c->peer, cfg->id, cfg->data->n, s->c->ops->name, s->cut,
          s->mode == TL_MODE_TRAVERSE ? "traverse" : "split", cfg->privacy ? "sealed" : "open");
    return 0;
}

static int node_loop(const tl_node_cfg *cfg, sealed_ctx *sc);

/* Serves requests until DONE (0) or a failure of this connection. */
static int session_serve(session *s) {
    tl_msg m;
    for (;;) {
        int64_t now = tl_now_ms(), deadline = -1;
        if (s->hb_ms > 0) {
            int64_t hb = s->last_sent + s->hb_ms, dead = s->last_recv + 4 * (int64_t)s->hb_ms;
            if (now >= dead)
                return tl_error(TL_ETIMEDOUT, "no word from the orchestrator for %d ms",
                                4 * s->hb_ms);
            if (now >= hb) {
                tl_msg h = {.type = TL_MSG_HEARTBEAT};
                h.u.heartbeat.nonce = (uint64_t)now;
                int rc = send_msg(s, &h);
                if (rc < 0) return rc;
                continue;
            }
            deadline = hb < dead ? hb : dead;
        }
        int rc = tl_msg_recv(s->c, &s->r, &m, deadline);
        if (rc == TL_ETIMEDOUT) continue;
        if (rc < 0) return rc;
        s->last_recv = tl_now_ms();
        switch (m.type) {
        case TL_MSG_FORWARD: rc = on_forward(s, &m.u.forward); break;
        case TL_MSG_BACKWARD: rc = on_backward(s, &m.u.backward); break;
        case TL_MSG_SEALED_STEP: rc = on_sealed_step(s, &m.u.sealed_step); break;
        case TL_MSG_FINAL: rc = on_final(s, &m.u.final); break;
        case TL_MSG_EVAL: rc = on_eval(s, &m.u.eval); break;
        case TL_MSG_STATE_REQUEST: rc = on_state_request(s, &m.u.state_request); break;
        case TL_MSG_STATE_BLOB: rc = on_state_blob(s, &m.u.state_blob); break;
        case TL_MSG_CHECKPOINT: rc = on_checkpoint(s, &m.u.checkpoint); break;
        case TL_MSG_HEARTBEAT: break;
        case TL_MSG_DONE: logf_(s->cfg, "run finished: %s", m.u.done.reason); return 0;
        case TL_MSG_ERROR:
            return tl_error(TL_EPROTO, "the orchestrator closed our connection: %s",
                            m.u.error.message);
        default:
            rc = tl_error(TL_EPROTO, "unexpected %s from the orchestrator",
                          tl_msg_type_name(m.type));
        }
        if (rc < 0) {
            if (rc == TL_EPROTO || rc == TL_ENOMEM || rc == TL_ENUMERIC)
                send_error(s, rc, tl_errmsg());
            return rc;
        }
    }
}

/* The held-out rows must be rows of the same kind as the training rows. */
static int check_test(const tl_node_cfg *cfg) {
    const tl_dataset *d = cfg->data, *t = cfg->test;
    if (!t) return 0;
    uint32_t rd, rt, sd[3], st[3];
    sample_shape(d, &rd, sd);
    sample_shape(t, &rt, st);
    if (t->dim != d->dim || rd != rt || memcmp(sd, st, sizeof sd) || t->dtype != d->dtype)
        return tl_error(TL_EINVAL,
                        "the node's test rows (%zu features) are not shaped as its "
                        "training rows (%zu features)",
                        t->dim, d->dim);
    return 0;
}

int tl_node_run(const tl_node_cfg *cfg) {
    if (cfg->privacy && !cfg->group_key)
        return tl_error(TL_EINVAL, "sealed mode needs the group key");
    sealed_ctx sc;
    memset(&sc, 0, sizeof sc);
    int rc = node_loop(cfg, &sc);
    if (sc.ok) tl_sealed_free(&sc.sn);
    return rc;
}

static int node_loop(const tl_node_cfg *cfg, sealed_ctx *sc) {
    int backoff = BACKOFF_MIN_MS, attempts = 0;
    int rc0 = check_test(cfg);
    if (rc0 < 0) return rc0;
    int64_t since = tl_now_ms(); /* start of the current stretch without a connection */
    const uint64_t fingerprint = tl_dataset_fingerprint(cfg->data);
    for (;;) {
        session s;
        memset(&s, 0, sizeof s);
        s.cfg = cfg;
        s.sc = sc;
        s.fingerprint = fingerprint;
        int rc = session_open(&s);
        if (rc == 0) {
            backoff = BACKOFF_MIN_MS;
            attempts = 0;
            rc = session_serve(&s);
            if (rc == 0) {
                session_free(&s);
                return 0;
            }
            logf_(cfg, "lost the orchestrator: %s; reconnecting", tl_errmsg());
            since = tl_now_ms();
        } else if (rc == TL_EREFUSED || rc == TL_ETLS) {
            /* Refused, or a certificate problem on either side: retrying cannot help. */
            session_free(&s);
            return rc;
        } else if (rc == TL_EAGAIN) {
            logf_(cfg, "%s; retrying", tl_errmsg()); /* DUPLICATE_ID: not final */
        } else if (attempts++ % 20 == 0) {
            logf_(cfg, "cannot reach the orchestrator: %s; retrying", tl_errmsg());
        }
        session_free(&s);
        if (cfg->give_up_s > 0 && tl_now_ms() - since > (int64_t)cfg->give_up_s * 1000)
            return tl_error(TL_ETIMEDOUT, "no orchestrator at %s:%d for %d s, giving up", cfg->host,
                            cfg->port, cfg->give_up_s);
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}
