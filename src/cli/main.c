/* main.c - the `tl` program: a table of subcommands. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"train", cmd_train, "centralized training on one data set (the baseline)"},
    {"partition", cmd_partition, "split a data set into per-node data sets"},
    {"orchestrator", cmd_orchestrator, "coordinate a Traversal Learning run over nodes"},
    {"node", cmd_node, "serve one node's private data to an orchestrator"},
    {"run", cmd_run, "partition, start an orchestrator and N nodes locally, train"},
    {"provision", cmd_provision, "create a CA and TLS kits for an orchestrator and nodes"},
    {"compare", cmd_compare, "how far apart two parameter files are (max|A-B|/max|A|)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: tl <command> [options]\n\n"
               "Traversal Learning: train one model over data that stays on its nodes,\n"
               "with exactly the result of centralized training on the pooled data.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'tl <command> --help' describes a command's options.\n"
               "'tl --version' prints the version.\n");
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "tl %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* one line: the help is one 'tl CMD --help' away (README, cli.h) */
    fputc('\n', stderr);
    return 2;
}

int main(int argc, char **argv) {
    /* A closed pipe or socket is an error return (EPIPE), never a kill: `tl ...
     * | head` must not lose a run, and a peer that goes away is handled where
     * it is written to. Inherited by the processes tl run starts. */
    signal(SIGPIPE, SIG_IGN);
    /* likewise a file size limit: write fails with EFBIG, which is reported */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("tl %s\n", TL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tl: unknown command '%s' (see 'tl --help')\n", argv[1]);
    return 2;
}
