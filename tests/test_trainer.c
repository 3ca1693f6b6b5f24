/* test_trainer.c - the training loop never commits or saves poison (issue 8,
 * finding 3): a non-finite summed gradient stops the run before the step and
 * saves the state before the batch; a step that overflows stops the run and
 * saves nothing; checkpoints with NaN/Inf are neither written nor loaded (nor
 * model files for --init), with the tensor and index named. The gradient
 * source is a stub, so that each case is exact. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/checkpoint.h"
#include "tl/config.h"
#include "tl/error.h"
#include "tl/params.h"
#include "tl/safetensors.h"
#include "tl/trainer.h"

static char dir[PATH_MAX];

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* A stub gradient source: 0.01 everywhere, except at call `bad_at` (0-based)
 * where element 2 gets `value`. Keeps a copy of the params it was called with
 * at that call. */
typedef struct stub {
    int calls, bad_at;
    float value;
    float before[64];
} stub;

static int stub_grad(void *ctx, const tl_batch *b, const float *params, float *grads,
                     double *loss_sum, int64_t *correct) {
    stub *s = ctx;
    (void)b;
    for (int i = 0; i < 39; i++) grads[i] = 0.01f;
    if (s->calls == s->bad_at) {
        grads[2] = s->value;
        memcpy(s->before, params, sizeof(float) * 39);
    }
    s->calls++;
    *loss_sum += 1.0;
    *correct += 1;
    return 0;
}

typedef struct fixture {
    tl_runcfg cfg;
    tl_model m;
    float params[64];
    uint64_t counts[1];
    tl_trainer t;
} fixture;

/* A 5-4-3 relu model (39 parameters), 40 samples in batches of 4, SGD at lr. */
static void fixture_init(fixture *f, double lr, const char *ckpt) {
    memset(f, 0, sizeof *f);
    tl_runcfg_defaults(&f->cfg);
    snprintf(f->cfg.model, sizeof f->cfg.model, "linear:4,relu,linear:3");
    f->cfg.epochs = 1;
    f->cfg.batch_size = 4;
    assert_int_equal(tl_optim_defaults("sgd", &f->cfg.optim), 0);
    f->cfg.optim.lr = lr;
    f->cfg.checkpoint_path = ckpt;
    f->cfg.checkpoint_every = 1;
    assert_int_equal(tl_model_parse(f->cfg.model, 5, &f->m), 0);
    assert_int_equal((int)f->m.n_params, 39);
    tl_model_init(&f->m, f->params, 1);
    f->counts[0] = 40;
    assert_int_equal(tl_trainer_init(&f->t, &f->cfg, &f->m, f->params, f->counts, 1, NULL), 0);
    tl_trainer_set_data_sig(&f->t, "test");
}

/* Item 2: a non-finite gradient (e.g. a sum of finite parts that overflowed)
 * stops the run before the step, and the state before the batch is saved to
 * the recovery file; resuming from it gives exactly that state. */
static void test_nonfinite_gradient_saves_prestep(void **state) {
    (void)state;
    char rec[PATH_MAX + 32];
    path_in(rec, sizeof rec, "recovery.st");
    fixture f;
    fixture_init(&f, 0.1, NULL);
    f.t.recovery_path = rec;
    stub s = {.bad_at = 3, .value = INFINITY};
    int rc = tl_trainer_run(&f.t, stub_grad, &s, NULL);
    assert_int_equal(rc, TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "epoch 1 batch 3: the summed gradient is not finite (gradient "
                             "element 2 is +Inf); stopped before the step"))
        fail_msg("message: %s", tl_errmsg());
    assert_non_null(f.t.saved_path);
    assert_string_equal(f.t.saved_path, rec);
    assert_int_equal(f.t.steps, 3);
    assert_memory_equal(f.params, s.before, sizeof(float) * 39); /* the step changed nothing */
    /* the file holds the state before batch 3, and batch 3 not yet counted */
    fixture g;
    fixture_init(&g, 0.1, rec);
    tl_run_pos pos;
    assert_int_equal(tl_checkpoint_load(rec, &g.t, &pos), 0);
    assert_int_equal(pos.batch, 3);
    assert_int_equal(pos.steps, 3);
    assert_true(pos.loss_sum == 3.0);
    assert_int_equal(pos.correct, 3);
    assert_memory_equal(g.params, s.before, sizeof(float) * 39);
    tl_trainer_free(&g.t);
    tl_trainer_free(&f.t);
}

/* Item 2: a finite gradient whose step overflows (3e38 at lr 10 with SGD)
 * stops the run; the poisoned state is not saved, the last checkpoint (after
 * batch 2) stays and is finite. */
static void test_overflowing_step_not_saved(void **state) {
    (void)state;
    char ck[PATH_MAX + 32];
    path_in(ck, sizeof ck, "overflow.st");
    fixture f;
    fixture_init(&f, 10.0, ck);
    stub s = {.bad_at = 3, .value = 3e38f};
    int rc = tl_trainer_run(&f.t, stub_grad, &s, NULL);
    assert_int_equal(rc, TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "epoch 1 batch 3: the step overflowed") ||
        !strstr(tl_errmsg(), "this state is not saved"))
        fail_msg("message: %s", tl_errmsg());
    assert_null(f.t.saved_path);
    fixture g;
    fixture_init(&g, 10.0, ck);
    tl_run_pos pos;
    assert_int_equal(tl_checkpoint_load(ck, &g.t, &pos), 0);
    assert_int_equal(pos.batch, 3);
    assert_int_equal(pos.steps, 3);
    assert_memory_equal(g.params, s.before, sizeof(float) * 39);
    tl_trainer_free(&g.t);
    tl_trainer_free(&f.t);
}

