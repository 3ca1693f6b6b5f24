/* csv_load.c - CSV loading speed: writes a numeric CSV (default 200,000 rows
 * x 50 features of random floats printed with %.7g, plus an integer label
 * column; about 100 MB) to a temporary file, times tl_csv_read on it (best of
 * --reps, the file in the page cache), prints MB/s, and removes the file.
 *
 * For context it also times, on the same text, what bounds the reader from
 * below and from above: a bare pass over the mapped bytes (memchr for line
 * ends: mapping and reading the page cache), and the same cells parsed with
 * (float)strtod instead of the hand-written parser (what a naive reader costs).
 * With --gz the file is gzipped first (libdeflate's inflate is then part of
 * the time).
 *
 * --digits D prints the features with %.Dg instead (17: what pandas writes for
 * float64; cells over 15-16 significant digits mostly take the strtod path).
 *
 * usage: csv_load [--rows N] [--cols F] [--digits D] [--reps R] [--gz] [--keep]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "tl/csv.h"
#include "tl/error.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* xorshift64* */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Writes the CSV to path (gzipped with gz); returns its size in bytes of text. */
static size_t write_csv(const char *path, long rows, long cols, int digits, int gz) {
    uint64_t s = 42;
    size_t text = 0;
    FILE *f = gz ? NULL : fopen(path, "w");
    gzFile g = gz ? gzopen(path, "wb6") : NULL;
    char line[64 * 1024];
    if (!f && !g) {
        perror(path);
        exit(1);
    }
    for (long r = -1; r < rows; r++) {
        int k = 0;
        for (long c = 0; c < cols; c++) {
            if (r < 0) {
                k += snprintf(line + k, sizeof line - k, "f%ld,", c);
                continue;
            }
            /* magnitudes from 1e-3 to 1e4, both signs: %.7g gives "-1234.567", "0.001234567" */
            double u = (double)(rnd(&s) >> 11) / 9007199254740992.0;
            double mag = 1e-3 * (double)(1u << (rnd(&s) % 24));
            k += snprintf(line + k, sizeof line - k, "%.*g,", digits, (u - 0.5) * mag);
        }
        if (r < 0) k += snprintf(line + k, sizeof line - k, "label\n");
        else k += snprintf(line + k, sizeof line - k, "%d\n", (int)(rnd(&s) % 10));
        text += (size_t)k;
        if (g) gzwrite(g, line, (unsigned)k);
        else fwrite(line, 1, (size_t)k, f);
    }
    if (g) gzclose(g);
    else fclose(f);
    return text;
}

/* Maps path; *n gets its size. */
static const char *map_file(const char *path, size_t *n) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    *n = (size_t)st.st_size;
    const char *p = mmap(NULL, *n, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    return p;
}

int main(int argc, char **argv) {
    long rows = 200000, cols = 50, reps = 3, digits = 7;
    int gz = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc) rows = atol(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc) cols = atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--digits") && i + 1 < argc) digits = atol(argv[++i]);
        else if (!strcmp(argv[i], "--gz")) gz = 1;
        else if (!strcmp(argv[i], "--keep")) keep = 1;
        else {
            fprintf(
                stderr,
                "usage: csv_load [--rows N] [--cols F] [--digits D] [--reps R] [--gz] [--keep]\n");
            return 2;
        }
    }
    char path[256];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, sizeof path, "%s/tl_csv_load_%d.csv%s", tmp, (int)getpid(), gz ? ".gz" : "");
    size_t text = write_csv(path, rows, cols, (int)digits, gz);
    double mb = text / 1e6, best = 1e30, best_scan = 1e30, best_strtod = 1e30;
    printf("csv_load: %ld rows x %ld features (%%.%ldg) + label, %.1f MB of text%s\n", rows, cols,
           digits, mb, gz ? " (gzipped)" : "");
    for (long r = 0; r < reps; r++) {
        tl_table t;
        double t0 = now_s();
        if (tl_csv_read(path, NULL, &t) < 0) {
            fprintf(stderr, "csv_load: %s\n", tl_errmsg());
            return 1;
        }
        double el = now_s() - t0;
        if (el < best) best = el;
        tl_table_free(&t);
    }
    if (!gz) {
        for (long r = 0; r < reps; r++) { /* a bare pass: map, read every page, count lines */
            size_t n, lines = 0;
            double t0 = now_s();
            const char *p = map_file(path, &n), *q = p;
            while ((q = memchr(q, '\n', n - (size_t)(q - p)))) q++, lines++;
            munmap((void *)p, n);
            double el = now_s() - t0;
            if (el < best_scan) best_scan = el;
            if (lines != (size_t)rows + 1) return 1;
        }
        for (long r = 0; r < reps && r < 1; r++) { /* strtod per cell, into a float matrix */
            size_t n;
            double t0 = now_s();
            const char *p = map_file(path, &n);
            char *copy = malloc(n + 1); /* strtod needs a terminator */
            memcpy(copy, p, n);
            copy[n] = 0;
            float *x = malloc((size_t)rows * (cols + 1) * sizeof(float));
            char *q = strchr(copy, '\n') + 1;
            for (size_t i = 0; i < (size_t)rows * (cols + 1); i++) {
                x[i] = (float)strtod(q, &q);
                q++;
            }
            double el = now_s() - t0;
            if (el < best_strtod) best_strtod = el;
            munmap((void *)p, n);
            free(copy);
            free(x);
        }
    }
    printf("tl_csv_read:        %.3f s  %6.0f MB/s  (best of %ld)\n", best, mb / best, reps);
    if (!gz) {
        printf("bare memchr pass:   %.3f s  %6.0f MB/s  (map + read the page cache)\n", best_scan,
               mb / best_scan);
        printf("strtod per cell:    %.3f s  %6.0f MB/s  (no checks at all)\n", best_strtod,
               mb / best_strtod);
    }
    if (!keep) unlink(path);
    else printf("kept %s\n", path);
    return 0;
}
