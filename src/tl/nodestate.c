/* nodestate.c - a sealed-mode node's side as a file and as a sealed blob. */
#include "tl/nodestate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl/bounds.h"
#include "tl/error.h"
#include "tl/file.h"
#include "tl/safetensors.h"
#include "tl/seal.h"

#define FORMAT "tl-nodestate-1"
#define AD_LABEL "tl nodestate v1"
#define MAX_FILE ((size_t)1 << 34) /* 16 GiB: far over any node side */

/* The state's tensors into t[0, count) (names in names[]): params, then the
 * optimizer's buffers. The count. */
static int state_tensors(const tl_nodestate *s, char names[][64], tl_st_tensor *t) {
    int count = tl_optim_state_count(s->optim);
    t[0] = (tl_st_tensor){"params", TL_ST_F32, 1, {(int64_t)s->n}, s->params};
    for (int i = 0; i < count; i++) {
        const char *name;
        float *data;
        size_t len;
        tl_optim_state(s->optim, i, &name, &data, &len);
        snprintf(names[i], 64, "optim.%s", name);
        t[1 + i] = (tl_st_tensor){names[i], TL_ST_F32, 1, {(int64_t)len}, data};
    }
    return 1 + count;
}

int tl_nodestate_encode(const tl_nodestate *s, uint8_t **out, size_t *len) {
    char names[TL_OPTIM_MAX_STATE][64];
    tl_st_tensor t[1 + TL_OPTIM_MAX_STATE];
    int rc, nt = state_tensors(s, names, t);
    *out = NULL;
    *len = 0;
    for (int i = 0; i < nt; i++)
        if ((rc = tl_bounds_check_tensor("node state", t[i].name, t[i].data, 1, t[i].shape)) < 0)
            return rc;
    char n[32], osteps[32], run[32], step[32];
    snprintf(n, sizeof n, "%zu", s->n);
    snprintf(osteps, sizeof osteps, "%" PRId64, tl_optim_steps(s->optim));
    snprintf(run, sizeof run, "%" PRIu64, s->run_id);
    snprintf(step, sizeof step, "%" PRIu64, s->step);
    tl_st_kv meta[] = {
        {"format", FORMAT}, {"optimizer", tl_optim_name(s->optim->cfg.kind)},
        {"n", n},           {"optim_steps", osteps},
        {"run_id", run},    {"step", step},
    };
    return tl_st_write_mem(t, nt, meta, (int)(sizeof meta / sizeof meta[0]), out, len);
}

/* Reads metadata key of st as an unsigned decimal into *out. */
static int meta_u64(const tl_st *st, const char *what, const char *key, uint64_t *out) {
    const char *v = tl_st_meta(st, key);
    char *end;
    if (!v || *v < '0' || *v > '9')
        return tl_error(TL_EFORMAT, "%s: node state lacks a valid '%s'", what, key);
    unsigned long long x = strtoull(v, &end, 10);
    if (*end)
        return tl_error(TL_EFORMAT, "%s: node state field '%s' = '%s' is invalid", what, key, v);
    *out = x;
    return 0;
}

/* Finds tensor name in st: F32 [n], finite. Its data into *out. */
static int find_vec(const tl_st *st, const char *what, const char *name, size_t n,
                    const float **out) {
    const tl_st_tensor *t = tl_st_find(st, name);
    if (!t || t->dtype != TL_ST_F32 || t->rank != 1 || t->shape[0] != (int64_t)n)
        return tl_error(TL_EFORMAT, "%s: node state lacks a valid %s (F32 [%zu])", what, name, n);
    int rc = tl_bounds_check_tensor(what, name, t->data, 1, t->shape);
    if (rc < 0) return rc;
    *out = t->data;
    return 0;
}

