/* outputs.c - output checks, the model's fallback path, stop signals (see outputs.h). */
#include "cli/outputs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/error.h"
#include "tl/file.h"

int cli_check_output(const char *cmd, const char *opt, const char *path) {
    if (!path || tl_file_check_writable(path) == 0) return 0;
    fprintf(stderr, "tl %s: --%s: %s\n", cmd, opt, tl_errmsg());
    return 2;
}

int cli_check_outputs(const tl_runcfg *cfg, const char *cmd) {
    if (cli_check_output(cmd, "save", cfg->save_path) ||
        cli_check_output(cmd, "checkpoint", cfg->checkpoint_path) ||
        cli_check_output(cmd, "metrics", cfg->metrics_path) ||
        cli_check_output(cmd, "plan", cfg->plan_path))
        return 2;
    return 0;
}

int cli_check_out_dir(const char *cmd, const char *opt, const char *dir) {
    size_t len = strlen(dir);
    char *p = malloc(len + 16);
    if (!p) {
        fprintf(stderr, "tl %s: out of memory\n", cmd);
        return 2;
    }
    /* the nearest existing ancestor of dir (dir itself if it exists) */
    memcpy(p, dir, len + 1);
    while (len > 1 && p[len - 1] == '/') p[--len] = 0;
    struct stat st;
    while (stat(p, &st) < 0) {
        if (errno != ENOENT) break;
        char *slash = strrchr(p, '/');
        if (!slash) {
            strcpy(p, ".");
            break;
        }
        if (slash == p) slash[1] = 0;
        else *slash = 0;
    }
    int rc = 0;
    if (stat(p, &st) < 0) {
        fprintf(stderr, "tl %s: --%s: %s: %s\n", cmd, opt, dir, strerror(errno));
        rc = 2;
    } else if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tl %s: --%s: %s: %s is not a directory\n", cmd, opt, dir, p);
        rc = 2;
    } else {
        strcat(p, "/.tl-probe"); /* a file that can be created there proves it */
        if (tl_file_check_writable(p) < 0) {
            fprintf(stderr, "tl %s: --%s: %s: %s\n", cmd, opt, dir, tl_errmsg());
            rc = 2;
        }
    }
    free(p);
    return rc;
}

int cli_fallback_path(int i, char *buf, size_t size) {
    const char *tmp = getenv("TMPDIR");
    const char *dir = i == 0 ? (tmp && *tmp ? tmp : "/tmp") : i == 1 ? "." : NULL;
    if (!dir) return -1;
    snprintf(buf, size, "%s/tl-model-%ld.safetensors", dir, (long)getpid());
    return 0;
}

volatile sig_atomic_t cli_stop_signal;

/* The signals are blocked in every thread and taken here, synchronously, so
 * that none interrupts a system call of the training loop (the event loop,
 * the matrix-product threads): the first sets the flag, a second kills. */
static void *stop_waiter(void *arg) {
    sigset_t *set = arg;
    int sig;
    while (sigwait(set, &sig) == 0) {
        if (!cli_stop_signal) {
            cli_stop_signal = sig;
            continue;
        }
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
    }
    return NULL;
}

void cli_stop_on_signals(void) {
    static sigset_t set;
    static int started;
    if (started) return;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    /* blocked here before any other thread starts: they all inherit it */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t th;
    if (pthread_create(&th, NULL, stop_waiter, &set) == 0) {
        pthread_detach(th);
        started = 1;
    } else {
        pthread_sigmask(SIG_UNBLOCK, &set, NULL); /* no waiter: signals act as usual */
    }
}
