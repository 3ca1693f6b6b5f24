/* cmd_compare.c - `tl compare`: how far apart two parameter files are. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/trainopts.h"
#include "tl/error.h"
#include "tl/safetensors.h"

static void usage(void) {
    printf("usage: tl compare A.safetensors B.safetensors [--tolerance X]\n\n"
           "Compares the F32 tensors two files share (same names and shapes required):\n"
           "prints the largest absolute difference, the largest value of A, their ratio\n"
           "max|A-B| / max|A| (docs/design.md §2, the exactness measure), and whether\n"
           "the files are bit-identical. With --tolerance, exits 1 if the ratio exceeds X.\n\n"
           "What to expect between `tl train` and `tl run --privacy open` from the same\n"
           "seed or --init (sealed runs, the default: give both the same --init; they add\n"
           "fixed-point rounding, about 1e-6 after 10 steps):\n"
           "  1 node: bit-identical, however long the run.\n"
           "  N nodes, after 10 steps: about 3e-7 (the promise is <= 1e-5): node-sized\n"
           "    matrix products round differently from batch-sized ones in the last bits.\n"
           "  N nodes, after a whole epoch: about 0.3 for a ReLU model, and test accuracy\n"
           "    up to ~2 points apart. That is not a logic error: training amplifies the\n"
           "    last-bit differences, exactly as `tl train --threads 2` against --threads 1\n"
           "    does (0.29 and 0.15 points here). Compare after a few steps to check\n"
           "    exactness; compare accuracies over seeds to compare outcomes.\n"
           "For a partition other than contiguous, give `tl train --data` the partition\n"
           "directory: it trains on the nodes' data in node order, the run's exact order.\n\n"
           "  --tolerance X         fail above this relative difference\n"
           "  -h, --help            this text\n");
}

int cmd_compare(int argc, char **argv) {
    const char *cmd = "compare";
    static const struct option longopts[] = {
        {"tolerance", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    double tol = -1;
    int c;
    optind = 1;
    opterr = 0; /* our own one-line messages */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 't') {
            if (cli_parse_double(cmd, "tolerance", optarg, 0, 1e30, &tol)) return 2;
        } else if (c == 'h') {
            usage();
            return 0;
        } else if (c == ':') {
            return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        } else {
            return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 2) return cli_usage_error(cmd, "want two files");
    tl_st *a = NULL, *b = NULL;
    int rc = 1;
    if (tl_st_read(argv[optind], &a) < 0 || tl_st_read(argv[optind + 1], &b) < 0) {
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
        goto out;
    }
    double num = 0, den = 0;
    size_t compared = 0, differing = 0;
    for (int i = 0; i < tl_st_count(a); i++) {
        const tl_st_tensor *ta = tl_st_get(a, i), *tb = tl_st_find(b, ta->name);
        if (ta->dtype != TL_ST_F32) continue;
        if (!tb || tb->dtype != TL_ST_F32 || tb->rank != ta->rank ||
            memcmp(tb->shape, ta->shape, sizeof(int64_t) * ta->rank) != 0) {
            fprintf(stderr, "tl %s: tensor '%s' is missing from %s or has another shape\n", cmd,
                    ta->name, argv[optind + 1]);
            goto out;
        }
        const float *x = ta->data, *y = tb->data;
        size_t n = tl_st_numel(ta);
        for (size_t j = 0; j < n; j++) {
            num = fmax(num, fabs((double)x[j] - y[j]));
            den = fmax(den, fabs((double)x[j]));
        }
        differing += memcmp(x, y, n * sizeof(float)) != 0;
        compared++;
    }
    if (!compared) {
        fprintf(stderr, "tl %s: no F32 tensors to compare\n", cmd);
        goto out;
    }
    double rel = den > 0 ? num / den : num;
    printf("tensors %zu, differing %zu, max|A-B| %.6g, max|A| %.6g, relative %.6g%s\n", compared,
           differing, num, den, rel, differing ? "" : " (bit-identical)");
    rc = tol >= 0 && rel > tol ? 1 : 0;
out:
    tl_st_free(a);
    tl_st_free(b);
    return rc;
}
