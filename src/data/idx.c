/* idx.c - IDX reader and writer, raw or gzip (zlib).
 *
 * Reading goes through one small byte source (a file or a memory buffer,
 * inflated on the fly when it starts with the gzip magic), so the file and
 * memory paths share every check. Raw sources of known length are checked for
 * their exact size before anything is allocated; gzip payloads are read into a
 * buffer that grows as bytes actually arrive, never past what the header
 * promises, so a tiny file claiming gigabytes costs nothing.
 */
#include "tl/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tl/error.h"

#define CHUNK ((size_t)1 << 16)
#define GROW_START ((size_t)1 << 20)

typedef struct source {
    const char *name;
    int fd;                  /* file source, or -1 */
    const uint8_t *mem;      /* memory source */
    size_t mem_len, mem_pos;
    int known;               /* raw length known: raw_remaining() is exact */
    uint64_t file_len, file_pos;
    uint8_t back[2];         /* bytes pushed back after sniffing the magic */
    size_t back_len;
    int gz;                  /* inflating */
    int z_ready;             /* inflateInit2 done */
    int z_member_end;        /* last inflate() ended a gzip member */
    z_stream zs;
    uint8_t in[CHUNK];       /* compressed input buffer (gz only) */
} source;

/* Reads up to n raw (on-disk) bytes into buf. Returns the count (0 at end of
 * input) or a negative TL_E* code. */
static long long raw_read(source *s, uint8_t *buf, size_t n) {
    if (s->back_len && n) {
        size_t k = s->back_len < n ? s->back_len : n;
        memcpy(buf, s->back, k);
        memmove(s->back, s->back + k, s->back_len - k);
        s->back_len -= k;
        return (long long)k;
    }
    if (s->fd < 0) {
        size_t k = s->mem_len - s->mem_pos;
        if (k > n) k = n;
        if (k) memcpy(buf, s->mem + s->mem_pos, k);
        s->mem_pos += k;
        return (long long)k;
    }
    for (;;) {
        ssize_t k = read(s->fd, buf, n);
        if (k >= 0) {
            s->file_pos += (uint64_t)k;
            return k;
        }
        if (errno != EINTR) return tl_error(TL_EIO, "%s: read failed: %s", s->name, strerror(errno));
    }
}

/* Raw bytes not yet read; meaningful only when s->known. */
static uint64_t raw_remaining(const source *s) {
    if (s->fd < 0) return s->back_len + s->mem_len - s->mem_pos;
    return s->back_len + (s->file_len > s->file_pos ? s->file_len - s->file_pos : 0);
}

/* Inflates up to n bytes into buf. Returns the count, which is short only at
 * the clean end of the last gzip member, or a negative TL_E* code (corrupt or
 * truncated gzip stream). Concatenated members are read as one stream. */
static long long gz_read(source *s, uint8_t *buf, size_t n) {
    z_stream *z = &s->zs;
    z->next_out = buf;
    z->avail_out = (uInt)(n > UINT32_MAX ? UINT32_MAX : n);
    uInt want = z->avail_out;
    while (z->avail_out > 0) {
        if (z->avail_in == 0) {
            long long k = raw_read(s, s->in, CHUNK);
            if (k < 0) return k;
            if (k == 0) {
                if (s->z_member_end) break; /* clean end of input */
                return tl_error(TL_EFORMAT, "%s: truncated gzip stream", s->name);
            }
            z->next_in = s->in;
            z->avail_in = (uInt)k;
        }
        if (s->z_member_end) { /* more input after a member: another member */
            if (inflateReset(z) != Z_OK)
                return tl_error(TL_EFORMAT, "%s: corrupt gzip stream", s->name);
            s->z_member_end = 0;
        }
        int rc = inflate(z, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) {
            s->z_member_end = 1;
        } else if (rc == Z_MEM_ERROR) {
            return tl_error(TL_ENOMEM, "%s: out of memory inflating", s->name);
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return tl_error(TL_EFORMAT, "%s: corrupt gzip stream (%s)", s->name,
                            z->msg ? z->msg : "bad data");
        }
    }
    return (long long)(want - z->avail_out);
}

/* Reads up to n payload bytes; *got receives how many arrived (short only at
 * the end of input). Returns 0 or a negative TL_E* code. */
static int src_read(source *s, uint8_t *buf, size_t n, size_t *got) {
    *got = 0;
    while (*got < n) {
        long long k = s->gz ? gz_read(s, buf + *got, n - *got) : raw_read(s, buf + *got, n - *got);
        if (k < 0) return (int)k;
        if (k == 0) break;
        *got += (size_t)k;
    }
    return 0;
}

/* Sniffs the first two bytes (pushed back afterwards) and starts inflating
 * if they are the gzip magic 1f 8b. */
