/* cmd_partition.c - `tl partition`: split one data set into per-node data sets
 * (OUT/node-1 .. OUT/node-N, each an MNIST-layout directory), see partition.h. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/outputs.h"
#include "cli/trainopts.h"
#include "tl/config.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/partition.h"

#define MAX_NODES 10000

static void usage(void) {
    printf("usage: tl partition --nodes N --out DIR [options]\n"
           "\n"
           "Splits a data set among N nodes and writes each node's share as its own\n"
           "directory, DIR/node-1 .. DIR/node-N (for 'tl node --data DIR/node-K'):\n"
           "MNIST-layout, <split>-images-idx3-ubyte.gz and <split>-labels-idx1-ubyte.gz,\n"
           "for one-channel byte images; NumPy, x.npy and y.npy, for other data (CSV\n"
           "tables: float32 features). Within a node, samples keep their original\n"
           "order. Prints each node's sample count per class.\n"
           "\n"
           "options:\n"
           "  --data PATH           what to split: an MNIST-layout directory, a CSV file\n"
           "                        (--label, --header) or a NumPy directory\n"
           "                        [" TL_DEFAULT_DATA "]\n" CLI_CSV_HELP
           "  --split SPLIT         which of its splits to split and write: train or t10k\n"
           "                        [train]\n"
           "  --nodes N             number of nodes, 1..%d (and at most the sample count)\n"
           "  --scheme SCHEME       contiguous: consecutive blocks, the reference's split;\n"
           "                        iid: a seeded shuffle dealt in blocks;\n"
           "                        label: sorted by label, so each node sees few classes;\n"
           "                        dirichlet:ALPHA: per-class shares ~ Dirichlet(ALPHA),\n"
           "                        ALPHA > 0 (small: strong skew) [contiguous]\n"
           "  --seed N              seed of iid and dirichlet, 0..4294967295 [1]\n"
           "  --out DIR             where the node-K directories go (created if missing);\n"
           "                        an existing DIR/node-K must be empty\n"
           "  --test-fraction F     also hold out a share F of each node's rows, 0 < F < 1\n"
           "                        (tl_dataset_split: stratified by class, seeded with\n"
           "                        --seed), written as the node's t10k split (IDX files,\n"
           "                        or t10k/x.npy and t10k/y.npy for other data), which\n"
           "                        'tl node --data DIR/node-K' evaluates on by default\n"
           "                        (tl train --data DIR: their union); the table\n"
           "                        counts each node's rows before this split, a last line\n"
           "                        its held-out rows\n"
           "  --force               write into existing non-empty DIR/node-K, replacing\n"
           "                        their <split>-* files (other files are left alone)\n"
           "  -h, --help            this text\n",
           MAX_NODES);
}

/* Path "out/node-k" in a malloc'd string (NULL on OOM). */
static char *node_dir(const char *out, long k) {
    size_t len = strlen(out) + 32;
    char *p = malloc(len);
    if (p) snprintf(p, len, "%s/node-%ld", out, k);
    return p;
}

/* 0 if dir is missing or an empty directory; else TL_EIO with a message
 * (exists and holds files, is not a directory, cannot be read). */
static int check_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        if (errno == ENOTDIR) return tl_error(TL_EIO, "%s exists and is not a directory", dir);
        return tl_error(TL_EIO, "%s: cannot open: %s", dir, strerror(errno));
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            rc = tl_error(TL_EIO, "%s is not empty (use --force to write into it)", dir);
            break;
        }
    }
    closedir(d);
    return rc;
}

/* Number of decimal digits of v (at least 1). */
static int digits(size_t v) {
    int n = 1;
    while (v >= 10) v /= 10, n++;
    return n;
}

/* Prints one row per node: id, total, then the count of each class. cc is
 * (nodes, classes) as tl_partition_class_counts fills it. */
static void print_table(const size_t *counts, const size_t *cc, long nodes, int classes) {
    size_t most = 0;
    for (long i = 0; i < nodes; i++)
        if (counts[i] > most) most = counts[i];
    int w = digits(most) > 5 ? digits(most) : 5;
    int wn = digits((size_t)nodes) > 4 ? digits((size_t)nodes) : 4;
    printf("%*s %*s", wn, "node", w, "total");
    for (int c = 0; c < classes; c++) printf(" %*d", w, c);
    printf("\n");
    for (long i = 0; i < nodes; i++) {
        printf("%*ld %*zu", wn, i + 1, w, counts[i]);
        for (int c = 0; c < classes; c++) printf(" %*zu", w, cc[i * classes + c]);
        printf("\n");
    }
}

