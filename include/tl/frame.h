/*
 * frame.h - frames on the wire: a 24-byte header, then a payload
 * (docs/protocol.md §2, §3.4).
 *
 * Three pieces:
 *  - the header, encoded and decoded explicitly little-endian and validated
 *    (magic, version, type, flags, reserved, payload cap) before anything is
 *    allocated for the payload;
 *  - a per-connection incremental READER for non-blocking sockets: it reads the
 *    header, validates it, then reads the payload straight into one reusable,
 *    64-byte-aligned buffer; it never reads past the end of the current frame;
 *  - a per-connection WRITER: header + caller's buffers go out with writev
 *    (tensor data is never copied), resuming after short writes.
 * Optional zstd compression (flags bit 0): the writer compresses (this copies;
 * opt-in), the reader decompresses with the size checked against the cap.
 *
 *     tl_frame_reader r; tl_frame_reader_init(&r, TL_FRAME_HANDSHAKE_MAX);
 *     tl_frame f;
 *     rc = tl_frame_read(&r, c, &f);     // 0: f.payload holds a whole frame;
 *                                        // TL_EAGAIN: poll for tl_conn_want(c)
 *     tl_frame_writer w; tl_frame_writer_init(&w);
 *     tl_frame_writer_start(&w, type, iov, n);   // iov: caller's buffers
 *     rc = tl_frame_writer_flush(&w, c);         // 0 sent, TL_EAGAIN: poll POLLOUT
 *     tl_frame_reader_free(&r); tl_frame_writer_free(&w);
 *
 * The message layer (msg.h) builds the iovecs and decodes payloads.
 */
#ifndef TL_FRAME_H
#define TL_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "tl/conn.h"

#define TL_FRAME_MAGIC 0x314E4C54u /* "TLN1" on the wire */
#define TL_FRAME_VERSION 1
#define TL_FRAME_HEADER_SIZE 24
#define TL_FRAME_TYPE_MAX 21 /* highest message type this version knows (msg.h) */
#define TL_FRAME_F_ZSTD 0x1u /* flags bit 0: payload is zstd-compressed */

/* Hard cap on a payload (as sent and decompressed); -D to change at build time. */
#ifndef TL_FRAME_MAX_PAYLOAD
#define TL_FRAME_MAX_PAYLOAD (UINT64_C(1) << 30)
#endif
/* Cap the orchestrator uses until a node is welcomed (docs/protocol.md §5). */
#define TL_FRAME_HANDSHAKE_MAX (UINT64_C(64) << 10)
/* Payloads smaller than this are never compressed. */
#define TL_FRAME_ZSTD_MIN 1024
/* Most iovecs a frame's payload may be given in (msg.h needs at most 7). */
#define TL_FRAME_MAX_IOV 15

/* The header as it is on the wire (24 bytes, little-endian; the struct layout
 * matches the wire on little-endian hosts, but encode/decode go byte by byte). */
typedef struct tl_frame_header {
    uint32_t magic;       /* 0: TL_FRAME_MAGIC */
    uint16_t version;     /* 4: TL_FRAME_VERSION */
    uint16_t type;        /* 6: 1..TL_FRAME_TYPE_MAX */
    uint32_t flags;       /* 8: TL_FRAME_F_* */
    uint32_t reserved;    /* 12: 0 */
    uint64_t payload_len; /* 16: bytes after the header, as sent */
} tl_frame_header;

/* Writes h as 24 wire bytes. */
void tl_frame_header_encode(const tl_frame_header *h, uint8_t out[TL_FRAME_HEADER_SIZE]);

/* Parses and validates 24 wire bytes: magic, version, type range, flags (bit 0
 * only if allow_zstd), reserved == 0, payload_len <= max_payload (0 or above
 * TL_FRAME_MAX_PAYLOAD means TL_FRAME_MAX_PAYLOAD). 0, TL_EPROTO with a
 * message saying which field is wrong, or TL_ETLS if the bytes are a TLS
 * handshake record (0x16 0x03: the peer speaks TLS where frames belong). */
int tl_frame_header_decode(const uint8_t in[TL_FRAME_HEADER_SIZE], uint64_t max_payload,
                           int allow_zstd, tl_frame_header *h);

/* A received frame. payload is 8-byte aligned (64 in fact) and holds len bytes
 * (decompressed if the frame was compressed); it stays valid until the next
 * tl_frame_read / _feed / _recv / _take / _free call on the same reader. */
typedef struct tl_frame {
    uint16_t type;
    uint32_t flags;         /* as received (TL_FRAME_F_ZSTD: it was compressed) */
    uint64_t len;           /* payload bytes */
    const uint8_t *payload; /* never NULL, even for len 0 */
    uint64_t wire_len;      /* header + payload bytes as received */
} tl_frame;

/* Incremental reader, one per connection. Fields other than the two settings
 * are private. After an error the stream is out of sync: close the
 * connection (tl_frame_reader_reset() only if starting over on a new one). */
typedef struct tl_frame_reader {
    uint64_t max_payload; /* setting: cap on payload_len and decompressed size */
    int zstd;             /* setting: accept compressed frames (after WELCOME) */
    /* private */
    uint8_t hdr[TL_FRAME_HEADER_SIZE];
    size_t hdr_got;
    int in_payload;
    tl_frame_header h;
    uint8_t *buf; /* payload buffer, reused across frames */
    size_t cap;
    uint64_t got;
    uint8_t *zbuf; /* decompression target, swapped with buf */
    size_t zcap;
    void *dctx; /* ZSTD_DCtx, created on first use */
} tl_frame_reader;

/* Sets up r with a payload cap (0 or anything above TL_FRAME_MAX_PAYLOAD means
 * TL_FRAME_MAX_PAYLOAD) and compression off. Allocates nothing. */
