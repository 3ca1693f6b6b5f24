/* idx.c - IDX reader and writer, raw or gzip (libdeflate).
 *
 * Reading. A raw regular file is read straight into the payload buffer, after
 * its size has been checked against the header, so a short file claiming
 * gigabytes costs nothing. Anything else (a gzip file, recognised by its magic,
 * or a raw pipe) is first read whole into memory (a regular gzip file is
 * mapped instead: 2 ms for Fashion-MNIST's 26 MB of training images instead
 * of 15-25 ms to fault in and fill a buffer). Gzip bytes are inflated by
 * libdeflate, one call per member (concatenated members form one stream, as
 * with gzip(1)), into a buffer sized from the last member's ISIZE trailer.
 * That trailer is only a hint: the buffer never exceeds what deflate's maximum
 * ratio (1032:1) allows for the input, nor one byte more than the largest IDX
 * file, and grows (re-inflating the member) if the hint was short; libdeflate
 * checks every member's CRC-32 and ISIZE. A large output buffer has its pages
 * faulted in by a helper thread running ahead of the inflater (which then
 * never stops for a page fault: 70 ms instead of 90 for those images). So a
 * gzip file costs the memory of
 * what it really inflates to (whatever its IDX header says), at most one byte
 * over the largest valid IDX file. The inflated bytes then go through
 * the same header and length checks as a raw buffer, and the payload is moved
 * to the front of the buffer, which becomes t->data (one 4 ms memmove for
 * Fashion-MNIST's 47 MB of training images, instead of a second buffer).
 *
 * Writing compresses header and payload as one gzip member at libdeflate's
 * level 6 (2.7x faster than zlib's level 6, same size).
 */
#include "tl/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/error.h"
#include "tl/file.h"
#include "tl/le.h"

#define HDR_MAX (4 + 4 * TL_IDX_MAX_RANK)
/* One byte more than the largest valid IDX file: inflating never needs more
 * to tell a valid file from one with trailing bytes. */
#define OUT_LIMIT (TL_IDX_MAX_BYTES + HDR_MAX + 1)
/* Largest file read whole into memory: a gzip file of OUT_LIMIT bytes made of
 * stored blocks (5 bytes per 65535) plus a generous header allowance. */
#define READ_LIMIT (OUT_LIMIT + OUT_LIMIT / 8192 + 65536)
#define GZ_LEVEL 6
/* Output buffers at least this large are faulted in by a helper thread. */
#define PREFAULT_MIN ((size_t)8 << 20)
#define PREFAULT_STEP ((size_t)4 << 20)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels answer EINVAL */
#endif

/* The smaller of a and b. */
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Most bytes a deflate stream of n input bytes can inflate to (1032:1, plus
 * slack for block headers), saturating at OUT_LIMIT. */
static size_t inflate_bound(size_t n) {
    return n > (OUT_LIMIT - 1024) / 1032 ? OUT_LIMIT : n * 1032 + 1024;
}

/* Validates the magic and dimensions in the first avail bytes of h, filling
 * t's rank, dims and count and *hlen (header length). Returns 0 or TL_EFORMAT
 * (truncated header, bad magic, type, rank, zero dimension) or TL_ERANGE. */
