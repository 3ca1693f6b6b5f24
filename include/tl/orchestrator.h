/*
 * orchestrator.h - the orchestrator of a Traversal Learning run (DESIGN §1-6).
 *
 * It listens for nodes, runs the handshake (HELLO -> WELCOME or REJECT: a node
 * whose data does not fit the model or the other nodes' (sample shape,
 * element type, classes, class names) is refused with the reason; with
 * the node id checked against its certificate under TLS; the node then checks
 * WELCOME against its data and answers READY, and only then is it registered,
 * with the sample count and fingerprint of its HELLO), and then serves as
 * the gradient source of the shared training loop (trainer.h): for each
 * virtual batch it sends FORWARD to the nodes that own rows of it, gathers
 * their cut activations and output gradients (or labels) in plan order, runs
 * the orchestrator-side layers forward and backward, sends each node its rows
 * of dL/dH_c, and sums the nodes' parameter gradients in plan order.
 *
 * All socket I/O is non-blocking, multiplexed with poll() by the server
 * (server.h): a slow, silent or hostile peer never stalls the others. A node lost in the middle of
 * a batch (closed, silent past 4 heartbeats, past the task deadline, or sending anything invalid)
 * is dropped; the batch's partial results are discarded, the orchestrator waits up to
 * reconnect_timeout_s for the node to come back with the same id and data fingerprint, and replays
 * the batch. Parameters change only after a complete batch, so the result is the same as without
 * the loss. A batch that fails more than max_replays times stops the run with a message naming, per
 * attempt, the node lost and why. Each peer's reads are budgeted per loop round, and a node sending
 * heartbeats far faster than the interval is lost as flooding.
 *
 *     tl_orch *o;
 *     tl_orch_new(&cfg, &o);                       // listens
 *     tl_orch_wait_nodes(o, counts);               // all N registered
 *     tl_trainer_init(&t, run, model, params, counts, N, test);
 *     tl_trainer_run(&t, tl_orch_grad_fn, o, &hooks);
 *     tl_orch_finish(o, "training complete");      // DONE to every node
 *     tl_orch_free(o);
 */
#ifndef TL_ORCHESTRATOR_H
#define TL_ORCHESTRATOR_H

#include <signal.h>
#include <stdint.h>

#include "tl/batch.h"
#include "tl/config.h"
#include "tl/evalstats.h"
#include "tl/model.h"
#include "tl/node.h"
#include "tl/tls.h"

typedef struct tl_orch_cfg {
    const char *host; /* listen address */
    int port;         /* 0: pick a free port (tl_orch_port tells which) */
    int n_nodes;
    const tl_runcfg *run; /* batch size, cut, mode, normalization */
    const tl_model *model;
    tl_tls_ctx *tls;                   /* NULL: plaintext */
    int heartbeat_ms;                  /* 0: none */
    int task_timeout_ms;               /* longest wait for one reply */
    int reconnect_timeout_s;           /* wait for a lost node this long, then fail */
    int handshake_timeout_ms;          /* accept -> HELLO must take less */
    int max_pending;                   /* connections not yet registered, at most */
    int max_replays;                   /* a batch that fails more often than this stops the run
                                        * (tl_orch_grad_fn fails, naming the nodes lost) */
    int zstd;                          /* allow zstd frames when a node offers it */
    int no_shm;                        /* never share the parameters in memory (shm.h) with
                                        * nodes on a unix socket, which is otherwise done */
    const volatile sig_atomic_t *stop; /* may be NULL; nonzero (a signal arrived): waits
                                        * for nodes, and for lost nodes, end with TL_ESTATE */
    tl_log_fn log;                     /* one line per event; may be NULL */
    void *log_ud;
    /* sealed mode (DESIGN §4, docs/protocol.md §8.2): the node side stays at
     * the nodes; the orchestrator sums masked gradients and sends SEALED_STEP */
    int privacy;     /* tl_privacy (msg.h); 0 (open) by default */
    int have_key_id; /* sealed: key_id is the group's (its kit's group-key.id);
                      * else the first registered node's is taken */
    uint8_t key_id[16];
    int mac_every; /* sealed: PARAM_MAC every this many steps (0: only at
                    * the end) */
} tl_orch_cfg;

/* Fills the tunables with their defaults (heartbeat 2 s, task timeout 120 s,
 * reconnect timeout 120 s, handshake 10 s, 64 pending connections, 5 replays
 * of a batch). */
void tl_orch_cfg_defaults(tl_orch_cfg *cfg);

