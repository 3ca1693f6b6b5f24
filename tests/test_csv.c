/* test_csv.c - CSV reader: exact float parsing, tables, labels, headers,
 * gzip, every rejection path, and the real breast cancer table if present.
 *
 * The float parser is checked cell by cell against (float)strtod in the C
 * locale, bit for bit, over edge cases and a few hundred thousand random
 * cells (short and long mantissas, every exponent around float's range).
 * The breast cancer test reads $TL_SKLEARN_DIR/breast_cancer.csv (written by
 * scripts/sklearn-data.sh) and is skipped, with a message, when it is absent. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "tl/csv.h"
#include "tl/error.h"

#include "harness.h"

static char file_msg[512]; /* read_text's message from the file read */

static void put_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* One gzip member of p[0..n) appended to out (*on bytes so far). */
static void gzip_append(const void *p, size_t n, uint8_t **out, size_t *on) {
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, n) + 64;
    *out = realloc(*out, *on + cap);
    z.next_in = (Bytef *)p, z.avail_in = (uInt)n;
    z.next_out = *out + *on, z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *on += z.total_out;
    deflateEnd(&z);
}

/* Reads text as a file and from memory with options (label, header); both
 * must give the same result; returns the code, *t filled on success. */
static int read_text(const char *text, const char *label, int header, tl_table *t) {
    tl_csv_opts o = {label, header};
    const char *path = tpath("t.csv");
    tl_table m;
    put_file(path, text, strlen(text));
    int rc = tl_csv_read(path, &o, t);
    snprintf(file_msg, sizeof file_msg, "%s", tl_errmsg());
    int rc2 = tl_csv_read_mem(text, strlen(text), "mem.csv", &o, &m);
    assert_int_equal(rc, rc2);
    if (rc == 0) {
        assert_int_equal(m.n, t->n);
        assert_int_equal(m.features, t->features);
        assert_memory_equal(m.x, t->x, t->n * t->features * sizeof(float));
        assert_memory_equal(m.y, t->y, t->n * sizeof(int32_t));
        tl_table_free(&m);
    } else {
        assert_null(t->x);
        assert_null(m.x);
    }
    return rc;
}

/* Asserts that text is rejected with code and a message that names the file
 * and contains want (e.g. ":3:2: not a number"). */
static void expect_reject(const char *text, const char *label, int header, int code,
                          const char *want) {
    tl_table t;
    int rc = read_text(text, label, header, &t);
    if (rc != code || !strstr(file_msg, want) || !strstr(file_msg, tpath("t.csv")))
        fail_msg("text %s: got %d \"%s\", want %d \"%s\"", text, rc, file_msg, code, want);
}

/* (float)strtod(s), or +inf when that rounds beyond float (no UB cast). */
static float ref_float(const char *s, int *overflow) {
    double d = strtod(s, NULL);
    *overflow = fabs(d) >= 0x1.ffffffp127;
    return *overflow ? INFINITY : (float)d;
}

/* Checks tl_csv_parse_float(s) against the reference, bit for bit. */
static void check_cell(const char *s) {
    int over;
    float want = ref_float(s, &over), got = 12345.0f;
    int rc = tl_csv_parse_float(s, strlen(s), &got);
    if (over) {
        if (rc != TL_ERANGE) fail_msg("%s: want overflow, got rc %d value %a", s, rc, got);
        return;
    }
    if (rc != 0) fail_msg("%s: rc %d, want %a", s, rc, want);
    if (memcmp(&got, &want, sizeof got) != 0) fail_msg("%s: got %a, want %a", s, got, want);
}