static int parse_header(const uint8_t *h, size_t avail, const char *name, tl_idx *t, size_t *hlen) {
    if (avail < 4)
        return tl_error(TL_EFORMAT, "%s: truncated header (%zu of 4 magic bytes)", name, avail);
    if (h[0] != 0 || h[1] != 0)
        return tl_error(TL_EFORMAT, "%s: bad magic %02x %02x (not an IDX file)", name, h[0], h[1]);
    if (h[2] != 0x08)
        return tl_error(TL_EFORMAT, "%s: unsupported IDX type 0x%02x (only 0x08, unsigned byte)",
                        name, h[2]);
    if (h[3] < 1 || h[3] > TL_IDX_MAX_RANK)
        return tl_error(TL_EFORMAT, "%s: unsupported rank %d (must be 1..%d)", name, h[3],
                        TL_IDX_MAX_RANK);
    t->rank = h[3];
    size_t dlen = 4 * (size_t)t->rank;
    if (avail - 4 < dlen)
        return tl_error(TL_EFORMAT, "%s: truncated header (%zu of %zu dimension bytes)", name,
                        avail - 4, dlen);
    size_t count = 1;
    for (int i = 0; i < t->rank; i++) {
        const uint8_t *p = h + 4 + 4 * i;
        uint32_t d = tl_be_load32(p);
        if (d == 0) return tl_error(TL_EFORMAT, "%s: dimension %d is zero", name, i);
        if (count > TL_IDX_MAX_BYTES / d)
            return tl_error(TL_ERANGE, "%s: dimensions too large (over %zu bytes of data)", name,
                            (size_t)TL_IDX_MAX_BYTES);
        count *= d;
        t->dims[i] = d;
    }
    t->count = count;
    *hlen = 4 + dlen;
    return 0;
}

/* Checks that have payload bytes are exactly the count bytes the header
 * promises. Returns 0 or TL_EFORMAT (truncated or trailing data). */
static int check_length(uint64_t have, size_t count, const char *name) {
    if (have < count)
        return tl_error(TL_EFORMAT, "%s: truncated data (%llu of %zu bytes)", name,
                        (unsigned long long)have, count);
    if (have > count)
        return tl_error(TL_EFORMAT, "%s: %llu trailing bytes after the data", name,
                        (unsigned long long)(have - count));
    return 0;
}

typedef struct prefault {
    uint8_t *p;
    size_t n;
    pthread_t thread;
    int running;
} prefault;

/* Faults in the pages of [p, p + n) front to back, a few MB at a time, so the
 * inflater writing behind it finds them ready. MADV_POPULATE_WRITE leaves the
 * contents alone, so racing the writer is harmless; on any error (an old
 * kernel) it just stops, and the writer takes its own faults. */
static void *prefault_run(void *arg) {
    prefault *f = arg;
    const uintptr_t page = 4096;
    uintptr_t a = ((uintptr_t)f->p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)f->p + f->n) & ~(page - 1);
    for (; a < end; a += PREFAULT_STEP) {
        size_t len = end - a < PREFAULT_STEP ? end - a : PREFAULT_STEP;
        if (madvise((void *)a, len, MADV_POPULATE_WRITE) != 0) break;
    }
    return NULL;
}

/* Starts faulting in buf[0..n) if it is large; no thread is not an error. */
static void prefault_start(prefault *f, uint8_t *buf, size_t n) {
    f->p = buf;
    f->n = n;
    f->running = n >= PREFAULT_MIN && pthread_create(&f->thread, NULL, prefault_run, f) == 0;
}

/* Waits for the helper: before the buffer is grown or freed. */
static void prefault_join(prefault *f) {
    if (f->running) pthread_join(f->thread, NULL);
    f->running = 0;
}

/* Inflates the gzip stream in[0..len) (one or more members) into a new
 * malloc'd *out of *out_len bytes (*out NULL on failure). Returns 0 or
 * TL_EFORMAT (corrupt or truncated stream, junk after a member), TL_ERANGE
 * (inflates past any valid IDX file) or TL_ENOMEM. */
