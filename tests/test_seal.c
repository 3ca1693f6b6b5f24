/* test_seal.c - sealed mode's primitives: group key and key file, fixed-point
 * ring, telescoping masks, parameter MAC, transfer encryption. Known answers
 * were computed independently (Python hmac/hashlib and `openssl enc`). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tl/error.h"
#include "tl/fixed.h"
#include "tl/groupkey.h"
#include "tl/mask.h"
#include "tl/seal.h"

static void key_0_to_31(tl_group_key *gk) {
    uint8_t k[32];
    for (int i = 0; i < 32; i++) k[i] = (uint8_t)i;
    assert_int_equal(tl_group_key_from_bytes(gk, k), 0);
}

static void hex_of(const uint8_t *b, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* xorshift64*: test data only */
static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void) {
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 2685821657736338717ull;
}
static float rnd_float(float scale) { /* uniform in (-scale, scale) */
    return (float)(((double)(rnd() >> 11) * 0x1p-53 * 2.0 - 1.0) * scale);
}

/* The id and the three derived keys of the key 00 01 .. 1f. */
static void test_key_known_answers(void **state) {
    (void)state;
    tl_group_key gk;
    char hex[65], idhex[33];
    key_0_to_31(&gk);
    tl_group_key_id_hex(gk.id, idhex);
    assert_string_equal(idhex, "2e2a87bc500ea70e8f53121f61f8d9bb");
    hex_of(gk.mask_key, 32, hex);
    assert_string_equal(hex, "391f546bddbe4fb098a89e0951f630f78e61ac3a8dfb49e90bac5c1484dd0b3a");
    hex_of(gk.mac_key, 32, hex);
    assert_string_equal(hex, "21a03f07d378d93f1f8bd2e1e3577a808e20a3b9a8b4d221c876d9148b72412c");
    hex_of(gk.transfer_key, 32, hex);
    assert_string_equal(hex, "adef2c5843f2c407737785ba140e7a71a92185960954a18aca0539bb24fec294");
    /* two random keys: different keys, different ids; the id is not the key */
    tl_group_key a, b;
    assert_int_equal(tl_group_key_generate(&a), 0);
    assert_int_equal(tl_group_key_generate(&b), 0);
    assert_memory_not_equal(a.key, b.key, 32);
    assert_memory_not_equal(a.id, b.id, TL_GROUP_KEY_ID_LEN);
    assert_memory_not_equal(a.id, a.key, TL_GROUP_KEY_ID_LEN);
    tl_group_key_wipe(&a);
    uint8_t zero[sizeof a] = {0};
    assert_memory_equal(&a, zero, sizeof a);
    tl_group_key_wipe(NULL);
}

