/* test_idx.c - IDX reader/writer: round trips and every rejection path.
 *
 * Each test crafts its bytes in memory, writes them into a fresh temporary
 * directory and reads them back through tl_idx_read (and tl_idx_read_mem), so
 * the file and memory paths are both exercised. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "tl/error.h"
#include "tl/idx.h"

#include "harness.h"

typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

/* IDX bytes: magic {0,0,type,rank}, dims big-endian, then payload (i*7+3). */
static buf make_idx(uint8_t type, int rank, const uint32_t *dims, size_t payload) {
    buf b;
    b.n = 4 + 4 * (size_t)rank + payload;
    b.p = malloc(b.n);
    assert_non_null(b.p);
    b.p[0] = 0, b.p[1] = 0, b.p[2] = type, b.p[3] = (uint8_t)rank;
    for (int i = 0; i < rank; i++) {
        b.p[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b.p[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b.p[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b.p[7 + 4 * i] = (uint8_t)dims[i];
    }
    for (size_t i = 0; i < payload; i++) b.p[4 + 4 * rank + i] = (uint8_t)(i * 7 + 3);
    return b;
}

/* gzip-compresses b (one member). */
static buf gzip_bytes(buf b) {
    z_stream z = {0};
    buf o;
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    o.n = deflateBound(&z, b.n) + 64;
    o.p = malloc(o.n);
    z.next_in = b.p, z.avail_in = (uInt)b.n;
    z.next_out = o.p, z.avail_out = (uInt)o.n;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    o.n = z.total_out;
    deflateEnd(&z);
    return o;
}

/* Number of leftover temporary files ("*.tmp.*") in the temporary directory. */
static int count_tmp_files(void) {
    DIR *d = opendir(scratch_dir);
    struct dirent *e;
    int n = 0;
    assert_non_null(d);
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void put_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Asserts that reading b as a file named name (and from memory) fails with
 * code and a message naming the file. */
static void expect_reject(buf b, const char *name, int code) {
    const char *path = tpath(name);
    tl_idx t;
    put_file(path, b.p, b.n);
    assert_int_equal(tl_idx_read(path, &t), code);
    assert_null(t.data);
    assert_non_null(strstr(tl_errmsg(), path));
    assert_int_equal(tl_idx_read_mem(b.p, b.n, name, &t), code);
    assert_null(t.data);
    assert_non_null(strstr(tl_errmsg(), name));
    unlink(path);
}

static void test_roundtrip(void **state) {
    static const uint32_t shapes[4][4] = {{5}, {3, 4}, {2, 3, 5}, {2, 1, 3, 2}};
    for (int gz = 0; gz <= 1; gz++) {
        for (int rank = 1; rank <= 4; rank++) {
            tl_idx t = {0}, r;
            t.rank = rank;
            t.count = 1;
            for (int i = 0; i < rank; i++) t.dims[i] = shapes[rank - 1][i], t.count *= t.dims[i];
            t.data = malloc(t.count);
            for (size_t i = 0; i < t.count; i++) t.data[i] = (uint8_t)(i * 31 + rank);
            const char *path = tpath(gz ? "rt.gz" : "rt");
            assert_int_equal(tl_idx_write(path, &t, gz), 0);
            assert_int_equal(tl_idx_read(path, &r), 0);
            assert_int_equal(r.rank, rank);
            assert_memory_equal(r.dims, t.dims, sizeof(uint32_t) * rank);
            assert_int_equal(r.count, t.count);
            assert_memory_equal(r.data, t.data, t.count);
            /* the file really is gzip (or raw) */
            FILE *f = fopen(path, "rb");
            uint8_t m[2];
            assert_int_equal(fread(m, 1, 2, f), 2);
            fclose(f);
            if (gz) assert_true(m[0] == 0x1f && m[1] == 0x8b);
            else assert_true(m[0] == 0 && m[1] == 0);
            tl_idx_free(&r);
            tl_idx_free(&t);
            tl_idx_free(&t); /* twice is safe */
            assert_int_equal(count_tmp_files(), 0);
        }
    }
}

static void test_read_mem_and_multimember(void **state) {
    uint32_t dims[2] = {3, 3};
    buf b = make_idx(8, 2, dims, 9);
    tl_idx t;
    assert_int_equal(tl_idx_read_mem(b.p, b.n, "mem", &t), 0);
    assert_int_equal(t.count, 9);
    assert_memory_equal(t.data, b.p + 12, 9);
    tl_idx_free(&t);
    /* two gzip members (header | payload) read as one stream, as gzip(1) does */
    buf h = {b.p, 12}, d = {b.p + 12, 9};
    buf gh = gzip_bytes(h), gd = gzip_bytes(d);
    buf cat = {malloc(gh.n + gd.n), gh.n + gd.n};
    memcpy(cat.p, gh.p, gh.n);
    memcpy(cat.p + gh.n, gd.p, gd.n);
    assert_int_equal(tl_idx_read_mem(cat.p, cat.n, "cat.gz", &t), 0);
    assert_memory_equal(t.data, b.p + 12, 9);
    tl_idx_free(&t);
    free(b.p), free(gh.p), free(gd.p), free(cat.p);
}

/* Large gzip files take the mapped-file and prefault paths: read back exactly,
 * also when the ISIZE trailer lies short and the buffer must grow after the
 * prefault helper has finished with it. */
static void test_large_gzip(void **state) {
    uint32_t dims[2] = {3000, 4000}; /* 12 MB: over the prefault threshold */
    buf b = make_idx(8, 2, dims, 12000000);
    buf g = gzip_bytes(b);
    const char *path = tpath("large.gz");
    tl_idx t;
    for (int lie = 0; lie <= 1; lie++) {
        if (lie) { /* ISIZE says 9 MB: prefaulted, then grown */
            uint32_t small = 9u << 20;
            for (int i = 0; i < 4; i++) g.p[g.n - 4 + i] = (uint8_t)(small >> (8 * i));
        }
        put_file(path, g.p, g.n);
        for (int mem = 0; mem <= 1; mem++) {
            int rc = mem ? tl_idx_read_mem(g.p, g.n, "large.gz", &t) : tl_idx_read(path, &t);
            if (lie) { /* libdeflate checks ISIZE: a lying trailer is a corrupt file */
                assert_int_equal(rc, TL_EFORMAT);
                assert_null(t.data);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(t.count, 12000000);
            assert_memory_equal(t.data, b.p + 12, t.count);
            tl_idx_free(&t);
        }
    }
    unlink(path);
    free(b.p), free(g.p);
}

static void test_bad_header(void **state) {
    uint32_t dims[4] = {2, 2, 2, 2};
    buf b = make_idx(8, 1, dims, 2);
    b.p[0] = 1;
    expect_reject(b, "badmagic", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "magic"));
    b.p[0] = 0, b.p[1] = 3;
    expect_reject(b, "badmagic2", TL_EFORMAT);
    free(b.p);

    b = make_idx(0x0D, 1, dims, 2); /* float type */
    expect_reject(b, "type", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "type"));
    free(b.p);

    b = make_idx(8, 0, dims, 1);
    expect_reject(b, "rank0", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "rank"));
    free(b.p);
    uint32_t d5[5] = {1, 1, 1, 1, 1};
    b = make_idx(8, 5, d5, 1);
    expect_reject(b, "rank5", TL_EFORMAT);
    free(b.p);

    uint32_t dz[3] = {2, 0, 2};
    b = make_idx(8, 3, dz, 0);
    expect_reject(b, "zerodim", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "zero"));
    free(b.p);

    /* header cut inside the magic and inside the dimensions */
    b = make_idx(8, 3, dims, 8);
    buf cut = {b.p, 3};
    expect_reject(cut, "shortmagic", TL_EFORMAT);
    cut.n = 9;
    expect_reject(cut, "shortdims", TL_EFORMAT);
    cut.n = 1;
    expect_reject(cut, "onebyte", TL_EFORMAT);
    free(b.p);
}

static void test_too_large(void **state) {
    /* product overflows 64 bits */
    uint32_t big[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    buf b = make_idx(8, 4, big, 0);
    expect_reject(b, "overflow", TL_ERANGE);
    free(b.p);
    /* just over TL_IDX_MAX_BYTES (2^32) */
    uint32_t over[2] = {65536, 65537};
    b = make_idx(8, 2, over, 0);
    expect_reject(b, "overmax", TL_ERANGE);
    free(b.p);
    /* exactly the maximum is allowed by the header, but the data is missing:
     * a truncation error, found before anything large is allocated (raw), or
     * with a buffer that only grows as bytes arrive (gzip) */
    uint32_t max[2] = {65536, 65536};
    b = make_idx(8, 2, max, 100);
    expect_reject(b, "atmax", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "truncated"));
    buf g = gzip_bytes(b);
    expect_reject(g, "atmax.gz", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "truncated"));
    free(b.p), free(g.p);
}

