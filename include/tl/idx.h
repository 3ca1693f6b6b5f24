/*
 * idx.h - IDX files (the MNIST family's format), raw or gzip-compressed.
 *
 * An IDX file is a 4-byte magic {0, 0, type, rank}, rank big-endian uint32
 * dimensions, then the data. We accept type 0x08 (unsigned byte) only, which
 * is what MNIST-family images and labels use, and rank 1..4.
 *
 * Reading validates everything: the magic, the type, the rank, each dimension
 * (nonzero, product under TL_IDX_MAX_BYTES), and that the data is exactly as
 * long as the dimensions say (a truncated file or trailing bytes are errors).
 * A gzip file is recognised by its magic (1f 8b), not by its name; a corrupt
 * gzip stream is an error. Every failure gives one clear line in tl_errmsg().
 *
 *     tl_idx t;
 *     if (tl_idx_read("train-images-idx3-ubyte.gz", &t) < 0) ...
 *     // t.dims = {60000, 28, 28}, t.data has 60000*28*28 bytes
 *     tl_idx_free(&t);
 */
#ifndef TL_IDX_H
#define TL_IDX_H

#include <stddef.h>
#include <stdint.h>

#define TL_IDX_MAX_RANK 4
#define TL_IDX_MAX_BYTES ((size_t)1 << 32) /* 4 GiB of payload at most */

typedef struct tl_idx {
    int rank;
    uint32_t dims[TL_IDX_MAX_RANK];
    size_t count;  /* product of dims: number of bytes in data */
    uint8_t *data; /* owned; freed by tl_idx_free */
} tl_idx;

/* Reads path (raw or gzip) into *out. On failure *out is left empty
 * (data NULL) and a message names the file and the problem. Returns 0 or:
 * TL_EIO (cannot open or read), TL_EFORMAT (bad magic, type, rank, zero
 * dimension, truncated or trailing data, empty file, corrupt gzip),
 * TL_ERANGE (dimensions over TL_IDX_MAX_BYTES), TL_ENOMEM.
 * Concatenated gzip members are read as one stream, as gzip(1) does. */
int tl_idx_read(const char *path, tl_idx *out);

/* Reads from memory (raw or gzip bytes); name is used in messages. Same
 * checks and codes as tl_idx_read. buf is only read, never kept. */
int tl_idx_read_mem(const uint8_t *buf, size_t len, const char *name, tl_idx *out);

#define TL_IDX_GZ 1     /* flags: gzip-compress (gzip format) */
#define TL_IDX_NOSYNC 2 /* flags: skip the fsync (scratch files that need not survive a crash) */

/* Writes an unsigned-byte IDX file. Written atomically (file.h: a temporary
 * with a random name, fsync unless TL_IDX_NOSYNC, rename over path, never
 * through a link planted at path). t must have rank 1..4,
 * nonzero dims and count == their product (else TL_EINVAL); TL_EIO on any
 * file error (the temporary file is removed). */
int tl_idx_write(const char *path, const tl_idx *t, int flags);

/* Frees t->data and empties *t. Safe on an empty or zeroed tl_idx. */
void tl_idx_free(tl_idx *t);

#endif
