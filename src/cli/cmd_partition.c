/* cmd_partition.c - placeholder until the subcommand lands; it refuses to run. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_partition(int argc, char **argv) {
    fprintf(stderr, "tl partition: not built yet\n");
    return 1;
}
