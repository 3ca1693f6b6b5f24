/* cmd_orchestrator.c - `tl orchestrator`: coordinate a run over N nodes. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/orchopts.h"
#include "cli/outputs.h"
#include "cli/trainopts.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/net.h"

enum { OPT_LISTEN = OPT_CMD_BASE, OPT_PORT_FILE };

#define DEFAULT_LISTEN "127.0.0.1:7000" /* --listen */

static const struct option own_longopts[] = {
    {"listen", required_argument, 0, OPT_LISTEN},
    {"port-file", required_argument, 0, OPT_PORT_FILE},
    {0, 0, 0, 0},
};

static void usage(void) {
    printf("usage: tl orchestrator --nodes N (--tls-dir DIR | --insecure) [options]\n\n"
           "Coordinates a Traversal Learning run: waits for nodes 1..N to connect, then\n"
           "trains on their data without seeing it, with the result of centralized\n"
           "training on the pooled data. The orchestrator holds only the test set.\n\n"
           "  --listen HOST:PORT    address to listen on; port 0 picks a free one\n"
           "                        [" DEFAULT_LISTEN "; 0.0.0.0:PORT for other machines;\n"
           "                        unix:PATH for nodes on this machine only]\n"
           "  --port-file FILE      write the port listened on into FILE\n"
           "  --test-data DIR       MNIST-layout directory with the t10k-* files\n"
           "                        [" TL_DEFAULT_DATA "]\n\n"
           "%s%s\n%s\n"
           "  -h, --help            this text\n",
           cli_orch_help, cli_orch_security_help, cli_train_help);
}

typedef struct listen_ctx {
    const char *listen, *port_file;
} listen_ctx;

static int own_option(void *ud, int key, const char *arg) {
    listen_ctx *l = ud;
    if (key == OPT_LISTEN) l->listen = arg;
    else l->port_file = arg;
    return 0;
}

/* Writes the port into --port-file, atomically (file.h): a reader sees the
 * whole number or no file. */
static int write_port(void *ud, int port) {
    listen_ctx *l = ud;
    if (!l->port_file) return 0;
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", port);
    if (tl_file_write_atomic(l->port_file, line, (size_t)n, 0644, TL_FILE_NOSYNC) < 0) {
        fprintf(stderr, "tl orchestrator: cannot write the port: %s\n", tl_errmsg());
        return 1;
    }
    return 0;
}

int cmd_orchestrator(int argc, char **argv) {
    const char *cmd = "orchestrator";
    cli_trainopts t;
    cli_orchopts oo;
    cli_trainopts_init(&t);
    cli_orchopts_init(&oo);
    listen_ctx lc = {DEFAULT_LISTEN, NULL};
    int rc = cli_parse_options(argc, argv, cmd, &t, &oo, own_longopts, own_option, &lc, usage);
    if (rc >= 0) return rc;
    if (!oo.nodes) return cli_usage_error(cmd, "--nodes N is required");
    if (t.data_given)
        return cli_usage_error(cmd, "the orchestrator holds no training data; --data is for "
                                    "nodes (use --test-data for the evaluation set)");
    if (!oo.tls_dir == !oo.insecure)
        return cli_usage_error(cmd, oo.insecure ? "--tls-dir and --insecure exclude each other"
                                                : "TLS is the default: give --tls-dir DIR (see "
                                                  "'tl provision') or --insecure");
    char host[512];
    int port;
    if (tl_net_parse_addr(lc.listen, host, sizeof host, &port) < 0)
        return cli_usage_error(cmd, "--listen: '%s' (want HOST:PORT or unix:PATH)", lc.listen);
    if (cli_trainopts_finish(&t, cmd) || cli_orchopts_finish(&oo, &t, cmd)) return 2;
    if (cli_check_output(cmd, "port-file", lc.port_file)) return 2;
    return cli_orchestrate(&t, &oo, host, port, cmd, write_port, &lc);
}
