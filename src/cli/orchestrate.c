/* orchestrate.c - the body of `tl orchestrator` and of `tl run`'s orchestrator
 * process, once their options are parsed (contract in orchopts.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/clilog.h"
#include "cli/orchopts.h"
#include "cli/outputs.h"
#include "cli/progress.h"
#include "cli/runsetup.h"
#include "tl/checkpoint.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/msg.h"
#include "tl/net.h"
#include "tl/orchestrator.h"
#include "tl/params.h"
#include "tl/tls.h"

/* The module count of a cut (validated by cli_orchopts_finish). */
static int cut_modules(const tl_model *m, int cut) {
    int n = 0;
    tl_model_cut_modules(m, cut, &n);
    return n;
}

/* Sealed mode with a kit: the group key's id from DIR/group-key.id (written
 * by tl provision); without that file the first node's key is the group's. */
static int sealed_key_id(const char *dir, tl_orch_cfg *oc, const char *cmd) {
    char path[4200], hex[80];
    snprintf(path, sizeof path, "%s/group-key.id", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr,
                "tl %s: note: no %s: the first node's group key is taken as the "
                "group's\n",
                cmd, path);
        return 0;
    }
    size_t n = fread(hex, 1, sizeof hex - 1, f);
    fclose(f);
    hex[n] = 0;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return tl_error(TL_EFORMAT, "%s: not a group key id (32 hex digits)", path);
        oc->key_id[i] = (uint8_t)v;
    }
    if (n < 32 || (n > 32 && hex[32] != '\n'))
        return tl_error(TL_EFORMAT, "%s: not a group key id (32 hex digits)", path);
    oc->have_key_id = 1;
    return 0;
}

/* Sealed `tl run`: the whole model as node 1 saved it, for --save and the
 * test accuracy (tl run owns every process: the model is its user's). */
