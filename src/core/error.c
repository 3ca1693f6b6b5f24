/* error.c - error codes and the per-thread last error message. */
#include "tl/error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_msg[512];

const char *tl_strerror(int code) {
    switch (code) {
    case TL_OK: return "success";
    case TL_ENOMEM: return "out of memory";
    case TL_EINVAL: return "invalid argument";
    case TL_EIO: return "input/output error";
    case TL_EFORMAT: return "malformed data";
    case TL_ERANGE: return "value out of range";
    case TL_EPROTO: return "protocol error";
    case TL_ETIMEDOUT: return "timed out";
    case TL_ECLOSED: return "connection closed";
    case TL_ENET: return "network error";
    case TL_ETLS: return "TLS error";
    case TL_EREFUSED: return "refused by peer";
    case TL_ENUMERIC: return "non-finite number";
    case TL_EAGAIN: return "would block";
    case TL_ESTATE: return "state mismatch";
    default: return "unknown error";
    }
}

int tl_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *tl_errmsg(void) { return last_msg; }
