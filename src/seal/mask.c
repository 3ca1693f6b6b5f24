/* mask.c - AES-128-CTR mask streams and telescoping masks (see mask.h). */
#include "tl/mask.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tl/error.h"
#include "tl/le.h"

#define CHUNK 4096 /* uint64 values per keystream chunk (32 KB) */

static const char STREAM_LABEL[] = "tl mask v1";

static inline uint64_t le64(uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

int tl_mask_init(tl_mask *mk, const tl_group_key *gk) {
    memset(mk, 0, sizeof *mk);
    memcpy(mk->key, gk->mask_key, sizeof mk->key);
    mk->cipher = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    mk->ctx = EVP_CIPHER_CTX_new();
    mk->zeros = calloc(CHUNK, sizeof(uint64_t));
    mk->ks = malloc(CHUNK * sizeof(uint64_t));
    if (!mk->cipher || !mk->ctx || !mk->zeros || !mk->ks) {
        tl_mask_free(mk);
        return tl_error(TL_ENOMEM, "masks: cannot set up AES-128-CTR (out of memory?)");
    }
    return 0;
}

void tl_mask_free(tl_mask *mk) {
    if (!mk) return;
    EVP_CIPHER_CTX_free(mk->ctx);
    EVP_CIPHER_free(mk->cipher);
    if (mk->ks) OPENSSL_cleanse(mk->ks, CHUNK * sizeof(uint64_t));
    free(mk->ks);
    free(mk->zeros);
    OPENSSL_cleanse(mk, sizeof *mk);
}

/* Starts the stream of (at, index): its own AES key, counter 0. */
static int stream_start(tl_mask *mk, const tl_mask_at *at, uint32_t index) {
    uint8_t msg[sizeof STREAM_LABEL - 1 + 24], mac[32], iv[16] = {0};
    unsigned int mac_len = 0;
    uint8_t *p = msg + sizeof STREAM_LABEL - 1;
    memcpy(msg, STREAM_LABEL, sizeof STREAM_LABEL - 1);
    tl_le_store64(p, at->run_id);
    tl_le_store64(p + 8, at->step);
    tl_le_store32(p + 16, at->attempt);
    tl_le_store32(p + 20, index);
    int ok = HMAC(EVP_sha256(), mk->key, sizeof mk->key, msg, sizeof msg, mac, &mac_len) &&
             mac_len == sizeof mac &&
             EVP_EncryptInit_ex2(mk->ctx, mk->cipher, mac, iv, NULL) == 1; /* key: mac[0..16) */
    OPENSSL_cleanse(mac, sizeof mac);
    return ok ? 0 : tl_error(TL_ENOMEM, "masks: AES-128-CTR setup failed");
}

/* The next m <= CHUNK values of the started stream, in mk->ks. */
static int stream_next(tl_mask *mk, size_t m) {
    int outl = 0;
    if (EVP_EncryptUpdate(mk->ctx, (unsigned char *)mk->ks, &outl, mk->zeros,
                          (int)(m * sizeof(uint64_t))) != 1 ||
        outl != (int)(m * sizeof(uint64_t)))
        return tl_error(TL_ENOMEM, "masks: AES-128-CTR failed");
    return 0;
}

enum { FILL, ADD, SUB };

static int apply(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *v, size_t n,
                 int op) {
    int rc = stream_start(mk, at, index);
    for (size_t off = 0; rc == 0 && off < n; off += CHUNK) {
        size_t m = n - off < CHUNK ? n - off : CHUNK;
        if ((rc = stream_next(mk, m)) < 0) break;
        uint64_t *d = v + off;
        const uint64_t *k = mk->ks;
        if (op == FILL)
            for (size_t i = 0; i < m; i++) d[i] = le64(k[i]);
        else if (op == ADD)
            for (size_t i = 0; i < m; i++) d[i] += le64(k[i]);
        else
            for (size_t i = 0; i < m; i++) d[i] -= le64(k[i]);
    }
    return rc;
}

int tl_mask_fill(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *out, size_t n) {
    return apply(mk, at, index, out, n, FILL);
}

int tl_mask_add(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *v, size_t n) {
    return apply(mk, at, index, v, n, ADD);
}

int tl_mask_sub(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *v, size_t n) {
    return apply(mk, at, index, v, n, SUB);
}

int tl_mask_seal(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos,
                 uint64_t *q, size_t n) {
    if (k < 1 || pos < 0 || pos >= k)
        return tl_error(TL_EINVAL, "masks: position %d among %d participants", pos, k);
    for (int i = 0; i < k; i++)
        if (ids[i] == TL_MASK_TOTAL || (i > 0 && ids[i] <= ids[i - 1]))
            return tl_error(TL_EINVAL,
                            "masks: participants must be distinct node indices in ascending "
                            "(plan) order; entry %d is %u",
                            i, ids[i]);
    int rc = 0;
    uint32_t self = ids[pos], next = ids[(pos + 1) % k];
    if (self != next) { /* k == 1: R_self - R_self, nothing to do */
        if ((rc = tl_mask_add(mk, at, self, q, n)) < 0) return rc;
        if ((rc = tl_mask_sub(mk, at, next, q, n)) < 0) return rc;
    }
    if (pos == 0) rc = tl_mask_add(mk, at, TL_MASK_TOTAL, q, n);
    return rc;
}

int tl_mask_unseal(tl_mask *mk, const tl_mask_at *at, uint64_t *sum, size_t n) {
    return tl_mask_sub(mk, at, TL_MASK_TOTAL, sum, n);
}
