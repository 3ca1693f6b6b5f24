/* cmd_train.c - `tl train`: centralized training, the baseline of every comparison. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/orchopts.h"
#include "cli/outputs.h"
#include "cli/progress.h"
#include "cli/runsetup.h"
#include "cli/trainopts.h"
#include "tl/error.h"
#include "tl/gemm.h"
#include "tl/localgrad.h"
#include "tl/trainer.h"

static void usage(void) {
    printf("usage: tl train [options]\n\n"
           "Centralized mini-batch training on one data set: the model that Traversal\n"
           "Learning must reproduce. Batches are the same virtual batches a distributed\n"
           "run with the same seed visits.\n\n"
           "data:\n"
           "  --data DIR            MNIST-layout directory: train-* files train, t10k-*\n"
           "                        files evaluate [" TL_DEFAULT_DATA "]; or a\n"
           "                        partition directory (node-1, node-2, ... from\n"
           "                        'tl partition'): trains on the nodes' data in node\n"
           "                        order, the exact baseline of a run over those nodes\n"
           "  --data FILE.csv[.gz]  a table: numeric feature columns and a label column\n"
           "                        (--label, --header); --data DIR with x.npy, y.npy:\n"
           "                        NumPy arrays ([N, features] or [N, C, H, W])\n"
           "  --test-data PATH      evaluate on this data (its t10k split) instead\n\n"
           "%s\n"
           "  -h, --help            this text\n",
           cli_train_help);
}

/* tl_trainer's data_sig_fn: the training set's size and fingerprint. */
static void train_data_sig(void *ud, char *sig, size_t cap) {
    const tl_dataset *d = ud;
    snprintf(sig, cap, "train %zu:%016llx", d->n, (unsigned long long)tl_dataset_fingerprint(d));
}

int cmd_train(int argc, char **argv) {
    tl_norm nm;
    const char *cmd = "train";
    cli_trainopts o;
    cli_trainopts_init(&o);
    int rc = cli_parse_options(argc, argv, cmd, &o, NULL, NULL, NULL, NULL, usage);
    if (rc >= 0) return rc;
    if (cli_trainopts_finish(&o, cmd)) return 2;

    cli_stop_on_signals(); /* before cli_run_setup starts threads */
    cli_run r;
    if ((rc = cli_run_setup(&r, &o.cfg, cmd, 1)) != 0) return rc;
    if ((rc = cli_run_standardize(&r, &o.cfg, cmd)) != 0) {
        cli_run_free(&r);
        return rc;
    }
    tl_runcfg_norm(&o.cfg, &nm); /* borrows r's arrays: lives as long as r */
    tl_local_grad lg;
    tl_trainer t;
    cli_progress prog;
    int lg_ok = 0, t_ok = 0, prog_ok = 0;
    rc = 1;
    uint64_t count = r.train.n;
    if (tl_local_grad_init(&lg, &r.model, &r.train, o.cfg.batch_size, o.cfg.mean, o.cfg.std) < 0)
        goto fail;
    lg_ok = 1;
    tl_local_grad_set_norm(&lg, &nm);
    const tl_dataset *test = r.have_test ? &r.test : NULL;
    if (tl_trainer_init(&t, &o.cfg, &r.model, r.params, &count, 1, test) < 0) goto fail;
    t_ok = 1;
    t.prefetch = tl_local_grad_prefetch;
    /* the data's identity, for the signature of a checkpoint or the recovery
     * file: a fingerprint of every byte, computed only if one is written */
    t.data_sig_fn = train_data_sig;
    t.data_sig_ud = &r.train;
    /* SIGINT, SIGTERM, SIGHUP stop between batches with the state saved */
    t.recovery_path = "tl-recovery.safetensors";
    t.stop = &cli_stop_signal;
    if (o.cfg.resume && tl_trainer_resume(&t) < 0) goto fail;
    if (cli_progress_init(&prog, &o.cfg, cmd)) goto cleanup;
    prog_ok = 1;
    tl_trainer_hooks hooks = cli_progress_hooks(&prog);
    if (tl_trainer_run(&t, tl_local_grad_fn, &lg, &hooks) < 0) {
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
        if (t.saved_path)
            fprintf(stderr,
                    "tl %s: the run's state is saved in %s; to continue, run the same "
                    "command plus --checkpoint %s --resume\n",
                    cmd, t.saved_path, t.saved_path);
        if (cli_stop_signal) rc = 128 + cli_stop_signal;
        goto cleanup;
    }
    if (cli_run_save(&r, &o.cfg, &prog.last, cmd) != 0) goto cleanup;
    cli_progress_summary(&prog);
    rc = prog.failed ? 1 : 0;
    goto cleanup;
fail:
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
cleanup:
    if (prog_ok) cli_progress_free(&prog);
    if (t_ok) tl_trainer_free(&t);
    if (lg_ok) tl_local_grad_free(&lg);
    cli_run_free(&r);
    return rc;
}
