/*
 * outputs.h - nothing a run produces is lost: output paths are checked before
 * any work starts, a model that cannot be written where asked goes to a
 * fallback path, and a signal stops training between batches with its state
 * saved (instead of killing the process with everything in memory).
 *
 *     if (cli_check_outputs(&o.cfg, "train")) return 2;   // before loading data
 *     cli_stop_on_signals();        // first thing, before any thread starts
 *     ...  t.stop = &cli_stop_signal; // the trainer stops between batches
 */
#ifndef TL_CLI_OUTPUTS_H
#define TL_CLI_OUTPUTS_H

#include <signal.h>
#include <stddef.h>

#include "tl/config.h"

/* Checks one output file: 0, or prints "tl <cmd>: --<opt>: <reason>" (one
 * line) and returns 2. NULL path: 0. */
int cli_check_output(const char *cmd, const char *opt, const char *path);

/* cli_check_output for cfg's --save, --checkpoint, --metrics and --plan. */
int cli_check_outputs(const tl_runcfg *cfg, const char *cmd);

/* Checks an output directory that is created if missing (its nearest
 * existing ancestor must be a directory we can create files in): 0, or one
 * line "tl <cmd>: --<opt>: <reason>" and 2. */
int cli_check_out_dir(const char *cmd, const char *opt, const char *dir);

/* Where a model goes when its path cannot be written: $TMPDIR (or /tmp), then
 * the current directory, "tl-model-<pid>.safetensors". Fills buf with the i-th
 * candidate (i = 0, 1); returns 0, or -1 when there is none. */
int cli_fallback_path(int i, char *buf, size_t size);

/* The first SIGINT, SIGTERM or SIGHUP after cli_stop_on_signals, 0 before;
 * point tl_trainer.stop at it. A second such signal kills as usual. Call
 * cli_stop_on_signals before any thread starts: it blocks the three signals
 * (threads started later inherit that) and takes them on a thread of its
 * own, so that none interrupts a system call elsewhere. */
extern volatile sig_atomic_t cli_stop_signal;
void cli_stop_on_signals(void);

#endif