static void write_raw(const char *path, const void *data, size_t n, mode_t mode) {
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* Save/load round trip, mode 0600 whatever the umask, no silent overwrite,
 * refusal of readable files and of anything but one line of 64 hex digits. */
static void test_key_file(void **state) {
    (void)state;
    tl_group_key gk, back;
    const char *path = tpath("group.key");
    assert_int_equal(tl_group_key_generate(&gk), 0);
    mode_t old = umask(0);
    assert_int_equal(tl_group_key_save(path, &gk, 0), 0);
    umask(old);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 65);
    assert_int_equal(tl_group_key_load(path, &back), 0);
    assert_memory_equal(&gk, &back, sizeof gk);

    /* no overwrite without force; with force, replaced */
    tl_group_key other;
    assert_int_equal(tl_group_key_generate(&other), 0);
    assert_int_equal(tl_group_key_save(path, &other, 0), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "exists"));
    assert_int_equal(tl_group_key_load(path, &back), 0);
    assert_memory_equal(gk.key, back.key, 32);
    assert_int_equal(tl_group_key_save(path, &other, 1), 0);
    assert_int_equal(tl_group_key_load(path, &back), 0);
    assert_memory_equal(other.key, back.key, 32);
    assert_int_equal(access(pathf("%s.tmp.%ld", path, (long)getpid()), F_OK), -1);

    /* group- or world-readable: refused, and the message says what to do */
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(tl_group_key_load(path, &back), TL_EINVAL);
    assert_non_null(strstr(tl_errmsg(), "chmod 600"));
    assert_int_equal(chmod(path, 0604), 0);
    assert_int_equal(tl_group_key_load(path, &back), TL_EINVAL);
    assert_int_equal(chmod(path, 0400), 0); /* stricter is fine */
    assert_int_equal(tl_group_key_load(path, &back), 0);

    /* formats */
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const char *p2 = tpath("k2");
    tl_group_key ref;
    key_0_to_31(&ref);
    write_raw(p2, hex, 64, 0600); /* no newline: accepted */
    assert_int_equal(tl_group_key_load(p2, &back), 0);
    assert_memory_equal(&back, &ref, sizeof ref);
    write_raw(p2, pathf("%s\r\n", hex), 66, 0600);
    assert_int_equal(tl_group_key_load(p2, &back), 0);
    write_raw(p2, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F\n", 65, 0600);
    assert_int_equal(tl_group_key_load(p2, &back), 0);
    assert_memory_equal(&back, &ref, sizeof ref);
    const char *bad[] = {
        pathf("%.62s\n", hex), /* 31 bytes */
        pathf("%s00\n", hex),  /* 33 bytes */
        pathf("%s \n", hex),   /* trailing space */
        pathf("%s\n\n", hex),  /* two lines */
        pathf(" %s\n", hex),   /* leading space */
        "",                    /* empty */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_raw(p2, bad[i], strlen(bad[i]), 0600);
        assert_int_equal(tl_group_key_load(p2, &back), TL_EFORMAT);
        assert_non_null(strstr(tl_errmsg(), "64 hex digits"));
    }
    uint8_t raw[32]; /* 32 raw bytes: not the format */
    for (int i = 0; i < 32; i++) raw[i] = (uint8_t)(0xA0 + i);
    write_raw(p2, raw, 32, 0600);
    assert_int_equal(tl_group_key_load(p2, &back), TL_EFORMAT);
    /* missing, and a directory */
    assert_int_equal(tl_group_key_load(tpath("none"), &back), TL_EIO);
    assert_int_equal(tl_group_key_load(scratch_dir, &back), TL_EIO);
}

/* A node of another group shows another id; everything keyed differs. */
static void test_wrong_key_id(void **state) {
    (void)state;
    tl_group_key a, b, a2;
    assert_int_equal(tl_group_key_generate(&a), 0);
    assert_int_equal(tl_group_key_generate(&b), 0);
    assert_int_equal(tl_group_key_from_bytes(&a2, a.key), 0);
    assert_memory_equal(a.id, a2.id, TL_GROUP_KEY_ID_LEN);
    assert_memory_not_equal(a.id, b.id, TL_GROUP_KEY_ID_LEN);
    /* one bit of difference in the key changes the id */
    uint8_t k[32];
    memcpy(k, a.key, 32);
    k[31] ^= 1;
    assert_int_equal(tl_group_key_from_bytes(&b, k), 0);
    assert_memory_not_equal(a.id, b.id, TL_GROUP_KEY_ID_LEN);
    assert_memory_not_equal(a.mask_key, b.mask_key, 32);
}

/* Encoding: round to nearest, exact where a float has no bits below 2^-32,
 * range |x| < 2^20 enforced with the element named, NaN/Inf refused. */