static int gunzip(const uint8_t *in, size_t len, const char *name, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    size_t hint = len >= 4 ? (size_t)tl_le_load32(in + len - 4) : 0; /* ISIZE trailer */
    size_t cap = min_size(hint, inflate_bound(len)), pos = 0, have = 0;
    int rc = 0;
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    uint8_t *buf = malloc(cap ? cap : 1);
    prefault pf = {0};
    if (!d || !buf) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory inflating (%zu bytes)", name, cap);
        goto cleanup;
    }
    prefault_start(&pf, buf, cap);
    while (pos < len) {
        if (pos > 0 && (len - pos < 2 || in[pos] != 0x1f || in[pos + 1] != 0x8b)) {
            rc = tl_error(TL_EFORMAT, "%s: %zu bytes of junk after the gzip data", name, len - pos);
            goto cleanup;
        }
        size_t used = 0, got = 0;
        enum libdeflate_result r = libdeflate_gzip_decompress_ex(d, in + pos, len - pos, buf + have,
                                                                 cap - have, &used, &got);
        prefault_join(&pf); /* done with the first buffer either way */
        if (r == LIBDEFLATE_SUCCESS && used > 0) {
            pos += used;
            have += got;
        } else if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
            /* The hint was short (another member, or a lying trailer):
             * grow, within what this member could possibly inflate to. */
            size_t lim = min_size(OUT_LIMIT, have + inflate_bound(len - pos));
            if (cap >= lim) {
                if (lim == OUT_LIMIT)
                    rc = tl_error(TL_ERANGE,
                                  "%s: gzip data inflates to over %zu bytes (no IDX "
                                  "file is that large)",
                                  name, (size_t)OUT_LIMIT - 1);
                else rc = tl_error(TL_EFORMAT, "%s: corrupt gzip stream", name);
                goto cleanup;
            }
            size_t ncap = min_size(lim, cap < 4096 ? 8192 : 2 * cap);
            uint8_t *p = realloc(buf, ncap);
            if (!p) {
                rc = tl_error(TL_ENOMEM, "%s: out of memory inflating (%zu bytes)", name, ncap);
                goto cleanup;
            }
            buf = p;
            cap = ncap;
        } else {
            rc = tl_error(TL_EFORMAT, "%s: corrupt or truncated gzip stream", name);
            goto cleanup;
        }
    }
    *out = buf;
    *out_len = have;
    buf = NULL;
cleanup:
    prefault_join(&pf);
    free(buf);
    libdeflate_free_decompressor(d);
    return rc;
}

/* Parses a whole IDX file held in memory (raw, or gzip if it starts with the
 * gzip magic) into *t; t->data is a new buffer. Contract of tl_idx_read_mem. */
static int parse_mem(const uint8_t *buf, size_t len, const char *name, tl_idx *t) {
    size_t hlen = 0;
    int rc;
    if (len == 0) return tl_error(TL_EFORMAT, "%s: empty file", name);
    if (len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b) {
        uint8_t *raw;
        size_t n;
        if ((rc = gunzip(buf, len, name, &raw, &n)) < 0) return rc;
        if ((rc = parse_header(raw, n, name, t, &hlen)) < 0 ||
            (rc = check_length(n - hlen, t->count, name)) < 0) {
            free(raw);
            return rc;
        }
        /* The payload becomes the buffer itself: move it to the front and
         * give back the header's bytes. */
        memmove(raw, raw + hlen, t->count);
        uint8_t *p = realloc(raw, t->count);
        t->data = p ? p : raw;
        return 0;
    }
    if ((rc = parse_header(buf, len, name, t, &hlen)) < 0) return rc;
    if ((rc = check_length(len - hlen, t->count, name)) < 0) return rc;
    t->data = malloc(t->count);
    if (!t->data) return tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, t->count);
    memcpy(t->data, buf + hlen, t->count);
    return 0;
}

/* Reads the payload of a raw IDX regular file of file_len bytes whose header
 * (hlen bytes, already parsed into t) and possibly some payload are the got
 * bytes of h. The payload is read straight into t->data once the file's
 * length has been checked, so nothing large is allocated for a short file. */
