/*
 * mask.h - masks for the sealed aggregation of node-side gradients
 * (DESIGN §4, "Masked aggregation" and *Cost*).
 *
 * A mask stream S_j for (run, step, attempt, index j) is a keystream of
 * AES-128-CTR read as little-endian uint64 values. Its key is
 *     HMAC-SHA256(mask_key, "tl mask v1" || run || step || attempt || j)
 * (first 16 bytes; run and step as 8 bytes, attempt and j as 4 bytes, all
 * little-endian; mask_key is the group key's HKDF "mask" key), its counter
 * starts at 0. Each (run, step, attempt, index) thus has its own key: a
 * retried step must use a new attempt number, so that a mask is never reused
 * on different data. Index TL_MASK_TOTAL names the total mask R = S_total;
 * node j's index is j.
 *
 * Path masks (protocol 4): participants ids[0..k) in plan order (ascending);
 * participant p sends q_p + m_p (mod 2^64) with
 *     m_0     = R + S_ids[1]                  (just R when k == 1)
 *     m_p     = S_ids[p+1] - S_ids[p]         (0 < p < k-1)
 *     m_{k-1} = -S_ids[k-1]                   (k > 1)
 * so sum_p m_p = R and the orchestrator's sum is Q + R; every node removes R
 * alone (tl_mask_begin_total). The map from the k independent streams
 * (R, S_ids[1..k)) to (m_0..m_{k-1}) is triangular with diagonal +-1, hence
 * invertible mod 2^64: the masked vectors, together, are uniform noise to the
 * orchestrator, and so is the sum of any subset of them (their masks are
 * independent uniform values), the full sum included (R).
 * Cost: a node draws two streams to seal (one at the last position) and one
 * to unseal, except the first participant, which keeps the R it drew while
 * sealing: 3k - 2 streams per step for k nodes, the fewest a scheme of this
 * kind allows (each node needs R, and each other stream must be shared by
 * two nodes to cancel). (Protocol 3 drew 3k + 1: m_p = S_p - S_next(p), +R.)
 *
 * Drawing is chunked so that masks are added in the same pass as the
 * encoding, in cache:
 *     tl_mask mk;  tl_mask_init(&mk, &group_key);
 *     tl_mask_at at = {.run_id = run, .step = s, .attempt = a};
 *     tl_mask_begin(&mk, &at, ids, k, my_position, n);
 *     for each chunk [off, off + c):  encode into q + off, then
 *         tl_mask_next(&mk, q + off, q + off, c, +1);            // send q
 *     ... receive sum ...
 *     tl_mask_begin_total(&mk, &at, n);
 *     for each chunk:  tl_mask_next(&mk, sum + off, buf, c, -1);  decode buf
 *     tl_mask_free(&mk);
 * tl_mask_seal / tl_mask_unseal do the same on whole vectors.
 *
 * A tl_mask is used by one thread at a time; separate tl_masks are independent.
 */
#ifndef TL_MASK_H
#define TL_MASK_H

#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"

#define TL_MASK_TOTAL UINT32_C(0xFFFFFFFF) /* the index of the total mask R */
#define TL_MASK_MAX_TERMS 2                /* streams in one node's mask */

/* What makes a mask unique (with the index). */
typedef struct tl_mask_at {
    uint64_t run_id;
    uint64_t step;
    uint32_t attempt;
} tl_mask_at;

/* The derived key, OpenSSL state and the mask being drawn; init/free pair. */
typedef struct tl_mask {
    uint8_t key[TL_DERIVED_KEY_LEN];
    void *cipher;                 /* EVP_CIPHER * (AES-128-CTR) */
    void *ctx[TL_MASK_MAX_TERMS]; /* EVP_CIPHER_CTX *, one per stream drawn */
    int sign[TL_MASK_MAX_TERMS];  /* +1 or -1 */
    int terms;                    /* streams in the mask being drawn (0: none) */
    int from_kept;                /* the mask being drawn is the kept R */
    int keeping;                  /* stream 0 of the mask being drawn is R: keep it */
    size_t n, done;               /* its length, values drawn so far */
    uint8_t *zeros;               /* plaintext of the keystream */
    uint64_t *ks;                 /* keystream chunk */
    uint64_t *kept;               /* R of kept_at (kept_n values), drawn while sealing */
    size_t kept_cap, kept_n;
    tl_mask_at kept_at;
    int kept_ok; /* kept holds all kept_n values of kept_at's R */
} tl_mask;

/* Takes gk's mask key. TL_ENOMEM if OpenSSL or memory fails. */
int tl_mask_init(tl_mask *mk, const tl_group_key *gk);

/* Wipes the key and the kept R, frees the state. NULL-safe, and safe on a
 * zeroed tl_mask. */
void tl_mask_free(tl_mask *mk);

/* Starts drawing participant pos's mask m_pos (n values) for at. ids are the
 * k >= 1 participants' node indices in plan order, which is ascending
 * (DESIGN §3): strictly ascending and below TL_MASK_TOTAL, and 0 <= pos < k;
 * else TL_EINVAL. At pos 0 the R drawn is kept for tl_mask_begin_total. */
int tl_mask_begin(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos, size_t n);

/* Starts drawing the total mask R (n values) of at: from the kept copy when
 * this tl_mask drew all of it while sealing, else from its stream. */
int tl_mask_begin_total(tl_mask *mk, const tl_mask_at *at, size_t n);

/* The next m values of the mask being drawn: out[i] = in[i] + sign * mask[i]
 * (mod 2^64), sign +1 or -1; in may equal out. TL_EINVAL past the end or with
 * no mask begun. */
int tl_mask_next(tl_mask *mk, const uint64_t *in, uint64_t *out, size_t m, int sign);

/* out[0..n) = S_index for at (one stream; tests and tools). */
int tl_mask_fill(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *out, size_t n);

/* Whole vectors: q += m_pos (tl_mask_begin's arguments) ... */
int tl_mask_seal(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos,
                 uint64_t *q, size_t n);

/* ... and sum -= R. */
int tl_mask_unseal(tl_mask *mk, const tl_mask_at *at, uint64_t *sum, size_t n);

#endif
