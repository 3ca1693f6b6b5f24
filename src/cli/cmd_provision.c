/* cmd_provision.c - placeholder until the subcommand lands; it refuses to run. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_provision(int argc, char **argv) {
    fprintf(stderr, "tl provision: not built yet\n");
    return 1;
}
