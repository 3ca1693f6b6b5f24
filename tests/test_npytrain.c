/* test_npytrain.c - issue 10's acceptance for arrays: a NumPy data set of
 * images ([N, 1, 28, 28] float32, byte / 255, made from Fashion-MNIST) trains
 * to the same parameters as the IDX files, bit for bit (the /255 scaling and
 * the normalization give the same floats). Skipped with a message when
 * Fashion-MNIST is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/config.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/localgrad.h"
#include "tl/model.h"
#include "tl/trainer.h"

#define ROWS 1000

/* 15 steps of the reference configuration on d; params out (n_params). */
static void train(const tl_dataset *d, float *params, size_t n_params) {
    tl_runcfg cfg;
    tl_runcfg_defaults(&cfg);
    cfg.max_steps = 15;
    tl_model m;
    assert_int_equal(tl_model_parse(cfg.model, (int)d->dim, &m), 0);
    assert_int_equal(m.n_params, n_params);
    tl_model_init(&m, params, cfg.seed);
    tl_local_grad lg;
    assert_int_equal(tl_local_grad_init(&lg, &m, d, cfg.batch_size, cfg.mean, cfg.std), 0);
    uint64_t count = d->n;
    tl_trainer t;
    assert_int_equal(tl_trainer_init(&t, &cfg, &m, params, &count, 1, d), 0);
    t.prefetch = tl_local_grad_prefetch;
    if (tl_trainer_run(&t, tl_local_grad_fn, &lg, NULL) < 0) fail_msg("%s", tl_errmsg());
    assert_int_equal(t.steps, 15);
    tl_trainer_free(&t);
    tl_local_grad_free(&lg);
}

static void test_numpy_images_train_as_idx(void **state) {
    (void)state;
    tl_dataset all, idx, f = {0}, npy;
    if (tl_dataset_load(TL_DEFAULT_DATA, "train", &all) < 0) {
        print_message("SKIP: Fashion-MNIST not installed in %s\n", TL_DEFAULT_DATA);
        skip();
    }
    size_t *rows = malloc(sizeof *rows * ROWS);
    for (size_t i = 0; i < ROWS; i++) rows[i] = i;
    assert_int_equal(tl_dataset_subset(&all, rows, ROWS, &idx), 0);
    tl_dataset_free(&all);

    /* [N, 1, 28, 28] float32 = byte / 255, written as x.npy / y.npy and read back */
    f.n = ROWS;
    f.dim = idx.dim;
    f.rows = idx.rows;
    f.cols = idx.cols;
    f.classes = idx.classes;
    f.dtype = TL_ELEM_F32;
    f.rank = 3;
    f.shape[0] = 1, f.shape[1] = idx.rows, f.shape[2] = idx.cols;
    f.feats = malloc(sizeof(float) * ROWS * idx.dim);
    f.labels = malloc(ROWS);
    for (size_t i = 0; i < ROWS * idx.dim; i++) f.feats[i] = (float)idx.images[i] / 255.0f;
    memcpy(f.labels, idx.labels, ROWS);
    char dir[] = "/tmp/tl-npytrain-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    assert_int_equal(tl_dataset_save(dir, "train", &f), 0);
    assert_int_equal(tl_dataset_open(dir, "train", NULL, &npy), 0);
    assert_int_equal(npy.dtype, TL_ELEM_F32);
    assert_int_equal(npy.rank, 3);
    assert_int_equal(npy.shape[0], 1);
    assert_int_equal(npy.shape[1], 28);
    assert_int_equal(npy.shape[2], 28);
    assert_int_equal(npy.n, ROWS);

    tl_model m;
    tl_runcfg cfg;
    tl_runcfg_defaults(&cfg);
    assert_int_equal(tl_model_parse(cfg.model, (int)idx.dim, &m), 0);
    float *a = malloc(sizeof(float) * m.n_params), *b = malloc(sizeof(float) * m.n_params);
    train(&idx, a, m.n_params);
    train(&npy, b, m.n_params);
    assert_memory_equal(a, b, sizeof(float) * m.n_params);

    snprintf(path, sizeof path, "%s/x.npy", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/y.npy", dir);
    unlink(path);
    rmdir(dir);
    free(a);
    free(b);
    free(rows);
    tl_dataset_free(&f);
    tl_dataset_free(&npy);
    tl_dataset_free(&idx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_images_train_as_idx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
