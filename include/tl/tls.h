/*
 * tls.h - mutual TLS 1.3 between the orchestrator and its nodes (OpenSSL).
 *
 * A TLS connection is a second transport of tl_conn (conn.h): callers read,
 * write and poll it exactly like a TCP one. Both ends present a certificate
 * from the run's own CA (made by `tl provision`, provision.h) and verify the
 * other's; nothing else is trusted (no system certificate store). Only TLS 1.3
 * is spoken.
 *
 * A kit directory holds cert.pem, key.pem and ca.pem. The orchestrator loads
 * DIR/orchestrator (role TL_TLS_ORCHESTRATOR, the TLS server); node K loads
 * DIR/node-K (role TL_TLS_NODE, the TLS client).
 *
 * Identity convention (what tl provision writes and this module checks):
 *   orchestrator: subject CN "tl-orchestrator", SAN URI "tl:orchestrator",
 *                 SAN DNS/IP entries for the names it is reached by,
 *                 extended key usage serverAuth only;
 *   node K:       subject CN "tl-node-K", SAN URI "tl:node:K" (K decimal,
 *                 1..TL_TLS_MAX_NODE_ID, no leading zeros),
 *                 extended key usage clientAuth only.
 * CN and URI must agree. The orchestrator accepts only node certificates; a
 * node accepts only the orchestrator certificate, and only if it is valid for
 * the host name or IP address the node connected to. After the handshake,
 * c->identity holds the peer's CN ("tl-node-2" or "tl-orchestrator").
 *
 *     tl_tls_ctx *ctx;                          // orchestrator, once
 *     tl_tls_ctx_new("kit/orchestrator", TL_TLS_ORCHESTRATOR, &ctx);
 *     tl_conn *c;                               // per accepted socket
 *     tl_conn_tls_new(fd, ctx, 1, peer, NULL, &c);
 *     tl_conn_handshake_full(c, deadline);      // TL_ETLS: log tl_errmsg(), free c
 *     ... read HELLO {node id} ...
 *     if (tl_tls_check_node_id(c, hello.node_id) < 0) reject(tl_errmsg());
 *
 *     tl_tls_ctx_new("kit/node-2", TL_TLS_NODE, &ctx);   // node
 *     tl_conn_tls_new(fd, ctx, 0, "orch.example.org:7000", "orch.example.org", &c);
 */
#ifndef TL_TLS_H
#define TL_TLS_H

#include "tl/conn.h"

#define TL_TLS_ORCH_CN "tl-orchestrator"
#define TL_TLS_ORCH_URI "tl:orchestrator"
#define TL_TLS_NODE_CN_PREFIX "tl-node-"
#define TL_TLS_NODE_URI_PREFIX "tl:node:"
#define TL_TLS_MAX_NODE_ID 1000000

typedef enum tl_tls_role {
    TL_TLS_ORCHESTRATOR = 1, /* TLS server; its peers must be nodes */
    TL_TLS_NODE = 2,         /* TLS client; its peer must be the orchestrator */
} tl_tls_role;

/* Opaque: an SSL_CTX with the kit's certificate, key and CA loaded. */
typedef struct tl_tls_ctx tl_tls_ctx;

/* Loads the kit in dir (dir/cert.pem, dir/key.pem, dir/ca.pem) for role and
 * checks that the key matches the certificate and that the certificate is the
 * role's (an orchestrator certificate for TL_TLS_ORCHESTRATOR, a node
 * certificate for TL_TLS_NODE). Its validity period is not checked here (the
 * peer does that). The caller frees *out with tl_tls_ctx_free(); the context
 * must outlive the connections made with it. TL_EIO (missing or unreadable
 * file), TL_ETLS (bad PEM, key mismatch, wrong role) or TL_EINVAL. */
int tl_tls_ctx_new(const char *dir, tl_tls_role role, tl_tls_ctx **out);

/* NULL-safe. */
void tl_tls_ctx_free(tl_tls_ctx *ctx);

/* The node id in the context's own certificate (a node kit), or TL_EINVAL for
 * an orchestrator kit. Lets `tl node --id K` check K before connecting. */
int tl_tls_ctx_node_id(const tl_tls_ctx *ctx);

/* Wraps the connected, non-blocking socket fd in a TLS connection; the conn
 * owns fd from then on, even on failure (as tl_conn_tcp_new). is_server must
 * be 1 for an orchestrator context and 0 for a node context. peer ("host:port")
 * names the other end in messages. expect_host is required for a client (the
 * host name or IP address literal it connected to; the orchestrator's
 * certificate must list it) and ignored for a server. No I/O happens here:
 * drive tl_conn_handshake() (or tl_conn_handshake_full()) next. The read and
 * writev ops also advance an unfinished handshake.
 *
 * Transport notes: read returns TL_ECLOSED on close_notify or EOF, TL_ETLS when
 * the peer sent a TLS alert (in TLS 1.3 a client learns that the server
 * refused its certificate only here, on its first read after the handshake).
 * writev may write part of the data; after a TL_EAGAIN or a short write the
 * caller must call writev again with the same remaining bytes (they may live
 * at a different address). pending counts decrypted bytes not yet read.
 * close sends close_notify if it can without blocking. */
int tl_conn_tls_new(int fd, tl_tls_ctx *ctx, int is_server, const char *peer,
                    const char *expect_host, tl_conn **out);

/* The node id of the verified peer certificate of c (a server-side TLS
 * connection after its handshake): 1..TL_TLS_MAX_NODE_ID. TL_ETLS if c is not
 * a TLS connection, its handshake has not completed, or the peer is not a
 * node. */
int tl_tls_peer_node_id(const tl_conn *c);

/* The orchestrator's identity check: 0 if c's verified peer certificate is
 * node claimed_id's; otherwise TL_EREFUSED with a message like
 * "127.0.0.1:41234: claims node id 3 but its certificate is for node 2"
 * (or TL_ETLS as tl_tls_peer_node_id). */
int tl_tls_check_node_id(const tl_conn *c, int claimed_id);

#endif
