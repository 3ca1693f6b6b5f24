/* orchopts.c - the distributed-run options and the option loop of the training commands. */
#include "cli/orchopts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tl/batch.h"
#include "tl/error.h"
#include "tl/model.h"

const struct option cli_orch_longopts[] = {
    {"nodes", required_argument, 0, OPT_NODES},
    {"cut", required_argument, 0, OPT_CUT},
    {"mode", required_argument, 0, OPT_MODE},
    {"insecure", no_argument, 0, OPT_INSECURE},
    {"tls-dir", required_argument, 0, OPT_TLS_DIR},
    {"heartbeat", required_argument, 0, OPT_HEARTBEAT},
    {"task-timeout", required_argument, 0, OPT_TASK_TIMEOUT},
    {"reconnect-timeout", required_argument, 0, OPT_RECONNECT_TIMEOUT},
    {"wait-timeout", required_argument, 0, OPT_WAIT_TIMEOUT},
    {"zstd", no_argument, 0, OPT_ZSTD},
    {"no-shm", no_argument, 0, OPT_NO_SHM},
    {"max-replays", required_argument, 0, OPT_MAX_REPLAYS},
    {"privacy", required_argument, 0, OPT_PRIVACY},
    {"mac-every", required_argument, 0, OPT_MAC_EVERY},
    {0, 0, 0, 0},
};

// clang-format off
const char cli_orch_help[] =
    "distributed run:\n"
    "  --nodes N             number of nodes, ids 1..N (required)\n"
    "  --cut C               nodes run the model up to the C-th linear layer and the\n"
    "                        activation after it; 1 <= C < linear layers\n"
    "                        [" TL_STR(TL_DEFAULT_CUT) "]\n"
    "  --mode MODE           traverse: nodes get the whole model and return cut\n"
    "                        activations and output gradients (reveal labels);\n"
    "                        split: nodes get their side only and return cut\n"
    "                        activations and labels [traverse]\n"
    "  --heartbeat MS        heartbeat interval; a peer silent for 4 intervals is\n"
    "                        lost (0: no heartbeats) [" TL_STR(CLI_DEFAULT_HEARTBEAT_MS) "]\n"
    "  --task-timeout SEC    longest wait for one node's reply ["
    TL_STR(CLI_DEFAULT_TASK_TIMEOUT_S) "]\n"
    "  --reconnect-timeout SEC\n"
    "                        wait this long for a lost node, then stop ["
    TL_STR(CLI_DEFAULT_RECONNECT_TIMEOUT_S) "]\n"
    "  --max-replays N       stop (with a recovery checkpoint) when one batch has\n"
    "                        failed N+1 times, naming the node lost each time ["
    TL_STR(CLI_DEFAULT_MAX_REPLAYS) "]\n"
    "  --privacy MODE        sealed: the node side of the model stays at the nodes\n"
    "                        (initialized from their group key or their --init),\n"
    "                        gradients are summed masked, and the orchestrator\n"
    "                        cannot rebuild the nodes' inputs (docs/security.md);\n"
    "                        open: the reference protocol, which reveals to the\n"
    "                        orchestrator enough to rebuild every node's training\n"
    "                        inputs exactly, and every label [sealed]\n"
    "  --mac-every N         sealed: the nodes prove every N steps (and at the end)\n"
    "                        that their node sides are identical ["
    TL_STR(CLI_DEFAULT_MAC_EVERY) "]\n"
    "  --wait-timeout SEC    wait this long for all nodes to join (0: forever) ["
    TL_STR(CLI_DEFAULT_WAIT_TIMEOUT_S) "]\n"
    "  --zstd                compress frames with zstd when a node offers it\n"
    "  --no-shm              send the parameters over the socket to every node; by\n"
    "                        default nodes on a unix:PATH socket map them from\n"
    "                        shared memory the orchestrator writes once per step\n";
// clang-format on

const char cli_orch_security_help[] =
    "security (TLS 1.3 with mutual certificates is the default):\n"
    "  --tls-dir DIR         the orchestrator's own directory of the kit from\n"
    "                        'tl provision --out KIT': KIT/orchestrator, holding\n"
    "                        cert.pem, key.pem and ca.pem (not KIT itself)\n"
    "  --insecure            plaintext, no authentication (a warning is printed)\n";

void cli_orchopts_init(cli_orchopts *o) {
    memset(o, 0, sizeof *o);
    o->heartbeat_ms = CLI_DEFAULT_HEARTBEAT_MS;
    o->task_timeout_s = CLI_DEFAULT_TASK_TIMEOUT_S;
    o->reconnect_timeout_s = CLI_DEFAULT_RECONNECT_TIMEOUT_S;
    o->max_replays = CLI_DEFAULT_MAX_REPLAYS;
    o->wait_timeout_s = CLI_DEFAULT_WAIT_TIMEOUT_S;
    o->privacy = 1; /* TL_PRIVACY_SEALED */
    o->mac_every = CLI_DEFAULT_MAC_EVERY;
}

