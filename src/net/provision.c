/*
 * provision.c - the run's CA and its TLS kits, built with OpenSSL's C API
 * (no openssl(1) involved). Layout and certificate contents: provision.h.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "net/tls_int.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/groupkey.h"
#include "tl/provision.h"
#include "tl/tls.h"

#define DEFAULT_DAYS 3650L

void tl_provision_opts_init(tl_provision_opts *o) {
    memset(o, 0, sizeof *o);
    o->not_before_s = -3600;
    o->not_after_s = DEFAULT_DAYS * 86400;
}

/* ---- files ------------------------------------------------------------- */

/* Joins a, "/", b into out; TL_EINVAL if it does not fit. */
static int join(char *out, size_t n, const char *a, const char *b) {
    if (snprintf(out, n, "%s/%s", a, b) >= (int)n)
        return tl_error(TL_EINVAL, "%s: path too long", a);
    return 0;
}

/* 1 if path is a directory with no entries, 0 if it has some, or an error. */
static int dir_is_empty(const char *path) {
    struct dirent *e;
    int empty = 1;
    DIR *d = opendir(path);
    if (!d) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

/* Makes directory path (mode 0700); an existing directory is accepted. */
static int make_dir(const char *path) {
    struct stat st;
    if (mkdir(path, 0700) == 0) return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    if (errno == EEXIST) return tl_error(TL_EIO, "%s: exists and is not a directory", path);
    return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
}

/* Writes the contents of a memory BIO as path, atomically (file.h: the mode
 * holds from the first byte, a link planted at path is replaced, never
 * followed). Without force an existing path is refused. */
static int write_file(const char *path, BIO *mem, mode_t mode, int force) {
    char *data = NULL;
    long len = BIO_get_mem_data(mem, &data);
    struct stat st;
    if (!force && lstat(path, &st) == 0) return tl_error(TL_EIO, "%s: %s", path, strerror(EEXIST));
    return tl_file_write_atomic(path, data, len > 0 ? (size_t)len : 0, mode, 0);
}

/* Writes a certificate (mode 0644) or a private key (mode 0600) as PEM. */
static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, int force) {
    char r[160];
    int rc;
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem) return tl_error(TL_ENOMEM, "provision: out of memory");
    if (cert ? PEM_write_bio_X509(mem, cert) != 1
             : PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL) != 1) {
        rc = tl_error(TL_ETLS, "%s: cannot encode: %s", path, tl__tls_reason(r, sizeof r));
    } else {
        rc = write_file(path, mem, cert ? 0644 : 0600, force);
    }
    BIO_free(mem);
    return rc;
}

/* ---- certificates ------------------------------------------------------ */