void tl_frame_reader_init(tl_frame_reader *r, uint64_t max_payload);

/* Frees the buffers; r can be init'ed again. NULL-safe. */
void tl_frame_reader_free(tl_frame_reader *r);

/* Forgets a partly read frame (keeps buffers and settings). */
void tl_frame_reader_reset(tl_frame_reader *r);

/* Changes the cap (same clamping as init); applies from the next header. */
void tl_frame_reader_set_max(tl_frame_reader *r, uint64_t max_payload);

/* Reads from c without blocking until the current frame is complete (0, *f
 * filled) or c would block (TL_EAGAIN: wait for tl_conn_want(c), see
 * tl_conn_wait()). Never reads beyond the current frame, so after 0 there may
 * be more bytes (or TLS-pending bytes) for the next one: call again. Errors:
 * TL_EPROTO (bad header, over cap, bad compressed data), TL_ETLS (a TLS
 * record where a frame belongs, see tl_frame_header_decode), TL_ENOMEM, and
 * the transport's TL_ECLOSED / TL_ENET / TL_ETLS; messages name c->peer. */
int tl_frame_read(tl_frame_reader *r, tl_conn *c, tl_frame *f);

/* As tl_frame_read, but from memory: consumes at most what the current frame
 * still needs from data[0..len). 0 with *f when a frame completed, TL_EAGAIN
 * when all len bytes were consumed and the frame is still incomplete; *used
 * (may be NULL) gets the bytes consumed either way. For tests and fuzzing. */
int tl_frame_reader_feed(tl_frame_reader *r, const void *data, size_t len, size_t *used,
                         tl_frame *f);

/* Blocking: tl_frame_read + tl_conn_wait until a frame or the absolute
 * deadline (tl_now_ms clock, < 0: none) passes (TL_ETIMEDOUT). */
int tl_frame_recv(tl_frame_reader *r, tl_conn *c, tl_frame *f, int64_t deadline_ms);

/* Takes ownership of the buffer holding the last completed frame's payload,
 * so that its tensor views outlive the next read (e.g. a node keeps FORWARD's
 * parameters until BACKWARD while HEARTBEATs arrive). Returns the buffer
 * (free() it, or hand it back with _recycle) and its capacity in *cap; NULL if
 * the reader has no buffer (only zero-length frames so far). The reader
 * allocates a new buffer for the next payload. */
void *tl_frame_reader_take(tl_frame_reader *r, size_t *cap);

/* Gives a buffer obtained from _take back for reuse (kept if larger than the
 * current one and no frame is partly read into that, freed otherwise). NULL-safe. */
void tl_frame_reader_recycle(tl_frame_reader *r, void *buf, size_t cap);

/* Frame writer, one per connection. One frame at a time: start, then flush
 * until 0. Fields other than the settings are private. */
typedef struct tl_frame_writer {
    uint64_t max_payload; /* setting: largest payload start() accepts */
    int zstd;             /* setting: compress payloads >= TL_FRAME_ZSTD_MIN */
    int zstd_level;       /* setting: zstd level (1 by default) */
    /* private */
    int busy;
    uint8_t hdr[TL_FRAME_HEADER_SIZE];
    struct iovec iov[TL_FRAME_MAX_IOV + 1];
    int iovcnt, cur;
    uint64_t left; /* bytes still to send */
    uint8_t *zbuf; /* compressed payload (8-byte raw_len + zstd frame) */
    size_t zcap;
    void *cctx; /* ZSTD_CCtx, created on first use */
} tl_frame_writer;

/* Idle writer, cap TL_FRAME_MAX_PAYLOAD, compression off. Allocates nothing. */
void tl_frame_writer_init(tl_frame_writer *w);

/* Frees the compression state. NULL-safe. */
void tl_frame_writer_free(tl_frame_writer *w);

/* Turns compression on (on != 0, level as zstd's, e.g. 1) or off for the
 * following frames. Only after both sides negotiated it. */
void tl_frame_writer_set_zstd(tl_frame_writer *w, int on, int level);

/* Queues one frame: type, payload = the concatenation of iov[0..n). The
 * writer copies the iovec array but NOT the bytes: every buffer must stay
 * alive and unchanged until flush returns 0 (unless the frame got compressed,
 * which copies). Zero-length pieces are allowed. TL_EINVAL if a frame is still
 * being sent, n > TL_FRAME_MAX_IOV or type out of range; TL_ERANGE if the
 * payload exceeds max_payload; TL_ENOMEM. */
int tl_frame_writer_start(tl_frame_writer *w, uint16_t type, const struct iovec *iov, int n);

/* Sends as much of the queued frame as c accepts now. 0 when the whole frame
 * is out (the writer is idle again), TL_EAGAIN if bytes remain (wait for
 * POLLOUT / tl_conn_want(c), then call again), or the transport's error. */
int tl_frame_writer_flush(tl_frame_writer *w, tl_conn *c);

/* 1 while a started frame is not completely sent. */
static inline int tl_frame_writer_busy(const tl_frame_writer *w) { return w->busy; }

/* Blocking: start + flush/wait until sent or the deadline (TL_ETIMEDOUT). */
int tl_frame_send(tl_frame_writer *w, tl_conn *c, uint16_t type, const struct iovec *iov, int n,
                  int64_t deadline_ms);

/* "Sends" the queued frame into a new malloc'd buffer (*out, *len; the caller
 * frees it) instead of a connection, leaving the writer idle. For tests,
 * fuzzing corpora and docs. */
int tl_frame_writer_flush_mem(tl_frame_writer *w, uint8_t **out, size_t *len);

#endif
