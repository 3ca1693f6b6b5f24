/* cmd_run.c - placeholder until the subcommand lands; it refuses to run. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_run(int argc, char **argv) {
    fprintf(stderr, "tl run: not built yet\n");
    return 1;
}
