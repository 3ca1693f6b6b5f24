/*
 * trainopts.h - the training options shared by `tl train`, `tl orchestrator`
 * and `tl run`, parsed in one place so their meaning and help never diverge.
 *
 *     cli_trainopts o; cli_trainopts_init(&o);
 *     struct option *all = cli_options_join(cli_train_longopts, my_longopts);
 *     while ((c = getopt_long(...)) != -1) {
 *         int r = cli_trainopts_parse(&o, c, optarg, "train");
 *         if (r == 1) continue;          // was a training option
 *         if (r == 2) return 2;          // bad value, already reported
 *         ... command's own options ...
 *     }
 *     if (cli_trainopts_finish(&o, "train")) return 2;   // o.cfg is ready
 */
#ifndef TL_CLI_TRAINOPTS_H
#define TL_CLI_TRAINOPTS_H

#include <getopt.h>

#include "tl/config.h"

/* getopt_long keys of the shared options: 1000 and up. */
enum {
    // clang-format off
    OPT_DATA = 1000, OPT_TEST_DATA, OPT_MODEL, OPT_EPOCHS, OPT_MAX_STEPS, OPT_BATCH_SIZE,
    OPT_OPTIMIZER, OPT_LR, OPT_GAMMA, OPT_STEP_SIZE, OPT_SCHEDULE, OPT_MOMENTUM, OPT_NESTEROV,
    OPT_WEIGHT_DECAY, OPT_SEED, OPT_RESHUFFLE, OPT_NORMALIZE, OPT_INIT, OPT_SAVE, OPT_METRICS,
    OPT_BATCH_METRICS, OPT_THREADS, OPT_PLAN, OPT_CHECKPOINT, OPT_CHECKPOINT_EVERY, OPT_RESUME,
    OPT_LABEL, OPT_HEADER, OPT_TEST_FRACTION,
    // clang-format on
    OPT_CMD_BASE = 1100 /* commands number their own long options from here */
};

typedef struct cli_trainopts {
    tl_runcfg cfg;
    char optimizer[16];
    double lr, momentum, weight_decay; /* NaN: not given, keep the optimizer's default */
    int nesterov;
    int data_given; /* --data appeared */
} cli_trainopts;

/* Help lines of --label and --header, the same in every command that reads
 * CSV data (train, orchestrator, run, node, eval, partition). */
#define CLI_CSV_HELP                                                              \
    "  --label NAME|INDEX    CSV data: the label column [the last column]\n"      \
    "  --header yes|no       CSV data: whether the first row names the columns\n" \
    "                        [detected: a first row with a non-numeric feature cell]\n"

extern const struct option cli_train_longopts[];
/* Help lines for the shared options (ends with a newline). */
extern const char cli_train_help[];

void cli_trainopts_init(cli_trainopts *o);
/* 1 if key was a shared option (handled), 0 if not, 2 after reporting a bad value. */
int cli_trainopts_parse(cli_trainopts *o, int key, const char *arg, const char *cmd);
/* --label (key OPT_LABEL) and --header (OPT_HEADER) into o, for every command
 * that reads CSV data: 1 if key was one of them, 0 if not, 2 after reporting a
 * bad value. */
int cli_dataopts_parse(tl_dataset_opts *o, int key, const char *arg, const char *cmd);
/* Applies the optimizer defaults and overrides and checks the output paths
 * (--save, --checkpoint, --metrics, --plan: outputs.h); 0, or 2 after
 * reporting. */
int cli_trainopts_finish(cli_trainopts *o, const char *cmd);

/* A malloc'ed array of a's options then b's, terminated; NULL on OOM. */
struct option *cli_options_join(const struct option *a, const struct option *b);

/* Strict number parsing for option values; 0 on success, else reports and returns 2. */
int cli_parse_long(const char *cmd, const char *opt, const char *arg, long lo, long hi, long *out);
int cli_parse_double(const char *cmd, const char *opt, const char *arg, double lo, double hi,
                     double *out);

#endif
