/* mask.c - AES-128-CTR mask streams and path masks (see mask.h). */
#include "tl/mask.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tl/error.h"
#include "tl/le.h"

#define CHUNK 4096 /* uint64 values per keystream chunk (32 KB, in L1/L2) */

static const char STREAM_LABEL[] = "tl mask v1";

int tl_mask_init(tl_mask *mk, const tl_group_key *gk) {
    memset(mk, 0, sizeof *mk);
    memcpy(mk->key, gk->mask_key, sizeof mk->key);
    mk->cipher = EVP_CIPHER_fetch(NULL, "AES-128-CTR", NULL);
    int ok = mk->cipher != NULL;
    for (int t = 0; t < TL_MASK_MAX_TERMS; t++) ok = ok && (mk->ctx[t] = EVP_CIPHER_CTX_new());
    mk->zeros = calloc(CHUNK, sizeof(uint64_t));
    mk->ks = malloc(CHUNK * sizeof(uint64_t));
    if (!ok || !mk->zeros || !mk->ks) {
        tl_mask_free(mk);
        return tl_error(TL_ENOMEM, "masks: cannot set up AES-128-CTR (out of memory?)");
    }
    return 0;
}

void tl_mask_free(tl_mask *mk) {
    if (!mk) return;
    for (int t = 0; t < TL_MASK_MAX_TERMS; t++) EVP_CIPHER_CTX_free(mk->ctx[t]);
    EVP_CIPHER_free(mk->cipher);
    if (mk->ks) OPENSSL_cleanse(mk->ks, CHUNK * sizeof(uint64_t));
    if (mk->kept) OPENSSL_cleanse(mk->kept, mk->kept_cap * sizeof(uint64_t));
    free(mk->ks);
    free(mk->kept);
    free(mk->zeros);
    OPENSSL_cleanse(mk, sizeof *mk);
}

/* Starts stream (at, index) on context t with the given sign: its own
 * AES key, counter 0. */
static int stream_start(tl_mask *mk, int t, const tl_mask_at *at, uint32_t index, int sign) {
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
             EVP_EncryptInit_ex2(mk->ctx[t], mk->cipher, mac, iv, NULL) == 1; /* key: mac[0..16) */
    OPENSSL_cleanse(mac, sizeof mac);
    mk->sign[t] = sign;
    return ok ? 0 : tl_error(TL_ENOMEM, "masks: AES-128-CTR setup failed");
}

/* The next m <= CHUNK values of stream t, in mk->ks (as little-endian u64). */
static int stream_next(tl_mask *mk, int t, size_t m) {
    int outl = 0;
    if (EVP_EncryptUpdate(mk->ctx[t], (unsigned char *)mk->ks, &outl, mk->zeros,
                          (int)(m * sizeof(uint64_t))) != 1 ||
        outl != (int)(m * sizeof(uint64_t)))
        return tl_error(TL_ENOMEM, "masks: AES-128-CTR failed");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < m; i++) mk->ks[i] = __builtin_bswap64(mk->ks[i]);
#endif
    return 0;
}

static void reset(tl_mask *mk, size_t n) {
    mk->terms = 0;
    mk->from_kept = mk->keeping = 0;
    mk->n = n;
    mk->done = 0;
}

int tl_mask_begin(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos,
                  size_t n) {
    reset(mk, 0);
    if (k < 1 || pos < 0 || pos >= k)
        return tl_error(TL_EINVAL, "masks: position %d among %d participants", pos, k);
    for (int i = 0; i < k; i++)
        if (ids[i] == TL_MASK_TOTAL || (i > 0 && ids[i] <= ids[i - 1]))
            return tl_error(TL_EINVAL,
                            "masks: participants must be distinct node indices in ascending "
                            "(plan) order; entry %d is %u",
                            i, ids[i]);
    int rc = 0;
    if (pos == 0) { /* R + S_ids[1]; R is kept for unsealing */
        if (mk->kept_cap < n) {
            uint64_t *p = malloc((n ? n : 1) * sizeof(uint64_t));
            if (!p) return tl_error(TL_ENOMEM, "masks: out of memory for %zu values", n);
            if (mk->kept) OPENSSL_cleanse(mk->kept, mk->kept_cap * sizeof(uint64_t));
            free(mk->kept);
            mk->kept = p;
            mk->kept_cap = n;
        }
        mk->kept_ok = 0;
        mk->kept_at = *at;
        mk->kept_n = n;
        mk->keeping = 1;
        rc = stream_start(mk, mk->terms++, at, TL_MASK_TOTAL, +1);
        if (rc == 0 && k > 1) rc = stream_start(mk, mk->terms++, at, ids[1], +1);
    } else if (pos < k - 1) { /* S_ids[pos+1] - S_ids[pos] */
        rc = stream_start(mk, mk->terms++, at, ids[pos + 1], +1);
        if (rc == 0) rc = stream_start(mk, mk->terms++, at, ids[pos], -1);
    } else { /* -S_ids[k-1] */
        rc = stream_start(mk, mk->terms++, at, ids[pos], -1);
    }
    if (rc < 0) {
        reset(mk, 0);
        return rc;
    }
    mk->n = n;
    return 0;
}

