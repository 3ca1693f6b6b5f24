/* test_nodestate.c - a sealed node's side as a file (checkpoint saves, the
 * last two kept) and as a sealed transfer blob (a rejoining node's state):
 * bit-exact round trips, and every way a wrong or altered state is refused
 * without touching the node. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/groupkey.h"
#include "tl/nodestate.h"
#include "tl/optim.h"
#include "tl/safetensors.h"
#include "tl/seal.h"

#define N 1000

/* A node's side after a few Adam steps: params, optimizer, a view of both. */
typedef struct node {
    float params[N], grads[N];
    tl_optim opt;
    tl_nodestate s;
} node;

static void node_init(node *nd, const char *optname, int steps, uint32_t seed) {
    tl_optim_cfg cfg;
    assert_int_equal(tl_optim_defaults(optname, &cfg), 0);
    if (!strcmp(optname, "sgd")) cfg.momentum = 0.9;
    assert_int_equal(tl_optim_init(&nd->opt, &cfg, N), 0);
    uint32_t x = seed * 2654435761u + 1;
    for (int i = 0; i < N; i++) {
        x = x * 1664525u + 1013904223u;
        nd->params[i] = (float)((int)(x >> 8) % 2001 - 1000) / 997.0f;
    }
    for (int k = 0; k < steps; k++) {
        for (int i = 0; i < N; i++) {
            x = x * 1664525u + 1013904223u;
            nd->grads[i] = (float)((int)(x >> 8) % 2001 - 1000) / 3001.0f;
        }
        assert_int_equal(tl_optim_step(&nd->opt, nd->params, nd->grads, 1e-3), 0);
    }
    nd->s = (tl_nodestate){.params = nd->params,
                           .n = N,
                           .optim = &nd->opt,
                           .run_id = 0x1122334455667788ull,
                           .step = (uint64_t)steps};
}

/* Whether a and b hold the same bits: params, every state buffer, steps. */
static int same_state(const node *a, const node *b) {
    if (memcmp(a->params, b->params, sizeof a->params) != 0) return 0;
    if (tl_optim_steps(&a->opt) != tl_optim_steps(&b->opt)) return 0;
    if (tl_optim_state_count(&a->opt) != tl_optim_state_count(&b->opt)) return 0;
    for (int i = 0; i < tl_optim_state_count(&a->opt); i++) {
        float *x, *y;
        tl_optim_state(&a->opt, i, NULL, &x, NULL);
        tl_optim_state(&b->opt, i, NULL, &y, NULL);
        if (memcmp(x, y, N * sizeof(float)) != 0) return 0;
    }
    return a->s.run_id == b->s.run_id && a->s.step == b->s.step;
}

/* The writer to memory gives the bytes the file writer writes. */
static void test_st_write_mem(void **state) {
    (void)state;
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t k[2] = {-1, 7};
    tl_st_tensor t[2] = {{"w", TL_ST_F32, 2, {2, 3}, w}, {"k", TL_ST_I64, 1, {2}, k}};
    tl_st_kv meta[1] = {{"a", "b\"c"}};
    const char *path = tpath("m.safetensors");
    assert_int_equal(tl_st_write(path, t, 2, meta, 1), 0);
    uint8_t *file, *mem;
    size_t flen, mlen;
    assert_int_equal(tl_file_read_all(path, 1 << 20, &file, &flen), 0);
    assert_int_equal(tl_st_write_mem(t, 2, meta, 1, &mem, &mlen), 0);
    assert_int_equal(flen, mlen);
    assert_memory_equal(file, mem, flen);
    free(file);
    free(mem);
    /* bad arguments: refused, nothing allocated */
    tl_st_tensor dup[2] = {t[0], t[0]};
    assert_int_equal(tl_st_write_mem(dup, 2, NULL, 0, &mem, &mlen), TL_EINVAL);
    assert_null(mem);
}

/* Saved and loaded: the same bits, for each optimizer's state; the file is
 * 0600 and loads in any safetensors reader. */
