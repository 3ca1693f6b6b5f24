/* test_trainer.c - the training loop never commits or saves poison (issue 8,
 * finding 3): a non-finite summed gradient stops the run before the step and
 * saves the state before the batch; a step that overflows stops the run and
 * saves nothing; checkpoints with NaN/Inf are neither written nor loaded (nor
 * model files for --init), with the tensor and index named. Issue 9 (house 4):
 * the optimizer's state interface (named buffers, step count), through which
 * checkpoints save and restore every optimizer's state; a resumed run, also
 * from a version-1 file, is bit-identical to an uninterrupted one. The
 * gradient source is a stub, so that each case is exact. */
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

#include "harness.h"

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

/* The defaults of optimizer name ("sgd+momentum": sgd with momentum 0.9). */
static tl_optim_cfg optimizer_cfg(const char *name) {
    tl_optim_cfg c;
    int momentum = !strcmp(name, "sgd+momentum");
    assert_int_equal(tl_optim_defaults(momentum ? "sgd" : name, &c), 0);
    if (momentum) c.momentum = 0.9;
    return c;
}

/* A 5-4-3 relu model (39 parameters), 40 samples in batches of 4, optimizer
 * opt ("sgd", or "sgd+momentum": momentum 0.9) at lr, over `epochs` epochs. */
