/*
 * tls.c - TLS contexts loaded from a kit directory, and the certificate
 * identity convention of tls.h (CN "tl-orchestrator" / "tl-node-K" with a
 * matching SAN URI "tl:orchestrator" / "tl:node:K").
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls_int.h"
#include "tl/error.h"
#include "tl/tls.h"

const char *tl__tls_reason(char *buf, size_t len) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r) snprintf(buf, len, "%s", r);
    else if (e) snprintf(buf, len, "OpenSSL error %lx", e);
    else snprintf(buf, len, "unknown error");
    ERR_clear_error();
    return buf;
}

/* "K" -> K for 1..TL_TLS_MAX_NODE_ID written without sign or leading zeros;
 * -1 otherwise. */
static int parse_node_id(const char *s) {
    long v = 0;
    if (*s < '1' || *s > '9') return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > TL_TLS_MAX_NODE_ID) return -1;
    }
    return (int)v;
}

/* Copies an ASN1 string of printable ASCII into out (size n); -1 if it holds
 * anything else (including NUL bytes) or does not fit. */
static int ascii_copy(const ASN1_STRING *s, char *out, size_t n) {
    const unsigned char *p = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);
    if (len < 0 || (size_t)len >= n) return -1;
    for (int i = 0; i < len; i++)
        if (p[i] < 0x20 || p[i] > 0x7e) return -1;
    memcpy(out, p, (size_t)len);
    out[len] = '\0';
    return 0;
}

/* The certificate's single CN into cn; -1 with why if absent, repeated or not
 * printable ASCII. */
static int subject_cn(X509 *x, char *cn, size_t n, char *why, size_t whylen) {
    X509_NAME *subj = X509_get_subject_name(x);
    int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (idx < 0) {
        snprintf(why, whylen, "the certificate has no common name");
        return -1;
    }
    if (X509_NAME_get_index_by_NID(subj, NID_commonName, idx) >= 0) {
        snprintf(why, whylen, "the certificate has several common names");
        return -1;
    }
    if (ascii_copy(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)), cn, n) < 0) {
        snprintf(why, whylen, "the certificate's common name is not a tl identity");
        return -1;
    }
    return 0;
}

/* The certificate's single SAN URI starting with "tl:" into uri; -1 with why
 * if there is none or more than one. */
static int subject_tl_uri(X509 *x, char *uri, size_t n, char *why, size_t whylen) {
    int crit = 0, found = 0, rc = -1;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char tmp[128];
        if (g->type != GEN_URI) continue;
        if (ascii_copy(g->d.uniformResourceIdentifier, tmp, sizeof tmp) < 0) continue;
        if (strncmp(tmp, "tl:", 3) != 0) continue;
        if (found++) {
            snprintf(why, whylen, "the certificate names several tl identities");
            goto cleanup;
        }
        snprintf(uri, n, "%s", tmp);
    }
    if (!found) {
        snprintf(why, whylen, "the certificate has no tl identity (SAN URI tl:...)");
        goto cleanup;
    }
    rc = 0;
cleanup:
    GENERAL_NAMES_free(gens);
    return rc;
}