typedef struct tl_orch tl_orch;

int tl_orch_new(const tl_orch_cfg *cfg, tl_orch **out);
int tl_orch_port(const tl_orch *o);

/* Serves connections until every node 1..N has registered; fills counts[i]
 * with node i+1's sample count and fingerprints[i] (may be NULL) with its data
 * fingerprint. timeout_s 0: wait forever. */
int tl_orch_wait_nodes(tl_orch *o, int timeout_s, uint64_t *counts, uint64_t *fingerprints);

/* One round of the event loop: waits up to timeout_ms for I/O, then accepts,
 * handshakes, reads and writes whatever is ready and runs the timers. For
 * embedding the orchestrator in another loop, and for the handshake fuzzer.
 * Returns the number of connections open. */
int tl_orch_serve(tl_orch *o, int timeout_ms);

/* Nodes registered so far. */
int tl_orch_registered(const tl_orch *o);

/* Numbers the next step (after a resume: the steps already taken). */
void tl_orch_set_step(tl_orch *o, uint64_t step);

/* The trainer's gradient source (trainer.h); ctx is the tl_orch. Fails (the
 * run stops) when a node of the batch is not back within reconnect_timeout_s
 * or the batch failed more than max_replays times; the registered nodes are
 * then sent ERROR with the reason. */
int tl_orch_grad_fn(void *ctx, const tl_batch *b, const float *params, float *grads,
                    double *loss_sum, int64_t *correct);

/* --normalize standardize without values in the run configuration: the
 * orchestrator sends each node STATS_REQUEST after its HELLO and WELCOMEs
 * them all once every node's STATS is in (docs/protocol.md §5.2); this is the
 * combined descriptor (owned by o), or NULL before that or for other kinds. */
const tl_norm *tl_orch_norm(const tl_orch *o);

/* Sealed mode, at the end of training: sends FINAL (the orchestrator side,
 * params[p_node, n_params)) to every node, collects their PARAM_MACs and
 * compares them. 0, or TL_ESTATE naming the nodes whose node sides differ
 * (or TL_ETIMEDOUT if one does not answer within the task timeout). A no-op
 * in open mode. Call before tl_orch_finish. */
int tl_orch_final(tl_orch *o, const float *params);

/* Held-out rows over all registered nodes (their HELLOs' test_count). */
uint64_t tl_orch_test_rows(const tl_orch *o);

/* The trainer's evaluation hook (trainer.h tl_eval_fn); ctx is the tl_orch.
 * Sends every node EVAL with params (all of them, also in split mode) and
 * sums->bins, checks each EVAL_RESULT as hostile (tl_evalstats_decode with
 * the run's classes and those bins; n must be the node's held-out row count)
 * and merges them into sums in node order: the confusion matrix is exactly
 * that of evaluating params centrally on the union of the nodes' held-out
 * rows. A node lost meanwhile is waited for and the round repeated (at most
 * max_replays times); then, or when a node is not back within
 * reconnect_timeout_s, the run stops as tl_orch_grad_fn's does. */
int tl_orch_eval_fn(void *ctx, const float *params, int64_t steps, tl_evalstats *sums);

/* The run stops without finishing (the operator interrupted it, or the
 * trainer stopped it): sends ERROR {"the orchestrator stops: " reason} to
 * every registered node and waits briefly until sent. Nodes log the reason and
 * keep retrying, so that an orchestrator restarted with --resume finds them. */
void tl_orch_stop(tl_orch *o, const char *reason);

/* The trainer's checkpointing hook (trainer.h; ctx is the tl_orch): in sealed
 * mode, before the orchestrator writes a checkpoint of the state after
 * `steps` steps, every node holding the node side is sent CHECKPOINT {steps}
 * and saves it (tl node --state); waits for their confirmations up to the
 * task timeout (one that does not confirm is named in the log). A no-op in
 * open mode. */
void tl_orch_checkpointing(void *ctx, int64_t steps);

/* Sends DONE {reason} to every connected node and waits (briefly) until sent. */
void tl_orch_finish(tl_orch *o, const char *reason);

/* Traffic so far, in bytes (frames with headers), and batches completed. */
typedef struct tl_orch_stats {
    uint64_t bytes_out, bytes_in;
    uint64_t batches, replays, node_batches; /* node_batches: sum over batches of nodes contacted */
} tl_orch_stats;
void tl_orch_get_stats(const tl_orch *o, tl_orch_stats *s);

void tl_orch_free(tl_orch *o); /* NULL-safe; closes every connection */

#endif
