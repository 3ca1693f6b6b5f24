/* cmd_eval.c - `tl eval`: evaluates a saved model on any supported data set. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/outputs.h"
#include "cli/trainopts.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/evalstats.h"
#include "tl/gemm.h"
#include "tl/model.h"
#include "tl/norm.h"
#include "tl/params.h"
#include "tl/safetensors.h"
#include "tl/trainer.h"

static void usage(void) {
    printf("usage: tl eval --model FILE [options]\n\n"
           "Evaluates a model saved by 'tl train --save' or 'tl run --save' on a data set,\n"
           "with the model's own normalization (its \"normalize\" metadata), and prints\n"
           "the figures of an epoch line (loss, accuracy, macro-F1, AUC with its bound)\n"
           "and the confusion matrix (rows: true class, columns: predicted).\n\n"
           "options:\n"
           "  --model FILE          the saved model (.safetensors with tl's metadata)\n"
           "  --data PATH           MNIST-layout directory (its t10k split), CSV file or\n"
           "                        NumPy directory (all its rows) [" TL_DEFAULT_DATA
           "]\n" CLI_CSV_HELP
           "  --test-fraction F     evaluate only the rows 'tl train --test-fraction F\n"
           "                        --seed N' holds out of PATH's training rows\n"
           "  --seed N              the seed of that split [1]\n"
           "  --metrics FILE        also write the figures as one JSON line\n"
           "  --threads N           threads for matrix products [1]\n"
           "  -h, --help            this text\n");
}

static int fail(const char *cmd) {
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    return 1;
}

/* Parses n float values separated by ';' from s (up to end) into v. */
static int parse_floats(const char *s, const char *end, float *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char *e;
        errno = 0;
        double d = strtod(s, &e);
        if (e == s || errno || !isfinite(d)) return -1;
        v[i] = (float)d;
        s = e;
        if (i + 1 < n) {
            if (*s != ';') return -1;
            s++;
        }
    }
    return s == end ? 0 : -1;
}

/* Parses the "normalize" metadata cli_run_save writes ("scale=S,none",
 * "scale=S,mean=M,std=D", "scale=S,mean=m0;m1;..,std=s0;s1;..") into *nm for
 * data d: the scale must be d's (1/255 for bytes, 1 for floats) and a
 * per-feature descriptor must have d's width. TL_EFORMAT otherwise. */
static int parse_norm(const char *s, const tl_dataset *d, tl_norm *nm) {
    memset(nm, 0, sizeof *nm);
    const char *want = d->dtype == TL_ELEM_F32 ? "scale=1," : "scale=1/255,";
    if (strncmp(s, "scale=", 6))
        return tl_error(TL_EFORMAT, "the model's normalize metadata '%.40s' has no scale", s);
    if (strncmp(s, want, strlen(want)))
        return tl_error(TL_EFORMAT, "the model was trained on %s data, this data is %s",
                        d->dtype == TL_ELEM_F32 ? "byte" : "float",
                        d->dtype == TL_ELEM_F32 ? "float" : "byte");
    s += strlen(want);
    if (!strcmp(s, "none")) return 0;
    const char *st = strstr(s, ",std=");
    if (strncmp(s, "mean=", 5) || !st)
        return tl_error(TL_EFORMAT, "the model's normalize metadata does not parse");
    s += 5;
    size_t n = 1;
    for (const char *p = s; p < st; p++) n += *p == ';';
    if (n == 1 && !strchr(st, ';')) {
        float m, sd;
        if (parse_floats(s, st, &m, 1) || parse_floats(st + 5, st + strlen(st), &sd, 1) ||
            !(sd > 0))
            return tl_error(TL_EFORMAT, "the model's normalize metadata does not parse");
        nm->kind = TL_NORM_SCALAR;
        nm->mean = m;
        nm->std = sd;
        return 0;
    }
    if (n != d->dim)
        return tl_error(TL_EFORMAT, "the model normalizes %zu features, the data has %zu", n,
                        d->dim);
    nm->kind = TL_NORM_FEATURE;
    nm->dim = n;
    nm->mean_f = malloc(n * sizeof(float));
    nm->std_f = malloc(n * sizeof(float));
    if (!nm->mean_f || !nm->std_f) {
        tl_norm_free(nm);
        return tl_error(TL_ENOMEM, "out of memory");
    }
    if (parse_floats(s, st, nm->mean_f, n) || parse_floats(st + 5, st + strlen(st), nm->std_f, n)) {
        tl_norm_free(nm);
        return tl_error(TL_EFORMAT, "the model's normalize metadata does not parse");
    }
    for (size_t f = 0; f < n; f++)
        if (!(nm->std_f[f] > 0)) {
            tl_norm_free(nm);
            return tl_error(TL_EFORMAT, "the model's normalize metadata has std <= 0");
        }
    return 0;
}

