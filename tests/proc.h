/*
 * proc.h - child processes for the multi-process tests (test_hostile.c,
 * test_tls_e2e.c): every child is remembered so that teardown, and the alarm
 * that bounds a whole test program, can kill and reap it.
 *
 * The including file defines, before including:
 *   PROC_NAME           the program's name, for the time-limit message
 *   PROC_CHILD_ALARM_S  SIGALRM bound (seconds) set in each child across exec;
 *                       0 for none
 * and TL_BIN (the tl binary, from CMake) must be defined. Also here: waiting
 * for a child with a bound; files.h (paths, logs, the scratch tree) comes
 * with it.
 */
#ifndef TL_TESTS_PROC_H
#define TL_TESTS_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "files.h"

#define MAX_KIDS 32
static volatile pid_t kids[MAX_KIDS];

/* Remembers p (kills it and fails the test if the table is full). */
static void kids_add(pid_t p) {
    for (int i = 0; i < MAX_KIDS; i++)
        if (!kids[i]) {
            kids[i] = p;
            return;
        }
    kill(p, SIGKILL);
    fail_msg("too many children");
}

/* Forgets p (it was reaped). */
static void kids_forget(pid_t p) {
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == p) kids[i] = 0;
}

/* Kills and reaps every remembered child. */
static void kids_kill_all(void) {
    for (int i = 0; i < MAX_KIDS; i++) {
        pid_t p = kids[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            kids[i] = 0;
        }
    }
}

/* SIGALRM handler for the whole program: kill the children, say so, exit 3.
 * Only async-signal-safe calls. */
static void on_alarm(int sig) {
    (void)sig;
    static const char name[] = PROC_NAME, msg[] = ": time limit reached, killing children\n";
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0) kill(kids[i], SIGKILL);
    ssize_t w = write(2, name, sizeof name - 1);
    w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs TL_BIN with argv (argv[0] ignored) in the background, stdin from
 * /dev/null, stdout and stderr to log; remembers the child. */
static pid_t spawn(const char *log, const char *const *argv) {
    fflush(NULL);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        signal(SIGALRM, SIG_DFL);
        alarm(PROC_CHILD_ALARM_S);
        execv(TL_BIN, (char *const *)argv);
        _exit(127);
    }
    kids_add(p);
    return p;
}

/* Waits up to timeout_ms for p: its wait status, or -1 on timeout (p is then
 * killed and reaped). */
static int wait_status(pid_t p, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(p, &st, WNOHANG);
        if (r == p) {
            kids_forget(p);
            return st;
        }
        if (r < 0 && errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
        if (now_ms() > end) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            kids_forget(p);
            return -1;
        }
        sleep_ms(10);
    }
}

/* Exit code of a wait status; 1000+signal for a signal; -1 for a timeout. */
static int exit_code(int st) {
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 1000 + WTERMSIG(st);
    return 2000;
}

/* exit_code(wait_status(p, timeout_ms)). */
static int wait_exit(pid_t p, int timeout_ms) { return exit_code(wait_status(p, timeout_ms)); }

#endif
