/* test_le.c - le.h: byte-order helpers against fixed byte patterns, at
 * unaligned addresses, and round trips at the extremes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tl/le.h"

/* Stores give the documented byte order; loads read it back. */
static void test_patterns(void **state) {
    (void)state;
    uint8_t buf[17] = {0}, *p = buf + 1; /* odd address: alignment must not matter */
    tl_le_store16(p, 0x0102);
    assert_memory_equal(p, "\x02\x01", 2);
    assert_int_equal(tl_le_load16(p), 0x0102);
    tl_le_store32(p, 0x01020304u);
    assert_memory_equal(p, "\x04\x03\x02\x01", 4);
    assert_int_equal(tl_le_load32(p), 0x01020304u);
    tl_le_store64(p, 0x0102030405060708ull);
    assert_memory_equal(p, "\x08\x07\x06\x05\x04\x03\x02\x01", 8);
    assert_true(tl_le_load64(p) == 0x0102030405060708ull);
    tl_be_store32(p, 0x01020304u);
    assert_memory_equal(p, "\x01\x02\x03\x04", 4);
    assert_int_equal(tl_be_load32(p), 0x01020304u);
}

/* High bits survive (no sign extension through int promotion). */
static void test_extremes(void **state) {
    (void)state;
    uint8_t b[8];
    const uint64_t v64[] = {0, 1, 0x80, 0x8000000000000000ull, UINT64_MAX, 0xfedcba9876543210ull};
    for (size_t i = 0; i < sizeof v64 / sizeof v64[0]; i++) {
        tl_le_store64(b, v64[i]);
        assert_true(tl_le_load64(b) == v64[i]);
        tl_le_store32(b, (uint32_t)v64[i]);
        assert_true(tl_le_load32(b) == (uint32_t)v64[i]);
        tl_be_store32(b, (uint32_t)v64[i]);
        assert_true(tl_be_load32(b) == (uint32_t)v64[i]);
        tl_le_store16(b, (uint16_t)v64[i]);
        assert_true(tl_le_load16(b) == (uint16_t)v64[i]);
    }
    memset(b, 0xff, sizeof b);
    assert_true(tl_le_load32(b) == UINT32_MAX);
    assert_true(tl_be_load32(b) == UINT32_MAX);
    assert_true(tl_le_load16(b) == UINT16_MAX);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