static void test_truncated_and_trailing(void **state) {
    uint32_t dims[2] = {10, 10};
    buf full = make_idx(8, 2, dims, 100);
    buf shortb = {full.p, full.n - 1};
    expect_reject(shortb, "trunc", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "truncated"));
    buf nodata = {full.p, 12};
    expect_reject(nodata, "nodata", TL_EFORMAT);

    buf gshort = gzip_bytes(shortb); /* valid gzip, short payload */
    expect_reject(gshort, "trunc.gz", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "truncated"));

    buf gfull = gzip_bytes(full); /* gzip stream cut short */
    for (size_t cut = 1; cut < gfull.n; cut += 3) {
        buf c = {gfull.p, cut};
        expect_reject(c, "cut.gz", TL_EFORMAT);
    }

    buf longb = make_idx(8, 2, dims, 101);
    expect_reject(longb, "trail", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "trailing"));
    buf glong = gzip_bytes(longb);
    expect_reject(glong, "trail.gz", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "trailing"));

    /* garbage after a complete gzip member */
    buf gjunk = {malloc(gfull.n + 5), gfull.n + 5};
    memcpy(gjunk.p, gfull.p, gfull.n);
    memcpy(gjunk.p + gfull.n, "junk!", 5);
    expect_reject(gjunk, "junk.gz", TL_EFORMAT);
    free(full.p), free(gshort.p), free(gfull.p), free(longb.p), free(glong.p), free(gjunk.p);
}

