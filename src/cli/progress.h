/*
 * progress.h - what a training command shows and records while it runs:
 * a progress bar on a terminal (batch, loss, samples/s, ETA; nothing when
 * stderr is not a terminal), one line per epoch on stdout, metrics lines.
 */
#ifndef TL_CLI_PROGRESS_H
#define TL_CLI_PROGRESS_H

#include "tl/metrics.h"
#include "tl/trainer.h"

typedef struct cli_progress {
    int tty;               /* draw the bar */
    double last_draw;      /* monotonic seconds of the last redraw */
    tl_metrics *metrics;   /* NULL: none */
    int batch_metrics;
    int failed;            /* a metrics write failed (reported once) */
    tl_epoch_report last;  /* the last epoch's report */
} cli_progress;

/* Opens the metrics file if path is not NULL (appending when resuming a run).
 * 0, or 1 after printing an error. */
int cli_progress_init(cli_progress *p, const char *metrics_path, int batch_metrics, int append,
                      const char *cmd);
/* Hooks for tl_trainer_run. */
tl_trainer_hooks cli_progress_hooks(cli_progress *p);
void cli_progress_free(cli_progress *p);

#endif
