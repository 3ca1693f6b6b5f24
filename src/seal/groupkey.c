/* groupkey.c - the node group's key: generation, key file, id, HKDF (see groupkey.h). */
#include "tl/groupkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "tl/error.h"
#include "tl/file.h"

static const char ID_LABEL[] = "tl group key id v1";
static const char HKDF_SALT[] = "tl seal v1";

int tl_group_key_derive(const uint8_t key[TL_GROUP_KEY_LEN], const char *label, uint8_t *out,
                        size_t len) {
    int rc = 0;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!ctx) {
        rc = tl_error(TL_ENOMEM, "HKDF: OpenSSL has no HKDF (or out of memory)");
        goto cleanup;
    }
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, TL_GROUP_KEY_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)HKDF_SALT,
                                          sizeof HKDF_SALT - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    if (len == 0 || len > 255 * 32 || EVP_KDF_derive(ctx, out, len, p) <= 0)
        rc = tl_error(TL_EINVAL, "HKDF: cannot derive %zu bytes for \"%s\"", len, label);
cleanup:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

int tl_group_key_from_bytes(tl_group_key *gk, const uint8_t key[TL_GROUP_KEY_LEN]) {
    uint8_t mac[32];
    unsigned int mac_len = 0;
    int rc;
    memmove(gk->key, key, TL_GROUP_KEY_LEN);
    if (!HMAC(EVP_sha256(), gk->key, TL_GROUP_KEY_LEN, (const unsigned char *)ID_LABEL,
              sizeof ID_LABEL - 1, mac, &mac_len) ||
        mac_len != sizeof mac) {
        tl_group_key_wipe(gk);
        return tl_error(TL_ENOMEM, "group key id: HMAC failed");
    }
    memcpy(gk->id, mac, TL_GROUP_KEY_ID_LEN);
    if ((rc = tl_group_key_derive(gk->key, "mask", gk->mask_key, TL_DERIVED_KEY_LEN)) < 0 ||
        (rc = tl_group_key_derive(gk->key, "mac", gk->mac_key, TL_DERIVED_KEY_LEN)) < 0 ||
        (rc = tl_group_key_derive(gk->key, "transfer", gk->transfer_key, TL_DERIVED_KEY_LEN)) < 0)
        tl_group_key_wipe(gk);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

int tl_group_key_generate(tl_group_key *gk) {
    uint8_t key[TL_GROUP_KEY_LEN];
    if (RAND_bytes(key, sizeof key) != 1)
        return tl_error(TL_EIO, "group key: the random generator failed");
    int rc = tl_group_key_from_bytes(gk, key);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tl_group_key_load(const char *path, tl_group_key *gk) {
    /* 64 digits, "\r\n", and one more byte to notice anything longer */
    char buf[2 * TL_GROUP_KEY_LEN + 3];
    uint8_t key[TL_GROUP_KEY_LEN];
    struct stat st;
    size_t len = 0;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    memset(gk, 0, sizeof *gk);
    if (fd < 0) return tl_error(TL_EIO, "group key %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0) {
        rc = tl_error(TL_EIO, "group key %s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = tl_error(TL_EIO, "group key %s: not a regular file", path);
        goto cleanup;
    }
    if (st.st_mode & 077) {
        rc = tl_error(TL_EINVAL,
                      "group key %s: mode %03o lets other users read it; "
                      "run `chmod 600 %s` (and ask who else may have copied it)",
                      path, (unsigned)(st.st_mode & 0777), path);
        goto cleanup;
    }
    if ((rc = tl_file_read_full(fd, buf, sizeof buf, &len, path)) < 0) goto cleanup;
    size_t digits = 0;
    while (digits < len && hexval((unsigned char)buf[digits]) >= 0) digits++;
    const char *rest = buf + digits;
    size_t rest_len = len - digits;
    int eol_ok = rest_len == 0 || (rest_len == 1 && rest[0] == '\n') ||
                 (rest_len == 2 && rest[0] == '\r' && rest[1] == '\n');
    if (digits != 2 * TL_GROUP_KEY_LEN || !eol_ok) {
        rc = tl_error(TL_EFORMAT,
                      "group key %s: expected one line of %d hex digits (a 32-byte key, as "
                      "`tl provision` writes it), found %s%zu hex digit%s then %zu other byte%s",
                      path, 2 * TL_GROUP_KEY_LEN, len == sizeof buf ? "more than " : "", digits,
                      digits == 1 ? "" : "s", rest_len, rest_len == 1 ? "" : "s");
        goto cleanup;
    }
    for (int i = 0; i < TL_GROUP_KEY_LEN; i++)
        key[i] = (uint8_t)(hexval((unsigned char)buf[2 * i]) << 4 |
                           hexval((unsigned char)buf[2 * i + 1]));
    rc = tl_group_key_from_bytes(gk, key);
cleanup:
    OPENSSL_cleanse(buf, sizeof buf);
    OPENSSL_cleanse(key, sizeof key);
    close(fd);
    return rc;
}

int tl_group_key_save(const char *path, const tl_group_key *gk, int force) {
    char tmp[4096], line[2 * TL_GROUP_KEY_LEN + 1];
    static const char digits[] = "0123456789abcdef";
    int rc = 0, fd;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return tl_error(TL_EINVAL, "group key %s: path too long", path);
    for (int i = 0; i < TL_GROUP_KEY_LEN; i++) {
        line[2 * i] = digits[gk->key[i] >> 4];
        line[2 * i + 1] = digits[gk->key[i] & 15];
    }
    line[2 * TL_GROUP_KEY_LEN] = '\n';
    (void)unlink(tmp); /* a leftover of a crashed run of ours */
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        return tl_error(TL_EIO, "group key %s: %s", tmp, strerror(errno));
    /* the umask can only remove bits, but say 0600 explicitly anyway */
    if (fchmod(fd, 0600) < 0) rc = tl_error(TL_EIO, "group key %s: %s", tmp, strerror(errno));
    if (rc == 0) rc = tl_file_write_full(fd, line, sizeof line, tmp);
    if (rc == 0 && fsync(fd) < 0) rc = tl_error(TL_EIO, "group key %s: %s", tmp, strerror(errno));
    if (close(fd) < 0 && rc == 0) rc = tl_error(TL_EIO, "group key %s: %s", tmp, strerror(errno));
    if (rc == 0) {
        if (force) {
            if (rename(tmp, path) < 0)
                rc = tl_error(TL_EIO, "group key %s: %s", path, strerror(errno));
        } else if (link(tmp, path) < 0) { /* fails if path exists: never overwrites */
            rc = errno == EEXIST ? tl_error(TL_EIO, "group key %s: exists (not overwritten)", path)
                                 : tl_error(TL_EIO, "group key %s: %s", path, strerror(errno));
        }
    }
    if (rc < 0 || !force) (void)unlink(tmp);
    OPENSSL_cleanse(line, sizeof line);
    return rc;
}

void tl_group_key_id_hex(const uint8_t id[TL_GROUP_KEY_ID_LEN],
                         char hex[2 * TL_GROUP_KEY_ID_LEN + 1]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < TL_GROUP_KEY_ID_LEN; i++) {
        hex[2 * i] = digits[id[i] >> 4];
        hex[2 * i + 1] = digits[id[i] & 15];
    }
    hex[2 * TL_GROUP_KEY_ID_LEN] = '\0';
}

void tl_group_key_wipe(tl_group_key *gk) {
    if (gk) OPENSSL_cleanse(gk, sizeof *gk);
}
