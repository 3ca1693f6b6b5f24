/*
 * error.h - error codes and the last error's message.
 *
 * Every fallible function of the library returns an int: 0 on success or a
 * negative TL_E* code. The function that fails also records a one-line,
 * human-readable message (what failed and why, with the file or peer
 * involved), which stays readable through tl_errmsg() until the next failure
 * on the same thread. Callers never read errno after our functions.
 *
 *     if ((rc = tl_idx_read(path, &t)) < 0) {
 *         fprintf(stderr, "tl: %s\n", tl_errmsg());
 *         return rc;
 *     }
 */
#ifndef TL_ERROR_H
#define TL_ERROR_H

enum {
    TL_OK = 0,
    TL_ENOMEM = -1,    /* out of memory */
    TL_EINVAL = -2,    /* invalid argument or option value */
    TL_EIO = -3,       /* read/write/open failure of a file */
    TL_EFORMAT = -4,   /* malformed file contents */
    TL_ERANGE = -5,    /* a size or count over its limit */
    TL_EPROTO = -6,    /* protocol violation by a peer */
    TL_ETIMEDOUT = -7, /* a deadline passed */
    TL_ECLOSED = -8,   /* the peer closed the connection */
    TL_ENET = -9,      /* socket-level failure */
    TL_ETLS = -10,     /* TLS handshake or certificate failure */
    TL_EREFUSED = -11, /* the peer refused us (handshake REJECT) */
    TL_ENUMERIC = -12, /* NaN or Inf where a finite number is required */
    TL_EAGAIN = -13,   /* non-blocking operation would block */
    TL_ESTATE = -14,   /* checkpoint or configuration mismatch */
};

/* Static text for a code ("malformed file", ...). Never NULL. */
const char *tl_strerror(int code);

/* Records a printf-style message for the current thread and returns code,
 * so that failures read `return tl_error(TL_EFORMAT, "%s: bad magic", path);` */
int tl_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message recorded by the last failing call on this thread, or "" if none.
 * Valid until the next tl_error() on this thread. */
const char *tl_errmsg(void);

#endif
