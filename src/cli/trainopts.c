/* trainopts.c - the shared training options. */
#include "cli/trainopts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/outputs.h"
#include "tl/error.h"
#include "tl/model.h"
#include "tl/optim.h"
#include "tl/sched.h"

const struct option cli_train_longopts[] = {
    {"data", required_argument, 0, OPT_DATA},
    {"test-data", required_argument, 0, OPT_TEST_DATA},
    {"model", required_argument, 0, OPT_MODEL},
    {"epochs", required_argument, 0, OPT_EPOCHS},
    {"max-steps", required_argument, 0, OPT_MAX_STEPS},
    {"batch-size", required_argument, 0, OPT_BATCH_SIZE},
    {"optimizer", required_argument, 0, OPT_OPTIMIZER},
    {"lr", required_argument, 0, OPT_LR},
    {"gamma", required_argument, 0, OPT_GAMMA},
    {"step-size", required_argument, 0, OPT_STEP_SIZE},
    {"schedule", required_argument, 0, OPT_SCHEDULE},
    {"momentum", required_argument, 0, OPT_MOMENTUM},
    {"nesterov", no_argument, 0, OPT_NESTEROV},
    {"weight-decay", required_argument, 0, OPT_WEIGHT_DECAY},
    {"seed", required_argument, 0, OPT_SEED},
    {"reshuffle", required_argument, 0, OPT_RESHUFFLE},
    {"normalize", required_argument, 0, OPT_NORMALIZE},
    {"init", required_argument, 0, OPT_INIT},
    {"save", required_argument, 0, OPT_SAVE},
    {"metrics", required_argument, 0, OPT_METRICS},
    {"batch-metrics", no_argument, 0, OPT_BATCH_METRICS},
    {"threads", required_argument, 0, OPT_THREADS},
    {"plan", required_argument, 0, OPT_PLAN},
    {"checkpoint", required_argument, 0, OPT_CHECKPOINT},
    {"checkpoint-every", required_argument, 0, OPT_CHECKPOINT_EVERY},
    {"resume", no_argument, 0, OPT_RESUME},
    {"label", required_argument, 0, OPT_LABEL},
    {"header", required_argument, 0, OPT_HEADER},
    {"test-fraction", required_argument, 0, OPT_TEST_FRACTION},
    {0, 0, 0, 0},
};

// clang-format off
const char cli_train_help[] =
    "training (defaults reproduce the reference configuration):\n"
    "  --model SPEC          comma list of linear:N, relu, tanh, sigmoid; the input\n"
    "                        width comes from the data, the last linear layer gives\n"
    "                        the classes [" TL_DEFAULT_MODEL "]\n"
    "  --epochs N            epochs [" TL_STR(TL_DEFAULT_EPOCHS) "]\n"
    "  --max-steps N         stop after N optimizer steps, then evaluate and save [no limit]\n"
    "  --batch-size N        virtual batch size [" TL_STR(TL_DEFAULT_BATCH_SIZE) "]\n"
    "  --optimizer NAME      adadelta, sgd, adam, adamw [" TL_DEFAULT_OPTIMIZER "]\n"
    "  --lr X                learning rate [adadelta " TL_STR(TL_OPTIM_ADADELTA_LR)
    ", sgd " TL_STR(TL_OPTIM_SGD_LR) ", adam(w) " TL_STR(TL_OPTIM_ADAM_LR) "]\n"
    "  --schedule NAME       step (StepLR), cosine (annealing over the epochs), none ["
    TL_DEFAULT_SCHEDULE "]\n"
    "  --gamma X             StepLR decay factor [" TL_STR(TL_DEFAULT_GAMMA) "]\n"
    "  --step-size N         epochs between StepLR decays [" TL_STR(TL_DEFAULT_STEP_SIZE) "]\n"
    "  --momentum X          SGD momentum [0]\n"
    "  --nesterov            SGD Nesterov momentum (needs --momentum)\n"
    "  --weight-decay X      L2 penalty (decoupled for adamw) [0; adamw "
    TL_STR(TL_OPTIM_ADAMW_WEIGHT_DECAY) "]\n"
    "  --seed N              seed of the batch order and of the initialization ["
    TL_STR(TL_DEFAULT_SEED) "]\n"
    "  --reshuffle MODE      epoch: new order each epoch; none: epoch 1's order every\n"
    "                        epoch (what the Python reference does) [epoch]\n"
    "  --normalize MODE      MEAN,STD: (x-MEAN)/STD, x the stored value (bytes scaled\n"
    "                        to [0,1]) [" TL_STR(TL_DEFAULT_MEAN) "," TL_STR(TL_DEFAULT_STD)
    "]; standardize: per feature, the\n"
    "                        mean and standard deviation of the training rows; none\n"
    CLI_CSV_HELP
    "  --test-fraction F     hold out this fraction of the training rows (per class,\n"
    "                        seeded with --seed) as the test set [0: none]\n"
    "  --init FILE           start from these parameters (safetensors)\n"
    "  --save FILE           write the final parameters (safetensors, PyTorch names);\n"
    "                        if FILE cannot be written at the end (disk full), they\n"
    "                        go to $TMPDIR/tl-model-PID.safetensors (printed; exit 1)\n"
    "  --metrics FILE        JSON lines, one per epoch: epoch, steps, train_loss,\n"
    "                        train_accuracy, test_loss, test_accuracy (fractions;\n"
    "                        null without a test set), with a test set also test_n,\n"
    "                        test_macro_f1, test_auc, test_auc_bound, test_precision,\n"
    "                        test_recall, test_confusion; lr, seconds, partial (only\n"
    "                        when --max-steps cut the epoch short)\n"
    "  --batch-metrics       also one line per batch: epoch, batch, steps, loss\n"
    "  --plan FILE           write each epoch's virtual batches as JSON lines, one\n"
    "                        batch a line: epoch and batch (from 1, as in the\n"
    "                        metrics), which node gives which of its rows\n"
    "  --threads N           threads for matrix products [" TL_STR(TL_DEFAULT_THREADS) "]\n"
    "  --checkpoint FILE     save the whole run state (parameters, optimizer, schedule,\n"
    "                        position, generator) to FILE after every epoch, atomically\n"
    "                        (sealed mode: the orchestrator's side; each node keeps\n"
    "                        its node side of the same step, see tl node --state)\n"
    "  --checkpoint-every N  ... and also every N batches\n"
    "  --resume              continue from --checkpoint FILE (same configuration\n"
    "                        required); the result is bit-identical to an\n"
    "                        uninterrupted run\n"
    "Output paths (--save, --checkpoint, --metrics, --plan) are checked before any\n"
    "work: a missing directory is refused at once (exit 2). Files are replaced\n"
    "atomically, never written through a symbolic link. SIGINT, SIGTERM or SIGHUP\n"
    "stop after the current batch and save the state (to --checkpoint FILE, or\n"
    "tl-recovery.safetensors) for --resume; a second signal kills.\n";