static void test_float_edges(void **state) {
    // clang-format off
    static const char *cells[] = {
        "0", "-0", "+0", "0.0", "-0.0", "00000", ".5", "5.", "-.5", "+5.", "1", "-1", "1e0",
        "1E+0", "1e-0", "0.1", "0.2", "0.3", "1.17549435e-38", "1.1754942e-38", "1.4e-45",
        "1e-45", "7e-46", "7.006492321624085e-46", "7.006492321624086e-46", "2e-46", "1e-50",
        "-1e-50", "1e-400", "1e38", "3.4028235e38", "3.4028234663852886e38",
        "3.4028235677973366e38", "3.40282356779733661637539395458142568448e38",
        "3.4028236e38", "3.5e38", "-3.5e38", "1e39", "1e400", "-1e400",
        "123456789012345678", "1234567890123456789", "12345678901234567890",
        "123456789012345678901234567890", "9007199254740993", "9007199254740992",
        "18014398509481985", "0.000000000000000000000000000000000001234",
        "1.00000005960464477539062499", "1.000000059604644775390625",
        "1.00000005960464477539062501", "1.0000000596046447753906250000000000000001",
        "16777217", "16777216.5", "16777217.000000000001", "33554435", "4.9406564584124654e-324",
        "2.2250738585072014e-308", "1.7976931348623157e308", "1e22", "1e23", "1e-22", "1e-23",
        "8589973e-17", "7.0385307e-26", "0.999999999999999999999", "00000000000000000000001.5",
        "1.5000000000000000000000000000", "123.456e-2", "-9.999999e37", "4.7019774e-38",
        "2.5e-45", "2.1019476964872256e-45", "2.1019476964872257e-45", "1.401298464324817e-45",
        "0.7006492321624085354618647916449580656401e-45",
    };
    // clang-format on
    for (size_t i = 0; i < sizeof cells / sizeof *cells; i++) check_cell(cells[i]);
    float v;
    assert_int_equal(tl_csv_parse_float("3.5e38", 6, &v), TL_ERANGE);
    assert_int_equal(tl_csv_parse_float("3.4028235e38", 12, &v), 0);
    assert_true(v == FLT_MAX);
    assert_int_equal(tl_csv_parse_float("-0", 2, &v), 0);
    assert_true(v == 0 && signbit(v));
    static const char *bad[] = {"",    "-",    "+",        ".",     "-.",  "e5",  ".e5",
                                "1e",  "1e+",  "1e-",      "1.5.2", "1,5", "nan", "NaN",
                                "inf", "-inf", "Infinity", "0x1p3", "1 2", " 1",  "1 ",
                                "--1", "+-1",  "1d5",      "١"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (tl_csv_parse_float(bad[i], strlen(bad[i]), &v) != TL_EFORMAT)
            fail_msg("\"%s\" accepted", bad[i]);
}

/* xorshift64* */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void test_float_random(void **state) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    char b[128];
    for (int i = 0; i < 300000; i++) {
        int kind = (int)(rnd(&s) % 4);
        if (kind == 0) { /* a random float printed with 6..9 significant digits */
            uint32_t bits = (uint32_t)rnd(&s);
            float f;
            memcpy(&f, &bits, 4);
            if (!isfinite(f)) continue;
            snprintf(b, sizeof b, "%.*g", 6 + (int)(rnd(&s) % 4), f);
        } else if (kind == 1) { /* a random double printed with 15..17 digits */
            uint64_t bits = rnd(&s);
            double d;
            memcpy(&d, &bits, 8);
            if (!isfinite(d)) continue;
            snprintf(b, sizeof b, "%.*e", 14 + (int)(rnd(&s) % 3), d);
        } else { /* random digit strings: 1..40 digits, a point somewhere, an exponent */
            int nd = 1 + (int)(rnd(&s) % (kind == 2 ? 19 : 40)), k = 0;
            int point = (int)(rnd(&s) % (nd + 2)) - 1;
            if (rnd(&s) & 1) b[k++] = (rnd(&s) & 1) ? '-' : '+';
            for (int j = 0; j < nd; j++) {
                if (j == point) b[k++] = '.';
                b[k++] = (char)('0' + rnd(&s) % 10);
            }
            if (point == nd) b[k++] = '.';
            if (rnd(&s) % 4) k += snprintf(b + k, sizeof b - k, "e%d", (int)(rnd(&s) % 110) - 70);
            b[k] = 0;
        }
        check_cell(b);
    }
    /* halfway cases between adjacent floats, and just around them, as decimals */
    for (int i = 0; i < 40000; i++) {
        uint32_t bits = (uint32_t)rnd(&s) & 0x7f7fffff;
        if (i % 2)
            bits = (bits & 0x807fffff) | (uint32_t)(100 + rnd(&s) % 56) << 23; /* 2^-27..2^28 */
        float lo, hi;
        memcpy(&lo, &bits, 4);
        hi = nextafterf(lo, INFINITY);
        double mid = ((double)lo + (double)hi) / 2; /* exact in double */
        snprintf(b, sizeof b, "%.40e", mid);
        check_cell(b);
        snprintf(b, sizeof b, "%.17e", nextafter(mid, 0));
        check_cell(b);
        snprintf(b, sizeof b, "%.17e", nextafter(mid, INFINITY));
        check_cell(b);
        for (int digits = 9; digits <= 18; digits++) { /* 10..19 digits near the midpoint */
            snprintf(b, sizeof b, "%.*e", digits, mid);
            check_cell(b);
        }
    }
}

