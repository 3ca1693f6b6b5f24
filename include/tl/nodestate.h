/*
 * nodestate.h - a sealed-mode node's side of the model as bytes: saved to a
 * file when the orchestrator checkpoints, and sealed for a rejoining node
 * (DESIGN §4 "Sealed mode", §6; issue 11 item 6).
 *
 * The state is what a node must hold to take the next step exactly as its
 * peers do: the node-side parameters (n floats), the node-side optimizer's
 * state buffers and step count (optim.h), the run id and the step (sealed
 * steps applied). Its bytes are a safetensors file:
 *     "params"         F32 [n]
 *     "optim.<name>"   F32 [n] per state buffer (tl_optim_state's names)
 *   __metadata__: format "tl-nodestate-1", optimizer (its name), n,
 *     optim_steps, run_id, step (decimal)
 *
 * Files (tl_nodestate_save/_load) are written atomically (file.h), mode
 * 0600: the node side is what sealed mode keeps from the orchestrator.
 * tl_nodestate_keep/_find keep the last two checkpoints' states in
 * "<base>.0" and "<base>.1" (the older one is replaced).
 *
 * The transfer blob (tl_nodestate_seal/_open) is those bytes sealed with
 * seal.h's AEAD under the group's "transfer" key; the associated data binds
 *     "tl nodestate v1" || run_id (8) || step (8) || from (4) || to (4)
 * (little-endian), so the relaying orchestrator cannot replay an older state,
 * one meant for another node, or one of another run, without failing the tag.
 *
 *     tl_nodestate s = {.params = node_params, .n = p_node, .optim = &opt,
 *                       .run_id = run, .step = step};
 *     uint8_t *box; size_t len;
 *     tl_nodestate_seal(&gk, &s, me, rejoiner, &box, &len);    // live node
 *     ... STATE_BLOB relayed ...
 *     tl_nodestate_open(&gk, run, step, sender, me, box, len, &s);  // rejoiner
 *     free(box);
 *
 * Loading never half-installs: everything is checked (format, n, optimizer,
 * every value finite) before params and the optimizer are written.
 */
#ifndef TL_NODESTATE_H
#define TL_NODESTATE_H

#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"
#include "tl/optim.h"

/* A view of the node's state: params and optim are the caller's (owned and
 * kept by it); saving reads them, loading overwrites them and sets run_id
 * and step. optim must be set up for n parameters. */
typedef struct tl_nodestate {
    float *params; /* n node-side parameters */
    size_t n;
    tl_optim *optim;
    uint64_t run_id;
    uint64_t step; /* sealed steps applied */
} tl_nodestate;

/* The state as bytes (format above) in a malloc'd *out of *len bytes (caller
 * frees). TL_ENUMERIC if a parameter or state entry is NaN/Inf (named),
 * TL_ENOMEM. */
int tl_nodestate_encode(const tl_nodestate *s, uint8_t **out, size_t *len);

/* Installs the state held in buf[0, len) into s (params, optimizer state
 * and steps, run_id, step). `what` names the source in messages. TL_EFORMAT
 * if it is not a node state, TL_ESTATE if it is one of another shape (its n
 * or optimizer differs from s's: both shown), TL_ENUMERIC if a value is not
 * finite; s is untouched on any failure. */
int tl_nodestate_decode(const uint8_t *buf, size_t len, const char *what, tl_nodestate *s);

/* Writes the state to path (atomic, mode 0600). */
int tl_nodestate_save(const char *path, const tl_nodestate *s);

/* Loads path into s (as tl_nodestate_decode; TL_EIO if unreadable). */
int tl_nodestate_load(const char *path, tl_nodestate *s);

/* Saves s as one of the two last states at base: into "<base>.0" or
 * "<base>.1", whichever is missing, unreadable or holds the older step (a
 * state of the same step is replaced). */
int tl_nodestate_keep(const char *base, const tl_nodestate *s);

/* Loads from "<base>.0" / "<base>.1" the state saved at step into s.
 * TL_ESTATE if neither holds that step (the message lists the steps found);
 * other errors as tl_nodestate_load. */
int tl_nodestate_find(const char *base, uint64_t step, tl_nodestate *s);

/* Seals the state for node `to`, sent by node `from`: *out (malloc'd,
 * caller frees) of *len bytes = encode's bytes + TL_TRANSFER_OVERHEAD. */
int tl_nodestate_seal(const tl_group_key *gk, const tl_nodestate *s, uint32_t from, uint32_t to,
                      uint8_t **out, size_t *len);

/* Opens a blob sealed by node from for node to at (run_id, step), and
 * installs it into s. TL_EPROTO if it fails authentication (tampered, meant
 * for another node, run or step, another group's key) or if the state
 * inside names another run or step than the associated data; otherwise as
 * tl_nodestate_decode. s is untouched on any failure. */
int tl_nodestate_open(const tl_group_key *gk, uint64_t run_id, uint64_t step, uint32_t from,
                      uint32_t to, const uint8_t *blob, size_t len, tl_nodestate *s);

#endif
