/*
 * provision.h - a run's certificate authority and TLS kits, made with
 * OpenSSL's C API (what `tl provision` calls).
 *
 * tl_provision(dir, opts) writes
 *   dir/ca/ca.pem, dir/ca/ca-key.pem          the run's CA (keep the key offline)
 *   dir/orchestrator/{cert.pem,key.pem,ca.pem}
 *   dir/node-1/{cert.pem,key.pem,ca.pem} ... dir/node-N/
 * Keys are ECDSA P-256, unencrypted PKCS#8 PEM, created with mode 0600 (never
 * wider, whatever the umask); directories are 0700; certificates 0644.
 * Certificates are X.509 v3 signed with ECDSA-SHA256, with random 128-bit
 * serial numbers and the identities of tls.h: the CA (CN "tl run CA <hex>",
 * basicConstraints CA:TRUE critical, keyUsage keyCertSign+cRLSign critical),
 * the orchestrator (CN "tl-orchestrator", SAN URI "tl:orchestrator", SAN DNS
 * localhost, IP 127.0.0.1 and ::1 plus opts->hosts, EKU serverAuth), node K
 * (CN "tl-node-K", SAN URI "tl:node:K", EKU clientAuth). Leaf certificates are
 * CA:FALSE with keyUsage digitalSignature.
 *
 *     tl_provision_opts o;
 *     tl_provision_opts_init(&o);
 *     o.nodes = 3;
 *     const char *hosts[] = {"orch.example.org", "10.0.0.5"};
 *     o.hosts = hosts;
 *     o.nhosts = 2;
 *     if (tl_provision("kit", &o) < 0) fprintf(stderr, "%s\n", tl_errmsg());
 */
#ifndef TL_PROVISION_H
#define TL_PROVISION_H

#define TL_PROVISION_MAX_NODES 10000

typedef struct tl_provision_opts {
    int nodes; /* node kits node-1..node-N (tl_provision), 1..TL_PROVISION_MAX_NODES */
    const char *const *hosts; /* extra DNS names or IP literals for the orchestrator */
    int nhosts;
    long not_before_s; /* validity start, seconds from now (default -3600: clock skew) */
    long not_after_s;  /* validity end, seconds from now (default 3650 days) */
    int force;         /* overwrite the files we write in an existing directory */
} tl_provision_opts;

/* Fills the defaults: no nodes, no extra hosts, valid from an hour ago for
 * 3650 days, no force. */
void tl_provision_opts_init(tl_provision_opts *o);

/* 0 if host can name the orchestrator (a DNS name of letters, digits, hyphens
 * and dots, or an IPv4/IPv6 literal), else TL_EINVAL with a message. */
int tl_provision_check_host(const char *host);

/* Creates dir (its parent must exist) with the CA, the orchestrator's kit and
 * opts->nodes node kits, all valid for the same period. dir may exist only if
 * it is empty, unless opts->force: then the files named above are replaced
 * and anything else in dir is left alone. TL_EINVAL (bad options, a non-empty
 * dir without force, an invalid host name), TL_EIO, TL_ETLS (OpenSSL). A
 * failure can leave a partial dir behind. */
int tl_provision(const char *dir, const tl_provision_opts *o);

/* Issues one more node kit, dir/node-K for K = node_id, signed by the CA in
 * dir/ca (as tl_provision wrote it), valid for opts' period (opts->nodes and
 * hosts are ignored). Refuses an existing dir/node-K unless opts->force. */
int tl_provision_add_node(const char *dir, int node_id, const tl_provision_opts *o);

#endif