static void test_table_basic(void **state) {
    tl_table t;
    /* header detected, label last by default, CRLF, no final newline, blanks, quotes */
    assert_int_equal(
        read_text("a,b,label\r\n1.5, -2 ,0\r\n\"3\",4e1,2\r\n.5,5.,\"1\"", NULL, -1, &t), 0);
    assert_int_equal(t.n, 3);
    assert_int_equal(t.features, 2);
    float want[] = {1.5f, -2, 3, 40, 0.5f, 5};
    assert_memory_equal(t.x, want, sizeof want);
    int32_t wy[] = {0, 2, 1};
    assert_memory_equal(t.y, wy, sizeof wy);
    assert_int_equal(t.classes, 3);
    assert_null(t.class_names);
    assert_string_equal(t.feature_names[0], "a");
    assert_string_equal(t.feature_names[1], "b");
    assert_string_equal(t.label_name, "label");
    tl_table_free(&t);
    tl_table_free(&t); /* twice is safe */
    tl_table_free(NULL);

    /* a UTF-8 byte order mark (Excel writes one) is not part of the first cell */
    assert_int_equal(read_text("\xef\xbb\xbftarget,a\n1,2.5\n", "target", -1, &t), 0);
    assert_string_equal(t.label_name, "target");
    assert_true(t.x[0] == 2.5f && t.y[0] == 1);
    tl_table_free(&t);

    /* no header; labels not dense: classes = max + 1; trailing blank lines ignored */
    assert_int_equal(read_text("1,2,5\n3,4,0\n\n\r\n", NULL, -1, &t), 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.classes, 6);
    assert_null(t.feature_names);
    assert_null(t.label_name);
    assert_int_equal(t.y[0], 5);
    tl_table_free(&t);

    /* string labels sorted by byte value; first row with a string label is data */
    assert_int_equal(
        read_text("5.1,3.5,setosa\n4.9,3,virginica\n6,2.2,versicolor\n7,3,setosa\n", NULL, -1, &t),
        0);
    assert_int_equal(t.n, 4);
    assert_null(t.feature_names);
    assert_int_equal(t.classes, 3);
    assert_string_equal(t.class_names[0], "setosa");
    assert_string_equal(t.class_names[1], "versicolor");
    assert_string_equal(t.class_names[2], "virginica");
    int32_t wy2[] = {0, 2, 1, 0};
    assert_memory_equal(t.y, wy2, sizeof wy2);
    tl_table_free(&t);

    /* negative integer labels are strings: "-1" < "1" */
    assert_int_equal(read_text("1,-1\n2,1\n3,-1\n", NULL, -1, &t), 0);
    assert_int_equal(t.classes, 2);
    assert_string_equal(t.class_names[0], "-1");
    assert_int_equal(t.y[1], 1);
    tl_table_free(&t);
}

static void test_table_label_column(void **state) {
    tl_table t;
    const char *text = "id,y,f\n1,B,10\n2,A,20\n";
    /* by name (the header is then certain), by index, by negative index */
    assert_int_equal(read_text(text, "y", -1, &t), 0);
    assert_int_equal(t.features, 2);
    assert_string_equal(t.label_name, "y");
    assert_string_equal(t.feature_names[0], "id");
    assert_string_equal(t.feature_names[1], "f");
    float want[] = {1, 10, 2, 20};
    assert_memory_equal(t.x, want, sizeof want);
    assert_int_equal(t.y[0], 1);
    assert_string_equal(t.class_names[1], "B");
    tl_table_free(&t);
    assert_int_equal(read_text(text, "1", -1, &t), 0);
    assert_memory_equal(t.x, want, sizeof want);
    tl_table_free(&t);
    assert_int_equal(read_text(text, "-2", -1, &t), 0);
    assert_memory_equal(t.x, want, sizeof want);
    tl_table_free(&t);
    /* a name found in an all-numeric-looking first row makes it the header */
    assert_int_equal(read_text("1,2,target\n3,4,0\n", "target", -1, &t), 0);
    assert_int_equal(t.n, 1);
    tl_table_free(&t);
    /* forced header on a numeric first row */
    assert_int_equal(read_text("1,2,3\n4,5,6\n", NULL, 1, &t), 0);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.feature_names[1], "2");
    tl_table_free(&t);
    /* first row all numbers: data, even with an empty-looking rule */
    assert_int_equal(read_text("1,2,3\n4,5,6\n", NULL, -1, &t), 0);
    assert_int_equal(t.n, 2);
    tl_table_free(&t);
}

