/*
 * node.h - a data owner: serves forward and backward passes over its own
 * rows to an orchestrator, and nothing else (DESIGN §1, §4).
 *
 * The node holds its data set and opens no listening socket: it connects out
 * to the orchestrator (retrying with backoff until it is up), introduces
 * itself (HELLO: id, sample count, data fingerprint, sample shape, element
 * type, classes, held-out row count), answers a STATS_REQUEST with the
 * per-feature count, sums and sums of squares of its training rows (for
 * --normalize standardize; only when asked), and learns the whole run
 * configuration from WELCOME, which it checks against its data (input width
 * and sample shape, classes, the normalization descriptor, a model size that
 * fits the wire and its memory) before it says READY. Then it answers FORWARD
 * and BACKWARD until DONE, checking that the parameters and dh it is given
 * are finite (ERROR instead of computing), and EVAL with the evaluation sums
 * of its held-out rows (evalstats.h: counts and histograms, no row, score or
 * label; tl_evaluate_sums, the function tl train uses).
 * If the connection is lost it reconnects and goes on (the orchestrator
 * replays the interrupted batch), until give_up_s passes without a working
 * connection; a REJECT DUPLICATE_ID (its old connection may still look open
 * at the orchestrator) is retried the same way, any other REJECT is final. No message it sends
 * carries its raw files, but the open protocol lets the orchestrator rebuild the inputs from what
 * it receives (docs/security.md section 2). In sealed mode (privacy TL_PRIVACY_SEALED) the node
 * side of the model lives here (sealed.h): the node sends only masked gradients and applies every
 * SEALED_STEP, and its privacy setting is authoritative: it never joins an open run.
 *
 *     tl_node_cfg cfg = {.host = "10.0.0.1", .port = 7000, .id = 2, .data = &ds};
 *     rc = tl_node_run(&cfg);   // 0 when the orchestrator said DONE
 */
#ifndef TL_NODE_H
#define TL_NODE_H

#include <stdint.h>

#include "tl/dataset.h"
#include "tl/groupkey.h"
#include "tl/tls.h"

typedef void (*tl_log_fn)(void *ud, const char *msg);

typedef struct tl_node_cfg {
    const char *host;
    int port;
    int id;                 /* 1..N */
    const tl_dataset *data; /* the node's own training data */
    const tl_dataset *test; /* its held-out rows, evaluated on EVAL; NULL: none (EVAL then
                             * gets empty sums). Same sample shape and classes as data. */
    tl_tls_ctx *tls;        /* NULL: plaintext (--insecure) */
    int give_up_s;          /* stop after this long without a connection; 0: never */
    int zstd;               /* offer zstd compression */
    tl_log_fn log;          /* progress and problems, one line each; may be NULL */
    void *log_ud;
    /* sealed mode (DESIGN §4, docs/protocol.md §8.2) */
    int privacy;                   /* tl_privacy (msg.h) this node insists on; 0: open */
    const tl_group_key *group_key; /* sealed: required */
    const char *init_path;         /* sealed: node side from this file (else from the key) */
    const char *save_path;         /* sealed: the whole model at the end (FINAL), or NULL */
    const char *state_path;        /* sealed: base of the node-side state files kept at the
                                    * orchestrator's checkpoints (nodestate.h: PATH.0, PATH.1),
                                    * for --resume; NULL: none kept */
} tl_node_cfg;

/* Serves one run. 0 after DONE; TL_EREFUSED if the orchestrator refused us
 * (reason in tl_errmsg()); TL_ETLS if either side's certificate was refused
 * (retrying cannot help); TL_ETIMEDOUT after give_up_s without a connection;
 * TL_EINVAL if test does not match data (width, shape, element type);
 * another negative code for a local failure. */
int tl_node_run(const tl_node_cfg *cfg);

#endif
