/*
 * csv.h - a numeric CSV table (raw or gzip) as a float32 matrix plus labels.
 *
 * The file: comma-separated cells, one row per line ("\n" or "\r\n"; the last
 * line's newline is optional, empty lines at the very end are ignored, an
 * empty line anywhere else is an error). Every row has the same number of
 * cells. One column holds the label; every other column is a feature. A cell
 * may be wrapped in double quotes ("1.5", "benign") only if it contains no
 * quote itself and no line break (no "" escapes). Spaces and tabs around a
 * cell are ignored, and so is a UTF-8 byte order mark at the start. A gzip file is recognised by
 * its magic (1f 8b), not by its name; concatenated gzip members are read as one stream.
 *
 * Features. Each feature cell must be a decimal number: [+-] digits [. digits]
 * [e|E [+-] digits] (".5" and "5." are fine). It becomes the float32
 * (float)strtod(cell) in the C locale: the correctly rounded double, then
 * rounded to float - what numpy.loadtxt(...).astype(numpy.float32) or
 * pandas.read_csv(...).to_numpy(numpy.float32) gives a Python user, bit for
 * bit. Empty cells, non-numeric text, NaN, Inf, hexadecimal, and values that
 * overflow float32 (|x| >= 2^128 after rounding, e.g. 3.5e38) are errors;
 * values below float32's range round to a subnormal or (signed) zero, as the
 * cast does.
 *
 * Labels. If every label cell is a plain non-negative decimal integer
 * ("0", "7", "+2"; below TL_DATASET_MAX_CLASSES), labels are those integers
 * and classes = largest + 1 (a value absent from this file still has its
 * class, so that files of different nodes agree on what "2" means);
 * class_names is NULL. Otherwise every label is a string: the distinct
 * strings, sorted by byte value (strcmp), are classes 0..K-1 and are kept in
 * class_names (so "-1,1" gives -1 -> 0, 1 -> 1 and "1.0" is the string
 * "1.0"). At most TL_DATASET_MAX_CLASSES classes either way.
 *
 * Header. With header = -1 the first row is a header exactly when the label
 * was given by name or one of its feature cells is text: neither a number,
 * NaN/Inf nor empty (its label cell does not count: a first row
 * "5.1,3.5,setosa" is data). 1 forces a header row, 0 forbids one (then a
 * non-numeric first row is an ordinary bad-cell error). Header cells become
 * feature_names and label_name.
 *
 * The label column. opts->label NULL: the last column. A decimal integer is
 * an index counting from 0; a negative index counts from the end (-1 is the
 * last column). Anything else is a column name: it needs a header row (with
 * header = -1, finding the name in the first row makes that row the header)
 * and is matched exactly against the header cells, after the quotes and
 * blanks around them are removed.
 *
 * Errors. Every bad cell stops the read with TL_EFORMAT and a message naming
 * the file, the 1-based line and column, and the cell, e.g.
 *   "data.csv:12:3: not a number: \"abc\""
 *   "data.csv:40:31: NaN or Inf is not allowed: \"inf\""
 *   "data.csv:7: 30 cells, expected 31 (as on line 1)"
 *
 *     tl_table t;
 *     tl_csv_opts o = {.label = "target", .header = -1};
 *     if (tl_csv_read("breast_cancer.csv", &o, &t) < 0) ... tl_errmsg() ...
 *     // t.n = 569, t.features = 30, t.x[i * t.features + j], t.y[i] in 0..1
 *     tl_table_free(&t);
 */
#ifndef TL_CSV_H
#define TL_CSV_H

#include <stddef.h>
#include <stdint.h>

#define TL_CSV_MAX_COLUMNS (1 << 20)       /* cells per row */
#define TL_CSV_MAX_BYTES ((size_t)1 << 36) /* 64 GiB of (inflated) text at most */

typedef struct tl_csv_opts {
    const char *label; /* label column: NAME or INDEX (see above); NULL: the last */
    int header;        /* -1 detect, 0 no header row, 1 the first row is a header */
} tl_csv_opts;

typedef struct tl_table {
    size_t n;           /* rows (samples), >= 1 */
    size_t features;    /* feature columns, >= 1 */
    float *x;           /* n x features, row-major, in file order (owned) */
    int32_t *y;         /* n labels, each in 0..classes-1 (owned) */
    int classes;        /* number of classes (see "Labels") */
    char **class_names; /* classes sorted strings if labels are strings, else NULL (owned) */
    char *
        *feature_names; /* features header cells in column order, or NULL without header (owned) */
    char *label_name;   /* the label column's header cell, or NULL without header (owned) */
} tl_table;

/* Reads the CSV file at path (raw or gzip) into *out; o may be NULL (label:
 * last column; header: detect). On failure *out is left empty (every pointer
 * NULL) and the message names the file. Returns 0 or: TL_EIO (cannot open,
 * map or read; not a regular file), TL_EFORMAT (a bad cell or row as listed above, no data rows,
 * fewer than 2 columns, a label name not in the header, an index out of range, corrupt gzip),
 * TL_ERANGE (more than TL_CSV_MAX_COLUMNS columns, TL_CSV_MAX_BYTES bytes or TL_DATASET_MAX_CLASSES
 * classes), TL_EINVAL (o's header not -1, 0 or 1), TL_ENOMEM. */
int tl_csv_read(const char *path, const tl_csv_opts *o, tl_table *out);

/* The same from memory (raw or gzip bytes); name is used in messages. buf is
 * only read, never kept. */
int tl_csv_read_mem(const void *buf, size_t len, const char *name, const tl_csv_opts *o,
                    tl_table *out);

/* Parses one decimal number s[0..len) exactly as tl_csv_read parses a feature
 * cell (no surrounding spaces or quotes): 0 and *out = (float)strtod(s) in the
 * C locale, or TL_EFORMAT (not a number, NaN, Inf) or TL_ERANGE (overflows
 * float32), without recording a message. Exposed for tests and benchmarks. */
int tl_csv_parse_float(const char *s, size_t len, float *out);

/* Frees every buffer of t and empties *t. Safe on NULL or an empty/zeroed table. */
void tl_table_free(tl_table *t);

#endif
