/*
 * npy.h - NumPy .npy arrays, and a data set as the pair x.npy / y.npy.
 *
 * A .npy file (what numpy.save writes) is the magic "\x93NUMPY", a version
 * (1.0, 2.0 or 3.0), the header length (uint16 little-endian for 1.0, uint32
 * for 2.0 and 3.0), a header that is a Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 1, 28, 28), }
 * padded with spaces and ended by '\n', then the array's bytes in C order.
 *
 * tl_npy_read accepts little-endian or byte-sized plain dtypes: '<f4' (float32),
 * '|u1' (uint8), '|i1', '<i2', '<u2', '<i4', '<u4', '<i8', '<u8' ('<' and '|'
 * are both accepted for one-byte types). It rejects, each with a message
 * naming the file: a bad magic or version, a header that is not such a dict
 * (or has other keys, or lacks one), Fortran order, object arrays ('|O'),
 * big-endian ('>f4'), any other dtype ('<f8', structured), rank 0 or over
 * TL_NPY_MAX_RANK, a zero dimension, a size over TL_NPY_MAX_BYTES, and data
 * shorter or longer than the shape says.
 *
 * The data is mapped from the file (read-only) when it is suitably aligned
 * (numpy pads the header to 64 bytes), else copied into an aligned buffer.
 *
 * tl_npy_write writes one array (what tl_dataset_save uses for float32 data).
 *
 * tl_npy_load reads DIR/x.npy and DIR/y.npy as a labelled data set: x is
 * [N, features] or [N, C, H, W], float32 or uint8 (uint8 is kept as bytes;
 * float32 values must be finite); y is [N] of any integer dtype above, every
 * label in 0..TL_DATASET_MAX_CLASSES-1, converted to int32; classes is the
 * largest label + 1.
 *
 *     tl_npy_set s;
 *     if (tl_npy_load("data/", &s) < 0) ... tl_errmsg() ...
 *     // s.x.shape = {N, 1, 28, 28}, s.x.dtype = TL_NPY_F32, s.x.data: N*784 floats
 *     // s.y[i] in 0..s.classes-1
 *     tl_npy_set_free(&s);
 */
#ifndef TL_NPY_H
#define TL_NPY_H

#include <stddef.h>
#include <stdint.h>

#define TL_NPY_MAX_RANK 8
#define TL_NPY_MAX_BYTES ((size_t)1 << 40) /* 1 TiB of array data at most */

typedef enum tl_npy_dtype {
    TL_NPY_F32 = 1, /* '<f4' */
    TL_NPY_U8,      /* '|u1' */
    TL_NPY_I8,      /* '|i1' */
    TL_NPY_I16,     /* '<i2' */
    TL_NPY_U16,     /* '<u2' */
    TL_NPY_I32,     /* '<i4' */
    TL_NPY_U32,     /* '<u4' */
    TL_NPY_I64,     /* '<i8' */
    TL_NPY_U64,     /* '<u8' */
} tl_npy_dtype;

typedef struct tl_npy {
    int rank;
    uint64_t shape[TL_NPY_MAX_RANK];
    tl_npy_dtype dtype;
    size_t elsize;    /* bytes per element */
    size_t count;     /* product of shape: number of elements */
    const void *data; /* count * elsize bytes, C order, little-endian; valid until tl_npy_free */
    void *map_;       /* internal: the mapping (or buffer) that holds data */
    size_t map_len_;  /* internal: its length (0 for a malloc'd buffer) */
} tl_npy;

/* Reads the .npy file at path into *out. On failure *out is empty (data
 * NULL) and the message names the file. Returns 0 or TL_EIO (cannot open,
 * read or map), TL_EFORMAT (every rejection listed above), TL_ERANGE (size
 * over TL_NPY_MAX_BYTES), TL_ENOMEM. */
int tl_npy_read(const char *path, tl_npy *out);

/* Unmaps or frees a's data and empties *a. Safe on NULL or an empty/zeroed tl_npy. */
void tl_npy_free(tl_npy *a);

/* Writes count = shape[0] * ... * shape[rank-1] elements of dtype from data
 * as a version 1.0 .npy file at path, atomically (path.tmp.PID written,
 * fsync'ed, renamed over path; nothing is left at path on failure). The
 * header is {'descr': '<f4', 'fortran_order': False, 'shape': (N, F), }
 * padded with spaces so that the data starts at a multiple of 64 bytes, as
 * numpy writes it; tl_npy_read gives back exactly these bytes. Any dtype of
 * tl_npy_dtype. TL_EINVAL for a rank outside 1..TL_NPY_MAX_RANK, a zero
 * dimension or data NULL; TL_ERANGE over TL_NPY_MAX_BYTES; TL_EIO. */
int tl_npy_write(const char *path, tl_npy_dtype dtype, int rank, const uint64_t *shape,
                 const void *data);

typedef struct tl_npy_set {
    tl_npy x;    /* [N, features] or [N, C, H, W]; dtype TL_NPY_F32 or TL_NPY_U8 */
    size_t n;    /* N, >= 1 */
    int32_t *y;  /* n labels in 0..classes-1 (owned) */
    int classes; /* largest label + 1 */
} tl_npy_set;

/* Reads dir/x.npy and dir/y.npy into *out (see above). On failure *out is
 * empty and the message names the file at fault. Returns 0 or the codes of
 * tl_npy_read, plus TL_EFORMAT for: x of rank other than 2 or 4, or of a
 * dtype other than float32 or uint8; a NaN or Inf in x (the message gives the
 * sample and element); y of rank other than 1 or not an integer dtype; N of x
 * and y differing; a negative label; TL_ERANGE for a label of
 * TL_DATASET_MAX_CLASSES or more. */
int tl_npy_load(const char *dir, tl_npy_set *out);

/* Frees everything s holds and empties *s. Safe on NULL or an empty/zeroed set. */
void tl_npy_set_free(tl_npy_set *s);

#endif