static void test_gzip(void **state) {
    const char *a = "x,y\n1,0\n2,1\n", *b = "3,1\n4,0\n";
    uint8_t *gz = NULL;
    size_t n = 0;
    tl_table t;
    gzip_append(a, strlen(a), &gz, &n);
    gzip_append(b, strlen(b), &gz, &n); /* two members: one stream */
    put_file(tpath("t.csv.gz"), gz, n);
    assert_int_equal(tl_csv_read(tpath("t.csv.gz"), NULL, &t), 0);
    assert_int_equal(t.n, 4);
    float want[] = {1, 2, 3, 4};
    assert_memory_equal(t.x, want, sizeof want);
    tl_table_free(&t);
    assert_int_equal(tl_csv_read_mem(gz, n, "m.gz", NULL, &t), 0);
    assert_int_equal(t.n, 4);
    tl_table_free(&t);
    gz[n / 2] ^= 0x55; /* corrupt */
    assert_int_equal(tl_csv_read_mem(gz, n, "m.gz", NULL, &t), TL_EFORMAT);
    assert_non_null(strstr(tl_errmsg(), "m.gz"));
    assert_null(t.x);
    free(gz);
    /* a large file with long lines: the buffer grows past its first guess */
    size_t big = 1 << 20, k = 0;
    char *s = malloc(big * 2);
    k += (size_t)sprintf(s + k, "a,b\n");
    while (k < big) k += (size_t)sprintf(s + k, "%zu.25,%zu\n", k, k % 3);
    gz = NULL, n = 0;
    gzip_append(s, k, &gz, &n);
    assert_int_equal(tl_csv_read_mem(gz, n, "big.gz", NULL, &t), 0);
    assert_int_equal(t.classes, 3);
    tl_table_free(&t);
    free(gz);
    free(s);
}

static void test_reject(void **state) {
    expect_reject("a,b,c\n1,2,0\n3,x,1\n", NULL, -1, TL_EFORMAT, "t.csv:3:2: not a number: \"x\"");
    expect_reject("a,b,c\n1,,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: empty cell");
    expect_reject("a,b,c\n1, ,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: empty cell");
    expect_reject("a,b,c\n1,2,0\n3,nan,1\n", NULL, -1, TL_EFORMAT, "t.csv:3:2: NaN or Inf");
    expect_reject("a,b,c\n-inf,2,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:1: NaN or Inf");
    expect_reject("a,b,c\n1,3.5e38,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: out of float32 range");
    expect_reject("a,b,c\n1,2,0\n1,2\n", NULL, -1, TL_EFORMAT, "t.csv:3: 2 cells, expected 3");
    expect_reject("a,b,c\n1,2,0\n1,2,3,4\n", NULL, -1, TL_EFORMAT, "t.csv:3: 4 cells, expected 3");
    expect_reject("a,b,c\n1,2,0\n\n1,2,3\n", NULL, -1, TL_EFORMAT, "t.csv:3: empty line");
    expect_reject("a,b,c\n1,2,\n", NULL, -1, TL_EFORMAT, "t.csv:2:3: empty label");
    expect_reject("a,b,c\n1,\"2,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: unterminated quote");
    expect_reject("a,b,c\n1,\"2\"3,0\n", NULL, -1, TL_EFORMAT,
                  "t.csv:2:2: text after a closing quote");
    expect_reject("a,b,c\n1,\"2\"\"3\",0\n", NULL, -1, TL_EFORMAT,
                  "t.csv:2:2: text after a closing quote");
    expect_reject("a,b,c\n1,2\"3,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: a quote inside a cell");
    expect_reject("a,b,c\n1,12abc,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: not a number: \"12abc\"");
    expect_reject("a,b,c\n1,0x10,0\n", NULL, -1, TL_EFORMAT, "t.csv:2:2: not a number");
    expect_reject("a,b,c\n1,2,0\r3,4,1\n", NULL, -1, TL_EFORMAT, "t.csv:2:");
    /* forbidden header: the text row is bad data */
    expect_reject("a,b,c\n1,2,0\n", NULL, 0, TL_EFORMAT, "t.csv:1:1: not a number: \"a\"");
    expect_reject("a,b,c\n1,2,0\n", "c", 0, TL_EFORMAT, "needs a header row");
    expect_reject("a,b,c\n1,2,0\n", "zz", -1, TL_EFORMAT, "no column named \"zz\"");
    expect_reject("a,b,c\n1,2,0\n", "3", -1, TL_EFORMAT, "label column 3 is out of range");
    expect_reject("a,b,c\n1,2,0\n", "-4", -1, TL_EFORMAT, "label column -4 is out of range");
    expect_reject("a\n1\n", NULL, -1, TL_EFORMAT, "one column only");
    expect_reject("", NULL, -1, TL_EFORMAT, "empty file");
    expect_reject("\n1,2\n", NULL, -1, TL_EFORMAT, "empty first line");
    expect_reject("a,b\n", NULL, -1, TL_EFORMAT, "no data rows");
    expect_reject("a,b\n1,256\n", NULL, -1, TL_ERANGE, "t.csv:2:2: label 256 is over the limit");
    /* more than 256 distinct string labels */
    char *s = malloc(8192);
    size_t k = (size_t)sprintf(s, "a,b\n");
    for (int i = 0; i < 257; i++) k += (size_t)sprintf(s + k, "1,c%d\n", i);
    expect_reject(s, NULL, -1, TL_ERANGE, "more than 256 distinct labels");
    free(s);
    tl_table t;
    tl_csv_opts o = {NULL, 2};
    assert_int_equal(tl_csv_read_mem("a,b\n1,2\n", 8, "m", &o, &t), TL_EINVAL);
    assert_int_equal(tl_csv_read(tpath("missing.csv"), NULL, &t), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "missing.csv"));
    assert_int_equal(tl_csv_read(scratch_dir, NULL, &t), TL_EIO);
}