static void test_fixed_roundtrip_and_range(void **state) {
    (void)state;
    enum { N = 10000 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint64_t *q = malloc(N * sizeof *q);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(q);
    for (int i = 0; i < N; i++) {
        float s = ldexpf(1.0f, (int)(rnd() % 60) - 40); /* 2^-40 .. 2^19 */
        x[i] = rnd_float(s);
    }
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = 1048575.9375f; /* largest float below 2^20 */
    x[3] = -1048575.9375f;
    x[4] = 0x1p-33f; /* a tie: rounds to even (0) */
    x[5] = 0x3p-33f; /* a tie: rounds to even (2 units) */
    assert_int_equal(tl_fixed_encode(x, N, q, "test"), 0);
    assert_int_equal((int64_t)q[4], 0);
    assert_int_equal((int64_t)q[5], 2);
    assert_int_equal((int64_t)q[2], (int64_t)(1048575.9375 * 0x1p32));
    assert_int_equal(tl_fixed_decode(q, N, 1, y, "test"), 0);
    for (int i = 0; i < N; i++) {
        if (fabsf(x[i]) >= 0x1p-9f) assert_true(y[i] == x[i]); /* exact */
        assert_true(fabs((double)y[i] - (double)x[i]) <= 0x1p-33);
    }
    /* out of range: an error naming the element, never a wrap */
    x[7777] = 1048576.0f;
    assert_int_equal(tl_fixed_encode(x, N, q, "node-side gradient"), TL_ERANGE);
    assert_non_null(strstr(tl_errmsg(), "node-side gradient: element 7777"));
    x[7777] = -3e9f;
    assert_int_equal(tl_fixed_encode(x, N, q, "g"), TL_ERANGE);
    x[7777] = NAN;
    assert_int_equal(tl_fixed_encode(x, N, q, "g"), TL_ENUMERIC);
    assert_non_null(strstr(tl_errmsg(), "element 7777"));
    x[7777] = -INFINITY;
    assert_int_equal(tl_fixed_encode(x, N, q, "g"), TL_ENUMERIC);

    /* the largest values, summed TL_FIXED_MAX_TERMS times, do not wrap */
    float big[2] = {1048575.9375f, -1048575.9375f};
    uint64_t qb[2], acc[2] = {0, 0};
    assert_int_equal(tl_fixed_encode(big, 2, qb, "big"), 0);
    for (int t = 0; t < TL_FIXED_MAX_TERMS; t++) tl_ring_add(acc, qb, 2);
    float sb[2];
    assert_int_equal(tl_fixed_decode(acc, 2, TL_FIXED_MAX_TERMS, sb, "sum"), 0);
    assert_true(sb[0] == 1048575.9375f * TL_FIXED_MAX_TERMS);
    assert_true(sb[1] == -1048575.9375f * TL_FIXED_MAX_TERMS);
    /* ...but claimed as a sum of fewer terms, it is out of reach */
    assert_int_equal(tl_fixed_decode(acc, 2, 3, sb, "sum"), TL_ERANGE);
    assert_non_null(strstr(tl_errmsg(), "sum: element 0"));
    assert_int_equal(tl_fixed_decode(acc, 2, 0, sb, "sum"), TL_EINVAL);
    assert_int_equal(tl_fixed_decode(acc, 2, TL_FIXED_MAX_TERMS + 1, sb, "sum"), TL_EINVAL);
    free(x);
    free(y);
    free(q);
}

/* The vector paths of encode and decode (fixed.c's magic-number conversions)
 * give exactly the scalar definitions: q = rint(x * 2^32), ties to even, and
 * x = (float)v * 2^-32, over every magnitude, exact ties, both signs, and
 * vectors that mix in values for the scalar path (|x| >= 2^19, |v| >= 2^51). */
static void test_fixed_paths(void **state) {
    (void)state;
    enum { N = 4099 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    uint64_t *q = malloc(N * 8);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(q);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < N; i++) {
            int e = (int)(rnd() % 62) - 42; /* 2^-42 .. 2^19 */
            x[i] = rnd_float(ldexpf(1.0f, e));
            if (i % 7 == 0) x[i] = ldexpf((float)(int)(rnd() % 2001) - 1000.0f + 0.5f, -32);
            if (i % 11 == 0) x[i] = -x[i];
        }
        if (round & 1) x[N / 2] = 999999.5f; /* scalar path for the whole vector */
        if (round & 2) x[0] = -0x1p19f;
        if (tl_fixed_encode(x, N, q, "x") != 0) fail_msg("%s", tl_errmsg());
        for (int i = 0; i < N; i++)
            assert_true((int64_t)q[i] == (int64_t)rint((double)x[i] * 0x1p32));
        for (int i = 0; i < N; i++) {
            int b = 1 + (int)(rnd() % 52); /* |v| < 2^52 */
            q[i] = (uint64_t)((int64_t)(rnd() >> (64 - b)) * (rnd() & 1 ? -1 : 1));
        }
        if (round & 1) q[3] = (uint64_t)(INT64_C(1) << 51); /* scalar path */
        assert_int_equal(tl_fixed_decode(q, N, 2, y, "q"), 0);
        for (int i = 0; i < N; i++) {
            float want = (float)(int64_t)q[i] * 0x1p-32f;
            assert_memory_equal(&y[i], &want, sizeof want);
        }
    }
    free(x);
    free(y);
    free(q);
}