static int read_raw_file(int fd, const uint8_t *h, size_t got, size_t hlen, uint64_t file_len,
                         const char *name, tl_idx *t) {
    size_t n;
    int rc = check_length(file_len - hlen, t->count, name);
    if (rc < 0) return rc;
    t->data = malloc(t->count);
    if (!t->data) return tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, t->count);
    size_t pre = got - hlen; /* payload bytes already read with the header */
    memcpy(t->data, h + hlen, pre);
    if ((rc = tl_file_read_full(fd, t->data + pre, t->count - pre, &n, name)) < 0) return rc;
    if (pre + n < t->count) /* the file shrank under us */
        return tl_error(TL_EFORMAT, "%s: truncated data (%zu of %zu bytes)", name, pre + n,
                        t->count);
    uint8_t extra;
    if ((rc = tl_file_read_full(fd, &extra, 1, &n, name)) < 0) return rc;
    if (n) return tl_error(TL_EFORMAT, "%s: trailing bytes after the data", name);
    return 0;
}

/* Reads the rest of fd into a new buffer *out that starts with the got bytes
 * of h, stopping at end of file or once the buffer holds limit bytes (at
 * least got). size_hint is the expected total (the file's size) or 0. */
static int slurp(int fd, const uint8_t *h, size_t got, uint64_t size_hint, size_t limit,
                 const char *name, uint8_t **out, size_t *out_len) {
    size_t cap = size_hint > got ? (size_t)min_size(size_hint, limit - 1) + 1 : got + 65536;
    cap = min_size(cap, limit);
    if (cap < got) cap = got;
    size_t have = got, n;
    uint8_t *buf = malloc(cap ? cap : 1);
    int rc = 0;
    *out = NULL;
    if (!buf) return tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, cap);
    memcpy(buf, h, got);
    for (;;) {
        if ((rc = tl_file_read_full(fd, buf + have, cap - have, &n, name)) < 0) break;
        have += n;
        if (have < cap || cap >= limit) break; /* end of file, or enough */
        size_t ncap = min_size(2 * cap, limit);
        uint8_t *p = realloc(buf, ncap);
        if (!p) {
            rc = tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", name, ncap);
            break;
        }
        buf = p;
        cap = ncap;
    }
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = have;
    return 0;
}

