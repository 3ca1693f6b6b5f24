/* orchopts.c - distributed-run options and the orchestrator command body. */
#include "cli/orchopts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/clilog.h"
#include "cli/outputs.h"
#include "cli/progress.h"
#include "cli/runsetup.h"
#include "tl/checkpoint.h"
#include "tl/error.h"
#include "tl/orchestrator.h"
#include "tl/tls.h"

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
    {0, 0, 0, 0},
};

const char cli_orch_help[] =
    "distributed run:\n"
    "  --nodes N             number of nodes, ids 1..N (required)\n"
    "  --cut C               nodes run the model up to the C-th linear layer and the\n"
    "                        activation after it; 1 <= C < linear layers [2]\n"
    "  --mode MODE           traverse: nodes get the whole model and return cut\n"
    "                        activations and output gradients (reveal labels);\n"
    "                        split: nodes get their side only and return cut\n"
    "                        activations and labels [traverse]\n"
    "  --heartbeat MS        heartbeat interval; a peer silent for 4 intervals is\n"
    "                        lost (0: no heartbeats) [2000]\n"
    "  --task-timeout SEC    longest wait for one node's reply [120]\n"
    "  --reconnect-timeout SEC\n"
    "                        wait this long for a lost node, then stop [120]\n"
    "  --max-replays N       stop (with a recovery checkpoint) when one batch has\n"
    "                        failed N+1 times, naming the node lost each time [5]\n"
    "  --wait-timeout SEC    wait this long for all nodes to join (0: forever) [0]\n"
    "  --zstd                compress frames with zstd when a node offers it\n"
    "  --no-shm              send the parameters over the socket to every node; by\n"
    "                        default nodes on a unix:PATH socket map them from\n"
    "                        shared memory the orchestrator writes once per step\n"
    "security (TLS 1.3 with mutual certificates is the default):\n"
    "  --tls-dir DIR         the orchestrator's kit from 'tl provision'\n"
    "                        (DIR/orchestrator: cert.pem, key.pem, ca.pem)\n"
    "  --insecure            plaintext TCP, no authentication (a warning is printed)\n";

void cli_orchopts_init(cli_orchopts *o) {
    memset(o, 0, sizeof *o);
    o->heartbeat_ms = 2000;
    o->task_timeout_s = 120;
    o->reconnect_timeout_s = 120;
    o->max_replays = 5;
}

