/* test_npy.c - .npy reader and the x.npy / y.npy data set: every version and
 * dtype it accepts, and every rejection path, each message naming the file.
 *
 * Files are written byte by byte as numpy.save lays them out (magic, version,
 * header length, the dict padded with spaces to a multiple of 64, '\n', the
 * data), so that malformed variants are one argument away. */
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

#include "tl/error.h"
#include "tl/npy.h"

#include "harness.h"

/* Writes a .npy file: version major, header dict text (padded as numpy pads,
 * to align the data to 64 bytes, unless align is 0: then no padding, and the
 * header ends right after its '\n'), then n bytes of data. */
static void write_npy_v(const char *path, int major, const char *dict, const void *data, size_t n,
                        int align) {
    FILE *f = fopen(path, "wb");
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict), hlen = dl + 1;
    if (align) hlen = ((pre + dl + 1 + 63) / 64) * 64 - pre;
    assert_non_null(f);
    // clang-format off
    uint8_t h[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (uint8_t)major, 0, (uint8_t)hlen,
                     (uint8_t)(hlen >> 8), (uint8_t)(hlen >> 16), (uint8_t)(hlen >> 24)};
    // clang-format on
    fwrite(h, 1, pre, f);
    fwrite(dict, 1, dl, f);
    for (size_t i = dl; i + 1 < hlen; i++) fputc(' ', f);
    fputc('\n', f);
    if (n) fwrite(data, 1, n, f);
    assert_int_equal(fclose(f), 0);
}

static void write_npy(const char *path, const char *dict, const void *data, size_t n) {
    write_npy_v(path, 1, dict, data, n, 1);
}

static void put_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) fwrite(p, 1, n, f);
    assert_int_equal(fclose(f), 0);
}

/* Asserts tl_npy_read(path) fails with code and a message naming path and holding want. */
static void expect_read_reject(const char *path, int code, const char *want) {
    tl_npy a;
    int rc = tl_npy_read(path, &a);
    if (rc != code || !strstr(tl_errmsg(), path) || !strstr(tl_errmsg(), want))
        fail_msg("%s: got %d \"%s\", want %d \"%s\"", path, rc, tl_errmsg(), code, want);
    assert_null(a.data);
}

static void test_read_versions_and_dtypes(void **state) {
    float xf[6] = {1, -2.5f, 3, 4, 5, 6e-3f};
    for (int major = 1; major <= 3; major++) {
        const char *p = tpath("a.npy");
        tl_npy a;
        write_npy_v(p, major, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", xf,
                    sizeof xf, 1);
        assert_int_equal(tl_npy_read(p, &a), 0);
        assert_int_equal(a.rank, 2);
        assert_int_equal(a.shape[0], 2);
        assert_int_equal(a.shape[1], 3);
        assert_int_equal(a.dtype, TL_NPY_F32);
        assert_int_equal(a.count, 6);
        assert_memory_equal(a.data, xf, sizeof xf);
        tl_npy_free(&a);
        tl_npy_free(&a); /* twice is safe */
    }
    tl_npy_free(NULL);
    /* double quotes, no trailing comma, other key order, spaces; 1-D tuple "(5,)" */
    static const struct {
        const char *descr;
        tl_npy_dtype dt;
        size_t size;
    } types[] = {{"|u1", TL_NPY_U8, 1},  {"<u1", TL_NPY_U8, 1},  {"|i1", TL_NPY_I8, 1},
                 {"<i2", TL_NPY_I16, 2}, {"<u2", TL_NPY_U16, 2}, {"<i4", TL_NPY_I32, 4},
                 {"<u4", TL_NPY_U32, 4}, {"<i8", TL_NPY_I64, 8}, {"<u8", TL_NPY_U64, 8}};
    uint8_t bytes[40];
    for (int i = 0; i < 40; i++) bytes[i] = (uint8_t)(i + 1);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        char dict[160];
        tl_npy a;
        snprintf(dict, sizeof dict, "{\"shape\": (5,),\"fortran_order\":False , \"descr\": \"%s\"}",
                 types[i].descr);
        write_npy(tpath("b.npy"), dict, bytes, 5 * types[i].size);
        assert_int_equal(tl_npy_read(tpath("b.npy"), &a), 0);
        assert_int_equal(a.dtype, types[i].dt);
        assert_int_equal(a.elsize, types[i].size);
        assert_int_equal(a.rank, 1);
        assert_memory_equal(a.data, bytes, 5 * types[i].size);
        tl_npy_free(&a);
    }
    /* a misaligned header (not what numpy writes) is still read, by copying */
    tl_npy a;
    write_npy_v(tpath("c.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", xf,
                sizeof xf, 0);
    assert_int_equal(tl_npy_read(tpath("c.npy"), &a), 0);
    assert_memory_equal(a.data, xf, sizeof xf);
    assert_int_equal(((uintptr_t)a.data) % 4, 0);
    tl_npy_free(&a);
}