/* Contract in idx.h. */
int tl_idx_read(const char *path, tl_idx *out) {
    tl_idx t = {0};
    uint8_t h[HDR_MAX], *all = NULL;
    size_t got = 0, all_len = 0, hlen = 0;
    int rc;
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = tl_error(TL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = tl_error(TL_EIO, "%s: is a directory", path);
        goto cleanup;
    }
    int reg = S_ISREG(st.st_mode);
    uint64_t file_len = reg ? (uint64_t)st.st_size : 0;
    if ((rc = tl_file_read_full(fd, h, sizeof h, &got, path)) < 0) goto cleanup;
    if (got == 0) {
        rc = tl_error(TL_EFORMAT, "%s: empty file", path);
        goto cleanup;
    }
    if (file_len < got) file_len = got;                /* it grew after fstat */
    if (!(got >= 2 && h[0] == 0x1f && h[1] == 0x8b)) { /* raw */
        if ((rc = parse_header(h, got, path, &t, &hlen)) < 0) goto cleanup;
        if (reg) {
            rc = read_raw_file(fd, h, got, hlen, file_len, path, &t);
        } else { /* a pipe: read what the header promises, and one byte more */
            rc = slurp(fd, h, got, 0, hlen + t.count + 1, path, &all, &all_len);
            if (rc == 0 && all_len > hlen + t.count)
                rc = tl_error(TL_EFORMAT, "%s: trailing bytes after the data", path);
            if (rc == 0) rc = parse_mem(all, all_len, path, &t);
        }
    } else { /* gzip: the whole file in memory, then inflate */
        if (file_len > READ_LIMIT) {
            rc = tl_error(TL_ERANGE, "%s: file too large (over %zu bytes)", path,
                          (size_t)READ_LIMIT);
            goto cleanup;
        }
        void *map = reg ? mmap(NULL, file_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0)
                        : MAP_FAILED;
        if (map != MAP_FAILED) {
            /* the file's bytes as they are now (one that shrinks while mapped
             * would fault: its owner could as well have corrupted it) */
            rc = parse_mem(map, file_len, path, &t);
            munmap(map, file_len);
            goto cleanup;
        }
        rc = slurp(fd, h, got, file_len, READ_LIMIT + 1, path, &all, &all_len);
        if (rc == 0 && all_len > READ_LIMIT)
            rc = tl_error(TL_ERANGE, "%s: file too large (over %zu bytes)", path,
                          (size_t)READ_LIMIT);
        if (rc == 0) rc = parse_mem(all, all_len, path, &t);
    }
cleanup:
    free(all);
    close(fd);
    if (rc < 0) {
        tl_idx_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Contract in idx.h. */
int tl_idx_read_mem(const uint8_t *buf, size_t len, const char *name, tl_idx *out) {
    tl_idx t = {0};
    memset(out, 0, sizeof *out);
    int rc = parse_mem(buf, len, name, &t);
    if (rc < 0) {
        tl_idx_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Compresses header then data as one gzip member and writes it to fd. */
static int write_gz(tl_file_w *w, const uint8_t *hdr, size_t hlen, const tl_idx *t,
                    const char *path) {
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(GZ_LEVEL);
    uint8_t *in = malloc(hlen + t->count), *out = NULL;
    size_t bound = 0, n;
    int rc;
    if (c) bound = libdeflate_gzip_compress_bound(c, hlen + t->count);
    if (c) out = malloc(bound);
    if (!c || !in || !out) {
        rc = tl_error(TL_ENOMEM, "%s: out of memory compressing", path);
        goto cleanup;
    }
    memcpy(in, hdr, hlen);
    memcpy(in + hlen, t->data, t->count);
    n = libdeflate_gzip_compress(c, in, hlen + t->count, out, bound);
    if (n == 0) {
        rc = tl_error(TL_EIO, "%s: gzip compression failed", path);
        goto cleanup;
    }
    rc = tl_file_write(w, out, n);
cleanup:
    libdeflate_free_compressor(c);
    free(in);
    free(out);
    return rc;
}

/* Contract in idx.h. */
int tl_idx_write(const char *path, const tl_idx *t, int flags) {
    const int gz = flags & TL_IDX_GZ;
    uint8_t hdr[HDR_MAX];
    size_t count = 1;
    if (t->rank < 1 || t->rank > TL_IDX_MAX_RANK)
        return tl_error(TL_EINVAL, "%s: cannot write rank %d (must be 1..%d)", path, t->rank,
                        TL_IDX_MAX_RANK);
    hdr[0] = 0, hdr[1] = 0, hdr[2] = 0x08, hdr[3] = (uint8_t)t->rank;
    for (int i = 0; i < t->rank; i++) {
        uint32_t d = t->dims[i];
        if (d == 0 || count > TL_IDX_MAX_BYTES / d)
            return tl_error(TL_EINVAL, "%s: cannot write dimensions (zero or too large)", path);
        count *= d;
        tl_be_store32(hdr + 4 + 4 * i, d);
    }
    if (count != t->count || !t->data)
        return tl_error(TL_EINVAL, "%s: count %zu does not match dimensions (%zu)", path, t->count,
                        count);
    size_t hlen = 4 + 4 * (size_t)t->rank;

    tl_file_w w;
    int rc = tl_file_begin(&w, path, 0644, (flags & TL_IDX_NOSYNC) ? TL_FILE_NOSYNC : 0);
    if (rc < 0) return rc;
    if (gz) {
        rc = write_gz(&w, hdr, hlen, t, path);
    } else {
        rc = tl_file_write(&w, hdr, hlen);
        if (rc == 0) rc = tl_file_write(&w, t->data, t->count);
    }
    if (rc == 0) return tl_file_commit(&w);
    tl_file_abort(&w);
    return rc;
}

/* Contract in idx.h. */
void tl_idx_free(tl_idx *t) {
    if (!t) return;
    free(t->data);
    memset(t, 0, sizeof *t);
}
