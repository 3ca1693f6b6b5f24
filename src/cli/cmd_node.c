/* cmd_node.c - `tl node`: one data owner serving an orchestrator. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/clilog.h"
#include "cli/trainopts.h"
#include "tl/error.h"
#include "tl/gemm.h"
#include "tl/net.h"
#include "tl/node.h"

// clang-format off
enum { OPT_CONNECT = 1, OPT_ID, OPT_NDATA, OPT_NINSECURE, OPT_NTLS, OPT_NTHREADS, OPT_GIVE_UP,
       OPT_NZSTD, OPT_QUIET, OPT_NTEST, OPT_NFRACTION, OPT_NSEED,
       OPT_NPRIVACY, OPT_GROUP_KEY, OPT_NINIT, OPT_NSAVE,
       OPT_NSTATE };
// clang-format on

#define DEFAULT_GIVE_UP_S 3600

static const struct option longopts[] = {
    {"connect", required_argument, 0, OPT_CONNECT},
    {"id", required_argument, 0, OPT_ID},
    {"data", required_argument, 0, OPT_NDATA},
    {"test-data", required_argument, 0, OPT_NTEST},
    {"test-fraction", required_argument, 0, OPT_NFRACTION},
    {"seed", required_argument, 0, OPT_NSEED},
    {"label", required_argument, 0, OPT_LABEL},
    {"header", required_argument, 0, OPT_HEADER},
    {"insecure", no_argument, 0, OPT_NINSECURE},
    {"tls-dir", required_argument, 0, OPT_NTLS},
    {"threads", required_argument, 0, OPT_NTHREADS},
    {"give-up", required_argument, 0, OPT_GIVE_UP},
    {"zstd", no_argument, 0, OPT_NZSTD},
    {"quiet", no_argument, 0, OPT_QUIET},
    {"privacy", required_argument, 0, OPT_NPRIVACY},
    {"group-key", required_argument, 0, OPT_GROUP_KEY},
    {"init", required_argument, 0, OPT_NINIT},
    {"save", required_argument, 0, OPT_NSAVE},
    {"state", required_argument, 0, OPT_NSTATE},
    {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0},
};

static void usage(void) {
    // clang-format off
    printf("usage: tl node --connect HOST:PORT --id K --data DIR (--tls-dir DIR | --insecure)\n\n"
           "Serves this machine's private data to a Traversal Learning orchestrator. The\n"
           "node connects out (it opens no port), retrying with backoff until the\n"
           "orchestrator is up; it learns the model and everything else about the run\n"
           "from the orchestrator, answers forward and backward passes over its own\n"
           "rows, and exits 0 when the orchestrator says the run is over. If the\n"
           "connection drops it reconnects and the orchestrator replays the batch.\n"
           "The raw data files are never sent. In sealed mode (the default) the node side\n"
           "of the model stays with the nodes and only masked gradients leave them, so\n"
           "the orchestrator cannot rebuild the inputs; --privacy open is the reference\n"
           "protocol, from which it can (docs/security.md).\n\n"
           "  --connect HOST:PORT   the orchestrator (unix:PATH for one on this machine:\n"
           "                        then parameters and gradients are shared in memory\n"
           "                        unless the orchestrator runs with --no-shm)\n"
           "  --id K                this node's id, 1..N (must match its certificate)\n"
           "  --data PATH           MNIST-layout directory holding train-images-idx3-ubyte\n"
           "                        and train-labels-idx1-ubyte (raw or .gz), a NumPy\n"
           "                        directory (x.npy, y.npy) or a CSV file (--label,\n"
           "                        --header as for tl train)\n"
           "  --test-data PATH      held-out rows (PATH's t10k split) that the node\n"
           "                        evaluates when the orchestrator asks: only sums\n"
           "                        (counts, a confusion matrix, score histograms) leave\n"
           "                        the node, no row, score or label. Default: --data's\n"
           "                        own t10k split when it has one (what 'tl partition\n"
           "                        --test-fraction' writes; said once in the log);\n"
           "                        none: no held-out rows (./none for a file so named)\n"
           "  --test-fraction F     hold out this fraction of --data instead (per class,\n"
           "                        seeded with --seed [" TL_STR(TL_DEFAULT_SEED) "])\n"
           CLI_CSV_HELP);
    printf("  --tls-dir DIR         this node's own directory of the kit from\n"
           "                        'tl provision --out KIT': KIT/node-K, holding\n"
           "                        cert.pem, key.pem and ca.pem (not KIT itself)\n"
           "  --insecure            plaintext TCP, no authentication\n"
           "  --threads N           threads for matrix products [" TL_STR(TL_DEFAULT_THREADS) "]\n"
           "  --give-up SEC         exit after SEC seconds without reaching the\n"
           "                        orchestrator or being let in (a refusal because\n"
           "                        this id is still connected is retried) (0: never)\n"
           "                        [" TL_STR(DEFAULT_GIVE_UP_S) "]\n"
           "  --zstd                offer zstd compression of frames\n"
           "  --privacy MODE        sealed or open; this node never joins a run of the\n"
           "                        other mode. open reveals to the orchestrator enough\n"
           "                        to rebuild this node's inputs, and its labels [sealed]\n"
           "  --group-key FILE      sealed: the node group's key (default: group.key in\n"
           "                        --tls-dir, written by 'tl provision'; for --insecure\n"
           "                        runs make one with 'tl provision --group-key-only FILE'\n"
           "                        and copy it to every node)\n"
           "  --init FILE           sealed: the node side starts from FILE's parameters\n"
           "                        (as tl train --init; the same file on every node);\n"
           "                        default: derived from the group key\n"
           "  --save FILE           sealed: write the whole trained model (safetensors)\n"
           "                        at the end\n"
           "  --state PATH          sealed: when the orchestrator checkpoints, keep the\n"
           "                        node side of that step in PATH.0 / PATH.1 (the last\n"
           "                        two, mode 0600), so that a run resumed from the\n"
           "                        checkpoint rolls this node back to it; a node without\n"
           "                        it gets a live node's, sealed [tl-node-K.state]\n"
           "  --quiet               no progress lines on stderr (errors still)\n"
           "  -h, --help            this text\n");
    // clang-format on
}

int cmd_node(int argc, char **argv) {
    const char *cmd = "node", *connect = NULL, *data = NULL, *tls_dir = NULL, *test_data = NULL;
    tl_dataset_opts dopts = {0};
    double fraction = 0;
    long seed = TL_DEFAULT_SEED;
    long id = 0, threads = TL_DEFAULT_THREADS, give_up = DEFAULT_GIVE_UP_S;
    int insecure = 0, zstd = 0, quiet = 0, privacy = 1, c;
    const char *key_path = NULL, *init_path = NULL, *save_path = NULL, *state_path = NULL;
    optind = 1;
    opterr = 0; /* our own one-line messages */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONNECT: connect = optarg; break;
        case OPT_ID:
            if (cli_parse_long(cmd, "id", optarg, 1, 1000000, &id)) return 2;
            break;
        case OPT_NDATA: data = optarg; break;
        case OPT_NTEST: test_data = optarg; break;
        case OPT_NFRACTION:
            if (cli_parse_double(cmd, "test-fraction", optarg, 0, 0.99, &fraction)) return 2;
            break;
        case OPT_NSEED:
            if (cli_parse_long(cmd, "seed", optarg, 0, 4294967295L, &seed)) return 2;
            break;
        case OPT_LABEL:
        case OPT_HEADER:
            if (cli_dataopts_parse(&dopts, c, optarg, cmd) == 2) return 2;
            break;
        case OPT_NINSECURE: insecure = 1; break;
        case OPT_NTLS: tls_dir = optarg; break;
        case OPT_NTHREADS:
            if (cli_parse_long(cmd, "threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case OPT_GIVE_UP:
            if (cli_parse_long(cmd, "give-up", optarg, 0, 86400 * 365, &give_up)) return 2;
            break;
        case OPT_NZSTD: zstd = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_NPRIVACY:
            if (!strcmp(optarg, "sealed")) privacy = 1;
            else if (!strcmp(optarg, "open")) privacy = 0;
            else return cli_usage_error(cmd, "--privacy: '%s' (want sealed or open)", optarg);
            break;
        case OPT_GROUP_KEY: key_path = optarg; break;
        case OPT_NINIT: init_path = optarg; break;
        case OPT_NSAVE: save_path = optarg; break;
        case OPT_NSTATE: state_path = optarg; break;
        case 'h': usage(); return 0;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!connect) return cli_usage_error(cmd, "--connect HOST:PORT is required");
    if (!id) return cli_usage_error(cmd, "--id K is required");
    if (!data) return cli_usage_error(cmd, "--data PATH is required");
    const int no_test = test_data && !strcmp(test_data, "none");
    if (no_test) test_data = NULL;
    if (test_data && fraction > 0)
        return cli_usage_error(cmd, "--test-fraction and --test-data exclude each other");
    if (!tls_dir == !insecure)
        return cli_usage_error(cmd, insecure ? "--tls-dir and --insecure exclude each other"
                                             : "TLS is the default: give --tls-dir DIR (see "
                                               "'tl provision') or --insecure");
    char host[512];
    int port;
    if (tl_net_parse_addr(connect, host, sizeof host, &port) < 0 ||
        (port == 0 && !tl_addr_is_unix(host)))
        return cli_usage_error(cmd, "--connect: '%s' (want HOST:PORT or unix:PATH)", connect);

    if (!privacy && (key_path || init_path || save_path || state_path))
        return cli_usage_error(cmd, "--group-key, --init, --save and --state are for sealed mode "
                                    "(in open mode the orchestrator holds the model)");
    char default_state[64];
    if (!state_path) {
        snprintf(default_state, sizeof default_state, "tl-node-%ld.state", id);
        state_path = default_state;
    }
    char kit_key[4200];
    if (privacy && !key_path && tls_dir) {
        snprintf(kit_key, sizeof kit_key, "%s/group.key", tls_dir);
        key_path = kit_key;
    }
    if (privacy && !key_path) {
        fprintf(stderr, "tl node: sealed mode (the default) needs the node group's key: run with "
                        "--tls-dir of a kit from 'tl provision' (it holds group.key), or give "
                        "--group-key FILE (made once with 'tl provision --group-key-only FILE' "
                        "and copied to every node), or run --privacy open\n");
        return 2;
    }
    tl_group_key gk;
    if (privacy && tl_group_key_load(key_path, &gk) < 0) {
        fprintf(stderr, "tl node: %s%s\n", tl_errmsg(),
                key_path == kit_key ? " (kits from an older 'tl provision' have no group key: "
                                      "provision again, or give --group-key FILE)"
                                    : "");
        return 1;
    }
    tl_gemm_set_threads((int)threads);
    tl_tls_ctx *tls = NULL;
    tl_dataset ds, test;
    memset(&ds, 0, sizeof ds);
    memset(&test, 0, sizeof test);
    int rc = 1;
    if (tls_dir) {
        if (tl_tls_ctx_new(tls_dir, TL_TLS_NODE, &tls) < 0) goto fail;
        int cert_id = tl_tls_ctx_node_id(tls);
        if (cert_id != id) {
            fprintf(stderr, "tl node: --id %ld but the certificate in %s is node %d's\n", id,
                    tls_dir, cert_id);
            goto out;
        }
    } else {
        fprintf(stderr, "tl node: warning: --insecure: traffic is plaintext and the "
                        "orchestrator is not authenticated\n");
    }
    if (tl_dataset_open(data, "train", &dopts, &ds) < 0) goto fail;
    /* by default the held-out rows that come with --data (tl partition
     * --test-fraction writes them as its t10k split) */
    const int own_test = !test_data && !no_test && !(fraction > 0) &&
                         tl_dataset_has_split(data, "t10k");
    if (own_test) test_data = data;
    if (fraction > 0) {
        tl_dataset all = ds;
        memset(&ds, 0, sizeof ds);
        int s = tl_dataset_split(&all, fraction, (uint32_t)seed, &ds, &test);
        tl_dataset_free(&all);
        if (s < 0) goto fail;
    } else if (test_data && tl_dataset_open(test_data, "t10k", &dopts, &test) < 0) {
        goto fail;
    }
    char tag[32];
    snprintf(tag, sizeof tag, "node %ld", id);
    cli_log lg;
    snprintf(lg.tag, sizeof lg.tag, "%s", tag);
    lg.quiet = quiet;
    if (own_test) {
        char note[4300];
        snprintf(note, sizeof note,
                 "evaluating on %zu held-out rows, the t10k split of %s (--test-data none "
                 "turns this off)",
                 test.n, data);
        cli_log_line(&lg, note);
    }
    tl_node_cfg nc = {.host = host,
                      .port = port,
                      .id = (int)id,
                      .data = &ds,
                      .test = test.n ? &test : NULL,
                      .tls = tls,
                      .give_up_s = (int)give_up,
                      .zstd = zstd,
                      .log = cli_log_line,
                      .log_ud = &lg,
                      .privacy = privacy,
                      .group_key = privacy ? &gk : NULL,
                      .init_path = init_path,
                      .save_path = save_path,
                      .state_path = privacy ? state_path : NULL};
    if (tl_node_run(&nc) < 0) goto fail;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "tl node %ld: %s\n", id, tl_errmsg());
out:
    if (privacy) tl_group_key_wipe(&gk);
    tl_dataset_free(&ds);
    tl_dataset_free(&test);
    tl_tls_ctx_free(tls);
    return rc;
}