static int src_start(source *s) {
    size_t got = 0;
    while (got < 2) {
        long long k = raw_read(s, s->back + got, 2 - got);
        if (k < 0) return (int)k;
        if (k == 0) break;
        got += (size_t)k;
    }
    if (got == 0) return tl_error(TL_EFORMAT, "%s: empty file", s->name);
    s->back_len = got;
    s->gz = got == 2 && s->back[0] == 0x1f && s->back[1] == 0x8b;
    if (s->gz) {
        memset(&s->zs, 0, sizeof s->zs);
        if (inflateInit2(&s->zs, 16 + MAX_WBITS) != Z_OK)
            return tl_error(TL_ENOMEM, "%s: cannot initialise zlib", s->name);
        s->z_ready = 1;
    }
    return 0;
}

/* Reads and validates the magic and dimensions into t (rank, dims, count). */
static int read_header(source *s, tl_idx *t) {
    uint8_t h[4 + 4 * TL_IDX_MAX_RANK];
    size_t got;
    int rc = src_read(s, h, 4, &got);
    if (rc < 0) return rc;
    if (got < 4) return tl_error(TL_EFORMAT, "%s: truncated header (%zu of 4 magic bytes)", s->name, got);
    if (h[0] != 0 || h[1] != 0)
        return tl_error(TL_EFORMAT, "%s: bad magic %02x %02x (not an IDX file)", s->name, h[0], h[1]);
    if (h[2] != 0x08)
        return tl_error(TL_EFORMAT, "%s: unsupported IDX type 0x%02x (only 0x08, unsigned byte)",
                        s->name, h[2]);
    if (h[3] < 1 || h[3] > TL_IDX_MAX_RANK)
        return tl_error(TL_EFORMAT, "%s: unsupported rank %d (must be 1..%d)", s->name, h[3],
                        TL_IDX_MAX_RANK);
    t->rank = h[3];
    size_t dlen = 4 * (size_t)t->rank;
    rc = src_read(s, h + 4, dlen, &got);
    if (rc < 0) return rc;
    if (got < dlen)
        return tl_error(TL_EFORMAT, "%s: truncated header (%zu of %zu dimension bytes)", s->name, got, dlen);
    size_t count = 1;
    for (int i = 0; i < t->rank; i++) {
        const uint8_t *p = h + 4 + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d == 0) return tl_error(TL_EFORMAT, "%s: dimension %d is zero", s->name, i);
        if (count > TL_IDX_MAX_BYTES / d)
            return tl_error(TL_ERANGE, "%s: dimensions too large (over %zu bytes of data)", s->name,
                            (size_t)TL_IDX_MAX_BYTES);
        count *= d;
        t->dims[i] = d;
    }
    t->count = count;
    return 0;
}

/* Reads exactly t->count payload bytes into a new t->data, then checks that
 * nothing follows. */
static int read_payload(source *s, tl_idx *t) {
    size_t n = t->count, have = 0, cap, got;
    int rc;
    if (!s->gz && s->known) {
        uint64_t rem = raw_remaining(s);
        if (rem < n)
            return tl_error(TL_EFORMAT, "%s: truncated data (%llu of %zu bytes)", s->name,
                            (unsigned long long)rem, n);
        if (rem > n)
            return tl_error(TL_EFORMAT, "%s: %llu trailing bytes after the data", s->name,
                            (unsigned long long)(rem - n));
        cap = n;
    } else {
        cap = n < GROW_START ? n : GROW_START;
    }
    t->data = malloc(cap);
    if (!t->data) return tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", s->name, cap);
    for (;;) {
        rc = src_read(s, t->data + have, cap - have, &got);
        if (rc < 0) return rc;
        have += got;
        if (have < cap)
            return tl_error(TL_EFORMAT, "%s: truncated data (%zu of %zu bytes)", s->name, have, n);
        if (have == n) break;
        size_t ncap = cap * 2 < n ? cap * 2 : n;
        uint8_t *p = realloc(t->data, ncap);
        if (!p) return tl_error(TL_ENOMEM, "%s: out of memory (%zu bytes)", s->name, ncap);
        t->data = p;
        cap = ncap;
    }
    uint8_t extra;
    rc = src_read(s, &extra, 1, &got);
    if (rc < 0) return rc;
    if (got) return tl_error(TL_EFORMAT, "%s: trailing bytes after the data", s->name);
    return 0;
}

