/*
 * tls_int.h - internals shared by tls.c (contexts, identities) and
 * conn_tls.c (the TLS transport of tl_conn). Not a public header.
 */
#ifndef TL_NET_TLS_INT_H
#define TL_NET_TLS_INT_H

#include <stddef.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tl/tls.h"

struct tl_tls_ctx {
    SSL_CTX *ssl;
    tl_tls_role role;
    int node_id; /* own certificate's node id (TL_TLS_NODE), else 0 */
};

/* The role certificate x carries under the identity convention of tls.h:
 * TL_TLS_ORCHESTRATOR, or TL_TLS_NODE with *node_id set; -1 if it follows
 * neither, with the reason written to why (always NUL-terminated). */
int tl__tls_cert_role(X509 *x, int *node_id, char *why, size_t whylen);

/* The reason of OpenSSL's most recent queued error as text (or "unknown
 * error"), written to buf; clears this thread's error queue. Returns buf. */
const char *tl__tls_reason(char *buf, size_t len);

#endif
