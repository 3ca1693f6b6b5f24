/* test_safetensors.c - safetensors round trips, PyTorch files, strict rejection,
 * atomic writes. */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/error.h"
#include "tl/safetensors.h"

#include "harness.h"

#ifndef TL_TEST_DATA
#define TL_TEST_DATA "tests/data"
#endif

static void spit(const char *path, const void *b, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* How many entries of the scratch directory are temporaries of name
 * ("<name>.tmp" followed by anything). */
static int temporaries(const char *name) {
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp", name);
    int n = 0;
    DIR *d = opendir(scratch_dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* A round trip of F32 and I64 tensors (ranks 0..3, an empty one) with metadata
 * needing escapes keeps names, order, shapes, values and metadata exactly. */
static void test_round_trip(void **state) {
    (void)state;
    float w[6] = {1.5f, -2.25f, 3.0f, 0.0f, -0.0f, 1e-30f};
    int64_t y[4] = {0, -1, INT64_MAX, INT64_MIN};
    float s = 42.0f;
    tl_st_tensor t[4] = {
        {"0.weight", TL_ST_F32, 2, {2, 3}, w},
        {"labels \"q\" \\ \xc3\xa9", TL_ST_I64, 1, {4}, y},
        {"scalar", TL_ST_F32, 0, {0}, &s},
        {"empty", TL_ST_F32, 3, {2, 0, 5}, NULL},
    };
    tl_st_kv meta[3] = {
        {"model", "linear:256,linear:10"},
        {"note", "tab\there \"quoted\" back\\slash\nnewline \x01 \xe2\x82\xac"},
        {"empty", ""},
    };
    char path[512];
    snprintf(path, sizeof path, "%s", tpath("rt.safetensors"));
    assert_int_equal(tl_st_write(path, t, 4, meta, 3), 0);
    assert_int_equal(temporaries("rt.safetensors"), 0);

    size_t len;
    uint8_t *raw = read_bytes(path, &len);
    uint64_t h = 0;
    for (int k = 7; k >= 0; k--) h = h << 8 | raw[k];
    assert_int_equal(h % 8, 0);
    assert_int_equal(len, 8 + h + 24 + 32 + 4);
    assert_memory_equal(raw + 8, "{\"__metadata__\":{", 17); /* metadata first */
    free(raw);

    tl_st *st;
    assert_int_equal(tl_st_read(path, &st), 0);
    assert_int_equal(tl_st_count(st), 4);
    for (int i = 0; i < 4; i++) {
        const tl_st_tensor *r = tl_st_get(st, i);
        assert_non_null(r);
        assert_string_equal(r->name, t[i].name);
        assert_int_equal(r->dtype, t[i].dtype);
        assert_int_equal(r->rank, t[i].rank);
        for (int k = 0; k < r->rank; k++) assert_int_equal(r->shape[k], t[i].shape[k]);
        assert_ptr_equal(tl_st_find(st, t[i].name), r);
        size_t size = r->dtype == TL_ST_F32 ? 4 : 8;
        assert_int_equal((uintptr_t)r->data % size, 0);
        if (tl_st_numel(r) > 0) assert_memory_equal(r->data, t[i].data, tl_st_numel(r) * size);
    }
    assert_null(tl_st_get(st, 4));
    assert_null(tl_st_get(st, -1));
    assert_int_equal(tl_st_numel(tl_st_get(st, 2)), 1);
    assert_int_equal(tl_st_numel(tl_st_get(st, 3)), 0);
    assert_null(tl_st_find(st, "missing"));
    assert_int_equal(tl_st_meta_count(st), 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(tl_st_meta(st, meta[i].key), meta[i].value);
        assert_string_equal(tl_st_meta_get(st, i)->key, meta[i].key);
    }
    assert_null(tl_st_meta(st, "nope"));
    tl_st_free(st);
    tl_st_free(NULL);

    /* No metadata: the header has none, lookups give NULL. */
    assert_int_equal(tl_st_write(path, t, 1, NULL, 0), 0);
    assert_int_equal(tl_st_read(path, &st), 0);
    assert_int_equal(tl_st_count(st), 1);
    assert_int_equal(tl_st_meta_count(st), 0);
    assert_null(tl_st_meta(st, "model"));
    tl_st_free(st);

    /* No tensors at all. */
    assert_int_equal(tl_st_write(path, NULL, 0, meta, 1), 0);
    assert_int_equal(tl_st_read(path, &st), 0);
    assert_int_equal(tl_st_count(st), 0);
    assert_null(tl_st_find(st, "0.weight"));
    assert_string_equal(tl_st_meta(st, "model"), meta[0].value);
    tl_st_free(st);
}

/* Every PyTorch-written golden file loads; one is checked in detail. */
static void test_torch_golden(void **state) {
    (void)state;
    DIR *d = opendir(TL_TEST_DATA "/torch_golden");
    assert_non_null(d);
    struct dirent *e;
    int files = 0;
    char path[1024];
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", TL_TEST_DATA "/torch_golden", e->d_name);
        tl_st *st;
        int rc = tl_st_read(path, &st);
        if (rc < 0) fail_msg("%s", tl_errmsg());
        assert_true(tl_st_count(st) > 10);
        assert_non_null(tl_st_find(st, "x"));
        assert_non_null(tl_st_find(st, "loss"));
        assert_non_null(tl_st_meta(st, "model"));
        assert_non_null(tl_st_meta(st, "optimizer"));
        tl_st_free(st);
        files++;
    }
    closedir(d);
    assert_int_equal(files, 15);

    tl_st *st;
    assert_int_equal(tl_st_read(TL_TEST_DATA "/torch_golden/linear4__adadelta.safetensors", &st),
                     0);
    const tl_st_tensor *x = tl_st_find(st, "x"), *y = tl_st_find(st, "y");
    const tl_st_tensor *loss = tl_st_find(st, "loss"), *w = tl_st_find(st, "init.0.weight");
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(loss);
    assert_non_null(w);
    assert_int_equal(x->dtype, TL_ST_F32);
    assert_int_equal(x->rank, 2);
    assert_int_equal(x->shape[0], 6);
    assert_int_equal(x->shape[1], 4);
    assert_int_equal(y->dtype, TL_ST_I64);
    assert_int_equal(y->rank, 1);
    assert_int_equal(y->shape[0], 6);
    for (int i = 0; i < 6; i++) {
        int64_t label = ((const int64_t *)y->data)[i];
        assert_true(label >= 0 && label < 3);
    }
    assert_int_equal(loss->rank, 1);
    assert_int_equal(loss->shape[0], 3);
    const float *l = loss->data;
    assert_true(l[0] > 0.0f && l[0] < 10.0f);
    assert_int_equal(w->rank, 2);
    assert_int_equal(w->shape[0], 8);
    assert_int_equal(w->shape[1], 4);
    assert_ptr_equal(tl_st_get(st, 0), x); /* file order */
    assert_ptr_equal(tl_st_get(st, 2), w);
    assert_string_equal(tl_st_meta(st, "model"), "linear:8,linear:6,linear:5,linear:3");
    assert_string_equal(tl_st_meta(st, "optimizer"), "adadelta");
    tl_st_free(st);
}

/* Builds an image: length prefix, header text, then dlen data bytes
 * (0, 1, 2, ...). */
static uint8_t *image(const char *hdr, size_t dlen, size_t *len) {
    size_t h = strlen(hdr);
    *len = 8 + h + dlen;
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)((uint64_t)h >> (8 * k));
    memcpy(b + 8, hdr, h);
    for (size_t i = 0; i < dlen; i++) b[8 + h + i] = (uint8_t)i;
    return b;
}

/* Expects hdr over dlen data bytes to be rejected with TL_EFORMAT and a message
 * containing want. */
static void reject(const char *hdr, size_t dlen, const char *want) {
    size_t len;
    uint8_t *b = image(hdr, dlen, &len);
    tl_st *st = (tl_st *)1;
    int rc = tl_st_read_mem(b, len, &st);
    free(b);
    if (rc != TL_EFORMAT)
        fail_msg("header %s: expected TL_EFORMAT, got %d (%s)", hdr, rc, tl_errmsg());
    assert_null(st);
    if (!strstr(tl_errmsg(), want))
        fail_msg("header %s: message '%s' lacks '%s'", hdr, tl_errmsg(), want);
    if (strchr(tl_errmsg(), '\n')) fail_msg("multi-line message: %s", tl_errmsg());
}

/* Expects hdr to be accepted; returns the loaded file. */
static tl_st *accept(const char *hdr, size_t dlen) {
    size_t len;
    uint8_t *b = image(hdr, dlen, &len);
    tl_st *st = NULL;
    int rc = tl_st_read_mem(b, len, &st);
    free(b);
    if (rc != 0) fail_msg("header %s: rejected: %s", hdr, tl_errmsg());
    return st;
}

#define T1 "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

/* Each kind of malformed file is TL_EFORMAT with a one-line message. */
static void test_reject(void **state) {
    (void)state;
    tl_st *st;
    uint8_t small[5] = {1, 0, 0, 0, 0};
    assert_int_equal(tl_st_read_mem(small, 5, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "too short"));

    /* Header lengths: past EOF, and huge. */
    uint8_t past[50] = {100};
    assert_int_equal(tl_st_read_mem(past, 50, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "past the end of the file"));
    uint8_t huge[16] = {0, 0, 0, 0, 0, 1, 0, 0};
    assert_int_equal(tl_st_read_mem(huge, 16, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "exceeds the limit"));
    uint8_t maxlen[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(tl_st_read_mem(maxlen, 16, &st), TL_EFORMAT);

    /* Not JSON, not an object, malformed JSON. */
    reject("hello, world", 0, "not a JSON object");
    reject("", 0, "not a JSON object");
    reject("[1,2]", 0, "not a JSON object");
    reject("\"x\"", 0, "not a JSON object");
    reject("{\"a\":", 0, "not an object");
    reject("{\"a\"", 0, "expected ':'");
    reject("{", 0, "expected a string key");
    reject("{\"x\":" T1 ",}", 8, "expected a string key");
    reject("{\"x\":" T1 " \"y\":" T1 "}", 16, "expected ',' or '}'");
    reject("{\"x\":" T1 "} x", 8, "trailing characters");
    reject("{\"x\":" T1 "}{}", 8, "trailing characters");
    reject("{x:1}", 0, "expected a string key");
    reject("{\"x\":null}", 0, "not an object");
    reject("{\"x\":[]}", 0, "not an object");

    /* Strings. */
    reject("{\"a\tb\":" T1 "}", 8, "control character");
    reject("{\"a\\qb\":" T1 "}", 8, "bad escape");
    reject("{\"a\\u12\":" T1 "}", 8, "hex digit");
    reject("{\"a\\u0000\":" T1 "}", 8, "NUL");
    reject("{\"a\\ud800\":" T1 "}", 8, "surrogate");
    reject("{\"a\\udc00\":" T1 "}", 8, "surrogate");
    reject("{\"a\\ud800\\u0041\":" T1 "}", 8, "surrogate");
    reject("{\"a\xff\":" T1 "}", 8, "UTF-8");
    reject("{\"a\xc0\x80\":" T1 "}", 8, "UTF-8");     /* overlong */
    reject("{\"a\xed\xa0\x80\":" T1 "}", 8, "UTF-8"); /* encoded surrogate */
    reject("{\"abc", 0, "unterminated");

    /* dtype, keys. */
    reject("{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
           "unsupported dtype");
    reject("{\"x\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
           "unsupported dtype");
    reject("{\"x\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "dtype is not a string");
    reject("{\"x\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing 'dtype'");
    reject("{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing 'shape'");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing 'data_offsets'");
    reject("{\"x\":{}}", 8, "missing");
    reject("{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
           "duplicate key 'dtype'");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}", 8,
           "unknown key");

    /* Shapes. */
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8,
           "negative dimension");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
           "shape is not an array");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "fractional");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, "fractional");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8, "leading zero");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
           "expected an integer");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2,],\"data_offsets\":[0,8]}}", 8,
           "expected an integer");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2 1],\"data_offsets\":[0,8]}}", 8,
           "expected ',' or ']'");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
           "more than 8");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8,
           "too large");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
           8, "needs more than");

    /* Offsets. */
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
           "past the data block");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16,
           "past the data block");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 16,
           "span 12 bytes");
    reject("{\"x\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "span 8 bytes");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "end before");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 16, "2 entries");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 16, "more than 2");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 16,
           "negative data offset");
    reject("{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[20,20]}}", 16,
           "past the data block");

    /* Overlaps and duplicates. */
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
           16, "overlap");
    reject("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},"
           "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
           16, "overlap");
    reject("{\"a\":" T1 ",\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
           "duplicate tensor name 'a'");
    reject("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate key '__metadata__'");

    /* Metadata. */
    reject("{\"__metadata__\":{\"k\":1}}", 0, "metadata value of 'k' is not a string");
    reject("{\"__metadata__\":{\"k\":{\"a\":\"b\"}}}", 0, "not a string");
    reject("{\"__metadata__\":{\"k\":null}}", 0, "not a string");
    reject("{\"__metadata__\":[]}", 0, "__metadata__ is not an object");
    reject("{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object");
    reject("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate metadata key 'k'");
}

