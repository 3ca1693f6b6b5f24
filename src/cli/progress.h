/*
 * progress.h - what a training command shows and records while it runs:
 *
 *   - on a terminal (stderr is a tty): a progress bar redrawn in place
 *     (epoch, batch, loss, samples/s, ETA of the whole run);
 *   - otherwise (nohup, systemd, a log file): one timestamped line per tenth
 *     of an epoch (of the run, if it is shorter than an epoch), at the run's
 *     last step, and at least every 10 s, never a \r:
 *       2026-11-29 21:05:05 train: epoch 2/3 batch 94/938 (10%), step 1032/2814 (36%),
 *       loss 0.4831, 24904 samples/s, elapsed 0:01, ETA 0:02
 *   - one line per epoch on stdout (test results, or "not evaluated" without
 *     a test set);
 *   - metrics lines (metrics.h), if asked;
 *   - at the end (cli_progress_summary) one line on stderr: wall time, steps,
 *     epochs, the last test accuracy and where the model was saved.
 *
 * The ETA covers the whole run: every epoch, or up to --max-steps.
 */
#ifndef TL_CLI_PROGRESS_H
#define TL_CLI_PROGRESS_H

#include <stdint.h>

#include "tl/config.h"
#include "tl/metrics.h"
#include "tl/trainer.h"

typedef struct cli_progress {
    const tl_runcfg *cfg; /* the caller's, outlives the progress */
    const char *cmd;      /* "train", "orchestrator", ...: the log lines' tag */
    int tty;              /* draw the bar; else write log lines */
    double start;         /* monotonic seconds at init */
    double last_draw;     /* monotonic seconds of the last redraw or log line */
    long last_tick;       /* log lines: the tenth of the epoch (or run) last reported */
    int have_rate;        /* rate_steps/rate_t hold the first batch of this process */
    int64_t rate_steps;
    double rate_t;
    tl_metrics *metrics;  /* NULL: none */
    int failed;           /* a metrics write failed (reported once) */
    int have_last;        /* an epoch ended: last is valid */
    tl_epoch_report last; /* the last epoch's report */
} cli_progress;

/* Starts the clock and opens cfg->metrics_path if set (appending when
 * cfg->resume). cfg and cmd must outlive p. 0, or 1 after printing an error. */
int cli_progress_init(cli_progress *p, const tl_runcfg *cfg, const char *cmd);
/* Hooks for tl_trainer_run. */
tl_trainer_hooks cli_progress_hooks(cli_progress *p);
/* Prints the closing summary on stderr; call once the run ended and the
 * model (cfg->save_path) was saved. */
void cli_progress_summary(const cli_progress *p);
void cli_progress_free(cli_progress *p);

/* Formats s seconds as m:ss, or h:mm:ss from an hour on, into buf. */
const char *cli_progress_hms(double s, char *buf, size_t size);

#endif
