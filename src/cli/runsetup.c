/* runsetup.c - data, model and parameters for training commands. */
#include "cli/runsetup.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/outputs.h"
#include "tl/error.h"
#include "tl/gemm.h"
#include "tl/optim.h"
#include "tl/params.h"

#include "tl/norm.h"

static int fail(const char *cmd) {
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    return 1;
}

/* Loads the test set: --test-data if given (required), else data_dir's t10k
 * files if present (a note on stderr when absent). */
static int load_test(cli_run *r, const tl_runcfg *cfg, const char *cmd) {
    const char *dir = cfg->test_dir;
    if (cfg->test_fraction > 0) return 0; /* held out of the training rows later */
    if (!dir) {
        /* a CSV file or a NumPy directory without t10k/ is one data set */
        if (!cfg->data_dir || !tl_dataset_has_split(cfg->data_dir, "t10k")) {
            fprintf(stderr,
                    "tl %s: note: no t10k split in %s and no --test-data or "
                    "--test-fraction: not evaluating\n",
                    cmd, cfg->data_dir ? cfg->data_dir : "(none)");
            return 0;
        }
        dir = cfg->data_dir;
    }
    if (tl_dataset_open(dir, "t10k", &cfg->data_opts, &r->test) < 0) return fail(cmd);
    r->have_test = 1;
    return 0;
}

static int finish_setup(cli_run *r, const tl_runcfg *cfg, const char *cmd, int in_dim) {
    if (tl_model_parse(cfg->model, in_dim, &r->model) < 0) return fail(cmd);
    if (r->have_test && r->test.dim != (size_t)in_dim) {
        fprintf(stderr, "tl %s: the test images have %zu features, the training images %d\n", cmd,
                r->test.dim, in_dim);
        return 1;
    }
    r->params = calloc(r->model.n_params, sizeof(float));
    if (!r->params) {
        fprintf(stderr, "tl %s: out of memory for %zu parameters\n", cmd, r->model.n_params);
        return 1;
    }
    if (cfg->init_path) {
        if (tl_params_load(cfg->init_path, &r->model, r->params) < 0) return fail(cmd);
    } else {
        tl_model_init(&r->model, r->params, cfg->seed);
    }
    return 0;
}

typedef struct test_job {
    cli_run *r;
    const tl_runcfg *cfg;
    const char *cmd;
    int rc;
} test_job;

/* Loads the test set, then has the matrix-product kernels generated (the
 * backend compiles them on first use, ~40 ms here) while the training set is
 * still loading on the other thread. */
static void *load_test_job(void *arg) {
    test_job *j = arg;
    /* OpenMP's thread count is per thread: unset, this one would start a team
     * of one per core whose idle members spin against the training-set load */
    tl_gemm_set_threads(j->cfg->threads);
    j->rc = load_test(j->r, j->cfg, j->cmd);
    tl_model m;
    if (j->rc == 0 && j->r->have_test && !getenv("TL_NO_WARMUP") &&
        tl_model_parse(j->cfg->model, (int)j->r->test.dim, &m) == 0)
        tl_model_warmup(&m, j->cfg->batch_size);
    return NULL;
}

int cli_run_setup(cli_run *r, const tl_runcfg *cfg, const char *cmd, int with_train) {
    memset(r, 0, sizeof *r);
    tl_gemm_set_threads(cfg->threads);
    int rc = 1;
    /* the test set loads (and the kernels warm up) on a second thread while the
     * training set loads here */
    test_job job = {r, cfg, cmd, 1};
    pthread_t th;
    int threaded = pthread_create(&th, NULL, load_test_job, &job) == 0;
    if (!threaded) load_test_job(&job);
    if (with_train) {
        if (tl_dataset_open(cfg->data_dir, "train", &cfg->data_opts, &r->train) < 0) fail(cmd);
        else r->have_train = 1;
    }
    if (threaded) pthread_join(th, NULL);
    if (with_train && !r->have_train) goto out;
    if ((rc = job.rc) != 0) goto out;
    if (r->have_train && cfg->test_fraction > 0) {
        tl_dataset all = r->train;
        memset(&r->train, 0, sizeof r->train);
        int s = tl_dataset_split(&all, cfg->test_fraction, cfg->seed, &r->train, &r->test);
        tl_dataset_free(&all);
        if (s < 0) {
            r->have_train = 0;
            rc = fail(cmd);
            goto out;
        }
        r->have_test = 1;
    }
    if (r->have_train && r->have_test && r->train.class_names && r->test.class_names) {
        /* string labels: the test set must number the classes as training does */
        int same = r->train.classes == r->test.classes;
        for (int c = 0; same && c < r->train.classes; c++)
            same = !strcmp(r->train.class_names[c], r->test.class_names[c]);
        if (!same) {
            fprintf(stderr,
                    "tl %s: the test data's label names are not the training data's "
                    "(%d and %d classes): their class numbers would differ\n",
                    cmd, r->test.classes, r->train.classes);
            rc = 1;
            goto out;
        }
    }
    int in_dim = r->have_train ? (int)r->train.dim : r->have_test ? (int)r->test.dim : 0;
    rc = finish_setup(r, cfg, cmd, in_dim);
out:
    if (rc) cli_run_free(r);
    return rc;
}