/* The stream of a fixed key and (run, step, attempt, index), against
 * `openssl enc -aes-128-ctr` with the key computed in Python. */
static void test_mask_known_answer(void **state) {
    (void)state;
    tl_group_key gk;
    key_0_to_31(&gk);
    tl_mask mk;
    assert_int_equal(tl_mask_init(&mk, &gk), 0);
    tl_mask_at at = {.run_id = 0x0102030405060708ull, .step = 42, .attempt = 3};
    uint64_t r[5];
    assert_int_equal(tl_mask_fill(&mk, &at, 7, r, 5), 0);
    assert_true(r[0] == 0x0904e63f52d5b731ull);
    assert_true(r[1] == 0x16d3c9b1d0516ec9ull);
    assert_true(r[2] == 0xcd99b9f1a1ee92e5ull);
    assert_true(r[3] == 0x4c84e4d48bad8eacull);
    assert_true(r[4] == 0x384d4c69640fde22ull);
    tl_mask_free(&mk);
    tl_mask_free(&mk); /* twice: safe */
    tl_mask_free(NULL);
}

/* Counts elements where a and b agree. */
static size_t n_equal(const uint64_t *a, const uint64_t *b, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += a[i] == b[i];
    return c;
}

/* Masks differ with run, step, attempt, index and key; equal for equal
 * inputs; path masks drawn in pieces follow mask.h's formula, across chunk
 * boundaries; the kept R serves only its own (run, step, attempt). */