int cmd_partition(int argc, char **argv) {
    enum { OPT_NODES = OPT_CMD_BASE, OPT_SCHEME, OPT_OUT, OPT_SPLIT, OPT_FORCE };
    double fraction = 0;
    static const struct option longopts[] = {
        {"data", required_argument, 0, OPT_DATA},
        {"seed", required_argument, 0, OPT_SEED},
        {"nodes", required_argument, 0, OPT_NODES},
        {"scheme", required_argument, 0, OPT_SCHEME},
        {"out", required_argument, 0, OPT_OUT},
        {"split", required_argument, 0, OPT_SPLIT},
        {"force", no_argument, 0, OPT_FORCE},
        {"test-fraction", required_argument, 0, OPT_TEST_FRACTION},
        {"label", required_argument, 0, OPT_LABEL},
        {"header", required_argument, 0, OPT_HEADER},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "partition";
    const char *data = TL_DEFAULT_DATA, *scheme = "contiguous", *out = NULL, *split = "train";
    tl_dataset_opts dopts = {0};
    long nodes = 0, seed = 1;
    int force = 0, c;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA: data = optarg; break;
        case OPT_SEED:
            if (cli_parse_long(cmd, "seed", optarg, 0, 4294967295L, &seed)) return 2;
            break;
        case OPT_NODES:
            if (cli_parse_long(cmd, "nodes", optarg, 1, MAX_NODES, &nodes)) return 2;
            break;
        case OPT_SCHEME: scheme = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_SPLIT:
            if (strcmp(optarg, "train") && strcmp(optarg, "t10k"))
                return cli_usage_error(cmd, "--split: '%s' is not train or t10k", optarg);
            split = optarg;
            break;
        case OPT_FORCE: force = 1; break;
        case OPT_TEST_FRACTION:
            if (cli_parse_double(cmd, "test-fraction", optarg, 0, 0.99, &fraction)) return 2;
            if (!(fraction > 0)) return cli_usage_error(cmd, "--test-fraction: must be above 0");
            break;
        case OPT_LABEL:
        case OPT_HEADER:
            if (cli_dataopts_parse(&dopts, c, optarg, cmd) == 2) return 2;
            break;
        case 'h': usage(); return 0;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (tl_partition_check_scheme(scheme) < 0)
        return cli_usage_error(cmd, "--scheme: %s", tl_errmsg());
    if (!nodes) return cli_usage_error(cmd, "--nodes N is required");
    if (!out) return cli_usage_error(cmd, "--out DIR is required");
    if (fraction > 0 && strcmp(split, "train"))
        return cli_usage_error(cmd, "--test-fraction holds rows out of --split train only");
    if (cli_check_out_dir(cmd, "out", out)) return 2;

    tl_dataset d = {0}, sub = {0}, tr = {0}, te = {0};
    size_t *rows = NULL, *counts = NULL, *cc = NULL, *test_counts = NULL;
    char *dir = NULL;
    int rc = 1;
    /* Refuse before doing any work, so that nothing is half written. */
    for (long k = 1; k <= nodes && !force; k++) {
        if (!(dir = node_dir(out, k))) goto oom;
        int bad = check_empty(dir) < 0;
        free(dir);
        dir = NULL;
        if (bad) goto fail;
    }
    if (tl_dataset_open(data, split, &dopts, &d) < 0) goto fail;
    if ((size_t)nodes > d.n) {
        rc = cli_usage_error(
            cmd, "--nodes: %ld nodes for %zu samples (each node needs at least one)", nodes, d.n);
        goto cleanup;
    }
    counts = malloc((size_t)nodes * sizeof *counts);
    cc = malloc((size_t)nodes * (size_t)d.classes * sizeof *cc);
    test_counts = calloc((size_t)nodes, sizeof *test_counts);
    if (!counts || !cc || !test_counts) goto oom;
    if (tl_partition(&d, (int)nodes, scheme, (uint32_t)seed, &rows, counts) < 0) goto fail;
    size_t off = 0;
    for (long k = 1; k <= nodes; k++) {
        if (!(dir = node_dir(out, k))) goto oom;
        if (tl_dataset_subset(&d, rows + off, counts[k - 1], &sub) < 0) goto fail;
        if (fraction > 0) {
            /* the node's own rows, split as a node splits them: train + t10k */
            if (tl_dataset_split(&sub, fraction, (uint32_t)seed, &tr, &te) < 0) goto fail;
            if (tl_dataset_save(dir, split, &tr) < 0) goto fail;
            if (tl_dataset_save(dir, "t10k", &te) < 0) goto fail;
            test_counts[k - 1] = te.n;
            tl_dataset_free(&tr);
            tl_dataset_free(&te);
        } else if (tl_dataset_save(dir, split, &sub) < 0) {
            goto fail;
        }
        tl_dataset_free(&sub);
        free(dir);
        dir = NULL;
        off += counts[k - 1];
    }
    tl_partition_class_counts(&d, (int)nodes, rows, counts, cc);
    printf("%s: %zu %s samples, scheme %s", data, d.n, split, scheme);
    if (strcmp(scheme, "contiguous") && strcmp(scheme, "label")) printf(", seed %ld", seed);
    printf(", %ld nodes written to %s/node-1 .. node-%ld\n", nodes, out, nodes);
    print_table(counts, cc, nodes, d.classes);
    if (fraction > 0) {
        printf("held out (--test-fraction %g, seed %ld), as each node's t10k split:", fraction,
               seed);
        for (long k = 0; k < nodes; k++) printf(" %zu", test_counts[k]);
        printf("\n");
    }
    rc = 0;
    if (fflush(stdout) != 0) {
        fprintf(stderr, "tl %s: cannot write the table: %s\n", cmd, strerror(errno));
        rc = 1;
    }
    goto cleanup;
oom:
    tl_error(TL_ENOMEM, "out of memory");
fail:
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
cleanup:
    tl_dataset_free(&sub);
    tl_dataset_free(&tr);
    tl_dataset_free(&te);
    tl_dataset_free(&d);
    free(test_counts);
    free(rows);
    free(counts);
    free(cc);
    free(dir);
    return rc;
}