// clang-format on

void cli_trainopts_init(cli_trainopts *o) {
    memset(o, 0, sizeof *o);
    tl_runcfg_defaults(&o->cfg);
    snprintf(o->optimizer, sizeof o->optimizer, "%s", TL_DEFAULT_OPTIMIZER);
    o->lr = o->momentum = o->weight_decay = NAN;
    o->nesterov = 0;
}

int cli_parse_long(const char *cmd, const char *opt, const char *arg, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi)
        return cli_usage_error(cmd, "--%s: '%s' is not a whole number in [%ld, %ld]", opt, arg, lo,
                               hi);
    *out = v;
    return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *arg, double lo, double hi,
                     double *out) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !isfinite(v) || v < lo || v > hi)
        return cli_usage_error(cmd, "--%s: '%s' is not a number in [%g, %g]", opt, arg, lo, hi);
    *out = v;
    return 0;
}

int cli_dataopts_parse(tl_dataset_opts *o, int key, const char *arg, const char *cmd) {
    if (key == OPT_LABEL) {
        o->label = arg;
        return 1;
    }
    if (key != OPT_HEADER) return 0;
    if (!strcmp(arg, "yes")) o->header = 1;
    else if (!strcmp(arg, "no")) o->header = -1;
    else return cli_usage_error(cmd, "--header: '%s' (want yes or no)", arg);
    return 1;
}