static int sealed_take_model(cli_run *r, const cli_orchopts *oo, const tl_runcfg *cfg,
                             cli_progress *prog, const char *cmd) {
    int rc = tl_params_load(oo->model_from, &r->model, r->params);
    if (rc < 0) return rc;
    if (r->have_test && prog->have_last) {
        double loss, acc;
        rc = tl_evaluate(&r->model, r->params, &r->test, cfg->mean, cfg->std, &loss, &acc);
        if (rc < 0) return rc;
        prog->last.test_accuracy = acc;
        prog->last.test_loss = loss;
        fprintf(stderr,
                "tl %s: test accuracy %.2f%% (loss %.4f) of the final model from node "
                "1\n",
                cmd, 100 * acc, loss);
    }
    return 0;
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
    if (oo->privacy && cfg->save_path && !oo->model_from) {
        fprintf(stderr,
                "tl %s: --save: in sealed mode the orchestrator does not hold the node "
                "side of the model; the nodes' 'tl node --save FILE' writes the whole "
                "model (or use --privacy open)\n",
                cmd);
        return 2;
    }
    if (cli_run_setup_dim(&r, cfg, cmd, oo->in_dim) != 0) return 1;
    r.class_names = oo->class_names;
    r.n_class_names = oo->n_class_names;
    /* a wrong --resume fails now, not once every node has joined */
    if (cfg->resume && tl_checkpoint_check(cfg->checkpoint_path, cfg, &r.model) < 0) goto fail;
    if (oo->tls_dir && tl_tls_ctx_new(oo->tls_dir, TL_TLS_ORCHESTRATOR, &tls) < 0) goto fail;
    if (!tls && !strcmp(cmd, "run"))
        fprintf(stderr,
                "tl %s: warning: --insecure: no TLS; the nodes connect over a unix "
                "socket in a private directory (mode 0700), so only processes of this "
                "user can join\n",
                cmd);
    else if (!tls && tl_addr_is_unix(host))
        fprintf(stderr,
                "tl %s: warning: --insecure: no TLS; any process that can open the "
                "socket %s may join as a node\n",
                cmd, host + 5);
    else if (!tls)
        fprintf(stderr,
                "tl %s: warning: --insecure: traffic is plaintext and any peer that "
                "can reach the port may join as a node\n",
                cmd);
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
    oc.stop = &cli_stop_signal; /* SIGINT/SIGTERM/SIGHUP while waiting for nodes */
    oc.privacy = oo->privacy;
    oc.mac_every = oo->mac_every;
    if (oo->privacy && oo->tls_dir && sealed_key_id(oo->tls_dir, &oc, cmd) < 0) goto fail;
    if (tl_orch_new(&oc, &o) < 0) goto fail;
    if (cfg->resume) { /* the step the nodes join at (sealed: their node side's) */
        int64_t steps;
        if (tl_checkpoint_steps(cfg->checkpoint_path, &steps) < 0) goto fail;
        tl_orch_set_step(o, (uint64_t)steps);
    }
    if (on_listen && (rc = on_listen(ud, tl_orch_port(o))) != 0) goto cleanup;
    tl_model_warmup(&r.model, cfg->batch_size); /* while the nodes start */
    rc = 1;
    counts = calloc(2 * (size_t)oo->nodes, sizeof *counts);
    if (!counts || tl_orch_wait_nodes(o, oo->wait_timeout_s, counts, counts + oo->nodes) < 0)
        goto fail;
    /* standardize: the descriptor combined from the nodes' STATS, for the
     * orchestrator's own evaluation and the saved model's metadata */
    tl_runcfg run = *cfg;
    if (tl_orch_norm(o)) run.norm = *tl_orch_norm(o);
    cfg = &run;
    /* sealed: the orchestrator cannot evaluate a model whose node side it does not hold */
    if (tl_trainer_init(&tr, cfg, &r.model, r.params, counts, oo->nodes,
                        r.have_test && !oo->privacy ? &r.test : NULL) < 0)
        goto fail;
    tr_ok = 1;
    if (oo->privacy &&
        tl_trainer_set_opt_from(
            &tr, tl_model_param_offset(&r.model, cut_modules(&r.model, cfg->cut))) < 0)
        goto fail;
    if ((!r.have_test || oo->privacy) && tl_orch_test_rows(o) > 0) {
        /* the nodes hold the test rows: they evaluate, the orchestrator adds sums */
        tr.eval = tl_orch_eval_fn;
        tr.eval_ctx = o;
        char note[160];
        snprintf(note, sizeof note, "evaluating at the nodes: %llu held-out rows (sums only)",
                 (unsigned long long)tl_orch_test_rows(o));
        cli_log_line(&lg, note);
    }
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
    tr.checkpointing = tl_orch_checkpointing; /* sealed: the nodes save their side first */
    if (cfg->resume) {
        if (tl_trainer_resume(&tr) < 0) goto fail;
        tl_orch_set_step(o, (uint64_t)tr.steps);
        lg.quiet = 0;
        cli_log_line(&lg, "resumed from the checkpoint");
    }
    if (cli_progress_init(&prog, cfg, cmd)) goto cleanup;
    prog_ok = 1;
    tl_trainer_hooks hooks = cli_progress_hooks(&prog);
    if (tl_trainer_run(&tr, tl_orch_grad_fn, o, &hooks) < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", tl_errmsg());
        /* No DONE: the nodes see the connection close and keep retrying, so that
         * the orchestrator restarted with --resume finds them. */
        fprintf(stderr, "tl %s: %s\n", cmd, why);
        if (tr.saved_path && !strcmp(cmd, "run"))
            fprintf(stderr,
                    "tl run: the run's state is saved in %s%s; to continue, run the same "
                    "tl run again with --checkpoint %s --resume\n",
                    tr.saved_path, oo->privacy ? " (the node sides beside it, .node-K.*)" : "",
                    tr.saved_path);
        else if (tr.saved_path)
            fprintf(stderr,
                    "tl %s: the run's state is saved in %s; to continue, start the "
                    "orchestrator again with the same options plus --checkpoint %s --resume "
                    "(nodes reconnect by themselves)\n",
                    cmd, tr.saved_path, tr.saved_path);
        if (cli_stop_signal) rc = 128 + cli_stop_signal;
        /* Tell the nodes why (a failure inside a batch has told them already;
         * a second ERROR finds no connection): resume possible or not. */
        char told[1400];
        if (tr.saved_path)
            snprintf(told, sizeof told,
                     "%s; the state is saved in %s and the run can be resumed "
                     "(keep this node running: it rejoins by itself)",
                     cli_stop_signal ? "stopped by the operator" : why, tr.saved_path);
        else
            snprintf(told, sizeof told, "%s; nothing was saved",
                     cli_stop_signal ? "stopped by the operator" : why);
        tl_orch_stop(o, told);
        goto cleanup;
    }
    if (tl_orch_final(o, r.params) < 0) goto fail; /* sealed: FINAL, the nodes' MACs agree */
    tl_orch_finish(o, "training complete");
    if (oo->privacy && oo->model_from && sealed_take_model(&r, oo, cfg, &prog, cmd) < 0) goto fail;
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
    rc = cli_stop_signal ? 128 + cli_stop_signal : 1;
cleanup:
    if (prog_ok) cli_progress_free(&prog);
    if (tr_ok) tl_trainer_free(&tr);
    free(counts);
    tl_orch_free(o);
    tl_tls_ctx_free(tls);
    cli_run_free(&r);
    return rc;
}