static void test_mask_unique(void **state) {
    (void)state;
    enum { N = 10007 }; /* more than two chunks, not a multiple */
    tl_group_key gk, gk2;
    assert_int_equal(tl_group_key_generate(&gk), 0);
    assert_int_equal(tl_group_key_generate(&gk2), 0);
    tl_mask mk, mk2;
    assert_int_equal(tl_mask_init(&mk, &gk), 0);
    assert_int_equal(tl_mask_init(&mk2, &gk2), 0);
    uint64_t *a = malloc(N * 8), *b = malloc(N * 8), *v = malloc(N * 8);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(v);
    tl_mask_at at = {.run_id = 9, .step = 100, .attempt = 0};
    assert_int_equal(tl_mask_fill(&mk, &at, 2, a, N), 0);
    assert_int_equal(tl_mask_fill(&mk, &at, 2, b, N), 0);
    assert_memory_equal(a, b, N * 8);
    tl_mask_at vary[] = {{10, 100, 0}, {9, 101, 0}, {9, 100, 1}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tl_mask_fill(&mk, &vary[i], 2, b, N), 0);
        assert_true(n_equal(a, b, N) < 3);
    }
    assert_int_equal(tl_mask_fill(&mk, &at, 3, b, N), 0);
    assert_true(n_equal(a, b, N) < 3);
    assert_int_equal(tl_mask_fill(&mk, &at, TL_MASK_TOTAL, b, N), 0);
    assert_true(n_equal(a, b, N) < 3);
    assert_int_equal(tl_mask_fill(&mk2, &at, 2, b, N), 0);
    assert_true(n_equal(a, b, N) < 3);
    /* the path masks, drawn in uneven pieces, are the formula of mask.h over
     * the streams: m_0 = R + S_4, m_1 = S_6 - S_4, m_2 = -S_6 for ids {1,4,6} */
    {
        const uint32_t pid[3] = {1, 4, 6};
        uint64_t *r = malloc(N * 8), *s4 = malloc(N * 8), *s6 = malloc(N * 8);
        assert_non_null(r);
        assert_non_null(s4);
        assert_non_null(s6);
        assert_int_equal(tl_mask_fill(&mk, &at, TL_MASK_TOTAL, r, N), 0);
        assert_int_equal(tl_mask_fill(&mk, &at, 4, s4, N), 0);
        assert_int_equal(tl_mask_fill(&mk, &at, 6, s6, N), 0);
        for (int pos = 0; pos < 3; pos++) {
            for (int i = 0; i < N; i++) v[i] = b[i] = rnd();
            assert_int_equal(tl_mask_begin(&mk, &at, pid, 3, pos, N), 0);
            for (size_t off = 0, c = 1; off < N; off += c, c = c * 3 + 1) {
                if (c > N - off) c = N - off;
                assert_int_equal(tl_mask_next(&mk, v + off, v + off, c, +1), 0);
            }
            assert_int_equal(tl_mask_next(&mk, v, v, 1, +1), TL_EINVAL); /* past the end */
            for (int i = 0; i < N; i++) {
                uint64_t m = pos == 0 ? r[i] + s4[i] : pos == 1 ? s6[i] - s4[i] : 0 - s6[i];
                assert_true(v[i] == b[i] + m);
            }
        }
        /* unsealing takes R from the copy kept at position 0, or from the
         * stream (another attempt, another length): the same values */
        for (int i = 0; i < N; i++) b[i] = rnd();
        assert_int_equal(tl_mask_seal(&mk, &at, pid, 3, 0, v, N), 0);
        assert_int_equal(tl_mask_begin_total(&mk, &at, N), 0);
        assert_true(mk.from_kept);
        assert_int_equal(tl_mask_next(&mk, b, v, N, -1), 0);
        for (int i = 0; i < N; i++) assert_true(v[i] == b[i] - r[i]);
        assert_int_equal(tl_mask_unseal(&mk, &at, v, N - 1), 0); /* another length */
        assert_false(mk.from_kept);
        for (int i = 0; i < N - 1; i++) assert_true(v[i] == b[i] - 2 * r[i]);
        tl_mask_at later = at;
        later.attempt++;
        assert_int_equal(tl_mask_seal(&mk, &later, pid, 3, 1, v, N), 0); /* not first: no copy */
        assert_int_equal(tl_mask_begin_total(&mk, &at, N), 0);
        assert_true(mk.from_kept); /* still at's R */
        assert_int_equal(tl_mask_begin_total(&mk, &later, N), 0);
        assert_false(mk.from_kept);
        free(r);
        free(s4);
        free(s6);
    }
    /* bad participant lists */
    uint32_t ids[3] = {1, 4, 4};
    assert_int_equal(tl_mask_seal(&mk, &at, ids, 3, 0, v, N), TL_EINVAL);
    ids[2] = 2;
    assert_int_equal(tl_mask_seal(&mk, &at, ids, 3, 0, v, N), TL_EINVAL);
    ids[2] = TL_MASK_TOTAL;
    assert_int_equal(tl_mask_seal(&mk, &at, ids, 3, 0, v, N), TL_EINVAL);
    ids[2] = 5;
    assert_int_equal(tl_mask_seal(&mk, &at, ids, 3, 3, v, N), TL_EINVAL);
    assert_int_equal(tl_mask_seal(&mk, &at, ids, 0, 0, v, N), TL_EINVAL);
    free(a);
    free(b);
    free(v);
    tl_mask_free(&mk);
    tl_mask_free(&mk2);
}

/* N in 1..5 nodes out of 8, random participant subsets: the masked vectors
 * add up to Q + R, unsealing gives exactly the ring sum of the plain
 * encodings, decoding it matches the float sum to rounding; every proper
 * subset of masked vectors, and every single one, looks nothing like the
 * plain values. */