int cli_trainopts_parse(cli_trainopts *o, int key, const char *arg, const char *cmd) {
    tl_runcfg *c = &o->cfg;
    long v = 0;
    switch (key) {
    case OPT_DATA:
        c->data_dir = arg;
        o->data_given = 1;
        return 1;
    case OPT_TEST_DATA: c->test_dir = arg; return 1;
    case OPT_MODEL:
        if (strlen(arg) >= sizeof c->model) return cli_usage_error(cmd, "--model: spec too long");
        snprintf(c->model, sizeof c->model, "%s", arg);
        return 1;
    case OPT_EPOCHS:
        if (cli_parse_long(cmd, "epochs", arg, 1, 1000000, &v)) return 2;
        c->epochs = (int)v;
        return 1;
    case OPT_MAX_STEPS:
        if (cli_parse_long(cmd, "max-steps", arg, 1, (long)1 << 62, &v)) return 2;
        c->max_steps = v;
        return 1;
    case OPT_BATCH_SIZE:
        if (cli_parse_long(cmd, "batch-size", arg, 1, 1 << 20, &v)) return 2;
        c->batch_size = (int)v;
        return 1;
    case OPT_OPTIMIZER: {
        tl_optim_cfg tmp;
        if (tl_optim_defaults(arg, &tmp) < 0)
            return cli_usage_error(cmd, "--optimizer: %s", tl_errmsg());
        snprintf(o->optimizer, sizeof o->optimizer, "%s", arg);
        return 1;
    }
    case OPT_LR: return cli_parse_double(cmd, "lr", arg, 0, 1e6, &o->lr) ? 2 : 1;
    case OPT_GAMMA: return cli_parse_double(cmd, "gamma", arg, 0, 1e6, &c->gamma) ? 2 : 1;
    case OPT_STEP_SIZE:
        if (cli_parse_long(cmd, "step-size", arg, 1, 1000000, &v)) return 2;
        c->step_size = (int)v;
        return 1;
    case OPT_SCHEDULE: {
        tl_sched s;
        if (tl_sched_init(&s, arg, 1, 1, 1, 1) < 0)
            return cli_usage_error(cmd, "--schedule: %s", tl_errmsg());
        snprintf(c->sched, sizeof c->sched, "%s", arg);
        return 1;
    }
    case OPT_MOMENTUM: return cli_parse_double(cmd, "momentum", arg, 0, 1, &o->momentum) ? 2 : 1;
    case OPT_NESTEROV: o->nesterov = 1; return 1;
    case OPT_WEIGHT_DECAY:
        return cli_parse_double(cmd, "weight-decay", arg, 0, 1e3, &o->weight_decay) ? 2 : 1;
    case OPT_SEED:
        if (cli_parse_long(cmd, "seed", arg, 0, 4294967295L, &v)) return 2;
        c->seed = (uint32_t)v;
        return 1;
    case OPT_RESHUFFLE:
        if (!strcmp(arg, "epoch")) c->reshuffle = 1;
        else if (!strcmp(arg, "none")) c->reshuffle = 0;
        else return cli_usage_error(cmd, "--reshuffle: '%s' (want epoch or none)", arg);
        return 1;
    case OPT_NORMALIZE: {
        tl_norm nm;
        if (tl_norm_parse(arg, &nm) < 0)
            return cli_usage_error(cmd, "--normalize: %s", tl_errmsg());
        c->norm.kind = nm.kind;
        if (nm.kind == TL_NORM_SCALAR) c->mean = nm.mean, c->std = nm.std;
        return 1;
    }
    case OPT_LABEL:
    case OPT_HEADER: return cli_dataopts_parse(&c->data_opts, key, arg, cmd);
    case OPT_TEST_FRACTION:
        if (cli_parse_double(cmd, "test-fraction", arg, 0, 0.99, &c->test_fraction)) return 2;
        return 1;
    case OPT_INIT: c->init_path = arg; return 1;
    case OPT_SAVE: c->save_path = arg; return 1;
    case OPT_METRICS: c->metrics_path = arg; return 1;
    case OPT_BATCH_METRICS: c->batch_metrics = 1; return 1;
    case OPT_PLAN: c->plan_path = arg; return 1;
    case OPT_CHECKPOINT: c->checkpoint_path = arg; return 1;
    case OPT_CHECKPOINT_EVERY:
        if (cli_parse_long(cmd, "checkpoint-every", arg, 1, 1L << 40, &v)) return 2;
        c->checkpoint_every = (int)(v > 1 << 30 ? 1 << 30 : v);
        return 1;
    case OPT_RESUME: c->resume = 1; return 1;
    case OPT_THREADS:
        if (cli_parse_long(cmd, "threads", arg, 1, 1024, &v)) return 2;
        c->threads = (int)v;
        return 1;
    }
    return 0;
}

int cli_trainopts_finish(cli_trainopts *o, const char *cmd) {
    tl_optim_cfg *oc = &o->cfg.optim;
    if (o->cfg.resume && !o->cfg.checkpoint_path)
        return cli_usage_error(cmd, "--resume needs --checkpoint FILE");
    if (o->cfg.test_fraction > 0 && o->cfg.test_dir)
        return cli_usage_error(cmd, "--test-fraction and --test-data exclude each other");
    if (o->cfg.checkpoint_every && !o->cfg.checkpoint_path)
        return cli_usage_error(cmd, "--checkpoint-every needs --checkpoint FILE");
    /* a model typo is a usage error, found before any data is loaded (the
     * input width does not affect whether a spec parses) */
    tl_model m;
    if (tl_model_parse(o->cfg.model, 1, &m) < 0) {
        const char *why = tl_errmsg();
        if (!strncmp(why, "model: ", 7)) why += 7;
        return cli_usage_error(cmd, "--model: %s", why);
    }
    tl_optim_defaults(o->optimizer, oc);
    if (!isnan(o->lr)) oc->lr = o->lr;
    if (!isnan(o->weight_decay)) oc->weight_decay = o->weight_decay;
    if (!isnan(o->momentum)) {
        if (oc->kind != TL_OPT_SGD) return cli_usage_error(cmd, "--momentum applies to sgd only");
        oc->momentum = o->momentum;
    }
    if (o->nesterov) {
        if (oc->kind != TL_OPT_SGD || oc->momentum <= 0)
            return cli_usage_error(cmd, "--nesterov needs --optimizer sgd and --momentum > 0");
        oc->nesterov = 1;
    }
    /* a bad output path fails now, not after the training it would lose */
    return cli_check_outputs(&o->cfg, cmd);
}

struct option *cli_options_join(const struct option *a, const struct option *b) {
    size_t na = 0, nb = 0;
    while (a[na].name) na++;
    while (b[nb].name) nb++;
    struct option *all = calloc(na + nb + 1, sizeof *all);
    if (!all) return NULL;
    memcpy(all, a, na * sizeof *a);
    memcpy(all + na, b, nb * sizeof *b);
    return all;
}