int cli_orchopts_parse(cli_orchopts *o, tl_runcfg *cfg, int key, const char *arg,
                       const char *cmd) {
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

int cli_orchestrate(const cli_trainopts *t, const cli_orchopts *oo, const char *host, int port,
                    const char *cmd, cli_on_listen on_listen, void *ud) {
    const tl_runcfg *cfg = &t->cfg;
    cli_log lg = {"orchestrator", 0};
    cli_run r;
    tl_tls_ctx *tls = NULL;
    tl_orch *o = NULL;
    tl_trainer tr;
    cli_progress prog;
    int tr_ok = 0, prog_ok = 0, rc = 1;
    uint64_t *counts = NULL;
    cli_stop_on_signals(); /* before any thread starts */
    if (cli_run_setup_dim(&r, cfg, cmd, 0) != 0) return 1;
    /* a wrong --resume fails now, not once every node has joined */
    if (cfg->resume && tl_checkpoint_check(cfg->checkpoint_path, cfg, &r.model) < 0) goto fail;
    if (oo->tls_dir && tl_tls_ctx_new(oo->tls_dir, TL_TLS_ORCHESTRATOR, &tls) < 0) goto fail;
    if (!tls)
        fprintf(stderr, "tl %s: warning: --insecure: traffic is plaintext and any peer that "
                        "can reach the port may join as a node\n", cmd);
    tl_orch_cfg oc;
    tl_orch_cfg_defaults(&oc);
    oc.host = host;
    oc.port = port;
    oc.n_nodes = oo->nodes;
    oc.run = cfg;
    oc.model = &r.model;
    oc.tls = tls;
    oc.heartbeat_ms = oo->heartbeat_ms;
    oc.task_timeout_ms = oo->task_timeout_s * 1000;
    oc.reconnect_timeout_s = oo->reconnect_timeout_s;
    oc.max_replays = oo->max_replays;
    oc.zstd = oo->zstd;
    oc.no_shm = oo->no_shm;
    oc.log = cli_log_line;
    oc.log_ud = &lg;
    if (tl_orch_new(&oc, &o) < 0) goto fail;
    if (on_listen && (rc = on_listen(ud, tl_orch_port(o))) != 0) goto cleanup;
    tl_model_warmup(&r.model, cfg->batch_size); /* while the nodes start */
    rc = 1;
    counts = calloc(2 * (size_t)oo->nodes, sizeof *counts);
    if (!counts || tl_orch_wait_nodes(o, oo->wait_timeout_s, counts, counts + oo->nodes) < 0)
        goto fail;
    if (tl_trainer_init(&tr, cfg, &r.model, r.params, counts, oo->nodes,
                        r.have_test ? &r.test : NULL) < 0)
        goto fail;
    tr_ok = 1;
    /* what the data is, for checkpoints: each node's count and fingerprint */
    char sig[512] = "nodes";
    size_t len = strlen(sig);
    for (int i = 0; i < oo->nodes && len < sizeof sig - 40; i++)
        len += snprintf(sig + len, sizeof sig - len, "%s%llu:%016llx", i ? "," : " ",
                        (unsigned long long)counts[i], (unsigned long long)counts[oo->nodes + i]);
    tl_trainer_set_data_sig(&tr, sig);
    tr.recovery_path = "tl-recovery.safetensors";
    /* SIGINT, SIGTERM, SIGHUP stop between batches with the state saved */
    tr.stop = &cli_stop_signal;
    if (cfg->resume) {
        if (tl_trainer_resume(&tr) < 0) goto fail;
        tl_orch_set_step(o, (uint64_t)tr.steps);
        lg.quiet = 0;
        cli_log_line(&lg, "resumed from the checkpoint");
    }
    if (cli_progress_init(&prog, cfg, cmd))
        goto cleanup;
    prog_ok = 1;
    tl_trainer_hooks hooks = cli_progress_hooks(&prog);
    if (tl_trainer_run(&tr, tl_orch_grad_fn, o, &hooks) < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", tl_errmsg());
        /* No DONE: the nodes see the connection close and keep retrying, so that
         * the orchestrator restarted with --resume finds them. */
        fprintf(stderr, "tl %s: %s\n", cmd, why);
        if (tr.saved_path)
            fprintf(stderr,
                    "tl %s: the run's state is saved in %s; to continue, start the "
                    "orchestrator again with the same options plus --checkpoint %s --resume "
                    "(nodes reconnect by themselves)\n",
                    cmd, tr.saved_path, tr.saved_path);
        if (cli_stop_signal) rc = 128 + cli_stop_signal;
        goto cleanup;
    }
    tl_orch_finish(o, "training complete");
    tl_orch_stats st;
    tl_orch_get_stats(o, &st);
    if (st.batches)
        fprintf(stderr,
                "tl %s: %llu batches, %llu replayed; sent %.1f MB, received %.1f MB "
                "(%.0f KB out and %.0f KB in per batch per node)\n",
                cmd, (unsigned long long)st.batches, (unsigned long long)st.replays,
                st.bytes_out / 1e6, st.bytes_in / 1e6, st.bytes_out / 1e3 / st.node_batches,
                st.bytes_in / 1e3 / st.node_batches);
    if (cli_run_save(&r, cfg, &prog.last, cmd) != 0) goto cleanup;
    cli_progress_summary(&prog);
    rc = prog.failed ? 1 : 0;
    goto cleanup;
fail:
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    rc = 1;
cleanup:
    if (prog_ok) cli_progress_free(&prog);
    if (tr_ok) tl_trainer_free(&tr);
    free(counts);
    tl_orch_free(o);
    tl_tls_ctx_free(tls);
    cli_run_free(&r);
    return rc;
}
