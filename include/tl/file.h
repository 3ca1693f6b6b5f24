/*
 * file.h - how tl writes files: atomically, and never through a planted link.
 *
 * Every file tl produces (models, checkpoints, IDX data, keys and
 * certificates, the port file) is written to a temporary file in the same
 * directory with a random name, opened O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC
 * (so it is a new file of ours, not something planted there), written in
 * full, fsync'ed, then renamed over the final path and the directory
 * fsync'ed. rename() replaces whatever is at the final path, a symbolic link
 * included, and never follows it: a link planted at --save's path is
 * replaced by a regular file, its target is not touched. A crash or an
 * error leaves the final path as it was.
 *
 *     tl_file_w w;
 *     if (tl_file_begin(&w, "model.safetensors", 0644, 0) < 0) return ...;
 *     rc = tl_file_write(&w, header, hlen);         // as often as needed
 *     if (rc == 0) rc = tl_file_commit(&w);         // or tl_file_abort(&w)
 *     else tl_file_abort(&w);
 *
 * Files appended during a run (metrics, plan) come from tl_file_open_stream,
 * which never follows a link either. tl_file_check_writable is the check an
 * output path gets before a run starts, so a bad path fails in a second
 * instead of after hours of training.
 */
#ifndef TL_FILE_H
#define TL_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* flags: skip the fsyncs (scratch files that need not survive a crash) */
#define TL_FILE_NOSYNC 1

/* A file being written atomically. Owned by the caller; between begin and
 * commit/abort, fd is the temporary's descriptor. */
typedef struct tl_file_w {
    int fd;
    int flags;
    char *path; /* final path (copy) */
    char *tmp;  /* temporary path (same directory) */
} tl_file_w;

/* Creates the temporary for path ("<path>.tmp-<random>", mode as given, less
 * the umask). TL_EIO naming path if it cannot (missing directory, ...);
 * TL_ENOMEM. On failure w needs no abort. */
int tl_file_begin(tl_file_w *w, const char *path, mode_t mode, int flags);

/* Appends n bytes to the temporary (all of them; EINTR and short writes are
 * retried). TL_EIO naming the final path (disk full, file size limit). */
int tl_file_write(tl_file_w *w, const void *p, size_t n);

/* fsync, close, rename over the final path, fsync of the directory. Always
 * releases w; on failure the temporary is removed and path is untouched. */
int tl_file_commit(tl_file_w *w);

/* Removes the temporary and releases w. Safe on a released or zeroed w. */
void tl_file_abort(tl_file_w *w);

/* Writes n bytes as the whole new content of path: begin, write, commit. */
int tl_file_write_atomic(const char *path, const void *p, size_t n, mode_t mode, int flags);

/* Writes all n bytes to fd (EINTR and short writes retried): 0, or TL_EIO
 * whose message names `what`. */
int tl_file_write_full(int fd, const void *p, size_t n, const char *what);

/* Reads up to n bytes from fd into buf, stopping early only at end of file
 * (EINTR and short reads retried); *got receives the count, so *got < n
 * means the file ended. 0, or TL_EIO whose message names `what`. */
int tl_file_read_full(int fd, void *buf, size_t n, size_t *got, const char *what);

/* Reads all of path into *out (malloc'd, caller frees; one extra 0 byte
 * after the content), *len bytes. TL_ERANGE if it holds more than max bytes,
 * TL_EIO, TL_ENOMEM. */
int tl_file_read_all(const char *path, size_t max, uint8_t **out, size_t *len);

/* Opens path for a stream of lines written during a run: append keeps what is
 * there, otherwise path is replaced by a new empty file (atomically, as
 * above). Never follows a symbolic link at path (append to a link is
 * refused) and refuses anything but a regular file. *out is closed with
 * fclose. TL_EIO, TL_ENOMEM. */
int tl_file_open_stream(const char *path, int append, FILE **out);

/* Can path be written as an output? Its directory exists and is a directory,
 * a file can be created there (a temporary is created and removed to prove
 * it), and path itself is not a directory. 0, or TL_EIO with a one-line
 * reason naming path. */
int tl_file_check_writable(const char *path);

#endif