static void test_masked_sum(void **state) {
    (void)state;
    enum { N = 5000, NODES = 8 };
    tl_group_key gk;
    assert_int_equal(tl_group_key_generate(&gk), 0);
    tl_mask mk;
    assert_int_equal(tl_mask_init(&mk, &gk), 0);
    float *g[NODES], *dec = malloc(N * sizeof(float));
    uint64_t *q[NODES], *m[NODES], *plain = malloc(N * 8), *sum = malloc(N * 8),
                                   *part = malloc(N * 8), *partm = malloc(N * 8);
    assert_non_null(dec);
    assert_non_null(plain);
    assert_non_null(sum);
    assert_non_null(part);
    assert_non_null(partm);
    for (int j = 0; j < NODES; j++) {
        g[j] = malloc(N * sizeof(float));
        q[j] = malloc(N * 8);
        m[j] = malloc(N * 8);
        assert_non_null(g[j]);
        assert_non_null(q[j]);
        assert_non_null(m[j]);
    }
    for (int trial = 0; trial < 40; trial++) {
        int k = 1 + trial % 5;
        uint32_t ids[5];
        /* k distinct nodes of NODES, ascending */
        uint32_t pick = 0;
        while (__builtin_popcount(pick) < k) pick |= 1u << (rnd() % NODES);
        for (int j = 0, c = 0; j < NODES; j++)
            if (pick >> j & 1) ids[c++] = (uint32_t)j;
        tl_mask_at at = {
            .run_id = rnd(), .step = (uint64_t)trial, .attempt = (uint32_t)(trial % 3)};
        memset(plain, 0, N * 8);
        memset(sum, 0, N * 8);
        for (int p = 0; p < k; p++) {
            uint32_t id = ids[p];
            for (int i = 0; i < N; i++) g[id][i] = rnd_float(ldexpf(1.0f, (int)(rnd() % 24) - 16));
            g[id][0] = 1e5f; /* large values too */
            assert_int_equal(tl_fixed_encode(g[id], N, q[id], "g"), 0);
            tl_ring_add(plain, q[id], N);
            memcpy(m[id], q[id], N * 8);
            assert_int_equal(tl_mask_seal(&mk, &at, ids, k, p, m[id], N), 0);
            /* one masked vector alone: nothing of q left */
            assert_true(n_equal(m[id], q[id], N) < 3);
            tl_ring_add(sum, m[id], N);
        }
        /* the orchestrator's sum is Q + R, still masked */
        assert_true(n_equal(sum, plain, N) < 3);
        /* every proper non-empty subset of the masked vectors stays masked */
        for (uint32_t s = 1; s + 1 < (1u << k); s++) {
            memset(part, 0, N * 8);
            memset(partm, 0, N * 8);
            for (int p = 0; p < k; p++)
                if (s >> p & 1) {
                    tl_ring_add(part, q[ids[p]], N);
                    tl_ring_add(partm, m[ids[p]], N);
                }
            assert_true(n_equal(part, partm, N) < 3);
            assert_int_equal(tl_fixed_decode(partm, N, k, dec, "subset"), TL_ERANGE);
        }
        /* each node removes R: the exact ring sum */
        assert_int_equal(tl_fixed_decode(sum, N, k, dec, "masked"), TL_ERANGE);
        assert_int_equal(tl_mask_unseal(&mk, &at, sum, N), 0);
        assert_memory_equal(sum, plain, N * 8);
        assert_int_equal(tl_fixed_decode(sum, N, k, dec, "sum"), 0);
        for (int i = 0; i < N; i++) {
            double exact = 0;
            for (int p = 0; p < k; p++) exact += (double)g[ids[p]][i];
            /* k encodings (<= 2^-33 each) and one float rounding */
            double tol = k * 0x1p-33 + fabs(exact) * 0x1p-24;
            assert_true(fabs((double)dec[i] - exact) <= tol);
        }
        /* the wrong attempt's R does not unmask */
        tl_mask_at other = at;
        other.attempt++;
        memcpy(part, plain, N * 8);
        assert_int_equal(tl_mask_fill(&mk, &at, TL_MASK_TOTAL, partm, N), 0);
        tl_ring_add(part, partm, N);
        assert_int_equal(tl_mask_unseal(&mk, &other, part, N), 0);
        assert_int_equal(tl_fixed_decode(part, N, k, dec, "wrong attempt"), TL_ERANGE);
    }
    for (int j = 0; j < NODES; j++) {
        free(g[j]);
        free(q[j]);
        free(m[j]);
    }
    free(dec);
    free(plain);
    free(sum);
    free(part);
    free(partm);
    tl_mask_free(&mk);
}

/* Parameter MAC: known answer; any 1-ulp change, another step or another
 * group's key gives another MAC. */
