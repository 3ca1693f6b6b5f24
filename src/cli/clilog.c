/* clilog.c - timestamped log lines on stderr. */
#include "cli/clilog.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

void cli_log_line(void *ud, const char *msg) {
    const cli_log *l = ud;
    if (l->quiet) return;
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s%s %s: %s\n", isatty(STDERR_FILENO) ? "\r\033[K" : "", when, l->tag, msg);
}