int tl__tls_cert_role(X509 *x, int *node_id, char *why, size_t whylen) {
    char cn[128], uri[128];
    int id;
    *node_id = 0;
    if (subject_cn(x, cn, sizeof cn, why, whylen) < 0) return -1;
    if (subject_tl_uri(x, uri, sizeof uri, why, whylen) < 0) return -1;
    if (!strcmp(cn, TL_TLS_ORCH_CN)) {
        if (strcmp(uri, TL_TLS_ORCH_URI) != 0) {
            snprintf(why, whylen, "CN '%s' does not match SAN URI '%s'", cn, uri);
            return -1;
        }
        return TL_TLS_ORCHESTRATOR;
    }
    if (strncmp(cn, TL_TLS_NODE_CN_PREFIX, strlen(TL_TLS_NODE_CN_PREFIX)) != 0 ||
        (id = parse_node_id(cn + strlen(TL_TLS_NODE_CN_PREFIX))) < 0) {
        snprintf(why, whylen, "CN '%s' is neither %s nor %sK", cn, TL_TLS_ORCH_CN,
                 TL_TLS_NODE_CN_PREFIX);
        return -1;
    }
    if (strncmp(uri, TL_TLS_NODE_URI_PREFIX, strlen(TL_TLS_NODE_URI_PREFIX)) != 0 ||
        parse_node_id(uri + strlen(TL_TLS_NODE_URI_PREFIX)) != id) {
        snprintf(why, whylen, "CN '%s' does not match SAN URI '%s'", cn, uri);
        return -1;
    }
    *node_id = id;
    return TL_TLS_NODE;
}

/* Reads the first certificate of a PEM file. */
static int read_cert(const char *path, X509 **out) {
    char r[160];
    FILE *f = fopen(path, "r");
    *out = NULL;
    if (!f) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    ERR_clear_error();
    *out = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!*out)
        return tl_error(TL_ETLS, "%s: not a PEM certificate (%s)", path,
                        tl__tls_reason(r, sizeof r));
    return 0;
}

/* Reads an unencrypted PEM private key. */
static int read_key(const char *path, EVP_PKEY **out) {
    char r[160];
    FILE *f = fopen(path, "r");
    *out = NULL;
    if (!f) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    ERR_clear_error();
    *out = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
    fclose(f);
    if (!*out)
        return tl_error(TL_ETLS, "%s: not an unencrypted PEM private key (%s)", path,
                        tl__tls_reason(r, sizeof r));
    return 0;
}

/* Adds every certificate of the PEM file to store; at least one is required,
 * and each must be a CA certificate. */
static int read_ca_file(const char *path, X509_STORE *store) {
    char r[160];
    int n = 0, rc = 0;
    X509 *x = NULL;
    FILE *f = fopen(path, "r");
    if (!f) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    ERR_clear_error();
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (X509_check_ca(x) != 1) {
            rc = tl_error(TL_ETLS, "%s: certificate %d is not a CA certificate", path, n + 1);
            goto cleanup;
        }
        if (X509_STORE_add_cert(store, x) != 1) {
            rc = tl_error(TL_ETLS, "%s: %s", path, tl__tls_reason(r, sizeof r));
            goto cleanup;
        }
        X509_free(x);
        x = NULL;
        n++;
    }
    ERR_clear_error(); /* the end of the file shows up as "no start line" */
    if (n == 0) rc = tl_error(TL_ETLS, "%s: no PEM certificate in it", path);
cleanup:
    X509_free(x);
    fclose(f);
    return rc;
}

