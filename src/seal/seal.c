/* seal.c - parameter MACs and transfer encryption under the group key (see seal.h). */
#include "tl/seal.h"

#include <limits.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "tl/error.h"
#include "tl/le.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "seal.c hashes float32 parameters as stored: add a little-endian conversion"
#endif

static const char MAC_LABEL[] = "tl params v1";
#define PIECE ((size_t)1 << 30) /* OpenSSL's update functions take int lengths */

int tl_param_mac(const tl_group_key *gk, uint64_t step, const float *params, size_t n,
                 uint8_t mac[TL_PARAM_MAC_LEN]) {
    uint8_t head[sizeof MAC_LABEL - 1 + 16];
    size_t out_len = 0;
    int rc = 0;
    memcpy(head, MAC_LABEL, sizeof MAC_LABEL - 1);
    tl_le_store64(head + sizeof MAC_LABEL - 1, step);
    tl_le_store64(head + sizeof MAC_LABEL - 1 + 8, (uint64_t)n);
    EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    OSSL_PARAM p[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                      OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_init(ctx, gk->mac_key, sizeof gk->mac_key, p) != 1 ||
        EVP_MAC_update(ctx, head, sizeof head) != 1) {
        rc = tl_error(TL_ENOMEM, "parameter MAC: HMAC-SHA256 setup failed");
        goto cleanup;
    }
    const uint8_t *b = (const uint8_t *)params;
    for (size_t left = n * sizeof(float); left > 0;) {
        size_t m = left < PIECE ? left : PIECE;
        if (EVP_MAC_update(ctx, b, m) != 1) {
            rc = tl_error(TL_ENOMEM, "parameter MAC: HMAC-SHA256 failed");
            goto cleanup;
        }
        b += m;
        left -= m;
    }
    if (EVP_MAC_final(ctx, mac, &out_len, TL_PARAM_MAC_LEN) != 1 || out_len != TL_PARAM_MAC_LEN)
        rc = tl_error(TL_ENOMEM, "parameter MAC: HMAC-SHA256 failed");
cleanup:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(hmac);
    return rc;
}

int tl_param_mac_equal(const uint8_t a[TL_PARAM_MAC_LEN], const uint8_t b[TL_PARAM_MAC_LEN]) {
    return CRYPTO_memcmp(a, b, TL_PARAM_MAC_LEN) == 0;
}

/* Feeds data to an AEAD update in pieces OpenSSL's int lengths can take:
 * out NULL for associated data. */
static int gcm_update(EVP_CIPHER_CTX *ctx, int enc, uint8_t *out, const uint8_t *in, size_t n) {
    while (n > 0) {
        int m = (int)(n < PIECE ? n : PIECE), outl = 0;
        int ok = enc ? EVP_EncryptUpdate(ctx, out, &outl, in, m)
                     : EVP_DecryptUpdate(ctx, out, &outl, in, m);
        if (ok != 1 || (out && outl != m)) return -1;
        in += m;
        if (out) out += m;
        n -= (size_t)m;
    }
    return 0;
}

int tl_transfer_seal(const tl_group_key *gk, const void *ad, size_t ad_len, const void *pt,
                     size_t n, uint8_t *out) {
    int rc = 0, outl = 0;
    uint8_t *nonce = out, *ct = out + TL_TRANSFER_NONCE_LEN, *tag = ct + n;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return tl_error(TL_ENOMEM, "transfer: out of memory");
    if (RAND_bytes(nonce, TL_TRANSFER_NONCE_LEN) != 1) {
        rc = tl_error(TL_EIO, "transfer: the random generator failed");
        goto cleanup;
    }
    if (EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), gk->transfer_key, nonce, NULL) != 1 ||
        gcm_update(ctx, 1, NULL, ad, ad_len) < 0 || gcm_update(ctx, 1, ct, pt, n) < 0 ||
        EVP_EncryptFinal_ex(ctx, tag, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TL_TRANSFER_TAG_LEN, tag) != 1)
        rc = tl_error(TL_ENOMEM, "transfer: AES-256-GCM encryption failed");
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int tl_transfer_open(const tl_group_key *gk, const void *ad, size_t ad_len, const uint8_t *in,
                     size_t in_len, void *out) {
    if (in_len < TL_TRANSFER_OVERHEAD)
        return tl_error(TL_EPROTO, "transfer: %zu bytes, shorter than nonce and tag (%d)", in_len,
                        TL_TRANSFER_OVERHEAD);
    size_t n = in_len - TL_TRANSFER_OVERHEAD;
    const uint8_t *nonce = in, *ct = in + TL_TRANSFER_NONCE_LEN, *tag = ct + n;
    uint8_t tag_copy[TL_TRANSFER_TAG_LEN];
    int rc = 0, outl = 0;
    memcpy(tag_copy, tag, sizeof tag_copy);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return tl_error(TL_ENOMEM, "transfer: out of memory");
    if (EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), gk->transfer_key, nonce, NULL) != 1 ||
        gcm_update(ctx, 0, NULL, ad, ad_len) < 0 || gcm_update(ctx, 0, out, ct, n) < 0 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TL_TRANSFER_TAG_LEN, tag_copy) != 1) {
        rc = tl_error(TL_ENOMEM, "transfer: AES-256-GCM decryption failed");
    } else if (EVP_DecryptFinal_ex(ctx, tag_copy, &outl) != 1) {
        rc = tl_error(TL_EPROTO,
                      "transfer: authentication failed (%zu bytes): the data or its context was "
                      "changed on the way, or it was sealed under another group's key",
                      in_len);
    }
    if (rc < 0 && n) OPENSSL_cleanse(out, n);
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}
