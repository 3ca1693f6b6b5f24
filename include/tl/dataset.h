/*
 * dataset.h - a labelled image set in memory, loaded from an MNIST-layout
 * directory.
 *
 * A directory in the MNIST layout holds four IDX files, raw or gzipped:
 *   train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
 *   t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
 * A split ("train" or "t10k") needs only its own two files. Images and labels
 * must agree in count; labels must be below TL_DATASET_MAX_CLASSES.
 *
 * Raw bytes are kept (60,000 x 784 bytes for Fashion-MNIST) and converted to
 * float on demand, per row, so that nothing is copied twice:
 *   x = ((byte / 255) - mean) / std     (float32 arithmetic, PyTorch's order:
 *                                         ToTensor then Normalize)
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

typedef struct tl_dataset {
    size_t n;           /* number of samples */
    size_t dim;         /* features per sample (rows*cols of an image) */
    uint32_t rows, cols; /* image shape */
    int classes;        /* max label + 1 */
    uint8_t *images;    /* owned, n x dim bytes */
    uint8_t *labels;    /* owned, n bytes */
} tl_dataset;

/* Loads split ("train" or "t10k") from dir: "<dir>/<split>-images-idx3-ubyte"
 * and "<dir>/<split>-labels-idx1-ubyte", each taken gzipped (".gz") if that
 * file exists, else raw. Images must have rank 3, labels rank 1, and their
 * counts must agree. classes = largest label + 1. On failure *out is empty
 * and the message names the file: TL_EIO (missing: both paths tried are
 * named; or unreadable), TL_EFORMAT, TL_ERANGE, TL_ENOMEM as tl_idx_read.
 * A partition directory (what `tl partition` writes: dir/node-1, dir/node-2,
 * ... each in the MNIST layout) loads as its nodes' data concatenated in node
 * order, so that centralized training on it visits exactly the rows of a
 * distributed run over those nodes, in the same order. Every node directory
 * must hold the split. */
int tl_dataset_load(const char *dir, const char *split, tl_dataset *out);

/* Writes d as split ("train"/"t10k") into dir (created with its parents if
 * missing), as "<split>-images-idx3-ubyte.gz" and "<split>-labels-idx1-ubyte.gz",
 * each atomically. Used by tl partition. TL_EINVAL for an empty data set or
 * more than 2^32-1 samples; TL_EIO on file errors. */
int tl_dataset_save(const char *dir, const char *split, const tl_dataset *d);

/* Builds *out from rows[0..n) of src, in that order (copies bytes; rows may
 * repeat). n >= 1 and every row < src->n, else TL_EINVAL. out->classes is
 * computed from out's own labels (largest + 1), so it may be below
 * src->classes. The caller frees *out with tl_dataset_free. */
int tl_dataset_subset(const tl_dataset *src, const size_t *rows, size_t n, tl_dataset *out);

/* Converts rows[0..n) to normalized floats: x is (n, dim) row-major, y gets the
 * labels as int32 (y may be NULL). Order of rows is kept. rows may be NULL,
 * meaning rows 0..n-1. Every row must be < d->n (asserted). Each value is
 * exactly the float32 expression ((float)byte / 255.0f - mean) / std. */
void tl_dataset_gather(const tl_dataset *d, const size_t *rows, size_t n, float mean,
                       float std, float *x, int32_t *y);

/* A 64-bit FNV-1a fingerprint of the images and labels (and shape), so that a
 * node coming back can be recognised as holding the same data. Hashed bytes,
 * in order: n as uint64 little-endian, rows and cols as uint32 little-endian,
 * the n labels, the n*dim image bytes. */
uint64_t tl_dataset_fingerprint(const tl_dataset *d);

/* Frees d's buffers and empties *d. Safe on NULL or an empty/zeroed dataset. */
void tl_dataset_free(tl_dataset *d);

#endif
