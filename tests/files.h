/*
 * files.h - scratch files for the tests that run tl or keep a temporary tree
 * (test_hostile.c, test_tls.c, test_tls_e2e.c): formatted paths, reading a
 * log whole, removing the tree. Include after <cmocka.h>.
 */
#ifndef TL_TESTS_FILES_H
#define TL_TESTS_FILES_H

#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* A formatted path in one of 16 rotating static buffers (so that a few can
 * be used in one call). */
static inline const char *pathf(const char *fmt, ...) {
    static char buf[16][PATH_MAX + 128];
    static int next;
    char *b = buf[next++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof buf[0], fmt, ap);
    va_end(ap);
    return b;
}

/* The whole file as a string ("" if it does not exist); free() it. */
static inline char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    if (f) {
        size_t r;
        while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
            n += r;
            if (cap - n < 2) {
                cap *= 2;
                s = realloc(s, cap);
                assert_non_null(s);
            }
        }
        fclose(f);
    }
    s[n] = 0;
    return s;
}

static inline int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Removes the scratch tree at dir (unless TL_KEEP_TMP is set, to look at it). */
static inline void rm_tree(const char *dir) {
    if (dir[0] && !getenv("TL_KEEP_TMP")) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
