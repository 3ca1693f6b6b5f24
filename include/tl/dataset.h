/*
 * dataset.h - a labelled data set in memory: images (uint8) or a table /
 * arrays (float32), loaded from whatever a path points at.
 *
 * Sources (tl_dataset_open; tl_dataset_load is the same with default options):
 *   - an MNIST-layout directory: four IDX files, raw or gzipped,
 *       train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
 *       t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
 *     A split ("train" or "t10k") needs only its own two files. uint8, sample
 *     shape 1 x rows x cols.
 *   - a NumPy directory: x.npy ([N, features] or [N, C, H, W], float32 or
 *     uint8) and y.npy ([N] integers), read by tl_npy_load (npy.h), and
 *     optionally classes.txt beside them: the class names, one a line (each
 *     ended by '\n'), line c naming label c; every label must have a line,
 *     and classes is then the number of lines. Without it the labels are
 *     plain numbers (class_names NULL). It holds one data set: split S loads
 *     DIR/S/x.npy + DIR/S/y.npy (+ DIR/S/classes.txt) when DIR/S/x.npy
 *     exists (what tl_dataset_save writes for a split other than "train"),
 *     else DIR/x.npy + DIR/y.npy (+ DIR/classes.txt) whatever the split.
 *   - a CSV file (raw or gzip), read by tl_csv_read (csv.h) with the label
 *     column and header rule of the options: float32 features, rank 1, and
 *     the class names when labels are strings. A file is one data set and the
 *     split is ignored.
 *   - a partition directory (what `tl partition` writes: DIR/node-1,
 *     DIR/node-2, ..., each an MNIST-layout or NumPy directory): its nodes'
 *     data concatenated in node order; the nodes must agree on their class
 *     names (all the same classes.txt, or none).
 * There is no test split inside a CSV file or a NumPy directory: a test set
 * is its own file or directory (--test-data), or rows held out with
 * tl_dataset_split.
 *
 * Element types. uint8 data keeps its bytes (60,000 x 784 for
 * Fashion-MNIST) in images and is scaled by 1/255 when converted to float;
 * float32 data lives in feats and is used as it is. Either way the floats
 * are then normalized (scalar MEAN,STD here; norm.h for the per-feature
 * descriptor):
 *   x = ((byte / 255) - mean) / std     (uint8; float32 arithmetic, PyTorch's
 *                                         order: ToTensor then Normalize)
 *   x = (value - mean) / std            (float32)
 *
 *     tl_dataset d;
 *     if (tl_dataset_load(dir, "train", &d) < 0) ... tl_errmsg() ...
 *     tl_dataset_gather(&d, rows, n, 0.1307f, 0.3081f, x, y);
 *     tl_dataset_free(&d);
 */
#ifndef TL_DATASET_H
#define TL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define TL_DATASET_MAX_CLASSES 256

/* The element type of the samples. 0 is uint8 so that a zeroed or
 * designated-initializer struct (n, dim, rows, cols, images, labels) is the
 * image data set it always was. */
typedef enum tl_elem {
    TL_ELEM_U8 = 0,  /* images: n x dim bytes, scaled by 1/255 when gathered */
    TL_ELEM_F32 = 1, /* feats: n x dim float32, finite, used as they are */
} tl_elem;

typedef struct tl_dataset {
    size_t n;            /* number of samples */
    size_t dim;          /* features per sample (the product of the sample shape) */
    uint32_t rows, cols; /* 2-D view, rows * cols == dim: (C*H, W) at rank 3, (1, dim) at 1 */
    int classes;         /* max label + 1, or the number of class_names */
    uint8_t *images;     /* owned, n x dim bytes (TL_ELEM_U8), else NULL */
    uint8_t *labels;     /* owned, n bytes */
    /* added for tables and arrays; all zero means a uint8 image of rows x cols */
    tl_elem dtype;      /* element type */
    float *feats;       /* owned, n x dim floats (TL_ELEM_F32), else NULL */
    int rank;           /* sample rank: 1 (features) or 3 (C, H, W); 0: 3, {1, rows, cols} */
    uint32_t shape[3];  /* rank 1: {dim, 0, 0}; rank 3: {C, H, W} */
    char **class_names; /* NULL, or classes names (strings from a CSV label column; owned) */
} tl_dataset;

/* How a source is read; a zeroed struct (or NULL) gives the defaults. */
typedef struct tl_dataset_opts {
    const char *label; /* CSV label column, NAME or INDEX (csv.h); NULL: the last column */
    int header;        /* CSV header row: 0 detect (the default), 1 the first row is a
                        * header, -1 the first row is data (csv.h's -1/1/0 rule) */
} tl_dataset_opts;

/* Loads split from path, whatever it points at (see the top of this file):
 * a regular file is CSV (a .npy file, by its magic, is TL_EFORMAT: give its
 * directory); a directory with node-1/ is a partition directory;
 * a directory holding x.npy (or S/x.npy for split S) is NumPy; any other
 * directory is the MNIST layout. o may be NULL. On failure *out is empty and
 * the message names the file: TL_EIO (missing: for MNIST both paths tried are
 * named; unreadable), TL_EFORMAT, TL_ERANGE, TL_ENOMEM as the readers
 * (tl_idx_read, tl_csv_read, tl_npy_load) give them; TL_EFORMAT also for
 * the nodes of a partition directory disagreeing in element type or sample
 * shape (the message names the node directory). split is not NULL. */