/* What strictness must still accept: escapes, whitespace, empty tensors next
 * to others, an uncovered data block, a misaligned tensor (copied aligned),
 * and a header length that is not a multiple of 8. */
static void test_accept(void **state) {
    (void)state;
    tl_st *st = accept("{\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\":" T1 "}", 8);
    assert_non_null(tl_st_find(st, "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80"));
    tl_st_free(st);

    st = accept(" \n{ \"x\" : { \"dtype\" : \"F32\" , \"shape\" : [ 2 ] , "
                "\"data_offsets\" : [ 0 , 8 ] } }  \t\r\n",
                8);
    assert_int_equal(tl_st_count(st), 1);
    tl_st_free(st);

    st = accept("{}", 0);
    assert_int_equal(tl_st_count(st), 0);
    tl_st_free(st);
    st = accept("{\"__metadata__\":{}}", 100); /* data block not covered: allowed */
    assert_int_equal(tl_st_meta_count(st), 0);
    tl_st_free(st);

    st = accept("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                "\"f\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"g\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[8,12]}}",
                16);
    assert_int_equal(tl_st_numel(tl_st_find(st, "e")), 0);
    assert_int_equal(tl_st_find(st, "g")->rank, 0);
    tl_st_free(st);

    /* Misaligned F32 at offset 2 and I64 at offset 6: aligned copies with the
     * right bytes. Header of odd length, so the block itself starts oddly in
     * the image. */
    const char *hdr = "{\"m\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]},"
                      "\"n\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[6,14]},"
                      "\"o\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[16,24]}}";
    assert_int_equal(strlen(hdr) % 2, 1);
    st = accept(hdr, 24);
    const tl_st_tensor *m = tl_st_find(st, "m"), *n = tl_st_find(st, "n"), *o = tl_st_find(st, "o");
    assert_int_equal((uintptr_t)m->data % 4, 0);
    assert_int_equal((uintptr_t)n->data % 8, 0);
    assert_int_equal((uintptr_t)o->data % 8, 0);
    uint8_t want[8] = {2, 3, 4, 5};
    assert_memory_equal(m->data, want, 4);
    for (int i = 0; i < 8; i++) want[i] = (uint8_t)(6 + i);
    assert_memory_equal(n->data, want, 8);
    for (int i = 0; i < 8; i++) want[i] = (uint8_t)(16 + i);
    assert_memory_equal(o->data, want, 8);
    tl_st_free(st);
}