int tl_tls_ctx_new(const char *dir, tl_tls_role role, tl_tls_ctx **out) {
    char cert_path[PATH_MAX], key_path[PATH_MAX], ca_path[PATH_MAX], why[160], r[160];
    tl_tls_ctx *t = NULL;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    int rc = 0, id = 0, is_server = role == TL_TLS_ORCHESTRATOR;

    *out = NULL;
    if (!dir || !*dir || (role != TL_TLS_ORCHESTRATOR && role != TL_TLS_NODE))
        return tl_error(TL_EINVAL, "tls: a kit directory and a role are required");
    if (snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir) >= (int)sizeof cert_path ||
        snprintf(key_path, sizeof key_path, "%s/key.pem", dir) >= (int)sizeof key_path ||
        snprintf(ca_path, sizeof ca_path, "%s/ca.pem", dir) >= (int)sizeof ca_path)
        return tl_error(TL_EINVAL, "%s: path too long", dir);

    if (!(t = calloc(1, sizeof *t))) return tl_error(TL_ENOMEM, "tls: out of memory");
    t->role = role;
    ERR_clear_error();
    if (!(t->ssl = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method()))) {
        rc = tl_error(TL_ETLS, "tls: SSL_CTX_new: %s", tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    if (SSL_CTX_set_min_proto_version(t->ssl, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(t->ssl, TLS1_3_VERSION) != 1) {
        rc = tl_error(TL_ETLS, "tls: this OpenSSL cannot do TLS 1.3");
        goto cleanup;
    }
    /* AES-128-GCM first: the bulk of a run is ~1 MB tensors each way per node and
     * batch, and it is the fastest suite with AES-NI (all three are TLS 1.3's). */
    SSL_CTX_set_ciphersuites(t->ssl, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                     "TLS_CHACHA20_POLY1305_SHA256");
    if (is_server) SSL_CTX_set_options(t->ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);

    if ((rc = read_cert(cert_path, &cert)) < 0 || (rc = read_key(key_path, &key)) < 0) goto cleanup;
    int own = tl__tls_cert_role(cert, &id, why, sizeof why);
    if (own < 0) {
        rc = tl_error(TL_ETLS, "%s: %s", cert_path, why);
        goto cleanup;
    }
    if (own != (int)role) {
        rc = tl_error(TL_ETLS, "%s: this is %s certificate; %s needs %s kit (DIR/%s)", cert_path,
                      own == TL_TLS_NODE ? "a node" : "the orchestrator",
                      is_server ? "the orchestrator" : "a node",
                      is_server ? "the orchestrator's" : "a node's",
                      is_server ? "orchestrator" : "node-K");
        goto cleanup;
    }
    t->node_id = id;
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        rc = tl_error(TL_ETLS, "%s: key.pem does not belong to cert.pem", dir);
        goto cleanup;
    }
    if (SSL_CTX_use_certificate(t->ssl, cert) != 1 || SSL_CTX_use_PrivateKey(t->ssl, key) != 1) {
        rc = tl_error(TL_ETLS, "%s: %s", dir, tl__tls_reason(r, sizeof r));
        goto cleanup;
    }
    if (SSL_CTX_check_private_key(t->ssl) != 1) {
        ERR_clear_error();
        rc = tl_error(TL_ETLS, "%s: key.pem does not belong to cert.pem", dir);
        goto cleanup;
    }

    /* Trust exactly the run's CA: no default paths, no system store. */
    if ((rc = read_ca_file(ca_path, SSL_CTX_get_cert_store(t->ssl))) < 0) goto cleanup;
    SSL_CTX_set_verify(t->ssl, SSL_VERIFY_PEER | (is_server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       NULL);
    /* Leaf certificates straight under the run's CA; strict X.509 checks; a
     * server's peer must be a TLS client certificate and vice versa (the
     * extended key usages). conn_tls.c adds the identity checks. */
    SSL_CTX_set_verify_depth(t->ssl, 1);
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(t->ssl), X509_V_FLAG_X509_STRICT);
    SSL_CTX_set_purpose(t->ssl, is_server ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
    /* No resumption: every connection is a full, mutually authenticated handshake. */
    SSL_CTX_set_session_cache_mode(t->ssl, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(t->ssl, 0);
    SSL_CTX_set_options(t->ssl, SSL_OP_NO_TICKET);
    /* The peer has the CA certificate: send only our own (NO_AUTO_CHAIN). */
    SSL_CTX_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_NO_AUTO_CHAIN);
    ERR_clear_error();

    *out = t;
    t = NULL;
cleanup:
    X509_free(cert);
    EVP_PKEY_free(key);
    tl_tls_ctx_free(t);
    return rc;
}

void tl_tls_ctx_free(tl_tls_ctx *ctx) {
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

int tl_tls_ctx_node_id(const tl_tls_ctx *ctx) {
    if (!ctx || ctx->role != TL_TLS_NODE) return tl_error(TL_EINVAL, "tls: not a node kit");
    return ctx->node_id;
}