static void test_corrupt_gzip(void **state) {
    uint32_t dims[1] = {4000};
    buf raw = make_idx(8, 1, dims, 4000);
    buf g = gzip_bytes(raw);
    /* flip bytes in the deflate data, the CRC and the length */
    size_t spots[] = {12, g.n / 2, g.n - 6, g.n - 2};
    for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
        buf c = {malloc(g.n), g.n};
        memcpy(c.p, g.p, g.n);
        c.p[spots[i]] ^= 0x55;
        expect_reject(c, "corrupt.gz", TL_EFORMAT);
        free(c.p);
    }
    /* gzip magic followed by garbage */
    uint8_t junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
    junk[0] = 0x1f, junk[1] = 0x8b;
    buf j = {junk, sizeof junk};
    expect_reject(j, "garbage.gz", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "gzip"));
    free(raw.p), free(g.p);
}

static void test_empty_missing(void **state) {
    buf e = {(uint8_t *)"", 0};
    expect_reject(e, "empty", TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "empty"));
    tl_idx t;
    const char *path = tpath("does-not-exist");
    assert_int_equal(tl_idx_read(path, &t), TL_EIO);
    assert_null(t.data);
    assert_non_null(strstr(tl_errmsg(), path));
    assert_int_equal(tl_idx_read(scratch_dir, &t), TL_EIO); /* a directory */
    assert_non_null(strstr(tl_errmsg(), scratch_dir));
}

static void test_write_rejects(void **state) {
    uint8_t data[4] = {1, 2, 3, 4};
    tl_idx t = {.rank = 0, .dims = {4}, .count = 4, .data = data};
    const char *path = tpath("w");
    assert_int_equal(tl_idx_write(path, &t, 0), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(), path));
    t.rank = 1, t.count = 5;
    assert_int_equal(tl_idx_write(path, &t, 1), TL_EINVAL);
    t.dims[0] = 0, t.count = 0;
    assert_int_equal(tl_idx_write(path, &t, 0), TL_EINVAL);
    t.dims[0] = 4, t.count = 4;
    assert_int_equal(tl_idx_write(tpath("no-such-dir/w"), &t, 0), TL_EIO);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_tmp_files(), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_read_mem_and_multimember),
        cmocka_unit_test(test_large_gzip),    cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_too_large),     cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_corrupt_gzip),  cmocka_unit_test(test_empty_missing),
        cmocka_unit_test(test_write_rejects),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