int tl_nodestate_decode(const uint8_t *buf, size_t len, const char *what, tl_nodestate *s) {
    tl_st *st;
    int rc = tl_st_read_mem(buf, len, &st);
    if (rc < 0) return tl_error(rc, "%s: not a node state: %s", what, tl_errmsg());
    const char *fmt = tl_st_meta(st, "format"), *opt = tl_st_meta(st, "optimizer");
    const char *want_opt = tl_optim_name(s->optim->cfg.kind);
    uint64_t n = 0, osteps = 0, run = 0, step = 0;
    const float *src[1 + TL_OPTIM_MAX_STATE] = {0};
    const int count = tl_optim_state_count(s->optim);
    if (!fmt || strcmp(fmt, FORMAT) != 0 || !opt) {
        rc = tl_error(TL_EFORMAT, "%s: not a node state (format '%s')", what, fmt ? fmt : "none");
        goto cleanup;
    }
    if ((rc = meta_u64(st, what, "n", &n)) < 0 ||
        (rc = meta_u64(st, what, "optim_steps", &osteps)) < 0 ||
        (rc = meta_u64(st, what, "run_id", &run)) < 0 ||
        (rc = meta_u64(st, what, "step", &step)) < 0)
        goto cleanup;
    if (n != s->n || strcmp(opt, want_opt) != 0) {
        rc = tl_error(TL_ESTATE,
                      "%s: node state of another model or optimizer: it has %" PRIu64
                      " node-side parameters and %s, this node %zu and %s",
                      what, n, opt, s->n, want_opt);
        goto cleanup;
    }
    if (osteps > INT64_MAX) {
        rc = tl_error(TL_EFORMAT, "%s: node state optim_steps out of range", what);
        goto cleanup;
    }
    if ((rc = find_vec(st, what, "params", s->n, &src[0])) < 0) goto cleanup;
    for (int i = 0; i < count; i++) {
        const char *name;
        char key[64];
        tl_optim_state(s->optim, i, &name, NULL, NULL);
        snprintf(key, sizeof key, "optim.%s", name);
        if ((rc = find_vec(st, what, key, s->n, &src[1 + i])) < 0) goto cleanup;
    }
    if (tl_st_count(st) != 1 + count) {
        rc = tl_error(TL_EFORMAT, "%s: node state holds %d tensors, expected %d", what,
                      tl_st_count(st), 1 + count);
        goto cleanup;
    }
    /* all checked: install */
    memcpy(s->params, src[0], s->n * sizeof(float));
    for (int i = 0; i < count; i++) {
        float *dst;
        tl_optim_state(s->optim, i, NULL, &dst, NULL);
        memcpy(dst, src[1 + i], s->n * sizeof(float));
    }
    tl_optim_set_steps(s->optim, (int64_t)osteps);
    s->run_id = run;
    s->step = step;
cleanup:
    tl_st_free(st);
    return rc;
}

int tl_nodestate_save(const char *path, const tl_nodestate *s) {
    uint8_t *buf;
    size_t len;
    int rc = tl_nodestate_encode(s, &buf, &len);
    if (rc < 0) return tl_error(rc, "%s: not written: %s", path, tl_errmsg());
    rc = tl_file_write_atomic(path, buf, len, 0600, 0);
    free(buf);
    return rc;
}

int tl_nodestate_load(const char *path, tl_nodestate *s) {
    uint8_t *buf;
    size_t len;
    int rc = tl_file_read_all(path, MAX_FILE, &buf, &len);
    if (rc < 0) return rc;
    rc = tl_nodestate_decode(buf, len, path, s);
    free(buf);
    return rc;
}

/* The step recorded in the node state file at path, without installing it:
 * 0, or a negative code if it is missing or not a node state. */
static int peek_step(const char *path, uint64_t *step) {
    tl_st *st;
    int rc = tl_st_read(path, &st);
    if (rc < 0) return rc;
    const char *fmt = tl_st_meta(st, "format");
    if (!fmt || strcmp(fmt, FORMAT) != 0) rc = tl_error(TL_EFORMAT, "%s: not a node state", path);
    else rc = meta_u64(st, path, "step", step);
    tl_st_free(st);
    return rc;
}

/* "<base>.<slot>" into buf. TL_EINVAL if it does not fit. */
static int slot_path(const char *base, int slot, char *buf, size_t len) {
    int k = snprintf(buf, len, "%s.%d", base, slot);
    if (k < 0 || (size_t)k >= len) return tl_error(TL_EINVAL, "%s: path too long", base);
    return 0;
}

int tl_nodestate_keep(const char *base, const tl_nodestate *s) {
    char path[2][4096];
    uint64_t step[2];
    int ok[2], rc;
    for (int i = 0; i < 2; i++) {
        if ((rc = slot_path(base, i, path[i], sizeof path[i])) < 0) return rc;
        ok[i] = peek_step(path[i], &step[i]) == 0;
    }
    int slot;
    if (ok[0] && step[0] == s->step) slot = 0;
    else if (ok[1] && step[1] == s->step) slot = 1;
    else if (!ok[0]) slot = 0;
    else if (!ok[1]) slot = 1;
    else slot = step[0] <= step[1] ? 0 : 1;
    return tl_nodestate_save(path[slot], s);
}

