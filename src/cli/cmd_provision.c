/* cmd_provision.c - `tl provision`: a run's CA and its TLS kits (provision.h). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/cli.h"
#include "cli/outputs.h"
#include "tl/error.h"
#include "tl/groupkey.h"
#include "tl/provision.h"

#define MAX_DAYS 36500

static void usage(void) {
    printf("usage: tl provision --nodes N --out DIR [--host NAME]... [--days N] [--force]\n"
           "       tl provision --add-node K --out DIR [--days N] [--force]\n"
           "       tl provision --group-key-only FILE [--force]\n"
           "\n"
           "Creates a certificate authority (CA) for one run and a TLS kit for each party,\n"
           "with ECDSA P-256 keys written mode 0600:\n"
           "  DIR/ca/ca.pem, DIR/ca/ca-key.pem   the CA; ca-key.pem signs certificates:\n"
           "                                     keep it offline (needed only for --add-node)\n"
           "  DIR/orchestrator/                  for 'tl orchestrator --tls-dir DIR/orchestrator'\n"
           "  DIR/node-K/ for K = 1..N           for 'tl node --id K --tls-dir DIR/node-K'\n"
           "Each kit holds cert.pem, key.pem and ca.pem. Node kits also hold group.key,\n"
           "the node group's random key for sealed mode (mode 0600, also kept in DIR/ca);\n"
           "the orchestrator's kit holds only its identifier, group-key.id.\n"
           "Copy each node-K directory to its\n"
           "node over a secure channel. The orchestrator's certificate is valid for\n"
           "localhost, 127.0.0.1 and ::1 plus every --host; nodes must connect to one of\n"
           "those names. See docs/security.md.\n"
           "\n"
           "options:\n"
           "  --nodes N       create node kits node-1 .. node-N (1..%d)\n"
           "  --out DIR       directory to create; an existing one must be empty\n"
           "  --host NAME     DNS name or IP address by which nodes reach the orchestrator\n"
           "                  (repeatable)\n"
           "  --days N        certificates valid for N days (default 3650, at most %d),\n"
           "                  starting one hour in the past to allow for clock skew\n"
           "  --add-node K    issue one more kit DIR/node-K from the existing CA in DIR/ca\n"
           "                  (instead of --nodes; --host is not used)\n"
           "  --group-key-only FILE\n"
           "                  write only a new group key to FILE (mode 0600), for\n"
           "                  --insecure sealed runs: copy it to every node and give\n"
           "                  it to 'tl node --group-key FILE'\n"
           "  --force         replace the kit files in an existing DIR (or DIR/node-K);\n"
           "                  other files there are left alone\n"
           "  -h, --help      show this help\n",
           TL_PROVISION_MAX_NODES, MAX_DAYS);
}

/* Parses a decimal integer in lo..hi; -1 if s is not one. */
static long parse_int(const char *s, long lo, long hi) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    return v;
}

