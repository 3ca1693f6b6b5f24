/* progress.c - progress bar, epoch lines and metrics for training commands. */
#include "cli/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tl/error.h"

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_progress_init(cli_progress *p, const char *metrics_path, int batch_metrics, int append,
                      const char *cmd) {
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDERR_FILENO);
    p->batch_metrics = batch_metrics;
    if (metrics_path && tl_metrics_open(metrics_path, append, &p->metrics) < 0) {
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
        return 1;
    }
    return 0;
}

static void on_batch(void *ud, const tl_progress *pr) {
    cli_progress *p = ud;
    if (p->metrics && p->batch_metrics && !p->failed && tl_metrics_batch(p->metrics, pr) < 0) {
        fprintf(stderr, "\ntl: %s\n", tl_errmsg());
        p->failed = 1;
    }
    if (!p->tty) return;
    double now = mono_s();
    if (pr->batch != pr->batches && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    const int width = 30;
    int filled = (int)(width * pr->batch / (pr->batches ? pr->batches : 1));
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[width] = 0;
    double rate = pr->elapsed_s > 0 ? pr->batch / pr->elapsed_s : 0;
    double eta = rate > 0 ? (pr->batches - pr->batch) / rate : 0;
    fprintf(stderr, "\repoch %d/%d [%s] %zu/%zu loss %.4f %.0f samples/s ETA %d:%02d ",
            pr->epoch + 1, pr->epochs, bar, pr->batch, pr->batches, pr->loss, pr->samples_per_s,
            (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

static void on_epoch(void *ud, const tl_epoch_report *r) {
    cli_progress *p = ud;
    p->last = *r;
    if (p->tty) fprintf(stderr, "\r\033[K");
    printf("epoch %d: train loss %.4f, test loss %.4f, test accuracy %.2f%% "
           "(%lld steps, lr %.4g, %.2f s)%s\n",
           r->epoch, r->train_loss, r->test_loss, 100.0 * r->test_accuracy, (long long)r->steps,
           r->lr, r->seconds, r->partial ? " [stopped at --max-steps]" : "");
    fflush(stdout);
    if (p->metrics && !p->failed && tl_metrics_epoch(p->metrics, r) < 0) {
        fprintf(stderr, "tl: %s\n", tl_errmsg());
        p->failed = 1;
    }
}

tl_trainer_hooks cli_progress_hooks(cli_progress *p) {
    tl_trainer_hooks h = {p, on_batch, on_epoch};
    return h;
}

void cli_progress_free(cli_progress *p) {
    tl_metrics_close(p->metrics);
    p->metrics = NULL;
}
