/*
 * seal.h - the two uses of the group key besides masks (DESIGN §4): proving
 * that the nodes hold the same node side, and handing it to a rejoining node.
 *
 * Parameter MAC: HMAC-SHA256 under the group's "mac" key of
 *     "tl params v1" || step (8 bytes LE) || n (8 bytes LE) || params (n float32, LE)
 * Nodes that hold the same node side at the same step produce the same 32
 * bytes; the orchestrator compares them and learns nothing else.
 *
 * Transfer: AES-256-GCM under the group's "transfer" key, a fresh random
 * 12-byte nonce per message (RAND_bytes), the caller's associated data bound
 * in (e.g. run id, step, recipient), and the 16-byte tag:
 *     sealed = nonce (12) || ciphertext (n) || tag (16)      n + TL_TRANSFER_OVERHEAD bytes
 * The orchestrator relays it; any change to it, to the associated data, or a
 * key of another group fails tl_transfer_open.
 *
 *     uint8_t mac[TL_PARAM_MAC_LEN];
 *     tl_param_mac(&gk, step, params, n, mac);
 *     if (!tl_param_mac_equal(mac, other)) ... diverged ...
 *
 *     uint8_t *box = malloc(len + TL_TRANSFER_OVERHEAD);
 *     tl_transfer_seal(&gk, ad, ad_len, state, len, box);
 *     tl_transfer_open(&gk, ad, ad_len, box, len + TL_TRANSFER_OVERHEAD, state_out);
 */
#ifndef TL_SEAL_H
#define TL_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "tl/groupkey.h"

#define TL_PARAM_MAC_LEN 32
#define TL_TRANSFER_NONCE_LEN 12
#define TL_TRANSFER_TAG_LEN 16
#define TL_TRANSFER_OVERHEAD (TL_TRANSFER_NONCE_LEN + TL_TRANSFER_TAG_LEN)

/* mac = the parameter MAC of params[0..n) at step (format above). */
int tl_param_mac(const tl_group_key *gk, uint64_t step, const float *params, size_t n,
                 uint8_t mac[TL_PARAM_MAC_LEN]);

/* 1 if the two MACs are equal (constant time), else 0. */
int tl_param_mac_equal(const uint8_t a[TL_PARAM_MAC_LEN], const uint8_t b[TL_PARAM_MAC_LEN]);

/* Encrypts and authenticates pt[0..n) with ad[0..ad_len) (ad may be NULL if
 * ad_len is 0) into out[0..n + TL_TRANSFER_OVERHEAD). */
int tl_transfer_seal(const tl_group_key *gk, const void *ad, size_t ad_len, const void *pt,
                     size_t n, uint8_t *out);

/* Checks and decrypts in[0..in_len) into out[0..in_len - TL_TRANSFER_OVERHEAD).
 * TL_EPROTO if it is shorter than the overhead or fails authentication
 * (tampered, other associated data, another group's key); out is then zeroed. */
int tl_transfer_open(const tl_group_key *gk, const void *ad, size_t ad_len, const uint8_t *in,
                     size_t in_len, void *out);

#endif
