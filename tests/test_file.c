/* test_file.c - file.h: atomic replace, no link followed, stream files,
 * output checks, full reads. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "harness.h"
#include "tl/error.h"
#include "tl/file.h"

static char dir[256];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/tl_test_file_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    rm_tree(dir);
    return 0;
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* Number of entries in dir. */
static int entries(void) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* Atomic writes: content and mode; a link at the path is replaced, its
 * target untouched; an aborted write leaves nothing behind. */
static void test_atomic(void **state) {
    (void)state;
    const char *victim = pathf("%s/victim", dir), *key = pathf("%s/key.pem", dir);
    put(victim, "victim");
    assert_int_equal(symlink(victim, key), 0);
    assert_int_equal(tl_file_write_atomic(key, "secret", 6, 0600, 0), 0);
    struct stat st;
    assert_int_equal(lstat(key, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 0077, 0);
    char *s = slurp(key);
    assert_string_equal(s, "secret");
    free(s);
    s = slurp(victim);
    assert_string_equal(s, "victim");
    free(s);

    int before = entries();
    tl_file_w w;
    assert_int_equal(tl_file_begin(&w, pathf("%s/aborted", dir), 0644, TL_FILE_NOSYNC), 0);
    assert_int_equal(tl_file_write(&w, "x", 1), 0);
    assert_int_equal(entries(), before + 1);
    tl_file_abort(&w);
    tl_file_abort(&w); /* safe twice */
    assert_int_equal(entries(), before);
    assert_int_equal(tl_file_write_atomic(pathf("%s/no/such/x", dir), "x", 1, 0644, 0), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "no/such/x"));
}

/* Stream files: a link at the path is replaced (new file) or refused
 * (append), never written through. */
static void test_stream(void **state) {
    (void)state;
    const char *victim = pathf("%s/v2", dir), *m = pathf("%s/m.jsonl", dir);
    put(victim, "victim");
    assert_int_equal(symlink(victim, m), 0);
    FILE *f;
    assert_int_equal(tl_file_open_stream(m, 1, &f), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "symbolic link"));
    assert_int_equal(tl_file_open_stream(m, 0, &f), 0);
    fputs("line 1\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(tl_file_open_stream(m, 1, &f), 0);
    fputs("line 2\n", f);
    assert_int_equal(fclose(f), 0);
    char *s = slurp(m);
    assert_string_equal(s, "line 1\nline 2\n");
    free(s);
    s = slurp(victim);
    assert_string_equal(s, "victim");
    free(s);
    struct stat st;
    assert_int_equal(lstat(m, &st), 0);
    assert_true(S_ISREG(st.st_mode));
}

/* The output check: missing directory, a file as directory, a directory as
 * the path are refused; a good path passes and leaves nothing behind. */
static void test_check(void **state) {
    (void)state;
    int before = entries();
    assert_int_equal(tl_file_check_writable(pathf("%s/out.safetensors", dir)), 0);
    assert_int_equal(entries(), before);
    assert_int_equal(tl_file_check_writable(pathf("%s/missing/out", dir)), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "missing"));
    put(pathf("%s/plain", dir), "x");
    assert_int_equal(tl_file_check_writable(pathf("%s/plain/out", dir)), TL_EIO);
    assert_int_equal(tl_file_check_writable(dir), TL_EIO);
    assert_non_null(strstr(tl_errmsg(), "directory"));
    assert_int_equal(tl_file_check_writable(pathf("%s/", dir)), TL_EIO);
    assert_int_equal(tl_file_check_writable(""), TL_EIO);
}

/* Full reads, with their size limit. */
static void test_read_all(void **state) {
    (void)state;
    const char *p = pathf("%s/ten", dir);
    put(p, "0123456789");
    uint8_t *b;
    size_t n;
    assert_int_equal(tl_file_read_all(p, 10, &b, &n), 0);
    assert_int_equal(n, 10);
    assert_memory_equal(b, "0123456789", 11); /* and the terminating 0 */
    free(b);
    assert_int_equal(tl_file_read_all(p, 9, &b, &n), TL_ERANGE);
    put(p, "");
    assert_int_equal(tl_file_read_all(p, 9, &b, &n), 0);
    assert_int_equal(n, 0);
    free(b);
    assert_int_equal(tl_file_read_all(pathf("%s/absent", dir), 9, &b, &n), TL_EIO);
}

/* Reads of n bytes from a descriptor: all of them, or what there is up to
 * the end of the file (*got says how many); a bad descriptor is TL_EIO. */
static void test_read_full(void **state) {
    (void)state;
    const char *p = pathf("%s/ten", dir);
    put(p, "0123456789");
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t b[16];
    size_t got = 99;
    assert_int_equal(tl_file_read_full(fd, b, 4, &got, p), 0);
    assert_int_equal(got, 4);
    assert_memory_equal(b, "0123", 4);
    assert_int_equal(tl_file_read_full(fd, b, sizeof b, &got, p), 0); /* 6 left: stops at EOF */
    assert_int_equal(got, 6);
    assert_memory_equal(b, "456789", 6);
    assert_int_equal(tl_file_read_full(fd, b, sizeof b, &got, p), 0);
    assert_int_equal(got, 0);
    close(fd);
    assert_int_equal(tl_file_read_full(fd, b, 1, &got, p), TL_EIO); /* closed */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic),    cmocka_unit_test(test_stream),
        cmocka_unit_test(test_check),     cmocka_unit_test(test_read_all),
        cmocka_unit_test(test_read_full),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
