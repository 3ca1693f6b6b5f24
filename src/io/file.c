/* file.c - atomic replace, full reads and writes, output checks (see file.h). */
#define _GNU_SOURCE
#include "tl/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tl/error.h"

/* The directory part of path ("." if none, "/" for "/x"); malloc'd or NULL. */
static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* 48 random bits for a temporary's name. */
static unsigned long long random_tag(void) {
    static unsigned long long counter;
    unsigned long long r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((unsigned long long)getpid() << 32) ^ (unsigned long long)ts.tv_nsec ^
            ((unsigned long long)ts.tv_sec << 20) ^ (++counter * 0x9e3779b97f4a7c15ULL);
    }
    return r & 0xffffffffffffULL;
}

/* Creates a new file "<path>.tmp-<random>" (O_EXCL|O_NOFOLLOW: never an
 * existing file or a link); *tmp is its malloc'd name. -1 with errno. */
static int create_tmp(const char *path, mode_t mode, char **tmp) {
    size_t len = strlen(path) + 32;
    char *name = malloc(len);
    if (!name) {
        errno = ENOMEM;
        return -1;
    }
    for (int tries = 0; tries < 100; tries++) {
        snprintf(name, len, "%s.tmp-%012llx", path, random_tag());
        int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd >= 0) {
            *tmp = name;
            return fd;
        }
        if (errno != EEXIST) break;
    }
    int e = errno;
    free(name);
    errno = e;
    return -1;
}

/* Best-effort fsync of the directory holding path, so a rename is durable. */
static void sync_dir(const char *path) {
    char *dir = dir_of(path);
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int tl_file_write_full(int fd, const void *p, size_t n, const char *what) {
    const unsigned char *b = p;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        ssize_t w = write(fd, b, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return tl_error(TL_EIO, "%s: write failed: %s", what, strerror(errno));
        if (w == 0) return tl_error(TL_EIO, "%s: write failed: no progress", what);
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int tl_file_read_full(int fd, void *buf, size_t n, size_t *got, const char *what) {
    unsigned char *b = buf;
    *got = 0;
    while (*got < n) {
        size_t left = n - *got, chunk = left > (1u << 30) ? (1u << 30) : left;
        ssize_t r = read(fd, b + *got, chunk);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return tl_error(TL_EIO, "%s: read failed: %s", what, strerror(errno));
        if (r == 0) break;
        *got += (size_t)r;
    }
    return 0;
}

int tl_file_begin(tl_file_w *w, const char *path, mode_t mode, int flags) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->flags = flags;
    if (!(w->path = strdup(path))) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    w->fd = create_tmp(path, mode, &w->tmp);
    if (w->fd < 0) {
        int e = errno;
        free(w->path);
        w->path = NULL;
        if (e == ENOMEM) return tl_error(TL_ENOMEM, "%s: out of memory", path);
        return tl_error(TL_EIO, "%s: cannot create a file there: %s", path, strerror(e));
    }
    return 0;
}

int tl_file_write(tl_file_w *w, const void *p, size_t n) {
    return tl_file_write_full(w->fd, p, n, w->path);
}

void tl_file_abort(tl_file_w *w) {
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    memset(w, 0, sizeof *w);
    w->fd = -1;
}

int tl_file_commit(tl_file_w *w) {
    int rc = 0, fd = w->fd;
    const int sync = !(w->flags & TL_FILE_NOSYNC);
    w->fd = -1;
    if (sync && fsync(fd) < 0)
        rc = tl_error(TL_EIO, "%s: fsync failed: %s", w->path, strerror(errno));
    if (close(fd) < 0 && rc == 0)
        rc = tl_error(TL_EIO, "%s: close failed: %s", w->path, strerror(errno));
    /* rename(2) replaces the final path's directory entry, whatever it is (a
     * symbolic link included), and never follows it: a link planted there is
     * gone afterwards and its target is untouched. */
    if (rc == 0 && rename(w->tmp, w->path) < 0)
        rc = tl_error(TL_EIO, "%s: cannot rename into place: %s", w->path, strerror(errno));
    if (rc == 0) {
        if (sync) sync_dir(w->path);
        free(w->tmp);
        w->tmp = NULL;
    }
    tl_file_abort(w);
    return rc;
}

int tl_file_write_atomic(const char *path, const void *p, size_t n, mode_t mode, int flags) {
    tl_file_w w;
    int rc = tl_file_begin(&w, path, mode, flags);
    if (rc < 0) return rc;
    if ((rc = tl_file_write(&w, p, n)) < 0) {
        tl_file_abort(&w);
        return rc;
    }
    return tl_file_commit(&w);
}

int tl_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len) {
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    if (fd < 0) return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 4096;
            if (ncap > max + 1) ncap = max + 1;
            uint8_t *nb = ncap > cap ? realloc(buf, ncap + 1) : NULL;
            if (!nb) {
                rc = ncap > cap ? tl_error(TL_ENOMEM, "%s: out of memory", path)
                                : tl_error(TL_ERANGE, "%s: larger than %zu bytes", path, max);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = tl_error(TL_EIO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            rc = tl_error(TL_ERANGE, "%s: larger than %zu bytes", path, max);
            break;
        }
    }
    close(fd);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    if (!buf && !(buf = malloc(1))) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int tl_file_open_stream(const char *path, int append, FILE **out) {
    int fd;
    if (append) {
        /* O_NOFOLLOW: a link at path is refused, not written through */
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
            return tl_error(TL_EIO, "%s: %s", path,
                            errno == ELOOP ? "is a symbolic link (refused)" : strerror(errno));
    } else {
        /* a new empty file renamed into place; its descriptor stays ours */
        char *tmp;
        fd = create_tmp(path, 0644, &tmp);
        if (fd < 0)
            return tl_error(TL_EIO, "%s: cannot create a file there: %s", path, strerror(errno));
        if (rename(tmp, path) < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return tl_error(TL_EIO, "%s: cannot rename into place: %s", path, strerror(e));
        }
        free(tmp);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return tl_error(TL_EIO, "%s: not a regular file", path);
    }
    FILE *f = fdopen(fd, append ? "a" : "w");
    if (!f) {
        close(fd);
        return tl_error(TL_ENOMEM, "%s: out of memory", path);
    }
    *out = f;
    return 0;
}

int tl_file_check_writable(const char *path) {
    struct stat st;
    size_t len = strlen(path);
    if (len == 0) return tl_error(TL_EIO, "an output path is empty");
    if (path[len - 1] == '/' || (stat(path, &st) == 0 && S_ISDIR(st.st_mode)))
        return tl_error(TL_EIO, "%s: is a directory (want a file name)", path);
    char *dir = dir_of(path);
    if (!dir) return tl_error(TL_ENOMEM, "%s: out of memory", path);
    int rc = 0;
    if (stat(dir, &st) < 0) {
        rc = tl_error(TL_EIO, "%s: directory %s: %s", path, dir, strerror(errno));
    } else if (!S_ISDIR(st.st_mode)) {
        rc = tl_error(TL_EIO, "%s: %s is not a directory", path, dir);
    } else {
        char *tmp;
        int fd = create_tmp(path, 0600, &tmp);
        if (fd < 0) {
            rc = tl_error(TL_EIO, "%s: cannot create a file in %s: %s", path, dir, strerror(errno));
        } else {
            close(fd);
            unlink(tmp);
            free(tmp);
        }
    }
    free(dir);
    return rc;
}