static void test_read_reject(void **state) {
    float xf[16] = {0}; /* 64 bytes: enough for every case below */
    const char *p = tpath("r.npy");
#define DICT(descr, fo, shape) \
    "{'descr': '" descr "', 'fortran_order': " fo ", 'shape': " shape ", }"
    write_npy(p, DICT("<f4", "True", "(2, 3)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "Fortran order is not supported");
    write_npy(p, DICT("|O", "False", "(2, 3)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "object arrays ('|O') are not supported");
    write_npy(p, DICT(">f4", "False", "(2, 3)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "big-endian data ('>f4') is not supported");
    write_npy(p, DICT("<f8", "False", "(3,)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "unsupported dtype '<f8'");
    write_npy(p, DICT("|b1", "False", "(3,)"), xf, 3);
    expect_read_reject(p, TL_EFORMAT, "unsupported dtype '|b1'");
    write_npy(p, DICT("<U5", "False", "(3,)"), xf, 60);
    expect_read_reject(p, TL_EFORMAT, "unsupported dtype '<U5'");
    write_npy(p, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }", xf, 12);
    expect_read_reject(p, TL_EFORMAT, "structured dtypes are not supported");
    write_npy(p, DICT("<f4", "False", "(2, 3)"), xf, 20);
    expect_read_reject(p, TL_EFORMAT, "truncated: 20 bytes of data, the shape needs 24");
    write_npy(p, DICT("<f4", "False", "(2, 3)"), xf, 0);
    expect_read_reject(p, TL_EFORMAT, "truncated");
    float more[7] = {0};
    write_npy(p, DICT("<f4", "False", "(2, 3)"), more, sizeof more);
    expect_read_reject(p, TL_EFORMAT, "trailing bytes");
    write_npy(p, DICT("<f4", "False", "()"), xf, 4);
    expect_read_reject(p, TL_EFORMAT, "a scalar");
    write_npy(p, DICT("<f4", "False", "(0, 3)"), xf, 0);
    expect_read_reject(p, TL_EFORMAT, "dimension 0 is zero");
    write_npy(p, DICT("<f4", "False", "(1, 1, 1, 1, 1, 1, 1, 1, 1)"), xf, 4);
    expect_read_reject(p, TL_EFORMAT, "rank over 8");
    write_npy(p, DICT("<f4", "False", "(4294967296, 4294967296)"), xf, 4);
    expect_read_reject(p, TL_ERANGE, "more than");
    write_npy(p, DICT("<f4", "False", "(2, -3)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "shape is not a tuple of integers");
    write_npy(p, DICT("<f4", "False", "[2, 3]"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "expected '('");
    write_npy(p, DICT("<f4", "maybe", "(2, 3)"), xf, 24);
    expect_read_reject(p, TL_EFORMAT, "fortran_order is not True or False");
    write_npy(p, "{'descr': '<f4', 'shape': (2, 3), }", xf, 24);
    expect_read_reject(p, TL_EFORMAT, "missing 'fortran_order'");
    write_npy(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'x': 1}", xf, 24);
    expect_read_reject(p, TL_EFORMAT, "unexpected or repeated key 'x'");
    write_npy(p, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (6,)}", xf, 24);
    expect_read_reject(p, TL_EFORMAT, "unexpected or repeated key 'descr'");
    write_npy(p, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,)} junk", xf, 24);
    expect_read_reject(p, TL_EFORMAT, "text after the dict");
    write_npy(p, "{'descr': '<f4, 'fortran_order': False, 'shape': (6,)}", xf, 24);
    expect_read_reject(p, TL_EFORMAT, "bad header");
    /* version, magic, lengths */
    write_npy_v(p, 4, DICT("<f4", "False", "(6,)"), xf, 24, 1);
    expect_read_reject(p, TL_EFORMAT, "unsupported .npy version 4.0");
    put_bytes(p, "\x93NUMPZ\x01\x00\x10\x00", 10);
    expect_read_reject(p, TL_EFORMAT, "bad magic");
    put_bytes(p, "\x93NUMPY\x01\x00\xff\x00{}", 12);
    expect_read_reject(p, TL_EFORMAT, "past the end of the file");
    put_bytes(p, "\x93NUMPY\x02\x00\xff\xff\xff\x00", 12);
    expect_read_reject(p, TL_EFORMAT, "too large");
    put_bytes(p, "\x93NUMPY", 6);
    expect_read_reject(p, TL_EFORMAT, "not a .npy file");
    expect_read_reject(tpath("nothere.npy"), TL_EIO, "cannot open");
    expect_read_reject(scratch_dir, TL_EIO, "not a regular file");
#undef DICT
}

/* Makes directory name under scratch_dir and returns its path. */
static const char *mkset(const char *name) {
    const char *d = tpath(name);
    mkdir(d, 0700);
    return d;
}

static const char *in(const char *dir, const char *file) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, file);
    return p[k];
}

/* Asserts tl_npy_load(dir) fails with code and a message naming file and holding want. */
static void expect_load_reject(const char *dir, const char *file, int code, const char *want) {
    tl_npy_set s;
    int rc = tl_npy_load(dir, &s);
    if (rc != code || !strstr(tl_errmsg(), in(dir, file)) || !strstr(tl_errmsg(), want))
        fail_msg("%s: got %d \"%s\", want %d \"%s\" about %s", dir, rc, tl_errmsg(), code, want,
                 file);
    assert_null(s.y);
    assert_null(s.x.data);
}

static void test_load_set(void **state) {
    const char *d = mkset("img");
    uint8_t img[3 * 1 * 2 * 2];
    int64_t y8[3] = {2, 0, 7};
    tl_npy_set s;
    for (int i = 0; i < 12; i++) img[i] = (uint8_t)(i * 20);
    write_npy(in(d, "x.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 1, 2, 2), }",
              img, sizeof img);
    write_npy(in(d, "y.npy"), "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", y8,
              sizeof y8);
    assert_int_equal(tl_npy_load(d, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.x.rank, 4);
    assert_int_equal(s.x.dtype, TL_NPY_U8);
    assert_memory_equal(s.x.data, img, sizeof img);
    assert_int_equal(s.classes, 8);
    assert_int_equal(s.y[0], 2);
    assert_int_equal(s.y[2], 7);
    tl_npy_set_free(&s);
    tl_npy_set_free(&s);
    tl_npy_set_free(NULL);

    /* float32 table with uint8 and int32 labels */
    float xf[4 * 2] = {0.5f, 1, 2, 3, 4, 5, 6, 7};
    int32_t y4[4] = {1, 0, 1, 1};
    uint8_t y1[4] = {3, 0, 1, 2};
    d = mkset("tab");
    write_npy(in(d, "x.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }", xf,
              sizeof xf);
    write_npy(in(d, "y.npy"), "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", y4,
              sizeof y4);
    assert_int_equal(tl_npy_load(d, &s), 0);
    assert_int_equal(s.classes, 2);
    assert_memory_equal(s.x.data, xf, sizeof xf);
    assert_memory_equal(s.y, y4, sizeof y4);
    tl_npy_set_free(&s);
    write_npy(in(d, "y.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }", y1,
              sizeof y1);
    assert_int_equal(tl_npy_load(d, &s), 0);
    assert_int_equal(s.classes, 4);
    assert_int_equal(s.y[0], 3);
    tl_npy_set_free(&s);
}

static void test_load_reject(void **state) {
    const char *d = mkset("bad");
    float xf[4 * 2] = {0};
    int64_t y8[4] = {0, 1, 2, 3};
#define HDR(descr, shape) "{'descr': '" descr "', 'fortran_order': False, 'shape': " shape ", }"
    write_npy(in(d, "y.npy"), HDR("<i8", "(4,)"), y8, sizeof y8);
    expect_load_reject(d, "x.npy", TL_EIO, "cannot open");
    write_npy(in(d, "x.npy"), HDR("<f4", "(4, 2)"), xf, sizeof xf);
    /* shape mismatches */
    write_npy(in(d, "y.npy"), HDR("<i8", "(3,)"), y8, 24);
    expect_load_reject(d, "y.npy", TL_EFORMAT, "3 labels for 4 samples");
    write_npy(in(d, "y.npy"), HDR("<i8", "(4, 1)"), y8, sizeof y8);
    expect_load_reject(d, "y.npy", TL_EFORMAT, "labels must have shape [N] (rank 2)");
    write_npy(in(d, "y.npy"), HDR("<f4", "(4,)"), xf, 16);
    expect_load_reject(d, "y.npy", TL_EFORMAT, "labels must be integers");
    y8[2] = -1;
    write_npy(in(d, "y.npy"), HDR("<i8", "(4,)"), y8, sizeof y8);
    expect_load_reject(d, "y.npy", TL_EFORMAT, "label 2 is negative (-1)");
    y8[2] = 256;
    write_npy(in(d, "y.npy"), HDR("<i8", "(4,)"), y8, sizeof y8);
    expect_load_reject(d, "y.npy", TL_ERANGE, "label 2 is 256, over the limit");
    uint64_t yu[4] = {0, UINT64_MAX, 0, 0};
    write_npy(in(d, "y.npy"), HDR("<u8", "(4,)"), yu, sizeof yu);
    expect_load_reject(d, "y.npy", TL_ERANGE, "label 1 is");
    write_npy(in(d, "y.npy"), HDR("<i8", "(4,)"), y8, 16);
    expect_load_reject(d, "y.npy", TL_EFORMAT, "truncated");
    unlink(in(d, "y.npy"));
    expect_load_reject(d, "y.npy", TL_EIO, "cannot open");
    y8[2] = 2;
    write_npy(in(d, "y.npy"), HDR("<i8", "(4,)"), y8, sizeof y8);
    /* x rank, dtype, non-finite values */
    write_npy(in(d, "x.npy"), HDR("<f4", "(4, 2, 1)"), xf, sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "[N, features] or [N, C, H, W] (rank 3)");
    write_npy(in(d, "x.npy"), HDR("<f4", "(8,)"), xf, sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "(rank 1)");
    write_npy(in(d, "x.npy"), HDR("<i4", "(4, 2)"), xf, sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "float32 ('<f4') or uint8");
    xf[5] = NAN;
    write_npy(in(d, "x.npy"), HDR("<f4", "(4, 2)"), xf, sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "sample 2, element 1 is NaN");
    xf[5] = -INFINITY;
    write_npy(in(d, "x.npy"), HDR("<f4", "(4, 2)"), xf, sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "sample 2, element 1 is infinite");
    write_npy(in(d, "x.npy"), "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 2), }", xf,
              sizeof xf);
    expect_load_reject(d, "x.npy", TL_EFORMAT, "Fortran order");
#undef HDR
}

/* tl_npy_write lays a file out byte for byte as numpy.save does (the layout
 * write_npy reproduces), and tl_npy_read gives the same bytes back. */
static void test_write(void **state) {
    static const struct {
        tl_npy_dtype dt;
        int rank;
        uint64_t shape[4];
        const char *dict;
    } cases[] = {
        {TL_NPY_F32, 2, {3, 2}, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"},
        {TL_NPY_U8, 1, {6}, "{'descr': '|u1', 'fortran_order': False, 'shape': (6,), }"},
        {TL_NPY_U8,
         4,
         {1, 2, 1, 3},
         "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 1, 3), }"},
        {TL_NPY_I64, 1, {3}, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"},
    };
    uint8_t data[48];
    for (int i = 0; i < 48; i++) data[i] = (uint8_t)(i * 37 + 5);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t count = 1, es = cases[c].dt == TL_NPY_F32 ? 4 : cases[c].dt == TL_NPY_I64 ? 8 : 1;
        for (int i = 0; i < cases[c].rank; i++) count *= cases[c].shape[i];
        const char *ours = tpath("w_ours.npy"), *ref = tpath("w_ref.npy");
        assert_int_equal(tl_npy_write(ours, cases[c].dt, cases[c].rank, cases[c].shape, data), 0);
        write_npy(ref, cases[c].dict, data, count * es);
        size_t na, nb;
        uint8_t *a = read_bytes(ours, &na), *b = read_bytes(ref, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        free(a), free(b);
        tl_npy r;
        assert_int_equal(tl_npy_read(ours, &r), 0);
        assert_int_equal(r.rank, cases[c].rank);
        assert_int_equal(r.dtype, cases[c].dt);
        assert_memory_equal(r.data, data, count * es);
        tl_npy_free(&r);
    }
    /* bad arguments: nothing written */
    uint64_t zero[2] = {3, 0};
    const char *bad = tpath("w_bad.npy");
    assert_int_equal(tl_npy_write(bad, TL_NPY_F32, 2, zero, data), TL_EINVAL);
    assert_int_equal(tl_npy_write(bad, TL_NPY_F32, 0, zero, data), TL_EINVAL);
    assert_int_equal(access(bad, F_OK), -1);
    /* an unwritable place: TL_EIO naming the path */
    uint64_t one[1] = {1};
    assert_int_equal(tl_npy_write(tpath("no/such/dir/x.npy"), TL_NPY_U8, 1, one, data), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "no/such/dir/x.npy"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_versions_and_dtypes),
        cmocka_unit_test(test_read_reject),
        cmocka_unit_test(test_load_set),
        cmocka_unit_test(test_load_reject),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