/* Writes a copy of checkpoint src to dst with element e of tensor `name` set
 * to v (forging what tl_checkpoint_save refuses to write). */
static void forge(const char *src, const char *dst, const char *name, size_t e, float v) {
    tl_st *st;
    assert_int_equal(tl_st_read(src, &st), 0);
    int n = tl_st_count(st), nm = tl_st_meta_count(st);
    tl_st_tensor *t = calloc((size_t)n, sizeof *t);
    tl_st_kv *kv = calloc((size_t)nm + 1, sizeof *kv);
    assert_non_null(t);
    assert_non_null(kv);
    for (int i = 0; i < n; i++) {
        t[i] = *tl_st_get(st, i);
        if (!strcmp(t[i].name, name)) ((float *)t[i].data)[e] = v;
    }
    for (int i = 0; i < nm; i++) kv[i] = *tl_st_meta_get(st, i);
    assert_int_equal(tl_st_write(dst, t, n, kv, nm), 0);
    free(t);
    free(kv);
    tl_st_free(st);
}

/* Item 3: tl_checkpoint_save refuses NaN/Inf; tl_checkpoint_check and
 * tl_checkpoint_load refuse a file holding one (the tensor and index named),
 * leaving the trainer as it was; tl_params_load (--init) too. */
static void test_checkpoint_refuses_nonfinite(void **state) {
    (void)state;
    char good[PATH_MAX + 32], bad[PATH_MAX + 32], bad2[PATH_MAX + 32], init[PATH_MAX + 32];
    path_in(good, sizeof good, "good.st");
    path_in(bad, sizeof bad, "nan.st");
    path_in(bad2, sizeof bad2, "nan-optim.st");
    path_in(init, sizeof init, "init.st");
    fixture f;
    fixture_init(&f, 0.1, good);
    tl_run_pos pos = {0, 0, 0, 0.0, 0, 0};
    assert_int_equal(tl_checkpoint_save(good, &f.t, &pos), 0);

    /* save */
    char nope[PATH_MAX + 32];
    path_in(nope, sizeof nope, "never.st");
    float keep = f.params[1];
    f.params[1] = NAN; /* 0.weight[0,1] */
    assert_int_equal(tl_checkpoint_save(nope, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "never.st: not written") ||
        !strstr(tl_errmsg(), "0.weight[0,1] is NaN"))
        fail_msg("message: %s", tl_errmsg());
    assert_false(exists(nope));
    f.params[1] = keep;
    f.t.optim.s1[39 + 3] = -INFINITY; /* the second buffer's element 3 */
    assert_int_equal(tl_checkpoint_save(nope, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "optim.state[1,3] is -Inf")) fail_msg("message: %s", tl_errmsg());
    assert_false(exists(nope));
    f.t.optim.s1[39 + 3] = 0;

    /* load and check */
    forge(good, bad, "2.weight", 2 * 4 + 3, NAN); /* 2.weight[2,3] */
    forge(good, bad2, "optim.state", 40, INFINITY); /* optim.state[1,1] */
    assert_int_equal(tl_checkpoint_check(bad, &f.cfg, &f.m), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan.st: 2.weight[2,3] is NaN")) fail_msg("message: %s", tl_errmsg());
    float before[39];
    memcpy(before, f.params, sizeof before);
    assert_int_equal(tl_checkpoint_load(bad, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan.st: 2.weight[2,3] is NaN")) fail_msg("message: %s", tl_errmsg());
    assert_memory_equal(f.params, before, sizeof before);
    assert_int_equal(tl_checkpoint_check(bad2, &f.cfg, &f.m), TL_ENUMERIC);
    assert_int_equal(tl_checkpoint_load(bad2, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan-optim.st: optim.state[1,1] is +Inf"))
        fail_msg("message: %s", tl_errmsg());
    assert_memory_equal(f.params, before, sizeof before);
    assert_int_equal(tl_checkpoint_check(good, &f.cfg, &f.m), 0);

    /* a model file for --init */
    float p[39];
    memcpy(p, f.params, sizeof p);
    p[24] = INFINITY; /* 0.bias is [20, 24); 2.weight starts at 24: [0,0] */
    if (tl_params_save(init, &f.m, p, NULL, 0, NULL, 0) < 0) fail_msg("%s", tl_errmsg());
    assert_int_equal(tl_params_load(init, &f.m, p), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "init.st: 2.weight[0,0] is +Inf")) fail_msg("message: %s", tl_errmsg());
    tl_trainer_free(&f.t);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "%s/test_trainer.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    const char *names[] = {"recovery.st", "overflow.st", "good.st", "nan.st", "nan-optim.st",
                           "init.st", "never.st"};
    char p[PATH_MAX + 32];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in(p, sizeof p, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_gradient_saves_prestep),
        cmocka_unit_test(test_overflowing_step_not_saved),
        cmocka_unit_test(test_checkpoint_refuses_nonfinite),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
