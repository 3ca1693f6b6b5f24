/*
 * cli.h - the subcommands of the `tl` program.
 *
 * Each subcommand lives in its own file src/cli/cmd_<name>.c, parses its
 * options with getopt_long and calls the library. Contract for every cmd_*:
 *  - `--help` prints the usage to stdout and returns 0;
 *  - a bad option or value (an unknown option, a missing value, a value out
 *    of range, a missing required option, a model spec that does not parse,
 *    a --cut the model does not have) prints exactly one line
 *    "tl <name>: <problem>" to stderr and returns 2;
 *  - an output path that cannot be written (missing directory, ...) is
 *    refused before any work with one line "tl <name>: --<opt>: <reason>"
 *    and 2 (outputs.h);
 *  - a runtime failure prints "tl <name>: <tl_errmsg()>" and returns 1;
 *  - success returns 0.
 */
#ifndef TL_CLI_H
#define TL_CLI_H

int cmd_train(int argc, char **argv);
int cmd_partition(int argc, char **argv);
int cmd_orchestrator(int argc, char **argv);
int cmd_node(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_provision(int argc, char **argv);
int cmd_compare(int argc, char **argv);

/* Prints the one line "tl <cmd>: <msg>" to stderr; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