/* Reads one IDX from an opened source into *out (left empty on failure). */
static int read_source(source *s, tl_idx *out) {
    tl_idx t = {0};
    int rc = src_start(s);
    if (rc == 0) rc = read_header(s, &t);
    if (rc == 0) rc = read_payload(s, &t);
    if (s->z_ready) inflateEnd(&s->zs);
    if (rc < 0) {
        tl_idx_free(&t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Contract in idx.h. */
int tl_idx_read(const char *path, tl_idx *out) {
    memset(out, 0, sizeof *out);
    source *s = calloc(1, sizeof *s);
    if (!s) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    int rc;
    s->name = path;
    s->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd < 0) {
        rc = tl_error(TL_EIO, "%s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        rc = tl_error(TL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto cleanup;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = tl_error(TL_EIO, "%s: is a directory", path);
        goto cleanup;
    }
    s->known = S_ISREG(st.st_mode);
    s->file_len = (uint64_t)st.st_size;
    rc = read_source(s, out);
cleanup:
    if (s->fd >= 0) close(s->fd);
    free(s);
    return rc;
}

/* Contract in idx.h. */
int tl_idx_read_mem(const uint8_t *buf, size_t len, const char *name, tl_idx *out) {
    memset(out, 0, sizeof *out);
    source *s = calloc(1, sizeof *s);
    if (!s) return tl_error(TL_ENOMEM, "%s: out of memory", name);
    s->name = name;
    s->fd = -1;
    s->mem = buf;
    s->mem_len = len;
    s->known = 1;
    int rc = read_source(s, out);
    free(s);
    return rc;
}

/* Writes all n bytes to fd. Returns 0 or TL_EIO (message names path). */
static int write_all(int fd, const uint8_t *p, size_t n, const char *path) {
    while (n > 0) {
        ssize_t k = write(fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return tl_error(TL_EIO, "%s: write failed: %s", path, strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Deflates header then data (gzip format) into fd. */
static int write_gz(int fd, const uint8_t *hdr, size_t hlen, const tl_idx *t, const char *path) {
    z_stream z = {0};
    uint8_t *out = malloc(CHUNK);
    int rc = 0;
    if (!out) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(out);
        return tl_error(TL_ENOMEM, "%s: cannot initialise zlib", path);
    }
    const uint8_t *parts[2] = {hdr, t->data};
    size_t lens[2] = {hlen, t->count};
    for (int part = 0; part < 2 && rc == 0; part++) {
        const uint8_t *p = parts[part];
        size_t left = lens[part];
        int flush;
        do {
            size_t step = left > ((size_t)1 << 30) ? ((size_t)1 << 30) : left;
            z.next_in = (Bytef *)p;
            z.avail_in = (uInt)step;
            p += step;
            left -= step;
            flush = (part == 1 && left == 0) ? Z_FINISH : Z_NO_FLUSH;
            do {
                z.next_out = out;
                z.avail_out = CHUNK;
                int zr = deflate(&z, flush);
                if (zr == Z_STREAM_ERROR) {
                    rc = tl_error(TL_EIO, "%s: deflate failed", path);
                    break;
                }
                rc = write_all(fd, out, CHUNK - z.avail_out, path);
            } while (rc == 0 && z.avail_out == 0);
        } while (rc == 0 && left > 0);
    }
    deflateEnd(&z);
    free(out);
    return rc;
}

/* Contract in idx.h. */
int tl_idx_write(const char *path, const tl_idx *t, int gz) {
    uint8_t hdr[4 + 4 * TL_IDX_MAX_RANK];
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
        hdr[4 + 4 * i] = (uint8_t)(d >> 24), hdr[5 + 4 * i] = (uint8_t)(d >> 16);
        hdr[6 + 4 * i] = (uint8_t)(d >> 8), hdr[7 + 4 * i] = (uint8_t)d;
    }
    if (count != t->count || !t->data)
        return tl_error(TL_EINVAL, "%s: count %zu does not match dimensions (%zu)", path, t->count, count);
    size_t hlen = 4 + 4 * (size_t)t->rank;

    size_t tlen = strlen(path) + 32;
    char *tmp = malloc(tlen);
    if (!tmp) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    int rc, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        rc = tl_error(TL_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto cleanup;
    }
    if (gz) {
        rc = write_gz(fd, hdr, hlen, t, path);
    } else {
        rc = write_all(fd, hdr, hlen, path);
        if (rc == 0) rc = write_all(fd, t->data, t->count, path);
    }
    if (rc == 0 && fsync(fd) < 0) rc = tl_error(TL_EIO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) < 0 && rc == 0) rc = tl_error(TL_EIO, "%s: close failed: %s", path, strerror(errno));
    fd = -1;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = tl_error(TL_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (rc < 0) unlink(tmp);
cleanup:
    free(tmp);
    return rc;
}

/* Contract in idx.h. */
void tl_idx_free(tl_idx *t) {
    if (!t) return;
    free(t->data);
    memset(t, 0, sizeof *t);
}