int tl_mask_begin_total(tl_mask *mk, const tl_mask_at *at, size_t n) {
    reset(mk, 0);
    if (mk->kept_ok && mk->kept_n == n && mk->kept_at.run_id == at->run_id &&
        mk->kept_at.step == at->step && mk->kept_at.attempt == at->attempt) {
        mk->from_kept = 1;
        mk->n = n;
        return 0;
    }
    int rc = stream_start(mk, 0, at, TL_MASK_TOTAL, +1);
    if (rc < 0) return rc;
    mk->terms = 1;
    mk->n = n;
    return 0;
}

/* out = in + k (sign +1) or in - k (sign -1), mod 2^64 */
static void add_signed(const uint64_t *in, uint64_t *out, const uint64_t *k, size_t m, int sign) {
    if (sign > 0)
        for (size_t i = 0; i < m; i++) out[i] = in[i] + k[i];
    else
        for (size_t i = 0; i < m; i++) out[i] = in[i] - k[i];
}

int tl_mask_next(tl_mask *mk, const uint64_t *in, uint64_t *out, size_t m, int sign) {
    if ((!mk->terms && !mk->from_kept) || m > mk->n - mk->done)
        return tl_error(TL_EINVAL, "masks: %zu values asked, %zu of %zu left", m, mk->n - mk->done,
                        mk->n);
    if (mk->from_kept) {
        add_signed(in, out, mk->kept + mk->done, m, sign);
        mk->done += m;
        return 0;
    }
    for (size_t off = 0; off < m; off += CHUNK) {
        const size_t c = m - off < CHUNK ? m - off : CHUNK;
        const uint64_t *src = in + off;
        for (int t = 0; t < mk->terms; t++) {
            int rc = stream_next(mk, t, c);
            if (rc < 0) return rc;
            add_signed(src, out + off, mk->ks, c, sign * mk->sign[t]);
            src = out + off; /* the later terms add to the result */
            if (t == 0 && mk->keeping) memcpy(mk->kept + mk->done + off, mk->ks, c * 8);
        }
    }
    mk->done += m;
    if (mk->keeping && mk->done == mk->n) mk->kept_ok = 1;
    return 0;
}

int tl_mask_fill(tl_mask *mk, const tl_mask_at *at, uint32_t index, uint64_t *out, size_t n) {
    reset(mk, 0);
    int rc = stream_start(mk, 0, at, index, +1);
    for (size_t off = 0; rc == 0 && off < n; off += CHUNK) {
        const size_t c = n - off < CHUNK ? n - off : CHUNK;
        if ((rc = stream_next(mk, 0, c)) == 0) memcpy(out + off, mk->ks, c * 8);
    }
    return rc;
}

int tl_mask_seal(tl_mask *mk, const tl_mask_at *at, const uint32_t *ids, int k, int pos,
                 uint64_t *q, size_t n) {
    int rc = tl_mask_begin(mk, at, ids, k, pos, n);
    return rc < 0 ? rc : tl_mask_next(mk, q, q, n, +1);
}

int tl_mask_unseal(tl_mask *mk, const tl_mask_at *at, uint64_t *sum, size_t n) {
    int rc = tl_mask_begin_total(mk, at, n);
    return rc < 0 ? rc : tl_mask_next(mk, sum, sum, n, -1);
}