static void test_save_load(void **state) {
    (void)state;
    const char *opts[] = {"adadelta", "sgd", "adam", "adamw"};
    for (int o = 0; o < 4; o++) {
        node *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        node_init(a, opts[o], 7, 1);
        node_init(b, opts[o], 0, 2);
        b->s.run_id = 0;
        assert_false(same_state(a, b));
        const char *path = pathf("%s/state-%s.safetensors", scratch_dir, opts[o]);
        assert_int_equal(tl_nodestate_save(path, &a->s), 0);
        struct stat sb;
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        assert_int_equal(tl_nodestate_load(path, &b->s), 0);
        assert_true(same_state(a, b));
        tl_st *st;
        assert_int_equal(tl_st_read(path, &st), 0);
        assert_string_equal(tl_st_meta(st, "step"), "7");
        assert_string_equal(tl_st_meta(st, "run_id"), "1234605616436508552");
        assert_non_null(tl_st_find(st, "params"));
        tl_st_free(st);
        tl_optim_free(&a->opt);
        tl_optim_free(&b->opt);
        free(a);
        free(b);
    }
}

/* A state of another shape, optimizer or format, or holding NaN, is refused
 * with the reason, and the node is left as it was. */
static void test_refusals(void **state) {
    (void)state;
    node *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *b0 = calloc(1, sizeof *b0);
    node_init(a, "adam", 3, 1);
    node_init(b, "adam", 1, 2);
    node_init(b0, "adam", 1, 2);
    uint8_t *buf;
    size_t len;
    assert_int_equal(tl_nodestate_encode(&a->s, &buf, &len), 0);

    b->s.n = N - 1; /* another cut */
    assert_int_equal(tl_nodestate_decode(buf, len, "x", &b->s), TL_ESTATE);
    assert_non_null(strstr(tl_errmsg(), "1000 node-side parameters"));
    b->s.n = N;
    assert_true(same_state(b, b0));

    node *c = calloc(1, sizeof *c); /* another optimizer */
    node_init(c, "adadelta", 1, 2);
    assert_int_equal(tl_nodestate_decode(buf, len, "x", &c->s), TL_ESTATE);
    assert_non_null(strstr(tl_errmsg(), "adadelta"));

    buf[len - 2] = 0xff; /* the last float (of exp_avg_sq) becomes a NaN */
    buf[len - 1] = 0xff;
    assert_int_equal(tl_nodestate_decode(buf, len, "x", &b->s), TL_ENUMERIC);
    assert_true(same_state(b, b0));
    free(buf);

    assert_int_equal(tl_nodestate_decode((const uint8_t *)"nonsense", 8, "x", &b->s), TL_EFORMAT);
    /* a model file is not a node state */
    tl_st_tensor t = {"params", TL_ST_F32, 1, {N}, a->params};
    assert_int_equal(tl_st_write_mem(&t, 1, NULL, 0, &buf, &len), 0);
    assert_int_equal(tl_nodestate_decode(buf, len, "x", &b->s), TL_EFORMAT);
    assert_true(same_state(b, b0));
    free(buf);

    a->params[5] = NAN; /* never saved */
    assert_int_equal(tl_nodestate_save(tpath("nan.safetensors"), &a->s), TL_ENUMERIC);
    assert_int_equal(access(tpath("nan.safetensors"), F_OK), -1);
    tl_optim_free(&a->opt);
    tl_optim_free(&b->opt);
    tl_optim_free(&b0->opt);
    tl_optim_free(&c->opt);
    free(a), free(b), free(b0), free(c);
}

/* The last two checkpoints' states are kept; older ones are gone. */
static void test_keep_find(void **state) {
    (void)state;
    node *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    node_init(a, "adadelta", 0, 1);
    node_init(b, "adadelta", 0, 2);
    const char *base = tpath("node3.state");
    float at20[N];
    for (uint64_t step = 10; step <= 30; step += 10) {
        a->params[0] = (float)step;
        a->s.step = step;
        assert_int_equal(tl_nodestate_keep(base, &a->s), 0);
        if (step == 20) memcpy(at20, a->params, sizeof at20);
    }
    a->s.step = 30; /* saving the same step again replaces it, keeps 20 */
    assert_int_equal(tl_nodestate_keep(base, &a->s), 0);
    assert_int_equal(tl_nodestate_find(base, 20, &b->s), 0);
    assert_int_equal(b->s.step, 20);
    assert_memory_equal(b->params, at20, sizeof at20);
    assert_int_equal(tl_nodestate_find(base, 30, &b->s), 0);
    assert_true(b->params[0] == 30.0f);
    assert_int_equal(tl_nodestate_find(base, 10, &b->s), TL_ESTATE);
    assert_non_null(strstr(tl_errmsg(), "no saved node state of step 10"));
    assert_non_null(strstr(tl_errmsg(), "20"));
    assert_true(b->params[0] == 30.0f); /* untouched */
    tl_optim_free(&a->opt);
    tl_optim_free(&b->opt);
    free(a), free(b);
}