/* The converted scikit-learn breast cancer table, if scripts/sklearn-data.sh ran. */
static void test_breast_cancer(void **state) {
    const char *dir = getenv("TL_SKLEARN_DIR");
    char path[4096];
    tl_table t;
    snprintf(path, sizeof path, "%s/breast_cancer.csv", dir ? dir : "");
    if (!dir || access(path, R_OK) != 0) {
        print_message("SKIPPED: breast_cancer.csv not found (run scripts/sklearn-data.sh DIR "
                      "and set TL_SKLEARN_DIR=DIR)\n");
        skip();
    }
    tl_csv_opts o = {"target", -1};
    assert_int_equal(tl_csv_read(path, &o, &t), 0);
    assert_int_equal(t.n, 569);
    assert_int_equal(t.features, 30);
    assert_int_equal(t.classes, 2);
    assert_string_equal(t.label_name, "target");
    assert_string_equal(t.feature_names[0], "mean radius");
    assert_true(t.x[0] == 17.99f); /* the first row of the package's file */
    assert_true(t.x[29] == 0.1189f);
    size_t ones = 0;
    for (size_t i = 0; i < t.n; i++) ones += t.y[i] == 1;
    assert_int_equal(ones, 357); /* 212 malignant (0), 357 benign (1) */
    tl_table_free(&t);
}

/* The other three converted tables: shapes and classes as the package describes them. */
static void test_sklearn_tables(void **state) {
    static const struct {
        const char *file;
        size_t n, features;
        int classes;
        const char *first_name;
    } tabs[] = {{"wine.csv", 178, 13, 3, "alcohol"},
                {"iris.csv", 150, 4, 3, "sepal length (cm)"},
                {"digits.csv", 1797, 64, 10, "pixel_0_0"}};
    const char *dir = getenv("TL_SKLEARN_DIR");
    char path[4096];
    for (size_t i = 0; i < sizeof tabs / sizeof *tabs; i++) {
        tl_table t;
        snprintf(path, sizeof path, "%s/%s", dir ? dir : "", tabs[i].file);
        if (!dir || access(path, R_OK) != 0) {
            print_message("SKIPPED: %s not found (run scripts/sklearn-data.sh DIR and set "
                          "TL_SKLEARN_DIR=DIR)\n",
                          tabs[i].file);
            skip();
        }
        assert_int_equal(tl_csv_read(path, NULL, &t), 0);
        assert_int_equal(t.n, tabs[i].n);
        assert_int_equal(t.features, tabs[i].features);
        assert_int_equal(t.classes, tabs[i].classes);
        assert_string_equal(t.feature_names[0], tabs[i].first_name);
        assert_string_equal(t.label_name, "target");
        tl_table_free(&t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_edges),   cmocka_unit_test(test_float_random),
        cmocka_unit_test(test_table_basic),   cmocka_unit_test(test_table_label_column),
        cmocka_unit_test(test_gzip),          cmocka_unit_test(test_reject),
        cmocka_unit_test(test_breast_cancer), cmocka_unit_test(test_sklearn_tables),
    };
    return cmocka_run_group_tests(tests, scratch_setup, scratch_teardown);
}