int cli_run_setup_dim(cli_run *r, const tl_runcfg *cfg, const char *cmd, int in_dim) {
    memset(r, 0, sizeof *r);
    tl_gemm_set_threads(cfg->threads);
    int rc = load_test(r, cfg, cmd);
    if (rc == 0) {
        if (r->have_test) in_dim = (int)r->test.dim;
        if (in_dim <= 0) {
            fprintf(stderr, "tl %s: input width unknown (no test set)\n", cmd);
            rc = 1;
        } else {
            rc = finish_setup(r, cfg, cmd, in_dim);
        }
    }
    if (rc) cli_run_free(r);
    return rc;
}

/* Saves the model to --save; if that fails although the path was checked
 * before training (disk full, file size limit, directory removed), to a
 * fallback path, printed. 0 when saved where asked, else 1. */
static int save_or_fallback(const cli_run *r, const tl_runcfg *cfg, const tl_st_kv *meta,
                            int n_meta, const char *cmd) {
    if (tl_params_save(cfg->save_path, &r->model, r->params, NULL, 0, meta, n_meta) == 0) return 0;
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    char alt[4200];
    for (int i = 0; cli_fallback_path(i, alt, sizeof alt) == 0; i++) {
        if (tl_params_save(alt, &r->model, r->params, NULL, 0, meta, n_meta) == 0) {
            fprintf(stderr, "tl %s: the model is saved in %s instead of %s\n", cmd, alt,
                    cfg->save_path);
            return 1;
        }
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    }
    fprintf(stderr, "tl %s: the model could not be saved anywhere\n", cmd);
    return 1;
}

int cli_run_save(const cli_run *r, const tl_runcfg *cfg, const tl_epoch_report *last,
                 const char *cmd) {
    if (!cfg->save_path) return 0;
    char steps[32], acc[32], seed[32], epochs[32], bs[32];
    const tl_dataset *d = r->have_train ? &r->train : r->have_test ? &r->test : NULL;
    snprintf(steps, sizeof steps, "%lld", (long long)last->steps);
    snprintf(acc, sizeof acc, "%.6f", last->test_accuracy);
    snprintf(seed, sizeof seed, "%u", cfg->seed);
    snprintf(epochs, sizeof epochs, "%d", last->epoch);
    snprintf(bs, sizeof bs, "%d", cfg->batch_size);
    tl_norm norm;
    tl_runcfg_norm(cfg, &norm);
    tl_model_desc desc;
    if (tl_model_desc_init(&desc, &r->model, d, &norm) < 0) {
        fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
        return 1;
    }
    if (r->class_names) tl_model_desc_names(&desc, &r->model, r->class_names, r->n_class_names);
    tl_st_kv meta[] = {
        {"format", "pt"},       {"optimizer", tl_optim_name(cfg->optim.kind)},
        {"steps", steps},       {"epochs", epochs},
        {"batch_size", bs},     {"seed", seed},
        desc.meta[0],           desc.meta[1],
        desc.meta[2],           {"producer", "tl " TL_VERSION},
        {"test_accuracy", acc}, /* last: left out when there was no test set */
    };
    const int n_meta = (int)(sizeof meta / sizeof meta[0]) - (last->test_accuracy < 0);
    int rc = save_or_fallback(r, cfg, meta, n_meta, cmd);
    tl_model_desc_free(&desc);
    return rc;
}

int cli_run_standardize(cli_run *r, tl_runcfg *cfg, const char *cmd) {
    if (cfg->norm.kind != TL_NORM_FEATURE || cfg->norm.dim) return 0;
    if (!r->have_train) {
        fprintf(stderr, "tl %s: --normalize standardize needs the training rows\n", cmd);
        return 1;
    }
    tl_norm_stats st;
    int rc = tl_norm_stats_init(&st, r->train.dim);
    if (rc == 0) rc = tl_norm_stats_add(&st, &r->train, NULL, r->train.n);
    if (rc == 0) rc = tl_norm_finish(&st, &r->norm);
    tl_norm_stats_free(&st);
    if (rc < 0) return fail(cmd);
    cfg->norm = r->norm; /* borrowed */
    return 0;
}

void cli_run_free(cli_run *r) {
    tl_norm_free(&r->norm);
    tl_dataset_free(&r->train);
    tl_dataset_free(&r->test);
    free(r->params);
    memset(r, 0, sizeof *r);
}