/* File-level failures: missing file, short file, truncated data and header. */
static void test_reject_files(void **state) {
    (void)state;
    tl_st *st;
    assert_int_equal(tl_st_read(tpath("does-not-exist"), &st), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "does-not-exist"));
    assert_int_equal(tl_st_read(scratch_dir, &st), TL_EIO); /* a directory */

    const char *p = tpath("short.safetensors");
    spit(p, "\x04\0\0\0", 4);
    assert_int_equal(tl_st_read(p, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "short.safetensors"));
    assert_non_null(strstr(tl_errmsg(), "too short"));
    spit(p, "", 0);
    assert_int_equal(tl_st_read(p, &st), TL_EFORMAT);

    float w[16];
    for (int i = 0; i < 16; i++) w[i] = (float)i;
    tl_st_tensor t[1] = {{"w", TL_ST_F32, 2, {4, 4}, w}};
    char good[512];
    snprintf(good, sizeof good, "%s", tpath("good.safetensors"));
    assert_int_equal(tl_st_write(good, t, 1, NULL, 0), 0);
    size_t len;
    uint8_t *b = read_bytes(good, &len);
    char cut[512];
    snprintf(cut, sizeof cut, "%s", tpath("cut.safetensors"));
    spit(cut, b, len - 4); /* into the data */
    assert_int_equal(tl_st_read(cut, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "past the data block"));
    spit(cut, b, 20); /* into the header */
    assert_int_equal(tl_st_read(cut, &st), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "past the end of the file"));
    spit(cut, b, 8); /* only the length */
    assert_int_equal(tl_st_read(cut, &st), TL_EFORMAT);
    free(b);
}

