/*
 * mask.h - masks for the sealed aggregation of node-side gradients
 * (DESIGN §4, "Masked aggregation" and *Cost*).
 *
 * A mask stream R_j for (run, step, attempt, index j) is a keystream of
 * AES-128-CTR read as little-endian uint64 values. Its key is
 *     HMAC-SHA256(mask_key, "tl mask v1" || run || step || attempt || j)
 * (first 16 bytes; run and step as 8 bytes, attempt and j as 4 bytes, all
 * little-endian; mask_key is the group key's HKDF "mask" key), its counter
 * starts at 0. Each (run, step, attempt, index) thus has its own key: a
 * retried step must use a new attempt number, so that a mask is never reused
 * on different data. Index TL_MASK_TOTAL names the total mask R; node j uses
 * index j.
 *
 * Telescoping masks: participants ids[0..k) in plan order; participant p
 * sends
 *     m_p = q_p + R_ids[p] - R_ids[(p+1) % k]   (+ R if p == 0)    (mod 2^64)
 * so sum_p m_p = Q + R: every node removes R alone (tl_mask_unseal), three
 * streams per node whatever k. Each m_p, and the sum of any proper subset,
 * contains an R_j that does not cancel, so the orchestrator sees uniform
 * noise; the full sum is Q + R, R unknown to it.
 *
 *     tl_mask mk;  tl_mask_init(&mk, &group_key);
 *     tl_mask_at at = {.run_id = run, .step = s, .attempt = a};
 *     tl_fixed_encode(grad, n, q, "gradient");
 *     tl_mask_seal(&mk, &at, ids, k, my_position, q, n);    // send q
 *     ... receive sum ...
 *     tl_mask_unseal(&mk, &at, sum, n);  tl_fixed_decode(sum, n, k, grad, "sum");
 *     tl_mask_free(&mk);
 *
 * Masks depend on nothing but (run, step, attempt, participants, position):
 * to draw a step's masks ahead of time (while waiting for the network), seal
 * a zeroed buffer and later tl_ring_add() it to the encoded gradient.
 *
 * A tl_mask is used by one thread at a time; separate tl_masks are independent.
 */
#ifndef TL_MASK_H
#define TL_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"

#define TL_MASK_TOTAL UINT32_C(0xFFFFFFFF) /* the index of the total mask R */

/* What makes a mask unique (with the index). */
typedef struct tl_mask_at {
    uint64_t run_id;
    uint64_t step;
    uint32_t attempt;
} tl_mask_at;

/* Opaque-ish: the derived key and OpenSSL state; init/free pair. */
typedef struct tl_mask {
    uint8_t key[TL_DERIVED_KEY_LEN];
    void *cipher;   /* EVP_CIPHER * (AES-128-CTR) */
    void *ctx;      /* EVP_CIPHER_CTX * */
    uint8_t *zeros; /* plaintext of the keystream */
    uint64_t *ks;   /* keystream chunk */
} tl_mask;

/* Takes gk's mask key. TL_ENOMEM if OpenSSL or memory fails. */
int tl_mask_init(tl_mask *mk, const tl_group_key *gk);

/* Wipes the key, frees the state. NULL-safe, and safe on a zeroed tl_mask. */
void tl_mask_free(tl_mask *mk);

/* out[0..n) = R_index for at. */
int tl_mask_fill(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *out, size_t n);

/* v[i] += R_index[i] (mod 2^64), without a buffer of n. */
int tl_mask_add(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *v, size_t n);

/* v[i] -= R_index[i] (mod 2^64). */
int tl_mask_sub(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *v, size_t n);

/* The node side: q += R_ids[pos] - R_ids[(pos+1)%k], and + R if pos == 0.
 * ids are the k >= 1 participants' node indices in plan order, which is
 * ascending (DESIGN §3): strictly ascending and below TL_MASK_TOTAL, and
 * 0 <= pos < k; else TL_EINVAL. */
int tl_mask_seal(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos,
                 uint64_t *q, size_t n);

/* Removes R from the masked sum: sum -= R. */
int tl_mask_unseal(tl_mask *mk, const tl_mask_at *at, uint64_t *sum, size_t n);

#endif