/* A fresh ECDSA P-256 key. */
static int new_key(EVP_PKEY **out) {
    char r[160];
    ERR_clear_error();
    if (!(*out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")))
        return tl_error(TL_ETLS, "provision: key generation failed: %s",
                        tl__tls_reason(r, sizeof r));
    return 0;
}

/* Adds one extension given in OpenSSL's configuration syntax. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    char r[160];
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    if (!(ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value)))
        return tl_error(TL_ETLS, "provision: extension %s=%s: %s", OBJ_nid2sn(nid), value,
                        tl__tls_reason(r, sizeof r));
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : tl_error(TL_ETLS, "provision: cannot add extension %s", OBJ_nid2sn(nid));
}

/* A random positive 128-bit serial number. */
static int set_serial(X509 *x) {
    unsigned char b[16];
    BIGNUM *bn = NULL;
    int rc = 0;
    if (RAND_bytes(b, sizeof b) != 1) return tl_error(TL_ETLS, "provision: no randomness");
    b[0] &= 0x7f; /* positive */
    b[0] |= 0x40; /* full length, never zero */
    if (!(bn = BN_bin2bn(b, sizeof b, NULL)) || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
        rc = tl_error(TL_ETLS, "provision: cannot set the serial number");
    BN_free(bn);
    return rc;
}

/* True if s is a DNS host name: dot-separated labels of letters, digits and
 * inner hyphens, at most 63 characters each, 253 in all. */
static int is_dns_name(const char *s) {
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253 || s[n - 1] == '.') return 0;
    for (size_t i = 0; i <= n; i++) {
        char ch = s[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || s[i - 1] == '-') return 0;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                   (ch >= '0' && ch <= '9') || (ch == '-' && label > 0)) {
            if (++label > 63) return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

int tl_provision_check_host(const char *h) {
    unsigned char a[16];
    if (!h || !(inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1 || is_dns_name(h)))
        return tl_error(TL_EINVAL, "host '%s' is neither a DNS name nor an IP address",
                        h ? h : "(null)");
    return 0;
}

/* Checks each host of o. */
static int check_hosts(const tl_provision_opts *o) {
    int rc;
    for (int i = 0; i < o->nhosts; i++)
        if ((rc = tl_provision_check_host(o->hosts[i])) < 0) return rc;
    return 0;
}

/* Appends one SAN entry: a DNS name, an IP literal or a URI. */
static int push_name(GENERAL_NAMES *names, int type, const char *value) {
    GENERAL_NAME *g = GENERAL_NAME_new();
    if (!g) return -1;
    if (type == GEN_IPADD) {
        ASN1_OCTET_STRING *ip = a2i_IPADDRESS(value);
        if (!ip) goto fail;
        GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
    } else {
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!s || !ASN1_STRING_set(s, value, -1)) {
            ASN1_IA5STRING_free(s);
            goto fail;
        }
        GENERAL_NAME_set0_value(g, type, s);
    }
    if (!sk_GENERAL_NAME_push(names, g)) goto fail;
    return 0;
fail:
    GENERAL_NAME_free(g);
    return -1;
}

/* Whether host is already among the first n of list (case-insensitively). */
static int seen(const char *const *list, int n, const char *host) {
    for (int i = 0; i < n; i++)
        if (!strcasecmp(list[i], host)) return 1;
    return 0;
}

/* The subjectAltName: the tl: URI, then (orchestrator only) DNS and IP names. */
static int add_san(X509 *x, const char *uri, const tl_provision_opts *o) {
    static const char *const local[] = {"localhost", "127.0.0.1", "::1"};
    unsigned char a[16];
    int rc = 0;
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    if (!names || push_name(names, GEN_URI, uri) < 0) goto oom;
    for (int i = 0; o && i < 3 + o->nhosts; i++) {
        const char *h = i < 3 ? local[i] : o->hosts[i - 3];
        if ((i >= 3 && seen(local, 3, h)) || (i > 3 && seen(o->hosts, i - 3, h))) continue;
        int ip = inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
        if (push_name(names, ip ? GEN_IPADD : GEN_DNS, h) < 0) goto oom;
    }
    if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) != 1)
        rc = tl_error(TL_ETLS, "provision: cannot add the subjectAltName");
    GENERAL_NAMES_free(names);
    return rc;
oom:
    GENERAL_NAMES_free(names);
    return tl_error(TL_ENOMEM, "provision: cannot build the subjectAltName");
}

enum kind { KIND_CA, KIND_ORCH, KIND_NODE };

/* Issues a certificate of the given kind for key, subject CN cn, signed by
 * ca_key (and ca_cert, NULL for the self-signed CA). o gives the validity
 * period and, for the orchestrator, the extra host names. */
static int issue(enum kind kind, const char *cn, const char *uri, EVP_PKEY *key, X509 *ca_cert,
                 EVP_PKEY *ca_key, const tl_provision_opts *o, X509 **out) {
    char r[160];
    int rc = 0;
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    *out = NULL;
    if (!x || !name) {
        rc = tl_error(TL_ENOMEM, "provision: out of memory");
        goto cleanup;
    }
    if (!X509_set_version(x, X509_VERSION_3) || (rc = set_serial(x)) < 0 ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"tl", -1, -1,
                                    0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, ca_cert ? X509_get_subject_name(ca_cert) : name) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), o->not_before_s) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), o->not_after_s) || !X509_set_pubkey(x, key)) {
        if (rc == 0) rc = tl_error(TL_ETLS, "provision: %s: %s", cn, tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    X509 *issuer = ca_cert ? ca_cert : x;
    if ((rc = add_ext(x, issuer, NID_subject_key_identifier, "hash")) < 0 ||
        (rc = add_ext(x, issuer, NID_authority_key_identifier, "keyid:always")) < 0)
        goto cleanup;
    if (kind == KIND_CA) {
        if ((rc = add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0")) < 0 ||
            (rc = add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign")) < 0)
            goto cleanup;
    } else {
        if ((rc = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE")) < 0 ||
            (rc = add_ext(x, issuer, NID_key_usage, "critical,digitalSignature")) < 0 ||
            (rc = add_ext(x, issuer, NID_ext_key_usage,
                          kind == KIND_ORCH ? "serverAuth" : "clientAuth")) < 0 ||
            (rc = add_san(x, uri, kind == KIND_ORCH ? o : NULL)) < 0)
            goto cleanup;
    }
    ERR_clear_error();
    if (X509_sign(x, ca_key, EVP_sha256()) <= 0) {
        rc = tl_error(TL_ETLS, "provision: signing %s failed: %s", cn, tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    *out = x;
    x = NULL;
cleanup:
    X509_NAME_free(name);
    X509_free(x);
    return rc;
}

/* Writes kit directory dir/sub: cert.pem, key.pem and a copy of ca.pem. */
static int write_kit(const char *dir, const char *sub, enum kind kind, const char *cn,
                     const char *uri, X509 *ca_cert, EVP_PKEY *ca_key, const tl_provision_opts *o) {
    char kit[PATH_MAX], path[PATH_MAX];
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    int rc;
    if ((rc = join(kit, sizeof kit, dir, sub)) < 0 || (rc = make_dir(kit)) < 0) goto cleanup;
    if ((rc = new_key(&key)) < 0 || (rc = issue(kind, cn, uri, key, ca_cert, ca_key, o, &cert)) < 0)
        goto cleanup;
    if ((rc = join(path, sizeof path, kit, "key.pem")) < 0 ||
        (rc = write_pem(path, NULL, key, o->force)) < 0 ||
        (rc = join(path, sizeof path, kit, "cert.pem")) < 0 ||
        (rc = write_pem(path, cert, NULL, o->force)) < 0 ||
        (rc = join(path, sizeof path, kit, "ca.pem")) < 0 ||
        (rc = write_pem(path, ca_cert, NULL, o->force)) < 0)
        goto cleanup;
cleanup:
    EVP_PKEY_free(key);
    X509_free(cert);
    return rc;
}

/* Writes node K's kit. */
static int write_node_kit(const char *dir, int id, X509 *ca_cert, EVP_PKEY *ca_key,
                          const tl_provision_opts *o) {
    char sub[32], cn[32], uri[32];
    snprintf(sub, sizeof sub, "node-%d", id);
    snprintf(cn, sizeof cn, "%s%d", TL_TLS_NODE_CN_PREFIX, id);
    snprintf(uri, sizeof uri, "%s%d", TL_TLS_NODE_URI_PREFIX, id);
    return write_kit(dir, sub, KIND_NODE, cn, uri, ca_cert, ca_key, o);
}

/* Validity offsets must describe a non-empty period. */
static int check_period(const tl_provision_opts *o) {
    if (o->not_after_s <= o->not_before_s)
        return tl_error(TL_EINVAL, "provision: the validity period is empty");
    return 0;
}

/* Sealed mode's node-group key (groupkey.h): DIR/ca/group.key (kept with the
 * CA, for --add-node), DIR/node-K/group.key for K in 1..nodes, and its id
 * (not the key) in DIR/orchestrator/group-key.id. */
static int write_group_key(const char *dir, int nodes, int force) {
    char path[PATH_MAX], sub[32], hex[2 * TL_GROUP_KEY_ID_LEN + 1];
    tl_group_key gk;
    int rc = tl_group_key_generate(&gk);
    if (rc == 0 && (rc = join(path, sizeof path, dir, "ca/group.key")) == 0)
        rc = tl_group_key_save(path, &gk, force);
    for (int k = 1; rc == 0 && k <= nodes; k++) {
        snprintf(sub, sizeof sub, "node-%d/group.key", k);
        if ((rc = join(path, sizeof path, dir, sub)) == 0) rc = tl_group_key_save(path, &gk, force);
    }
    if (rc == 0 && (rc = join(path, sizeof path, dir, "orchestrator/group-key.id")) == 0) {
        tl_group_key_id_hex(gk.id, hex);
        FILE *f = fopen(path, "w");
        if (!f || fprintf(f, "%s\n", hex) < 0 || fclose(f) != 0) {
            if (f) fclose(f);
            rc = tl_error(TL_EIO, "%s: %s", path, strerror(errno));
        }
    }
    tl_group_key_wipe(&gk);
    return rc;
}

int tl_provision(const char *dir, const tl_provision_opts *o) {
    char sub[PATH_MAX], path[PATH_MAX], cn[64];
    unsigned char tag[4];
    EVP_PKEY *ca_key = NULL;
    X509 *ca_cert = NULL;
    struct stat st;
    int rc;

    if (!dir || !*dir || !o) return tl_error(TL_EINVAL, "provision: a directory is required");
    if (o->nodes < 1 || o->nodes > TL_PROVISION_MAX_NODES)
        return tl_error(TL_EINVAL, "provision: the number of nodes must be 1..%d",
                        TL_PROVISION_MAX_NODES);
    if ((rc = check_hosts(o)) < 0 || (rc = check_period(o)) < 0) return rc;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return tl_error(TL_EINVAL, "%s: exists and is not a directory", dir);
        if (!o->force) {
            if ((rc = dir_is_empty(dir)) < 0) return rc;
            if (!rc)
                return tl_error(TL_EINVAL,
                                "%s: exists and is not empty; refusing to overwrite "
                                "(--force replaces its kits)",
                                dir);
        }
    } else if (errno != ENOENT) {
        return tl_error(TL_EIO, "%s: %s", dir, strerror(errno));
    }
    if ((rc = make_dir(dir)) < 0) return rc;

    /* The CA: a per-run name, so that two runs' CAs are never confused. */
    if (RAND_bytes(tag, sizeof tag) != 1) return tl_error(TL_ETLS, "provision: no randomness");
    snprintf(cn, sizeof cn, "tl run CA %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    if ((rc = join(sub, sizeof sub, dir, "ca")) < 0 || (rc = make_dir(sub)) < 0 ||
        (rc = new_key(&ca_key)) < 0 ||
        (rc = issue(KIND_CA, cn, NULL, ca_key, NULL, ca_key, o, &ca_cert)) < 0 ||
        (rc = join(path, sizeof path, sub, "ca-key.pem")) < 0 ||
        (rc = write_pem(path, NULL, ca_key, o->force)) < 0 ||
        (rc = join(path, sizeof path, sub, "ca.pem")) < 0 ||
        (rc = write_pem(path, ca_cert, NULL, o->force)) < 0)
        goto cleanup;

    if ((rc = write_kit(dir, "orchestrator", KIND_ORCH, TL_TLS_ORCH_CN, TL_TLS_ORCH_URI, ca_cert,
                        ca_key, o)) < 0)
        goto cleanup;
    for (int k = 1; k <= o->nodes; k++)
        if ((rc = write_node_kit(dir, k, ca_cert, ca_key, o)) < 0) goto cleanup;
    rc = write_group_key(dir, o->nodes, o->force);
cleanup:
    EVP_PKEY_free(ca_key);
    X509_free(ca_cert);
    return rc;
}

int tl_provision_add_node(const char *dir, int node_id, const tl_provision_opts *o) {
    char path[PATH_MAX], sub[32], r[160];
    EVP_PKEY *ca_key = NULL;
    X509 *ca_cert = NULL;
    FILE *f = NULL;
    struct stat st;
    int rc;

    if (!dir || !*dir || !o) return tl_error(TL_EINVAL, "provision: a directory is required");
    if (node_id < 1 || node_id > TL_TLS_MAX_NODE_ID)
        return tl_error(TL_EINVAL, "provision: node id %d is not in 1..%d", node_id,
                        TL_TLS_MAX_NODE_ID);
    if ((rc = check_period(o)) < 0) return rc;
    snprintf(sub, sizeof sub, "node-%d", node_id);
    if ((rc = join(path, sizeof path, dir, sub)) < 0) return rc;
    if (!o->force && lstat(path, &st) == 0)
        return tl_error(TL_EINVAL, "%s: exists; refusing to overwrite (--force replaces it)", path);

    if ((rc = join(path, sizeof path, dir, "ca/ca.pem")) < 0) return rc;
    if (!(f = fopen(path, "r"))) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    ca_cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca_cert) {
        rc = tl_error(TL_ETLS, "%s: not a PEM certificate (%s)", path, tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    if ((rc = join(path, sizeof path, dir, "ca/ca-key.pem")) < 0) goto cleanup;
    if (!(f = fopen(path, "r"))) {
        rc = tl_error(TL_EIO, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    ca_key = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
    fclose(f);
    if (!ca_key) {
        rc = tl_error(TL_ETLS, "%s: not an unencrypted PEM private key (%s)", path,
                      tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    if (X509_check_private_key(ca_cert, ca_key) != 1 || X509_check_ca(ca_cert) != 1) {
        ERR_clear_error();
        rc = tl_error(TL_ETLS, "%s/ca: ca-key.pem and ca.pem are not a CA and its key", dir);
        goto cleanup;
    }
    rc = write_node_kit(dir, node_id, ca_cert, ca_key, o);
    if (rc == 0 && (rc = join(path, sizeof path, dir, "ca/group.key")) == 0 &&
        access(path, F_OK) == 0) { /* the group's key, if the kit has one */
        tl_group_key gk;
        char kp[PATH_MAX], ks[48];
        snprintf(ks, sizeof ks, "node-%d/group.key", node_id);
        if ((rc = tl_group_key_load(path, &gk)) == 0 && (rc = join(kp, sizeof kp, dir, ks)) == 0)
            rc = tl_group_key_save(kp, &gk, o->force);
        tl_group_key_wipe(&gk);
    }
cleanup:
    EVP_PKEY_free(ca_key);
    X509_free(ca_cert);
    return rc;
}