/* Bad writer arguments are TL_EINVAL and create nothing. */
static void test_write_args(void **state) {
    (void)state;
    float w[2] = {1, 2};
    const char *p = tpath("args.safetensors");
    tl_st_tensor dup[2] = {{"a", TL_ST_F32, 1, {2}, w}, {"a", TL_ST_F32, 1, {2}, w}};
    assert_int_equal(tl_st_write(p, dup, 2, NULL, 0), TL_EINVAL);
    tl_st_tensor rank[1] = {{"a", TL_ST_F32, 9, {1, 1, 1, 1, 1, 1, 1, 1}, w}};
    assert_int_equal(tl_st_write(p, rank, 1, NULL, 0), TL_EINVAL);
    tl_st_tensor neg[1] = {{"a", TL_ST_F32, 1, {-2}, w}};
    assert_int_equal(tl_st_write(p, neg, 1, NULL, 0), TL_EINVAL);
    tl_st_tensor nodata[1] = {{"a", TL_ST_F32, 1, {2}, NULL}};
    assert_int_equal(tl_st_write(p, nodata, 1, NULL, 0), TL_EINVAL);
    tl_st_tensor reserved[1] = {{"__metadata__", TL_ST_F32, 1, {2}, w}};
    assert_int_equal(tl_st_write(p, reserved, 1, NULL, 0), TL_EINVAL);
    tl_st_tensor dtype[1] = {{"a", (tl_st_dtype)7, 1, {2}, w}};
    assert_int_equal(tl_st_write(p, dtype, 1, NULL, 0), TL_EINVAL);
    tl_st_kv badutf[1] = {{"k", "\xff"}};
    assert_int_equal(tl_st_write(p, dup, 1, badutf, 1), TL_EINVAL);
    tl_st_kv dupk[2] = {{"k", "a"}, {"k", "b"}};
    assert_int_equal(tl_st_write(p, dup, 1, dupk, 2), TL_EINVAL);
    assert_false(file_exists(p));
}

