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

/* Does dir hold split's image file, raw or gzipped? */
static int split_present(const char *dir, const char *split) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", dir, split);
    if (access(path, F_OK) == 0) return 1;
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, split);
    return access(path, F_OK) == 0;
}

static int fail(const char *cmd) {
    fprintf(stderr, "tl %s: %s\n", cmd, tl_errmsg());
    return 1;
}

/* Loads the test set: --test-data if given (required), else data_dir's t10k
 * files if present (a note on stderr when absent). */
static int load_test(cli_run *r, const tl_runcfg *cfg, const char *cmd) {
    const char *dir = cfg->test_dir;
    if (!dir) {
        if (!cfg->data_dir || !split_present(cfg->data_dir, "t10k")) {
            fprintf(stderr, "tl %s: note: no t10k-* files in %s and no --test-data: not evaluating\n",
                    cmd, cfg->data_dir ? cfg->data_dir : "(none)");
            return 0;
        }
        dir = cfg->data_dir;
    }
    if (tl_dataset_load(dir, "t10k", &r->test) < 0) return fail(cmd);
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
        if (tl_dataset_load(cfg->data_dir, "train", &r->train) < 0) fail(cmd);
        else r->have_train = 1;
    }
    if (threaded) pthread_join(th, NULL);
    if (with_train && !r->have_train) goto out;
    if ((rc = job.rc) != 0) goto out;
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

/* The input shape of d as "C,H,W" or "FEATURES" (dataset.h's sample shape). */
static void shape_str(const tl_dataset *d, int in_dim, char *out, size_t len) {
    if (!d) snprintf(out, len, "%d", in_dim);
    else if (d->rank == 1) snprintf(out, len, "%zu", d->dim);
    else if (d->rank == 3) snprintf(out, len, "%u,%u,%u", d->shape[0], d->shape[1], d->shape[2]);
    else snprintf(out, len, "1,%u,%u", d->rows, d->cols);
}

/* The class names, comma-separated: the data's names (CSV label column) or
 * the label numbers 0..classes-1 (IDX and NumPy files carry no names). */
static void classes_str(const tl_dataset *d, int classes, char *out, size_t len) {
    size_t used = 0;
    out[0] = 0;
    for (int c = 0; c < classes && used < len; c++) {
        int w = d && d->class_names && c < d->classes
                    ? snprintf(out + used, len - used, "%s%s", c ? "," : "", d->class_names[c])
                    : snprintf(out + used, len - used, "%s%d", c ? "," : "", c);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int cli_run_save(const cli_run *r, const tl_runcfg *cfg, const tl_epoch_report *last,
                 const char *cmd) {
    if (!cfg->save_path) return 0;
    char steps[32], acc[32], seed[32], epochs[32], bs[32], norm[96], shape[64], classes[4096];
    const tl_dataset *d = r->have_train ? &r->train : r->have_test ? &r->test : NULL;
    snprintf(steps, sizeof steps, "%lld", (long long)last->steps);
    snprintf(acc, sizeof acc, "%.6f", last->test_accuracy);
    snprintf(seed, sizeof seed, "%u", cfg->seed);
    snprintf(epochs, sizeof epochs, "%d", last->epoch);
    snprintf(bs, sizeof bs, "%d", cfg->batch_size);
    /* x = (x_raw * scale - mean) / std, x_raw the stored values (bytes for
     * images, floats for tables and arrays) */
    snprintf(norm, sizeof norm, "scale=%s,mean=%.7g,std=%.7g",
             d && d->dtype == TL_ELEM_F32 ? "1" : "1/255", cfg->mean, cfg->std);
    shape_str(d, r->model.in_dim, shape, sizeof shape);
    classes_str(d, r->model.n_classes, classes, sizeof classes);
    tl_st_kv meta[] = {
        {"format", "pt"},
        {"optimizer", tl_optim_name(cfg->optim.kind)},
        {"steps", steps},
        {"epochs", epochs},
        {"batch_size", bs},
        {"seed", seed},
        {"normalize", norm},
        {"input_shape", shape},
        {"classes", classes},
        {"producer", "tl " TL_VERSION},
        {"test_accuracy", acc}, /* last: left out when there was no test set */
    };
    const int n_meta = (int)(sizeof meta / sizeof meta[0]) - (last->test_accuracy < 0);
    if (tl_params_save(cfg->save_path, &r->model, r->params, NULL, 0, meta, n_meta) == 0) return 0;
    /* the path was checked before training; if it still fails (disk full,
     * file size limit, directory removed), the model goes elsewhere */
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

void cli_run_free(cli_run *r) {
    tl_dataset_free(&r->train);
    tl_dataset_free(&r->test);
    free(r->params);
    memset(r, 0, sizeof *r);
}