static void test_param_mac(void **state) {
    (void)state;
    tl_group_key gk, other;
    key_0_to_31(&gk);
    assert_int_equal(tl_group_key_generate(&other), 0);
    float p3[3] = {1.0f, -2.5f, 0.125f};
    uint8_t mac[32], mac2[32];
    char hex[65];
    assert_int_equal(tl_param_mac(&gk, 5, p3, 3, mac), 0);
    hex_of(mac, 32, hex);
    assert_string_equal(hex, "3c108c3c57ec35ab74f24ba87450c980056f2a62361603cd4dd4668319204fc0");

    enum { N = 233856 };
    float *p = malloc(N * sizeof *p);
    assert_non_null(p);
    for (int i = 0; i < N; i++) p[i] = rnd_float(0.1f);
    assert_int_equal(tl_param_mac(&gk, 77, p, N, mac), 0);
    assert_int_equal(tl_param_mac(&gk, 77, p, N, mac2), 0);
    assert_true(tl_param_mac_equal(mac, mac2));
    for (int t = 0; t < 3; t++) {
        size_t i = t == 0 ? 0 : t == 1 ? N / 2 : N - 1;
        float keep = p[i];
        p[i] = nextafterf(p[i], INFINITY); /* 1 ulp */
        assert_int_equal(tl_param_mac(&gk, 77, p, N, mac2), 0);
        assert_false(tl_param_mac_equal(mac, mac2));
        p[i] = keep;
    }
    assert_int_equal(tl_param_mac(&gk, 78, p, N, mac2), 0);
    assert_false(tl_param_mac_equal(mac, mac2));
    assert_int_equal(tl_param_mac(&gk, 77, p, N - 1, mac2), 0);
    assert_false(tl_param_mac_equal(mac, mac2));
    assert_int_equal(tl_param_mac(&other, 77, p, N, mac2), 0);
    assert_false(tl_param_mac_equal(mac, mac2));
    free(p);
}

/* Transfer: round trip; a fresh nonce each time; any flipped bit (nonce,
 * ciphertext, tag), other associated data, a short box or another group's
 * key is an error and leaves no plaintext behind. */
static void test_transfer(void **state) {
    (void)state;
    tl_group_key gk, other;
    assert_int_equal(tl_group_key_generate(&gk), 0);
    assert_int_equal(tl_group_key_generate(&other), 0);
    enum { N = 4099 };
    uint8_t *pt = malloc(N), *box = malloc(N + TL_TRANSFER_OVERHEAD),
            *box2 = malloc(N + TL_TRANSFER_OVERHEAD), *out = malloc(N);
    assert_non_null(pt);
    assert_non_null(box);
    assert_non_null(box2);
    assert_non_null(out);
    for (int i = 0; i < N; i++) pt[i] = (uint8_t)rnd();
    const char ad[] = "run 1234 step 77 to node 3";
    const size_t blen = N + TL_TRANSFER_OVERHEAD;
    assert_int_equal(tl_transfer_seal(&gk, ad, sizeof ad, pt, N, box), 0);
    assert_int_equal(tl_transfer_seal(&gk, ad, sizeof ad, pt, N, box2), 0);
    assert_memory_not_equal(box, box2, TL_TRANSFER_NONCE_LEN);
    size_t same = 0; /* the ciphertexts differ too: ~N/256 bytes agree by chance */
    for (int i = 0; i < N; i++) same += box[12 + i] == box2[12 + i];
    assert_true(same < 64);
    assert_int_equal(tl_transfer_open(&gk, ad, sizeof ad, box, blen, out), 0);
    assert_memory_equal(out, pt, N);
    size_t flips[] = {0, 11, 12, 12 + N / 2, 12 + N - 1, 12 + N, blen - 1};
    for (size_t f = 0; f < sizeof flips / sizeof flips[0]; f++) {
        box[flips[f]] ^= 0x01;
        memset(out, 0x55, N);
        assert_int_equal(tl_transfer_open(&gk, ad, sizeof ad, box, blen, out), TL_EPROTO);
        assert_non_null(strstr(tl_errmsg(), "authentication failed"));
        for (int i = 0; i < N; i++) assert_int_equal(out[i], 0);
        box[flips[f]] ^= 0x01;
    }
    char ad2[sizeof ad];
    memcpy(ad2, ad, sizeof ad);
    ad2[sizeof ad - 2] = '4';
    assert_int_equal(tl_transfer_open(&gk, ad2, sizeof ad2, box, blen, out), TL_EPROTO);
    assert_int_equal(tl_transfer_open(&gk, NULL, 0, box, blen, out), TL_EPROTO);
    assert_int_equal(tl_transfer_open(&other, ad, sizeof ad, box, blen, out), TL_EPROTO);
    assert_int_equal(tl_transfer_open(&gk, ad, sizeof ad, box, blen - 1, out), TL_EPROTO);
    assert_int_equal(tl_transfer_open(&gk, ad, sizeof ad, box, TL_TRANSFER_OVERHEAD - 1, out),
                     TL_EPROTO);
    /* empty message, no associated data */
    assert_int_equal(tl_transfer_seal(&gk, NULL, 0, pt, 0, box), 0);
    assert_int_equal(tl_transfer_open(&gk, NULL, 0, box, TL_TRANSFER_OVERHEAD, out), 0);
    box[TL_TRANSFER_OVERHEAD - 1] ^= 0x80;
    assert_int_equal(tl_transfer_open(&gk, NULL, 0, box, TL_TRANSFER_OVERHEAD, out), TL_EPROTO);
    free(pt);
    free(box);
    free(box2);
    free(out);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Not an assertion: prints the keystream rate (one default-model mask, cut 2,
 * 233,856 values = 1.87 MB), best of 5, the cost of a node's seal (3
 * streams), and of encoding, decoding, the parameter MAC and the transfer
 * encryption at that size. The machine may be shared: best-of is the figure
 * to read. */