/* Atomic replacement: a missing directory fails cleanly; a failed write leaves
 * the existing file intact and no temporary behind; a good write replaces it. */
static void test_atomic(void **state) {
    (void)state;
    float a[4] = {1, 2, 3, 4};
    tl_st_tensor t[1] = {{"a", TL_ST_F32, 1, {4}, a}};
    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.safetensors", scratch_dir);
    assert_int_equal(tl_st_write(nodir, t, 1, NULL, 0), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "x.safetensors"));

    char p[512], tmp[600];
    snprintf(p, sizeof p, "%s", tpath("model.safetensors"));
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_int_equal(tl_st_write(p, t, 1, NULL, 0), 0);
    size_t len0;
    uint8_t *orig = read_bytes(p, &len0);

    /* 1. A directory at the old fixed temporary name is no obstacle (the
     * temporary has a random name); one at the final path is: TL_EIO, and
     * no temporary is left behind. */
    assert_int_equal(mkdir(tmp, 0700), 0);
    float b[4] = {5, 6, 7, 8};
    tl_st_tensor t2[1] = {{"b", TL_ST_F32, 1, {4}, b}};
    assert_int_equal(tl_st_write(tpath("other.safetensors"), t2, 1, NULL, 0), 0);
    assert_int_equal(rmdir(tmp), 0);
    assert_int_equal(mkdir(tpath("dir.safetensors"), 0700), 0);
    assert_int_equal(tl_st_write(tpath("dir.safetensors"), t2, 1, NULL, 0), TL_EIO);
    assert_int_equal(temporaries("dir.safetensors"), 0);
    assert_int_equal(rmdir(tpath("dir.safetensors")), 0);
    size_t len;
    uint8_t *now = read_bytes(p, &len);
    assert_int_equal(len, len0);
    assert_memory_equal(now, orig, len);
    free(now);

    /* 2. Writing the data fails midway (file size limit): EFBIG. */
    size_t big_n = 1 << 16;
    float *big = calloc(big_n, sizeof *big);
    assert_non_null(big);
    tl_st_tensor t3[1] = {{"big", TL_ST_F32, 1, {(int64_t)big_n}, big}};
    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = 4096;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = tl_st_write(p, t3, 1, NULL, 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(rc, TL_EIO);
    assert_int_equal(temporaries("model.safetensors"), 0);
    now = read_bytes(p, &len);
    assert_int_equal(len, len0);
    assert_memory_equal(now, orig, len);
    free(now);

    /* 3. A good write replaces the file. */
    assert_int_equal(tl_st_write(p, t3, 1, NULL, 0), 0);
    assert_int_equal(temporaries("model.safetensors"), 0);
    tl_st *st;
    assert_int_equal(tl_st_read(p, &st), 0);
    assert_non_null(tl_st_find(st, "big"));
    assert_null(tl_st_find(st, "a"));
    tl_st_free(st);
    free(big);
    free(orig);
}