int cmd_provision(int argc, char **argv) {
    enum { OPT_NODES = 256, OPT_OUT, OPT_HOST, OPT_DAYS, OPT_ADD, OPT_FORCE, OPT_KEY_ONLY };
    static const struct option longopts[] = {
        {"nodes", required_argument, NULL, OPT_NODES},
        {"out", required_argument, NULL, OPT_OUT},
        {"host", required_argument, NULL, OPT_HOST},
        {"days", required_argument, NULL, OPT_DAYS},
        {"add-node", required_argument, NULL, OPT_ADD},
        {"force", no_argument, NULL, OPT_FORCE},
        {"group-key-only", required_argument, NULL, OPT_KEY_ONLY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL, *key_only = NULL;
    const char **hosts = NULL;
    long nodes = 0, add = 0, days = 3650;
    int nhosts = 0, force = 0, opt, rc = 0;
    tl_provision_opts o;

    if (!(hosts = calloc((size_t)argc + 1, sizeof *hosts))) {
        fprintf(stderr, "tl provision: out of memory\n");
        return 1;
    }
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_NODES:
            if ((nodes = parse_int(optarg, 1, TL_PROVISION_MAX_NODES)) < 0) {
                rc = cli_usage_error("provision", "--nodes needs a count in 1..%d, not '%s'",
                                     TL_PROVISION_MAX_NODES, optarg);
                goto cleanup;
            }
            break;
        case OPT_OUT: out = optarg; break;
        case OPT_HOST:
            if (tl_provision_check_host(optarg) < 0) {
                rc = cli_usage_error("provision", "--host: %s", tl_errmsg());
                goto cleanup;
            }
            hosts[nhosts++] = optarg;
            break;
        case OPT_DAYS:
            if ((days = parse_int(optarg, 1, MAX_DAYS)) < 0) {
                rc = cli_usage_error("provision", "--days needs a number in 1..%d, not '%s'",
                                     MAX_DAYS, optarg);
                goto cleanup;
            }
            break;
        case OPT_ADD:
            if ((add = parse_int(optarg, 1, 1000000)) < 0) {
                rc = cli_usage_error("provision",
                                     "--add-node needs a node id in 1..1000000, not '%s'", optarg);
                goto cleanup;
            }
            break;
        case OPT_FORCE: force = 1; break;
        case OPT_KEY_ONLY: key_only = optarg; break;
        case 'h': usage(); goto cleanup;
        case ':':
            rc = cli_usage_error("provision", "option '%s' needs a value", argv[optind - 1]);
            goto cleanup;
        default:
            rc = cli_usage_error("provision", "unknown option '%s'", argv[optind - 1]);
            goto cleanup;
        }
    }
    if (optind < argc) {
        rc = cli_usage_error("provision", "unexpected argument '%s'", argv[optind]);
        goto cleanup;
    }
    if (key_only) {
        if (out || nodes || add || nhosts) {
            rc = cli_usage_error("provision", "--group-key-only takes no other option but --force");
            goto cleanup;
        }
        tl_group_key gk;
        if (tl_group_key_generate(&gk) < 0 || tl_group_key_save(key_only, &gk, force) < 0) {
            fprintf(stderr, "tl provision: %s\n", tl_errmsg());
            rc = 1;
        } else {
            char hex[2 * TL_GROUP_KEY_ID_LEN + 1];
            tl_group_key_id_hex(gk.id, hex);
            printf("created %s (mode 0600): a node group key, id %s; copy it to every node "
                   "(tl node --group-key %s)\n",
                   key_only, hex, key_only);
        }
        tl_group_key_wipe(&gk);
        goto cleanup;
    }
    if (!out) {
        rc = cli_usage_error("provision", "--out DIR is required");
        goto cleanup;
    }
    if (!nodes == !add) {
        rc = cli_usage_error("provision", "give exactly one of --nodes N and --add-node K");
        goto cleanup;
    }
    if (add && nhosts) {
        rc = cli_usage_error("provision", "--host applies to the orchestrator's certificate, "
                                          "not to --add-node");
        goto cleanup;
    }

    if (cli_check_out_dir("provision", "out", out)) {
        rc = 2;
        goto cleanup;
    }
    tl_provision_opts_init(&o);
    o.nodes = (int)nodes;
    o.hosts = hosts;
    o.nhosts = nhosts;
    o.not_after_s = days * 86400;
    o.force = force;
    if ((add ? tl_provision_add_node(out, (int)add, &o) : tl_provision(out, &o)) < 0) {
        fprintf(stderr, "tl provision: %s\n", tl_errmsg());
        rc = 1;
        goto cleanup;
    }

    if (add) {
        printf("created %s/node-%ld/ (cert.pem, key.pem, ca.pem) for node %ld, signed by %s/ca\n",
               out, add, add, out);
    } else {
        printf("created %s/ca/ (ca.pem, ca-key.pem): the run's CA; keep ca-key.pem offline\n", out);
        printf("created %s/orchestrator/ (cert.pem, key.pem, ca.pem), valid for localhost "
               "127.0.0.1 ::1",
               out);
        for (int i = 0; i < nhosts; i++) {
            int dup = !strcasecmp(hosts[i], "localhost") || !strcmp(hosts[i], "127.0.0.1") ||
                      !strcmp(hosts[i], "::1");
            for (int j = 0; j < i && !dup; j++) dup = !strcasecmp(hosts[i], hosts[j]);
            if (!dup) printf(" %s", hosts[i]);
        }
        printf("\n");
        for (long k = 1; k <= nodes; k++)
            printf("created %s/node-%ld/ (cert.pem, key.pem, ca.pem) for node %ld\n", out, k, k);
    }
    printf("certificates valid for %ld day%s; private keys are mode 0600\n", days,
           days == 1 ? "" : "s");
cleanup:
    free(hosts);
    return rc;
}
