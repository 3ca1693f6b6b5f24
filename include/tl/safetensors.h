/*
 * safetensors.h - the safetensors file format (reader and writer).
 *
 * Layout: 8-byte little-endian header length H, H bytes of JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]}, ...}
 * then the data block; offsets are relative to the data block's start.
 *
 * We support dtypes F32 and I64 (little-endian), rank 0..8. Reading is strict:
 * header length within the file and under TL_ST_MAX_HEADER, well-formed JSON
 * of exactly this shape, known dtypes, offsets inside the data block and equal
 * to dtype size x product(shape), no two tensors overlapping, unique names,
 * metadata values strings. Anything else is TL_EFORMAT with a clear message.
 *
 * The writer writes tensors in the order given, data contiguous, header padded
 * with spaces to a multiple of 8 (as the reference implementation does), to a
 * temporary file that is fsync'ed and renamed into place (atomic replace).
 *
 *     tl_st *st;
 *     if (tl_st_read("model.safetensors", &st) < 0) ...
 *     const tl_st_tensor *w = tl_st_find(st, "0.weight");   // NULL if absent
 *     const char *v = tl_st_meta(st, "model");               // NULL if absent
 *     tl_st_free(st);
 *
 *     tl_st_tensor t[2] = {{"0.weight", TL_ST_F32, 2, {256, 784}, w}, ...};
 *     tl_st_kv meta[1] = {{"model", "linear:256,..."}};
 *     tl_st_write("out.safetensors", t, 2, meta, 1);
 *
 * The code: src/io/st_read.c (reader and accessors), src/io/st_json.c (the
 * header's JSON subset), src/io/st_write.c (writer), sharing src/io/st_int.h.
 */
#ifndef TL_SAFETENSORS_H
#define TL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define TL_ST_MAX_RANK 8
#define TL_ST_MAX_HEADER (100u << 20) /* 100 MiB, as the reference limits it */

typedef enum tl_st_dtype { TL_ST_F32 = 1, TL_ST_I64 = 2 } tl_st_dtype;

typedef struct tl_st_tensor {
    const char *name;
    tl_st_dtype dtype;
    int rank;
    int64_t shape[TL_ST_MAX_RANK];
    const void *data; /* reading: points into the loaded file; writing: caller's */
} tl_st_tensor;

typedef struct tl_st_kv {
    const char *key;
    const char *value;
} tl_st_kv;

typedef struct tl_st tl_st; /* a loaded file; owns all strings and data */

/* Loads a file (TL_EIO if it cannot be read, TL_EFORMAT if it is malformed,
 * TL_ENOMEM). Every string and tensor is owned by *out until tl_st_free.
 * Tensor data is aligned for its dtype: the data block gets its own allocation,
 * and a tensor whose offset is misaligned within it is copied. */
int tl_st_read(const char *path, tl_st **out);
int tl_st_read_mem(const uint8_t *buf, size_t len, tl_st **out); /* copies buf */
int tl_st_count(const tl_st *st);
const tl_st_tensor *tl_st_get(const tl_st *st, int i); /* in file order */
const tl_st_tensor *tl_st_find(const tl_st *st, const char *name);
const char *tl_st_meta(const tl_st *st, const char *key);
/* Metadata entries in file order (for listing; i out of range gives NULL). */
int tl_st_meta_count(const tl_st *st);
const tl_st_kv *tl_st_meta_get(const tl_st *st, int i);
/* Number of elements of t (product of shape; 1 for rank 0). */
size_t tl_st_numel(const tl_st_tensor *t);
void tl_st_free(tl_st *st); /* NULL-safe */

/* Writes atomically (file.h: a temporary with a random name, fsync, rename,
 * which replaces a link planted at path instead of following it; on failure
 * path is untouched and the temporary removed). meta may be NULL with n_meta 0; __metadata__ is
 * omitted then. TL_EINVAL for bad arguments (duplicate names, rank > 8, negative dims, NULL data of
 * a non-empty tensor, strings not UTF-8), TL_EIO, TL_ENOMEM. */
int tl_st_write(const char *path, const tl_st_tensor *tensors, int n, const tl_st_kv *meta,
                int n_meta);

/* The same bytes as tl_st_write, into a malloc'd buffer *out of *len bytes
 * (caller frees; NULL and 0 on failure): for a file's content sent over the
 * network or encrypted before it is written. Same errors (no TL_EIO). */
int tl_st_write_mem(const tl_st_tensor *tensors, int n, const tl_st_kv *meta, int n_meta,
                    uint8_t **out, size_t *len);

#endif