/* Links planted at the path and at the old fixed temporary name: the write
 * replaces the link at the path with a regular file and writes through
 * neither; both victims keep their contents. */
static void test_no_follow(void **state) {
    (void)state;
    char victim1[512], victim2[512], p[512], tmp[600];
    snprintf(victim1, sizeof victim1, "%s", tpath("victim1"));
    snprintf(victim2, sizeof victim2, "%s", tpath("victim2"));
    snprintf(p, sizeof p, "%s", tpath("planted.safetensors"));
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    FILE *f = fopen(victim1, "w");
    assert_non_null(f);
    fputs("victim 1", f);
    fclose(f);
    assert_non_null(f = fopen(victim2, "w"));
    fputs("victim 2", f);
    fclose(f);
    assert_int_equal(symlink(victim1, p), 0);
    assert_int_equal(symlink(victim2, tmp), 0);
    float a[4] = {1, 2, 3, 4};
    tl_st_tensor t[1] = {{"a", TL_ST_F32, 1, {4}, a}};
    assert_int_equal(tl_st_write(p, t, 1, NULL, 0), 0);
    size_t len;
    uint8_t *v = read_bytes(victim1, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(v, "victim 1", 8);
    free(v);
    v = read_bytes(victim2, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(v, "victim 2", 8);
    free(v);
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    tl_st *r;
    assert_int_equal(tl_st_read(p, &r), 0);
    assert_non_null(tl_st_find(r, "a"));
    tl_st_free(r);
    assert_int_equal(unlink(tmp), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_torch_golden),
        cmocka_unit_test(test_reject),       cmocka_unit_test(test_accept),
        cmocka_unit_test(test_reject_files), cmocka_unit_test(test_write_args),
        cmocka_unit_test(test_atomic),       cmocka_unit_test(test_no_follow),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