/* Sealed for node 4 by node 2: it opens to the same bits there, and any
 * change (a byte, the recipient, the sender, the step, the run, the group)
 * fails authentication, leaving the node as it was. */
static void test_seal_open(void **state) {
    (void)state;
    tl_group_key gk, other;
    uint8_t k[32];
    for (int i = 0; i < 32; i++) k[i] = (uint8_t)(7 * i + 1);
    assert_int_equal(tl_group_key_from_bytes(&gk, k), 0);
    k[0] ^= 1;
    assert_int_equal(tl_group_key_from_bytes(&other, k), 0);
    node *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *b0 = calloc(1, sizeof *b0);
    node_init(a, "adam", 5, 1);
    node_init(b, "adam", 2, 2);
    node_init(b0, "adam", 2, 2);
    const uint64_t run = a->s.run_id, step = 5;
    uint8_t *box;
    size_t len;
    assert_int_equal(tl_nodestate_seal(&gk, &a->s, 2, 4, &box, &len), 0);
    uint8_t *plain;
    size_t plen;
    assert_int_equal(tl_nodestate_encode(&a->s, &plain, &plen), 0);
    assert_int_equal(len, plen + TL_TRANSFER_OVERHEAD);
    /* the parameters do not appear in the clear */
    assert_null(memmem(box, len, a->params, 64));
    free(plain);

    struct {
        const tl_group_key *gk;
        uint64_t run, step;
        uint32_t from, to;
    } wrong[] = {
        {&gk, run, step, 2, 3},     {&gk, run, step, 1, 4},    {&gk, run, step - 1, 2, 4},
        {&gk, run + 1, step, 2, 4}, {&other, run, step, 2, 4},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        assert_int_equal(tl_nodestate_open(wrong[i].gk, wrong[i].run, wrong[i].step, wrong[i].from,
                                           wrong[i].to, box, len, &b->s),
                         TL_EPROTO);
        assert_non_null(strstr(tl_errmsg(), "fails authentication"));
        assert_true(same_state(b, b0));
    }
    for (size_t at = 0; at < len; at += len / 7 + 1) {
        box[at] ^= 0x10;
        assert_int_equal(tl_nodestate_open(&gk, run, step, 2, 4, box, len, &b->s), TL_EPROTO);
        box[at] ^= 0x10;
        assert_true(same_state(b, b0));
    }
    assert_int_equal(tl_nodestate_open(&gk, run, step, 2, 4, box, len - 1, &b->s), TL_EPROTO);
    assert_int_equal(tl_nodestate_open(&gk, run, step, 2, 4, box, 10, &b->s), TL_EPROTO);
    assert_true(same_state(b, b0));

    assert_int_equal(tl_nodestate_open(&gk, run, step, 2, 4, box, len, &b->s), 0);
    assert_true(same_state(a, b));
    /* and the next optimizer step is the same bits on both */
    for (int i = 0; i < N; i++) a->grads[i] = b->grads[i] = (float)(i % 13) / 17.0f - 0.3f;
    assert_int_equal(tl_optim_step(&a->opt, a->params, a->grads, 1e-3), 0);
    assert_int_equal(tl_optim_step(&b->opt, b->params, b->grads, 1e-3), 0);
    assert_memory_equal(a->params, b->params, sizeof a->params);
    free(box);
    tl_optim_free(&a->opt);
    tl_optim_free(&b->opt);
    tl_optim_free(&b0->opt);
    free(a), free(b), free(b0);
    tl_group_key_wipe(&gk);
    tl_group_key_wipe(&other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_write_mem), cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_refusals),     cmocka_unit_test(test_keep_find),
        cmocka_unit_test(test_seal_open),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