int cli_orchopts_finish(const cli_orchopts *o, const cli_trainopts *t, const char *cmd) {
    (void)o;
    tl_model m;
    int n;
    /* the spec parsed in cli_trainopts_finish; the width does not matter here */
    if (tl_model_parse(t->cfg.model, 1, &m) < 0) return cli_usage_error(cmd, "%s", tl_errmsg());
    if (tl_model_cut_modules(&m, t->cfg.cut, &n) < 0)
        return cli_usage_error(cmd, "--cut: %s", tl_errmsg());
    return 0;
}

int cli_orchopts_parse(cli_orchopts *o, tl_runcfg *cfg, int key, const char *arg, const char *cmd) {
    long v;
    switch (key) {
    case OPT_NODES:
        if (cli_parse_long(cmd, "nodes", arg, 1, TL_MAX_NODES, &v)) return 2;
        o->nodes = (int)v;
        return 1;
    case OPT_CUT:
        if (cli_parse_long(cmd, "cut", arg, 1, TL_MAX_MODULES, &v)) return 2;
        cfg->cut = (int)v;
        return 1;
    case OPT_MODE:
        if (!strcmp(arg, "traverse")) cfg->mode = TL_MODE_TRAVERSE;
        else if (!strcmp(arg, "split")) cfg->mode = TL_MODE_SPLIT;
        else return cli_usage_error(cmd, "--mode: '%s' (want traverse or split)", arg);
        return 1;
    case OPT_INSECURE: o->insecure = 1; return 1;
    case OPT_TLS_DIR: o->tls_dir = arg; return 1;
    case OPT_HEARTBEAT:
        if (cli_parse_long(cmd, "heartbeat", arg, 0, 3600000, &v)) return 2;
        o->heartbeat_ms = (int)v;
        return 1;
    case OPT_TASK_TIMEOUT:
        if (cli_parse_long(cmd, "task-timeout", arg, 1, 86400, &v)) return 2;
        o->task_timeout_s = (int)v;
        return 1;
    case OPT_RECONNECT_TIMEOUT:
        if (cli_parse_long(cmd, "reconnect-timeout", arg, 0, 86400 * 7, &v)) return 2;
        o->reconnect_timeout_s = (int)v;
        return 1;
    case OPT_WAIT_TIMEOUT:
        if (cli_parse_long(cmd, "wait-timeout", arg, 0, 86400 * 7, &v)) return 2;
        o->wait_timeout_s = (int)v;
        return 1;
    case OPT_MAX_REPLAYS:
        if (cli_parse_long(cmd, "max-replays", arg, 0, 1000000, &v)) return 2;
        o->max_replays = (int)v;
        return 1;
    case OPT_PRIVACY:
        if (!strcmp(arg, "sealed")) o->privacy = 1;
        else if (!strcmp(arg, "open")) o->privacy = 0;
        else return cli_usage_error(cmd, "--privacy: '%s' (want sealed or open)", arg);
        return 1;
    case OPT_MAC_EVERY:
        if (cli_parse_long(cmd, "mac-every", arg, 0, 1000000000, &v)) return 2;
        o->mac_every = (int)v;
        return 1;
    case OPT_ZSTD: o->zstd = 1; return 1;
    case OPT_NO_SHM: o->no_shm = 1; return 1;
    }
    return 0;
}

int cli_parse_options(int argc, char **argv, const char *cmd, cli_trainopts *t, cli_orchopts *oo,
                      const struct option *own, cli_own_fn own_fn, void *ud, void (*usage)(void)) {
    static const struct option help[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    static const struct option none[] = {{0, 0, 0, 0}};
    struct option *a = cli_options_join(cli_train_longopts, oo ? cli_orch_longopts : none);
    struct option *b = a ? cli_options_join(a, own ? own : none) : NULL;
    struct option *all = b ? cli_options_join(b, help) : NULL;
    free(a);
    free(b);
    if (!all) {
        fprintf(stderr, "tl %s: out of memory\n", cmd);
        return 1;
    }
    int c, status = -1;
    if (oo) t->cfg.cut = TL_DEFAULT_CUT; /* the default the help text shows */
    optind = 1;
    opterr = 0; /* our own one-line messages */
    while (status < 0 && (c = getopt_long(argc, argv, ":h", all, NULL)) != -1) {
        int r = cli_trainopts_parse(t, c, optarg, cmd);
        if (!r && oo) r = cli_orchopts_parse(oo, &t->cfg, c, optarg, cmd);
        if (r == 1) continue;
        if (r == 2) status = 2;
        else if (c == 'h') {
            usage();
            status = 0;
        } else if (c == '?') {
            status = cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        } else if (c == ':') {
            status = cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        } else if (!own_fn) {
            status = cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        } else if (own_fn(ud, c, optarg)) {
            status = 2;
        }
    }
    free(all);
    if (status < 0 && optind < argc)
        status = cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return status;
}
