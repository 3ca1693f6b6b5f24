/* sealed.c - a node's node-side state in sealed mode (sealed.h). */
#include "tl/sealed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/fixed.h"

#define CHUNK 4096 /* values encoded or decoded and masked in one go (32 KB) */

int tl_sealed_init_params(const tl_group_key *gk, const tl_model *m, int cut, const float *init,
                          float *out, float *tmp) {
    const size_t p_node = tl_model_param_offset(m, cut);
    if (init) {
        memcpy(out, init, sizeof(float) * p_node);
        return 0;
    }
    uint8_t seed[4];
    int rc = tl_group_key_derive(gk->key, "init", seed, sizeof seed);
    if (rc < 0) return rc;
    tl_model_init(m, tmp,
                  (uint32_t)seed[0] | (uint32_t)seed[1] << 8 | (uint32_t)seed[2] << 16 |
                      (uint32_t)seed[3] << 24);
    memcpy(out, tmp, sizeof(float) * p_node);
    return 0;
}

int tl_sealed_init(tl_sealed_node *sn, const tl_group_key *gk, const tl_model *m, int cut,
                   const float *init, const tl_optim_cfg *oc) {
    memset(sn, 0, sizeof *sn);
    sn->gk = *gk;
    sn->p_node = tl_model_param_offset(m, cut);
    const size_t n = sn->p_node ? sn->p_node : 1;
    float *tmp = malloc(sizeof(float) * (m->n_params ? m->n_params : 1));
    sn->params = malloc(sizeof(float) * n);
    sn->grad = malloc(sizeof(float) * n);
    int rc = !tmp || !sn->params || !sn->grad
                 ? tl_error(TL_ENOMEM, "node side of %zu parameters: out of memory", sn->p_node)
                 : 0;
    if (rc == 0) rc = tl_sealed_init_params(gk, m, cut, init, sn->params, tmp);
    if (rc == 0) rc = tl_optim_init(&sn->opt, oc, sn->p_node);
    if (rc == 0) rc = tl_mask_init(&sn->mk, gk);
    free(tmp);
    if (rc < 0) tl_sealed_free(sn);
    return rc;
}

void tl_sealed_free(tl_sealed_node *sn) {
    if (!sn) return;
    tl_mask_free(&sn->mk);
    tl_optim_free(&sn->opt);
    free(sn->params);
    free(sn->grad);
    tl_group_key_wipe(&sn->gk);
    memset(sn, 0, sizeof *sn);
}

int tl_sealed_seal(tl_sealed_node *sn, uint64_t run, uint64_t step, uint32_t attempt,
                   const uint32_t *ids, int k, uint32_t my_id, const float *grad, uint64_t *q) {
    if (step != sn->steps)
        return tl_error(TL_EPROTO, "BACKWARD for step %llu, but the node side is at step %llu",
                        (unsigned long long)step, (unsigned long long)sn->steps);
    if (sn->sealed_any && sn->last_step == step && attempt <= sn->last_attempt)
        return tl_error(TL_EPROTO,
                        "BACKWARD: step %llu attempt %u was already sealed (attempt %u): a "
                        "mask is never used twice",
                        (unsigned long long)step, attempt, sn->last_attempt);
    int pos = -1;
    for (int i = 0; i < k; i++)
        if (ids[i] == my_id) pos = i;
    if (pos < 0) return tl_error(TL_EPROTO, "BACKWARD: this node is not among the participants");
    /* encode and mask chunk by chunk, in cache (mask.h) */
    tl_mask_at at = {.run_id = run, .step = step, .attempt = attempt};
    int rc = tl_mask_begin(&sn->mk, &at, ids, k, pos, sn->p_node);
    for (size_t off = 0; rc == 0 && off < sn->p_node; off += CHUNK) {
        const size_t c = sn->p_node - off < CHUNK ? sn->p_node - off : CHUNK;
        if (tl_fixed_encode(grad + off, c, q + off, NULL) < 0) /* the message names the element */
            return tl_fixed_encode(grad, sn->p_node, q, "node-side gradient");
        rc = tl_mask_next(&sn->mk, q + off, q + off, c, +1);
    }
    if (rc < 0) return rc;
    sn->sealed_any = 1;
    sn->last_step = step;
    sn->last_attempt = attempt;
    return 0;
}

int tl_sealed_apply(tl_sealed_node *sn, uint64_t run, uint64_t step, uint32_t attempt,
                    const uint32_t *ids, int k, const uint64_t *sum, double lr) {
    if (step != sn->steps)
        return tl_error(TL_EPROTO, "SEALED_STEP for step %llu, but the node side is at step %llu",
                        (unsigned long long)step, (unsigned long long)sn->steps);
    if (k < 1 || k > TL_FIXED_MAX_TERMS)
        return tl_error(TL_EPROTO, "SEALED_STEP: %d participants", k);
    for (int i = 1; i < k; i++)
        if (ids[i] <= ids[i - 1])
            return tl_error(TL_EPROTO, "SEALED_STEP: participants not in ascending order");
    /* unmask and decode chunk by chunk, in cache; sum is left as it is */
    tl_mask_at at = {.run_id = run, .step = step, .attempt = attempt};
    uint64_t buf[CHUNK];
    int rc = tl_mask_begin_total(&sn->mk, &at, sn->p_node);
    for (size_t off = 0; rc == 0 && off < sn->p_node; off += CHUNK) {
        const size_t c = sn->p_node - off < CHUNK ? sn->p_node - off : CHUNK;
        if ((rc = tl_mask_next(&sn->mk, sum + off, buf, c, -1)) == 0 &&
            (rc = tl_fixed_decode(buf, c, k, sn->grad + off, "SEALED_STEP sum")) == TL_ERANGE) {
            char msg[512]; /* the element index counts from the chunk: say where it starts */
            snprintf(msg, sizeof msg, "%s", tl_errmsg());
            return tl_error(TL_ERANGE, "%s (in the chunk from element %zu)", msg, off);
        }
    }
    if (rc < 0) return rc;
    if ((rc = tl_optim_step(&sn->opt, sn->params, sn->grad, lr)) < 0) return rc;
    sn->steps++;
    return 0;
}

int tl_sealed_mac(const tl_sealed_node *sn, uint8_t mac[TL_PARAM_MAC_LEN]) {
    return tl_param_mac(&sn->gk, sn->steps, sn->params, sn->p_node, mac);
}
