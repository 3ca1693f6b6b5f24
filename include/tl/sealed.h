/*
 * sealed.h - a node's side of sealed mode (DESIGN §4, docs/protocol.md §8.2):
 * the node-side parameters and their optimizer, held at the node, updated
 * only from the masked sum every node receives.
 *
 * Every node of a group starts from the same node side (tl_sealed_init_params:
 * from --init, or from the group key) and applies the same SEALED_STEPs in
 * the same order with the same optimizer, so the node sides stay identical
 * bit for bit; PARAM_MAC (tl_sealed_mac) proves it to the orchestrator
 * without showing them.
 *
 *     tl_sealed_node sn;
 *     tl_sealed_init(&sn, &gk, &model, cut, init_or_NULL, &optim_cfg);
 *     tl_sealed_seal(&sn, run, step, attempt, ids, k, my_id, grad, q);   // BACKWARD_RESULT
 *     tl_sealed_apply(&sn, run, step, attempt, ids, k, sum, lr);        // SEALED_STEP
 *     tl_sealed_mac(&sn, mac);                                           // PARAM_MAC
 *     tl_sealed_free(&sn);
 */
#ifndef TL_SEALED_H
#define TL_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"
#include "tl/mask.h"
#include "tl/model.h"
#include "tl/optim.h"
#include "tl/seal.h"

typedef struct tl_sealed_node {
    tl_group_key gk;
    tl_mask mk;
    size_t p_node;  /* node-side parameters */
    float *params;  /* the node side, p_node */
    float *grad;    /* decoded sum, p_node */
    tl_optim opt;   /* over the node side */
    uint64_t steps; /* SEALED_STEPs applied (the next expected step) */
    int sealed_any; /* a BACKWARD was sealed: (last_step, last_attempt) are set */
    uint64_t last_step;
    uint32_t last_attempt;
} tl_sealed_node;

/* The node side of model m (the first cut modules): from init (the whole
 * model's parameters, e.g. --init's; only the prefix is used) or, if init is
 * NULL, from the group key: seed = first 4 bytes (LE) of HKDF(key, "init"),
 * then tl_model_init's PyTorch initialization, so every node of the group
 * gets the same. out has tl_model_param_offset(m, cut) floats; tmp is
 * scratch of m->n_params floats. */
int tl_sealed_init_params(const tl_group_key *gk, const tl_model *m, int cut, const float *init,
                          float *out, float *tmp);

/* Sets sn up: copies gk, the node side as above, the optimizer (zeroed state,
 * then `steps` steps taken, for a run that has already taken them). 0,
 * TL_ENOMEM, or TL_EINVAL. */
int tl_sealed_init(tl_sealed_node *sn, const tl_group_key *gk, const tl_model *m, int cut,
                   const float *init, const tl_optim_cfg *oc);

/* Wipes the key material, frees. Safe on a zeroed sn. */
void tl_sealed_free(tl_sealed_node *sn);

/* The masked fixed-point vector of grad (p_node floats) for BACKWARD_RESULT:
 * q = fixed(grad) + this node's path mask (mask.h) for (run, step, attempt)
 * among ids[0..k) (node ids in plan order; my_id must be among them). Refuses
 * (TL_EPROTO) a step other than the next one to apply and a (step, attempt)
 * not after the last sealed one: a mask is never used twice. TL_ERANGE /
 * TL_ENUMERIC if grad cannot be encoded (fixed.h). */
int tl_sealed_seal(tl_sealed_node *sn, uint64_t run, uint64_t step, uint32_t attempt,
                   const uint32_t *ids, int k, uint32_t my_id, const float *grad, uint64_t *q);

/* SEALED_STEP: removes the total mask from sum (p_node u64, left as it
 * is: it may be the shared region), decodes the sum of k terms and takes one optimizer step on the
 * node side with lr. step must be the next one (TL_EPROTO); a sum out of the fixed-point range (a
 * wrong key or a corrupted vector) is TL_ERANGE and changes nothing. */
int tl_sealed_apply(tl_sealed_node *sn, uint64_t run, uint64_t step, uint32_t attempt,
                    const uint32_t *ids, int k, const uint64_t *sum, double lr);

/* The parameter MAC of the node side at sn->steps (seal.h). */
int tl_sealed_mac(const tl_sealed_node *sn, uint8_t mac[TL_PARAM_MAC_LEN]);

#endif
