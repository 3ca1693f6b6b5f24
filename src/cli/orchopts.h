/*
 * orchopts.h - the options of a distributed run, shared by `tl orchestrator`
 * and `tl run` (besides the training options of trainopts.h), and the body
 * both commands run once the options are parsed.
 */
#ifndef TL_CLI_ORCHOPTS_H
#define TL_CLI_ORCHOPTS_H

#include <getopt.h>

#include "cli/trainopts.h"

/* The defaults of the distributed options, written once: cli_orchopts_init
 * uses the numbers, the help text their strings (TL_STR, config.h; the cut's
 * is TL_DEFAULT_CUT there). */
#define CLI_DEFAULT_HEARTBEAT_MS 2000
#define CLI_DEFAULT_TASK_TIMEOUT_S 120
#define CLI_DEFAULT_RECONNECT_TIMEOUT_S 120
#define CLI_DEFAULT_MAX_REPLAYS 5
#define CLI_DEFAULT_WAIT_TIMEOUT_S 0

enum {
    // clang-format off
    OPT_NODES = 1200, OPT_CUT, OPT_MODE, OPT_INSECURE, OPT_TLS_DIR, OPT_HEARTBEAT,
    OPT_TASK_TIMEOUT, OPT_RECONNECT_TIMEOUT, OPT_WAIT_TIMEOUT, OPT_ZSTD, OPT_NO_SHM,
    OPT_MAX_REPLAYS, OPT_PRIVACY, OPT_MAC_EVERY,
    // clang-format on
};
#define CLI_DEFAULT_MAC_EVERY 50

typedef struct cli_orchopts {
    int nodes; /* required */
    int insecure;
    const char *tls_dir; /* the orchestrator's kit */
    int heartbeat_ms;
    int task_timeout_s;
    int reconnect_timeout_s;
    int max_replays;
    int wait_timeout_s;
    int zstd;
    int no_shm;
    int privacy; /* tl_privacy: sealed by default */
    int mac_every;
    const char *model_from;   /* sealed `tl run`: node 1 saves the whole model here */
    int in_dim;               /* tl run: the data's width, for an orchestrator without a
                               * test set of its own (0: from the test set) */
    char *const *class_names; /* tl run: the data's class names, for the saved model's
                               * metadata (NULL: the data the orchestrator holds, if any) */
    int n_class_names;
} cli_orchopts;

extern const struct option cli_orch_longopts[];
/* Help of the distributed options (not --tls-dir/--insecure, which differ
 * between `tl orchestrator` and `tl run`). */
extern const char cli_orch_help[];
/* Help of --tls-dir and --insecure for `tl orchestrator`. */
extern const char cli_orch_security_help[];

void cli_orchopts_init(cli_orchopts *o);
/* 1 handled, 0 not ours, 2 reported a bad value. cfg gets --cut and --mode. */
int cli_orchopts_parse(cli_orchopts *o, tl_runcfg *cfg, int key, const char *arg, const char *cmd);

/* Checks what needs the model: --cut must name a linear layer the model has
 * (1 <= C < linear layers). 0, or 2 after reporting. Call after
 * cli_trainopts_finish. */
int cli_orchopts_finish(const cli_orchopts *o, const cli_trainopts *t, const char *cmd);

/* A command's own options: handle key (0, or 2 after reporting a bad value). */
typedef int (*cli_own_fn)(void *ud, int key, const char *arg);

/* The option loop of the training commands: the shared training options (into
 * t), the distributed ones (into oo; NULL for none), the command's own
 * options (own, given to own_fn), -h/--help (prints usage). Rejects stray
 * arguments. Returns -1 when the command should go on, else its exit status
 * (0 after --help, 2 after a usage error). Does not call cli_trainopts_finish. */
int cli_parse_options(int argc, char **argv, const char *cmd, cli_trainopts *t, cli_orchopts *oo,
                      const struct option *own, cli_own_fn own_fn, void *ud, void (*usage)(void));

/* Called once the orchestrator listens (port is the bound port). Nonzero
 * return aborts the run with that exit status. */
typedef int (*cli_on_listen)(void *ud, int port);

/* Runs the orchestrator (orchestrate.c): test set, model, parameters, TLS, listen on
 * host:port, wait for the nodes, train, DONE, save. Returns the exit status. */
int cli_orchestrate(const cli_trainopts *t, const cli_orchopts *oo, const char *host, int port,
                    const char *cmd, cli_on_listen on_listen, void *ud);

#endif
