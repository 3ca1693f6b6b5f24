/*
 * clilog.h - log lines of the long-running commands, on stderr:
 *   2026-11-28 19:04:05 orchestrator: node 2 joined from 127.0.0.1:50412 (...)
 * The tag says who speaks ("orchestrator", "node 2"). A progress bar on the
 * same terminal is cleared first so the two do not mix.
 */
#ifndef TL_CLI_CLILOG_H
#define TL_CLI_CLILOG_H

typedef struct cli_log {
    char tag[32];
    int quiet; /* only lines that report problems (heuristic: none); 1 = silent */
} cli_log;

/* A tl_log_fn (node.h): ud is a cli_log. */
void cli_log_line(void *ud, const char *msg);

#endif