int tl_nodestate_find(const char *base, uint64_t step, tl_nodestate *s) {
    char path[4096], found[128] = "";
    size_t fl = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t st;
        int rc = slot_path(base, i, path, sizeof path);
        if (rc < 0) return rc;
        if (peek_step(path, &st) < 0) continue;
        if (st == step) return tl_nodestate_load(path, s);
        int k = snprintf(found + fl, sizeof found - fl, "%s%" PRIu64, fl ? ", " : "", st);
        if (k > 0 && (size_t)k < sizeof found - fl) fl += (size_t)k;
    }
    return tl_error(TL_ESTATE, "%s: no saved node state of step %" PRIu64 " (found: %s)", base,
                    step, fl ? found : "none");
}

/* The associated data binding a transfer: label, run, step, from, to. */
#define AD_LEN (sizeof AD_LABEL - 1 + 8 + 8 + 4 + 4)
static void make_ad(uint8_t ad[AD_LEN], uint64_t run_id, uint64_t step, uint32_t from,
                    uint32_t to) {
    uint8_t *p = ad;
    memcpy(p, AD_LABEL, sizeof AD_LABEL - 1);
    p += sizeof AD_LABEL - 1;
    for (int k = 0; k < 8; k++) *p++ = (uint8_t)(run_id >> (8 * k));
    for (int k = 0; k < 8; k++) *p++ = (uint8_t)(step >> (8 * k));
    for (int k = 0; k < 4; k++) *p++ = (uint8_t)(from >> (8 * k));
    for (int k = 0; k < 4; k++) *p++ = (uint8_t)(to >> (8 * k));
}

int tl_nodestate_seal(const tl_group_key *gk, const tl_nodestate *s, uint32_t from, uint32_t to,
                      uint8_t **out, size_t *len) {
    uint8_t *pt, ad[AD_LEN];
    size_t n;
    int rc = tl_nodestate_encode(s, &pt, &n);
    *out = NULL;
    *len = 0;
    if (rc < 0) return rc;
    uint8_t *box = malloc(n + TL_TRANSFER_OVERHEAD);
    if (!box) {
        rc = tl_error(TL_ENOMEM, "node state transfer: out of memory");
        goto cleanup;
    }
    make_ad(ad, s->run_id, s->step, from, to);
    if ((rc = tl_transfer_seal(gk, ad, sizeof ad, pt, n, box)) < 0) {
        free(box);
        goto cleanup;
    }
    *out = box;
    *len = n + TL_TRANSFER_OVERHEAD;
cleanup:
    free(pt);
    return rc;
}

int tl_nodestate_open(const tl_group_key *gk, uint64_t run_id, uint64_t step, uint32_t from,
                      uint32_t to, const uint8_t *blob, size_t len, tl_nodestate *s) {
    uint8_t ad[AD_LEN];
    if (len < TL_TRANSFER_OVERHEAD)
        return tl_error(TL_EPROTO, "node state from node %u: %zu bytes, too short", from, len);
    size_t n = len - TL_TRANSFER_OVERHEAD;
    uint8_t *pt = malloc(n ? n : 1);
    if (!pt) return tl_error(TL_ENOMEM, "node state transfer: out of memory");
    make_ad(ad, run_id, step, from, to);
    int rc = tl_transfer_open(gk, ad, sizeof ad, blob, len, pt);
    if (rc < 0) {
        rc = tl_error(TL_EPROTO,
                      "node state from node %u for node %u at step %" PRIu64
                      " fails authentication (altered in transit, meant for another node, run or "
                      "step, or sealed under another group's key)",
                      from, to, step);
        goto cleanup;
    }
    /* the state inside must name the run and step authenticated */
    tl_st *st;
    uint64_t in_run = 0, in_step = 0;
    if ((rc = tl_st_read_mem(pt, n, &st)) < 0) goto cleanup;
    rc = meta_u64(st, "node state transfer", "run_id", &in_run);
    if (rc == 0) rc = meta_u64(st, "node state transfer", "step", &in_step);
    tl_st_free(st);
    if (rc < 0) goto cleanup;
    if (in_run != run_id || in_step != step) {
        rc = tl_error(TL_EPROTO,
                      "node state from node %u holds run %" PRIu64 " step %" PRIu64
                      ", its seal says run %" PRIu64 " step %" PRIu64,
                      from, in_run, in_step, run_id, step);
        goto cleanup;
    }
    rc = tl_nodestate_decode(pt, n, "node state transfer", s);
cleanup:
    memset(pt, 0, n);
    free(pt);
    return rc;
}
