/* cmd_node.c - placeholder until the subcommand lands; it refuses to run. */
#include <stdio.h>

#include "cli/cli.h"

int cmd_node(int argc, char **argv) {
    fprintf(stderr, "tl node: not built yet\n");
    return 1;
}