int tl_dataset_open(const char *path, const char *split, const tl_dataset_opts *o, tl_dataset *out);

/* 1 when path holds split as tl_dataset_open would load it from a file or
 * directory of its own kind: the MNIST files "<split>-images-idx3-ubyte[.gz]"
 * (in path or in path/node-1), path/<split>/x.npy, or, for split "train",
 * path/x.npy (or path/node-1/x.npy) or a regular file. 0 otherwise (so for
 * "t10k" a NumPy directory without t10k/ says 0, though tl_dataset_open
 * would fall back to its x.npy). Never records an error. */
int tl_dataset_has_split(const char *path, const char *split);

/* tl_dataset_open(dir, split, NULL, out). For an MNIST-layout directory:
 * loads split ("train" or "t10k") from dir: "<dir>/<split>-images-idx3-ubyte"
 * and "<dir>/<split>-labels-idx1-ubyte", each taken gzipped (".gz") if that
 * file exists, else raw. Images must have rank 3, labels rank 1, and their
 * counts must agree. classes = largest label + 1. On failure *out is empty
 * and the message names the file: TL_EIO (missing: both paths tried are
 * named; or unreadable), TL_EFORMAT, TL_ERANGE, TL_ENOMEM as tl_idx_read.
 * A partition directory (what `tl partition` writes: dir/node-1, dir/node-2,
 * ... each in the MNIST layout) loads as its nodes' data concatenated in node
 * order, so that centralized training on it visits exactly the rows of a
 * distributed run over those nodes, in the same order. Every node directory
 * must hold the split; node directories may be NumPy directories (float32
 * data partitioned by `tl partition`). */
int tl_dataset_load(const char *dir, const char *split, tl_dataset *out);

/* Writes d as split ("train"/"t10k") into dir (created with its parents if
 * missing), each file atomically; used by tl partition. uint8 images of one
 * channel (rank 0, or rank 3 with C = 1) are written as
 * "<split>-images-idx3-ubyte.gz" and "<split>-labels-idx1-ubyte.gz"; any
 * other data (float32, or uint8 of rank 1 or C > 1) as NumPy files: x.npy
 * ([n, features] or [n, C, H, W], the element type of d) and y.npy ([n]
 * uint8) in dir for split "train", in dir/<split>/ for another split, so
 * that tl_dataset_open loads back exactly the same values; with
 * d->class_names also classes.txt beside them (one name a line; a
 * classes.txt already there is removed when d has none). IDX files carry no
 * names: uint8 one-channel images lose theirs. TL_EINVAL for an empty data
 * set, more than 2^32-1 samples, an inconsistent shape or a class name
 * holding a newline; TL_EIO on file errors. */
int tl_dataset_save(const char *dir, const char *split, const tl_dataset *d);

/* Builds *out from rows[0..n) of src, in that order (copies the samples,
 * uint8 or float32, with src's element type and sample shape; rows may
 * repeat). n >= 1 and every row < src->n, else TL_EINVAL. out->classes is
 * computed from out's own labels (largest + 1), so it may be below
 * src->classes, except when src has class_names: they are copied and
 * classes stays src->classes. The caller frees *out with tl_dataset_free. */
int tl_dataset_subset(const tl_dataset *src, const size_t *rows, size_t n, tl_dataset *out);

/* Converts rows[0..n) to normalized floats: x is (n, dim) row-major, y gets the
 * labels as int32 (y may be NULL). Order of rows is kept. rows may be NULL,
 * meaning rows 0..n-1. Every row must be < d->n (asserted). Each value is
 * exactly the float32 expression ((float)byte / 255.0f - mean) / std for
 * uint8 data, (value - mean) / std for float32 data. The scalar case of
 * tl_dataset_gather_norm (norm.h), which gives the same floats. */
void tl_dataset_gather(const tl_dataset *d, const size_t *rows, size_t n, float mean, float std,
                       float *x, int32_t *y);

/* A 64-bit FNV-1a fingerprint of the samples and labels (and shape and
 * element type), so that a node coming back can be recognised as holding the
 * same data. Hashed bytes, in order: n as uint64 little-endian, rows and cols
 * as uint32 little-endian, the n labels, the n*dim image bytes; for data
 * other than one-channel uint8 images (float32, or rank 1, or C > 1) the
 * image bytes are replaced by: the dtype and rank as one byte each, the
 * three shape values as uint32 little-endian, then the n*dim samples
 * (float32 as their little-endian bit patterns). Unchanged for IDX data. */
uint64_t tl_dataset_fingerprint(const tl_dataset *d);

/* Splits d into *train and *test, deterministically (same d, fraction and
 * seed: same result), stratified by class: for each class c in increasing
 * order, its rows are shuffled with one tl_rng seeded with seed
 * (tl_rng_shuffle, continuing the stream from class to class) and the first
 * round(n_c * fraction) of them (n_c * fraction + 0.5, truncated) go to
 * test, the rest to train. Both keep the rows in ascending original order,
 * are disjoint and together hold every row once. fraction must be in (0, 1)
 * and both sides non-empty, else TL_EINVAL; TL_ENOMEM. On failure both are
 * empty. The caller frees both with tl_dataset_free. */
int tl_dataset_split(const tl_dataset *d, double fraction, uint32_t seed, tl_dataset *train,
                     tl_dataset *test);

/* Frees d's buffers and empties *d. Safe on NULL or an empty/zeroed dataset. */
void tl_dataset_free(tl_dataset *d);

#endif
