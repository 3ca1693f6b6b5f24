/* cmd_orchestrator.c - placeholder until the subcommand lands; it refuses to run. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_orchestrator(int argc, char **argv) {
    fprintf(stderr, "tl orchestrator: not built yet\n");
    return 1;
}