static void test_mask_rate(void **state) {
    (void)state;
    enum { N = 233856 };
    tl_group_key gk;
    assert_int_equal(tl_group_key_generate(&gk), 0);
    tl_mask mk;
    assert_int_equal(tl_mask_init(&mk, &gk), 0);
    uint64_t *v = calloc(N, 8);
    assert_non_null(v);
    tl_mask_at at = {1, 1, 0};
    uint32_t ids[3] = {0, 1, 2};
    double best_fill = 1e9, best_seal = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        assert_int_equal(tl_mask_fill(&mk, &at, 1, v, N), 0);
        double t1 = now_s();
        assert_int_equal(tl_mask_seal(&mk, &at, ids, 3, 0, v, N), 0);
        double t2 = now_s();
        if (t1 - t0 < best_fill) best_fill = t1 - t0;
        if (t2 - t1 < best_seal) best_seal = t2 - t1;
    }
    print_message("mask stream: %.2f GB/s (AES-128-CTR, %.0f us per 1.87 MB mask, best of 5); "
                  "seal of the first participant (3 streams): %.0f us\n",
                  N * 8 / best_fill * 1e-9, best_fill * 1e6, best_seal * 1e6);
    /* the other per-step or periodic costs, same size */
    float *f = malloc(N * sizeof *f);
    uint8_t *box = malloc(N * sizeof *f + TL_TRANSFER_OVERHEAD), mac[TL_PARAM_MAC_LEN];
    assert_non_null(f);
    assert_non_null(box);
    for (int i = 0; i < N; i++) f[i] = rnd_float(1.0f);
    double best_enc = 1e9, best_dec = 1e9, best_mac = 1e9, best_aead = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        assert_int_equal(tl_fixed_encode(f, N, v, "g"), 0);
        double t1 = now_s();
        assert_int_equal(tl_fixed_decode(v, N, 1, f, "g"), 0);
        double t2 = now_s();
        assert_int_equal(tl_param_mac(&gk, 1, f, N, mac), 0);
        double t3 = now_s();
        assert_int_equal(tl_transfer_seal(&gk, NULL, 0, f, N * sizeof *f, box), 0);
        double t4 = now_s();
        best_enc = fmin(best_enc, t1 - t0);
        best_dec = fmin(best_dec, t2 - t1);
        best_mac = fmin(best_mac, t3 - t2);
        best_aead = fmin(best_aead, t4 - t3);
    }
    print_message("same size, best of 5: fixed-point encode %.0f us, decode %.0f us; parameter "
                  "MAC %.0f us; transfer seal %.0f us\n",
                  best_enc * 1e6, best_dec * 1e6, best_mac * 1e6, best_aead * 1e6);
    free(f);
    free(box);
    free(v);
    tl_mask_free(&mk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_known_answers), cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_wrong_key_id),      cmocka_unit_test(test_fixed_roundtrip_and_range),
        cmocka_unit_test(test_fixed_paths),       cmocka_unit_test(test_mask_known_answer),
        cmocka_unit_test(test_mask_unique),       cmocka_unit_test(test_masked_sum),
        cmocka_unit_test(test_param_mac),         cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_mask_rate),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