/* Checks the data's class names (string labels) against the model's "classes"
 * metadata, so that class numbers mean the same. */
static int check_names(const tl_dataset *d, const char *classes) {
    if (!d->class_names) return 0;
    const char *p = classes ? classes : "";
    for (int c = 0; c < d->classes; c++) {
        size_t len = strlen(d->class_names[c]);
        if (strncmp(p, d->class_names[c], len) || (p[len] != ',' && p[len] != 0))
            return tl_error(TL_EFORMAT,
                            "the data's label '%s' is not the model's class %d "
                            "(the model's classes: %.200s)",
                            d->class_names[c], c, classes ? classes : "none recorded");
        p += len + (p[len] == ',');
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    enum { OPT_MODEL = OPT_CMD_BASE, OPT_METRICS };
    static const struct option longopts[] = {
        {"model", required_argument, 0, OPT_MODEL},
        {"data", required_argument, 0, OPT_DATA},
        {"label", required_argument, 0, OPT_LABEL},
        {"header", required_argument, 0, OPT_HEADER},
        {"test-fraction", required_argument, 0, OPT_TEST_FRACTION},
        {"seed", required_argument, 0, OPT_SEED},
        {"metrics", required_argument, 0, OPT_METRICS},
        {"threads", required_argument, 0, OPT_THREADS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "eval";
    const char *model_path = NULL, *data = TL_DEFAULT_DATA, *metrics = NULL;
    tl_dataset_opts dopts = {0};
    double fraction = 0;
    long seed = 1, threads = 1;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL: model_path = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_LABEL:
        case OPT_HEADER:
            if (cli_dataopts_parse(&dopts, c, optarg, cmd) == 2) return 2;
            break;
        case OPT_TEST_FRACTION:
            if (cli_parse_double(cmd, "test-fraction", optarg, 0, 0.99, &fraction)) return 2;
            break;
        case OPT_SEED:
            if (cli_parse_long(cmd, "seed", optarg, 0, 4294967295L, &seed)) return 2;
            break;
        case OPT_METRICS: metrics = optarg; break;
        case OPT_THREADS:
            if (cli_parse_long(cmd, "threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case 'h': usage(); return 0;
        case ':': return cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!model_path) return cli_usage_error(cmd, "--model FILE is required");
    if (cli_check_output(cmd, "metrics", metrics)) return 2;
    tl_gemm_set_threads((int)threads);

    int rc = 1;
    tl_st *st = NULL;
    tl_model m;
    float *params = NULL;
    tl_dataset all = {0}, d = {0}, rest = {0};
    tl_norm nm = {0};
    tl_evalstats sums = {0};
    tl_eval_metrics em = {0};
    char *json = NULL;
    size_t jlen = 0, jcap = 0;

    if (tl_st_read(model_path, &st) < 0) goto fail;
    const char *spec = tl_st_meta(st, "model"), *norm = tl_st_meta(st, "normalize");
    if (!spec || !norm) {
        fprintf(stderr,
                "tl %s: %s has no \"%s\" metadata: save the model with 'tl train "
                "--save' or 'tl run --save'\n",
                cmd, model_path, spec ? "normalize" : "model");
        goto cleanup;
    }
    /* the data: a held-out share of its training rows, or its test split */
    if (fraction > 0) {
        if (tl_dataset_open(data, "train", &dopts, &all) < 0) goto fail;
        if (tl_dataset_split(&all, fraction, (uint32_t)seed, &rest, &d) < 0) goto fail;
    } else {
        const char *split = tl_dataset_has_split(data, "t10k") ? "t10k" : "train";
        if (tl_dataset_open(data, split, &dopts, &d) < 0) goto fail;
    }
    if (d.dim > (size_t)1 << 30) {
        tl_error(TL_ERANGE, "%s: %zu features", data, d.dim);
        goto fail;
    }
    if (tl_model_parse(spec, (int)d.dim, &m) < 0) goto fail;
    /* refuse a model that does not fit the data before computing anything */
    const char *shape = tl_st_meta(st, "input_shape");
    if (shape) {
        size_t want = 1;
        const char *p = shape;
        while (*p) {
            char *e;
            unsigned long v = strtoul(p, &e, 10);
            if (e == p) break;
            want *= v;
            p = *e == ',' ? e + 1 : e;
            if (e == p) break;
        }
        if (want != d.dim) {
            fprintf(stderr,
                    "tl %s: the model takes %zu inputs (input_shape %s), the data has %zu "
                    "features\n",
                    cmd, want, shape, d.dim);
            goto cleanup;
        }
    }
    if (d.classes > m.n_classes) {
        fprintf(stderr, "tl %s: the model has %d outputs, the data has %d classes\n", cmd,
                m.n_classes, d.classes);
        goto cleanup;
    }
    if (check_names(&d, tl_st_meta(st, "classes")) < 0) goto fail;
    if (parse_norm(norm, &d, &nm) < 0) goto fail;
    if (!(params = calloc(m.n_params, sizeof(float)))) {
        tl_error(TL_ENOMEM, "out of memory for %zu parameters", m.n_params);
        goto fail;
    }
    if (tl_params_from_st(st, model_path, &m, params) < 0) goto fail;
    if (tl_evalstats_init(&sums, m.n_classes, TL_EVAL_BINS) < 0) goto fail;
    if (tl_evaluate_sums(&m, params, &d, &nm, &sums) < 0) goto fail;
    if (tl_eval_metrics_compute(&sums, &em) < 0) goto fail;

    /* the figures as the epoch line prints them (progress.c) */
    printf("%s: %llu rows: test loss %.4f, test accuracy %.2f%%, macro-F1 %.4f", data,
           (unsigned long long)sums.n, em.loss, 100.0 * em.accuracy, em.macro_f1);
    if (!isnan(em.auc)) printf(", AUC %.4f (+-%.1e)", em.auc, em.auc_bound);
    printf("\nconfusion (rows: true class, columns: predicted):\n");
    for (int t = 0; t < sums.classes; t++) {
        for (int p = 0; p < sums.classes; p++)
            printf("%s%llu", p ? " " : "",
                   (unsigned long long)sums.confusion[t * sums.classes + p]);
        printf("\n");
    }
    if (fflush(stdout) != 0) {
        tl_error(TL_EIO, "cannot write the figures: %s", strerror(errno));
        goto fail;
    }
    if (metrics) {
        if (tl_eval_json(&sums, &em, "test_", &json, &jlen, &jcap) < 0) goto fail;
        FILE *f = fopen(metrics, "w");
        if (!f) {
            tl_error(TL_EIO, "%s: %s", metrics, strerror(errno));
            goto fail;
        }
        int bad = fprintf(f, "{\"event\":\"eval\",%s}\n", json) < 0;
        bad |= fclose(f) != 0;
        if (bad) {
            tl_error(TL_EIO, "%s: cannot write", metrics);
            goto fail;
        }
    }
    rc = 0;
    goto cleanup;
fail:
    rc = fail(cmd);
cleanup:
    free(json);
    tl_eval_metrics_free(&em);
    tl_evalstats_free(&sums);
    tl_norm_free(&nm);
    free(params);
    tl_dataset_free(&d);
    tl_dataset_free(&rest);
    tl_dataset_free(&all);
    tl_st_free(st);
    return rc;
}