static void fixture_init_opt(fixture *f, const char *opt, double lr, int epochs, const char *ckpt) {
    memset(f, 0, sizeof *f);
    tl_runcfg_defaults(&f->cfg);
    snprintf(f->cfg.model, sizeof f->cfg.model, "linear:4,relu,linear:3");
    f->cfg.epochs = epochs;
    f->cfg.batch_size = 4;
    f->cfg.optim = optimizer_cfg(opt);
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

/* One epoch of SGD at lr. */
static void fixture_init(fixture *f, double lr, const char *ckpt) {
    fixture_init_opt(f, "sgd", lr, 1, ckpt);
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

/* Writes checkpoint src (version 2) to dst as version 1 wrote it: the
 * optimizer's buffers "optim.*" [P] as rows of one "optim.state" F32 [2, P]
 * (unused rows zero) in their place, format "tl-checkpoint-1". */
static void to_v1(const char *src, const char *dst) {
    tl_st *st;
    assert_int_equal(tl_st_read(src, &st), 0);
    int n = tl_st_count(st), nm = tl_st_meta_count(st), k = 0, rows = 0;
    tl_st_tensor *t = calloc((size_t)n + 1, sizeof *t);
    tl_st_kv *kv = calloc((size_t)nm, sizeof *kv);
    float *state = calloc(2 * 39, sizeof(float));
    assert_non_null(t);
    assert_non_null(kv);
    assert_non_null(state);
    for (int i = 0; i < n; i++) {
        const tl_st_tensor *x = tl_st_get(st, i);
        if (strncmp(x->name, "optim.", 6) != 0) {
            if (!strcmp(x->name, "rng.state")) /* v1 order: params, optim.state, rng.state */
                t[k++] = (tl_st_tensor){"optim.state", TL_ST_F32, 2, {2, 39}, state};
            t[k++] = *x;
            continue;
        }
        assert_true(x->rank == 1 && x->shape[0] == 39 && rows < 2);
        memcpy(state + 39 * rows++, x->data, sizeof(float) * 39);
    }
    for (int i = 0; i < nm; i++) {
        kv[i] = *tl_st_meta_get(st, i);
        if (!strcmp(kv[i].key, "format")) kv[i].value = "tl-checkpoint-1";
    }
    assert_int_equal(tl_st_write(dst, t, k, kv, nm), 0);
    free(state);
    free(t);
    free(kv);
    tl_st_free(st);
}

/* Item 3: tl_checkpoint_save refuses NaN/Inf; tl_checkpoint_check and
 * tl_checkpoint_load refuse a file holding one (the tensor and index named),
 * leaving the trainer as it was; tl_params_load (--init) too. */
static void test_checkpoint_refuses_nonfinite(void **state) {
    (void)state;
    char good[PATH_MAX + 32], bad[PATH_MAX + 32], bad2[PATH_MAX + 32], bad3[PATH_MAX + 32],
        init[PATH_MAX + 32];
    path_in(bad3, sizeof bad3, "nan-v1.st");
    path_in(good, sizeof good, "good.st");
    path_in(bad, sizeof bad, "nan.st");
    path_in(bad2, sizeof bad2, "nan-optim.st");
    path_in(init, sizeof init, "init.st");
    fixture f;
    fixture_init_opt(&f, "adam", 0.1, 1, good); /* state: exp_avg, exp_avg_sq */
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
    float *sq;
    assert_int_equal(tl_optim_state(&f.t.optim, 1, NULL, &sq, NULL), 0);
    sq[3] = -INFINITY; /* the second buffer's element 3 */
    assert_int_equal(tl_checkpoint_save(nope, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "optim.exp_avg_sq[3] is -Inf")) fail_msg("message: %s", tl_errmsg());
    assert_false(exists(nope));
    sq[3] = 0;

    /* load and check */
    st_forge(good, bad, "2.weight", 2 * 4 + 3, NAN); /* 2.weight[2,3] */
    st_forge(good, bad2, "optim.exp_avg_sq", 1, INFINITY);
    assert_int_equal(tl_checkpoint_check(bad, &f.cfg, &f.m), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan.st: 2.weight[2,3] is NaN")) fail_msg("message: %s", tl_errmsg());
    float before[39];
    memcpy(before, f.params, sizeof before);
    assert_int_equal(tl_checkpoint_load(bad, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan.st: 2.weight[2,3] is NaN")) fail_msg("message: %s", tl_errmsg());
    assert_memory_equal(f.params, before, sizeof before);
    assert_int_equal(tl_checkpoint_check(bad2, &f.cfg, &f.m), TL_ENUMERIC);
    assert_int_equal(tl_checkpoint_load(bad2, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan-optim.st: optim.exp_avg_sq[1] is +Inf"))
        fail_msg("message: %s", tl_errmsg());
    assert_memory_equal(f.params, before, sizeof before);
    /* a version-1 file ("optim.state" [2, P]) holding one is refused too */
    to_v1(bad2, bad3);
    assert_int_equal(tl_checkpoint_check(bad3, &f.cfg, &f.m), TL_ENUMERIC);
    assert_int_equal(tl_checkpoint_load(bad3, &f.t, &pos), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "nan-v1.st: optim.state[1,1] is +Inf"))
        fail_msg("message: %s", tl_errmsg());
    assert_memory_equal(f.params, before, sizeof before);
    assert_int_equal(tl_checkpoint_check(good, &f.cfg, &f.m), 0);

    /* a model file for --init */
    float p[39];
    memcpy(p, f.params, sizeof p);
    p[24] = INFINITY; /* 0.bias is [20, 24); 2.weight starts at 24: [0,0] */
    if (tl_params_save(init, &f.m, p, NULL, 0, NULL, 0) < 0) fail_msg("%s", tl_errmsg());
    assert_int_equal(tl_params_load(init, &f.m, p), TL_ENUMERIC);
    if (!strstr(tl_errmsg(), "init.st: 2.weight[0,0] is +Inf"))
        fail_msg("message: %s", tl_errmsg());
    tl_trainer_free(&f.t);
}

static const char *const optimizers[] = {"adadelta", "sgd", "sgd+momentum", "adam", "adamw"};

/* A finite step is not an overflow: parameters >= 2 next to values in [1, 2)
 * (whose bits OR to an all-ones exponent, 3.0f | 1.0f) once stopped every
 * optimizer with "the step overflowed". */
static void test_large_parameters_step(void **state) {
    (void)state;
    for (int k = 0; k < 5; k++) {
        tl_optim_cfg c = optimizer_cfg(optimizers[k]);
        tl_optim o;
        assert_int_equal(tl_optim_init(&o, &c, 4), 0);
        float p[4] = {3.0f, 7.0f, -2.5f, 1.5f}, g[4] = {1.0f, 1.0f, -1.0f, 0.5f};
        for (int s = 0; s < 3; s++) {
            if (tl_optim_step(&o, p, g, c.lr) != 0)
                fail_msg("%s step %d: %s", optimizers[k], s, tl_errmsg());
            g[0] = g[1] = 1.0f, g[2] = -1.0f, g[3] = 0.5f;
        }
        tl_optim_free(&o);
    }
}

/* House 4: the optimizer lists its state buffers by PyTorch's names, each n
 * floats of its own, plus the step count; out-of-range requests are errors. */
static void test_optim_state_interface(void **state) {
    (void)state;
    static const char *const want[][3] = {
        {"square_avg", "acc_delta", NULL}, {NULL},
        {"momentum_buffer", NULL},         {"exp_avg", "exp_avg_sq", NULL},
        {"exp_avg", "exp_avg_sq", NULL},
    };
    for (int k = 0; k < 5; k++) {
        tl_optim_cfg c = optimizer_cfg(optimizers[k]);
        tl_optim o;
        assert_int_equal(tl_optim_init(&o, &c, 7), 0);
        int count = 0;
        while (want[k][count]) count++;
        assert_int_equal(tl_optim_state_count(&o), count);
        float *prev = NULL;
        for (int i = 0; i < count; i++) {
            const char *name;
            float *data;
            size_t len;
            assert_int_equal(tl_optim_state(&o, i, &name, &data, &len), 0);
            assert_string_equal(name, want[k][i]);
            assert_int_equal(len, 7);
            for (int j = 0; j < 7; j++) assert_true(data[j] == 0.0f);
            if (prev) assert_true(data >= prev + 7); /* disjoint */
            prev = data;
        }
        assert_int_equal(tl_optim_state(&o, count, NULL, NULL, NULL), TL_EINVAL);
        assert_int_equal(tl_optim_state(&o, -1, NULL, NULL, NULL), TL_EINVAL);
        /* a step fills the buffers; the count goes with them */
        float p[7] = {1, 2, 3, 4, 5, 6, 7}, g[7] = {1, 1, 1, 1, 1, 1, 1};
        assert_int_equal(tl_optim_step(&o, p, g, c.lr), 0);
        assert_int_equal(tl_optim_steps(&o), 1);
        for (int i = 0; i < count; i++) {
            float *data;
            tl_optim_state(&o, i, NULL, &data, NULL);
            assert_true(data[6] != 0.0f);
        }
        assert_int_equal(tl_optim_set_steps(&o, 41), 0);
        assert_int_equal(tl_optim_steps(&o), 41);
        assert_int_equal(tl_optim_set_steps(&o, -1), TL_EINVAL);
        assert_int_equal(tl_optim_steps(&o), 41);
        tl_optim_free(&o);
        tl_optim_free(&o); /* safe twice */
    }
}

/* A stub gradient source with state-dependent gradients (a pull of each
 * parameter towards i/40), so that a lost or wrong optimizer state shows. */
static int pull_grad(void *ctx, const tl_batch *b, const float *params, float *grads,
                     double *loss_sum, int64_t *correct) {
    (void)ctx;
    for (int i = 0; i < 39; i++)
        grads[i] += (params[i] - (float)i / 40.0f) * (float)b->n + 1e-3f * (float)b->global[0];
    *loss_sum += 1.0;
    *correct += 1;
    return 0;
}

/* House 4: for every optimizer, a run stopped after 13 steps (in its second
 * epoch) and resumed from its checkpoint ends bit-identical to an
 * uninterrupted run, from the file as written (one "optim.<name>" tensor per
 * state buffer) and from the same state in the version-1 layout. */
static void test_resume_every_optimizer(void **state) {
    (void)state;
    char ck[PATH_MAX + 32], v1[PATH_MAX + 32];
    path_in(ck, sizeof ck, "resume.st");
    path_in(v1, sizeof v1, "resume-v1.st");
    for (int k = 0; k < 5; k++) {
        const char *opt = optimizers[k];
        fixture a;
        fixture_init_opt(&a, opt, 0.05, 2, NULL);
        assert_int_equal(tl_trainer_run(&a.t, pull_grad, NULL, NULL), 0);
        assert_int_equal(a.t.steps, 20);

        fixture b;
        fixture_init_opt(&b, opt, 0.05, 2, ck);
        b.cfg.max_steps = 13;
        assert_int_equal(tl_trainer_run(&b.t, pull_grad, NULL, NULL), 0);
        assert_int_equal(b.t.steps, 13);
        assert_true(memcmp(b.params, a.params, sizeof(float) * 39) != 0);
        /* the file holds the optimizer's buffers by name, and no "optim.state" */
        tl_st *st;
        assert_int_equal(tl_st_read(ck, &st), 0);
        assert_string_equal(tl_st_meta(st, "format"), "tl-checkpoint-2");
        assert_null(tl_st_find(st, "optim.state"));
        for (int i = 0; i < tl_optim_state_count(&b.t.optim); i++) {
            const char *name;
            float *data;
            char key[64];
            tl_optim_state(&b.t.optim, i, &name, &data, NULL);
            snprintf(key, sizeof key, "optim.%s", name);
            const tl_st_tensor *x = tl_st_find(st, key);
            if (!x) fail_msg("%s: no %s", opt, key);
            assert_int_equal(x->rank, 1);
            assert_int_equal(x->shape[0], 39);
            assert_memory_equal(x->data, data, sizeof(float) * 39);
        }
        assert_string_equal(tl_st_meta(st, "optim_steps"), "13");
        tl_st_free(st);
        to_v1(ck, v1);

        for (int from_v1 = 0; from_v1 < 2; from_v1++) {
            fixture c;
            fixture_init_opt(&c, opt, 0.05, 2, from_v1 ? v1 : ck);
            c.cfg.checkpoint_every = 0;
            c.cfg.checkpoint_path = from_v1 ? v1 : ck;
            if (tl_trainer_resume(&c.t) < 0) fail_msg("%s: %s", opt, tl_errmsg());
            assert_int_equal(tl_optim_steps(&c.t.optim), 13);
            c.cfg.checkpoint_path = NULL; /* leave the files as they are */
            assert_int_equal(tl_trainer_run(&c.t, pull_grad, NULL, NULL), 0);
            assert_int_equal(c.t.steps, 20);
            if (memcmp(c.params, a.params, sizeof(float) * 39) != 0)
                fail_msg("%s: resumed from %s differs from the uninterrupted run", opt,
                         from_v1 ? "version 1" : "version 2");
            tl_trainer_free(&c.t);
        }
        tl_trainer_free(&b.t);
        tl_trainer_free(&a.t);
    }
}

/* The evaluation hook: called after every epoch with the parameters and step
 * count; the epoch report carries its sums and their metrics, and test
 * loss/accuracy come from them. */
typedef struct eval_probe {
    int calls;
    int64_t steps[4];
    double acc[4], f1[4], loss[4];
    uint64_t n[4];
} eval_probe;

static int probe_eval(void *ctx, const float *params, int64_t steps, tl_evalstats *sums) {
    eval_probe *p = ctx;
    (void)params;
    assert_int_equal(sums->n, 0); /* zero on entry */
    p->steps[p->calls++] = steps;
    /* 4 rows, 3 classes: true 0,1,2,2 predicted 0,1,1,2 (logits argmax) */
    float z[12] = {5, 0, 0, 0, 5, 0, 0, 5, 0, 0, 0, 5};
    int32_t y[4] = {0, 1, 2, 2};
    return tl_evalstats_add(sums, z, y, 4);
}

static void probe_epoch(void *ud, const tl_epoch_report *r) {
    eval_probe *p = ud;
    int k = r->epoch - 1;
    assert_non_null(r->eval);
    assert_non_null(r->metrics);
    p->acc[k] = r->test_accuracy;
    p->loss[k] = r->test_loss;
    p->f1[k] = r->metrics->macro_f1;
    p->n[k] = r->eval->n;
}

static void test_eval_hook(void **state) {
    (void)state;
    fixture f;
    fixture_init_opt(&f, "sgd", 0.01, 2, NULL);
    eval_probe p = {0};
    f.t.eval = probe_eval;
    f.t.eval_ctx = &p;
    tl_trainer_hooks hooks = {.ud = &p, .on_epoch = probe_epoch};
    stub s = {.bad_at = -1};
    assert_int_equal(tl_trainer_run(&f.t, stub_grad, &s, &hooks), 0);
    assert_int_equal(p.calls, 2);
    assert_int_equal(p.steps[0], 10);
    assert_int_equal(p.steps[1], 20);
    for (int e = 0; e < 2; e++) {
        assert_int_equal(p.n[e], 4);
        assert_true(p.acc[e] == 0.75);
        assert_true(p.loss[e] > 0);
        /* F1: class 0 1, class 1 2/3, class 2 2/3 */
        assert_true(fabs(p.f1[e] - (1.0 + 2.0 / 3 + 2.0 / 3) / 3) < 1e-12);
    }
    tl_trainer_free(&f.t);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "%s/test_trainer.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    const char *names[] = {"recovery.st", "overflow.st", "good.st",   "nan.st",    "nan-optim.st",
                           "init.st",     "never.st",    "nan-v1.st", "resume.st", "resume-v1.st"};
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
        cmocka_unit_test(test_optim_state_interface),
        cmocka_unit_test(test_large_parameters_step),
        cmocka_unit_test(test_resume_every_optimizer),
        cmocka_unit_test(test_eval_hook),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
