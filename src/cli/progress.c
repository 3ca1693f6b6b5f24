/* progress.c - progress bar or log lines, epoch lines, metrics and the closing
 * summary of training commands. */
#include "cli/progress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/clilog.h"
#include "tl/error.h"

#define LOG_EVERY_S 10.0 /* at least one log line this often */

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *cli_progress_hms(double s, char *buf, size_t size) {
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
    return buf;
}

int cli_progress_init(cli_progress *p, const tl_runcfg *cfg, const char *cmd) {
    memset(p, 0, sizeof *p);
    p->cfg = cfg;
    p->cmd = cmd;
    p->tty = isatty(STDERR_FILENO);
    p->start = mono_s();
    p->last_draw = p->start;
    p->last_tick = -1;
    if (cfg->metrics_path && tl_metrics_open(cfg->metrics_path, cfg->resume, &p->metrics) < 0) {
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
        return 1;
    }
    return 0;
}

/* Steps of the whole run: every epoch, capped by --max-steps. */
static int64_t run_steps(const cli_progress *p, const tl_progress *pr) {
    int64_t total = (int64_t)pr->epochs * (int64_t)pr->batches;
    if (p->cfg->max_steps > 0 && p->cfg->max_steps < total) total = p->cfg->max_steps;
    return total > 0 ? total : 1;
}

/* Seconds left in the run, from the rate of this process's steps so far
 * (evaluations between epochs included); -1 while unknown. */
static double eta_s(cli_progress *p, const tl_progress *pr, double now, int64_t total) {
    if (!p->have_rate) { /* the first batch: its step is not timed from here */
        p->have_rate = 1;
        p->rate_steps = pr->steps;
        p->rate_t = now;
    }
    double rate = 0;
    if (pr->steps > p->rate_steps && now > p->rate_t)
        rate = (pr->steps - p->rate_steps) / (now - p->rate_t);
    else if (pr->elapsed_s > 0) rate = pr->batch / pr->elapsed_s;
    if (rate <= 0) return -1;
    return total > pr->steps ? (total - pr->steps) / rate : 0;
}

static void draw_bar(const tl_progress *pr, double eta) {
    const int width = 30;
    int filled = (int)(width * pr->batch / (pr->batches ? pr->batches : 1));
    char bar[64], e[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[width] = 0;
    fprintf(stderr, "\repoch %d/%d [%s] %zu/%zu loss %.4f %.0f samples/s ETA %s ", pr->epoch + 1,
            pr->epochs, bar, pr->batch, pr->batches, pr->loss, pr->samples_per_s,
            eta < 0 ? "?" : cli_progress_hms(eta, e, sizeof e));
    fflush(stderr);
}

/* Which tenth of the epoch pr ends in, or of the run if it is shorter than an
 * epoch; the last batch of an epoch starts the next tenth. */
static long tick_of(const tl_progress *pr, int64_t total) {
    if (total < (int64_t)pr->batches) return (long)(pr->steps * 10 / total);
    return (long)pr->epoch * 10 + (long)(pr->batch * 10 / pr->batches);
}

static void log_line(cli_progress *p, const tl_progress *pr, double now, double eta,
                     int64_t total) {
    char msg[256], el[32], e[32];
    snprintf(msg, sizeof msg,
             "epoch %d/%d batch %zu/%zu (%d%%), step %lld/%lld (%d%%), loss %.4f, "
             "%.0f samples/s, elapsed %s, ETA %s",
             pr->epoch + 1, pr->epochs, pr->batch, pr->batches,
             (int)(100 * pr->batch / (pr->batches ? pr->batches : 1)), (long long)pr->steps,
             (long long)total, (int)(100 * pr->steps / total), pr->loss, pr->samples_per_s,
             cli_progress_hms(now - p->start, el, sizeof el),
             eta < 0 ? "?" : cli_progress_hms(eta, e, sizeof e));
    cli_log lg = {"", 0};
    snprintf(lg.tag, sizeof lg.tag, "%s", p->cmd);
    cli_log_line(&lg, msg);
}

static void on_batch(void *ud, const tl_progress *pr) {
    cli_progress *p = ud;
    if (p->metrics && p->cfg->batch_metrics && !p->failed && tl_metrics_batch(p->metrics, pr) < 0) {
        fprintf(stderr, "%stl: %s\n", p->tty ? "\n" : "", tl_errmsg());
        p->failed = 1;
    }
    double now = mono_s();
    int64_t total = run_steps(p, pr);
    double eta = eta_s(p, pr, now, total);
    if (p->tty) {
        if (pr->batch != pr->batches && pr->steps != total && now - p->last_draw < 0.1) return;
        p->last_draw = now;
        draw_bar(pr, eta);
        return;
    }
    long tick = tick_of(pr, total);
    if (tick == p->last_tick && pr->steps != total && now - p->last_draw < LOG_EVERY_S) return;
    p->last_tick = tick;
    p->last_draw = now;
    log_line(p, pr, now, eta, total);
}

static void on_epoch(void *ud, const tl_epoch_report *r) {
    cli_progress *p = ud;
    p->last = *r;
    p->have_last = 1;
    if (p->tty) fprintf(stderr, "\r\033[K");
    char test[192];
    if (r->test_accuracy < 0) /* the trainer's -1: no test set */
        snprintf(test, sizeof test, "test not evaluated (no test set)");
    else if (r->metrics && !isnan(r->metrics->auc))
        snprintf(test, sizeof test,
                 "test loss %.4f, test accuracy %.2f%%, macro-F1 %.4f, AUC %.4f (+-%.1e)",
                 r->test_loss, 100.0 * r->test_accuracy, r->metrics->macro_f1, r->metrics->auc,
                 r->metrics->auc_bound);
    else if (r->metrics)
        snprintf(test, sizeof test, "test loss %.4f, test accuracy %.2f%%, macro-F1 %.4f",
                 r->test_loss, 100.0 * r->test_accuracy, r->metrics->macro_f1);
    else
        snprintf(test, sizeof test, "test loss %.4f, test accuracy %.2f%%", r->test_loss,
                 100.0 * r->test_accuracy);
    printf("epoch %d: train loss %.4f, %s (%lld steps, lr %.4g, %.2f s)%s\n", r->epoch,
           r->train_loss, test, (long long)r->steps, r->lr, r->seconds,
           r->partial ? " [stopped at --max-steps]" : "");
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

void cli_progress_summary(const cli_progress *p) {
    char wall[32], acc[64], saved[600];
    double s = mono_s() - p->start;
    if (!p->have_last) snprintf(acc, sizeof acc, "no epoch ran");
    else if (p->last.test_accuracy < 0) snprintf(acc, sizeof acc, "test not evaluated");
    else snprintf(acc, sizeof acc, "test accuracy %.2f%%", 100.0 * p->last.test_accuracy);
    if (p->cfg->save_path) snprintf(saved, sizeof saved, "model saved to %s", p->cfg->save_path);
    else snprintf(saved, sizeof saved, "model not saved (no --save)");
    fprintf(stderr, "tl %s: done in %s (%.1f s): %lld steps, epoch %d of %d%s, %s; %s\n", p->cmd,
            cli_progress_hms(s, wall, sizeof wall), s,
            (long long)(p->have_last ? p->last.steps : 0), p->have_last ? p->last.epoch : 0,
            p->cfg->epochs, p->have_last && p->last.partial ? " (stopped at --max-steps)" : "", acc,
            saved);
}

void cli_progress_free(cli_progress *p) {
    tl_metrics_close(p->metrics);
    p->metrics = NULL;
}
