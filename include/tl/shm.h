/*
 * shm.h - parameters and gradients in shared memory, for nodes on the orchestrator's
 * machine (unix-socket connections).
 *
 * Every step the orchestrator sends the same parameters to every node of the
 * batch: over a socket that is one copy into the kernel and one out per node
 * (and, with TLS, an encryption and a decryption each). A node connected over
 * a unix socket can instead map a memfd the orchestrator writes once per
 * step. The fd travels as SCM_RIGHTS on a single byte ('S') sent right after
 * WELCOME (docs/protocol.md §5.1), and it is a read-only descriptor: the node
 * can read the parameters (which FORWARD would have carried anyway) and
 * nothing else. The region itself is sealed (F_SEAL_FUTURE_WRITE, size and
 * seals fixed) once the orchestrator has mapped it: the orchestrator's mapping
 * is the only writable view there will ever be, so a node that reopens its
 * descriptor read-write (/proc/self/fd/N) still cannot map it writable,
 * mprotect a mapping writable, write(2) to it, punch holes in it, resize it or
 * lift the seals. A private writable mapping stays possible but is the node's
 * own copy. A system without those seals gets no shared memory at all.
 *
 * The same way each node gets a region of its own, read-write, for its
 * gradient: it computes straight into it and BACKWARD_RESULT carries nothing.
 * The orchestrator reads that region once per element (a node may write it
 * at any time) and creates a fresh one for every connection, so a stale
 * process of a node cannot touch what its successor sends.
 *
 *     orchestrator:  tl_shm_create_readonly(bytes, &s); ... memcpy(s.p, params, bytes);
 *                    tl_conn_send_fds(c, fds, 2);   // after WELCOME is out (conn.h)
 *     node:          tl_conn_recv_fds(c, deadline, fds, 2);  // after WELCOME
 *                    tl_shm_map(fds[0], bytes, 0, &p);
 */
#ifndef TL_SHM_H
#define TL_SHM_H

#include <stddef.h>
#include <stdint.h>

typedef struct tl_shm {
    float *p; /* the writable mapping (orchestrator) */
    size_t bytes;
    int fd;    /* the memfd, size sealed */
    int fd_ro; /* a read-only descriptor of it */
} tl_shm;

/* Whether sock is a unix-domain socket (the only kind fds can travel on). */
int tl_shm_possible(int sock);

/* Creates a memfd of bytes bytes (its memory reserved), maps it writable for
 * this process only (a fork does not inherit the mapping), seals its size and
 * its seals, and opens a read-only fd of it. Whoever gets s->fd can write the
 * region (a node's gradient region). 0, or TL_ENOMEM / TL_EIO with the reason
 * (then *s is empty). */
int tl_shm_create(size_t bytes, tl_shm *s);

/* tl_shm_create, and sealed against writes too: s->p is then the only
 * writable view of the region, whatever any process does with s->fd or
 * s->fd_ro (the parameters). TL_EIO if the kernel cannot seal it that way
 * (before Linux 5.1): share nothing then. */
int tl_shm_create_readonly(size_t bytes, tl_shm *s);
void tl_shm_free(tl_shm *s);

/* Sends one byte 'S' with the n fds attached (n <= 4) on a non-blocking unix
 * socket: 0, TL_EAGAIN (socket full: wait for POLLOUT and call again) or
 * TL_ENET. */
int tl_shm_send_fds(int sock, const int *fds, int n);

/* Receives that byte with exactly n fds (waiting until deadline, tl_now_ms
 * clock). 0, or TL_ETIMEDOUT, TL_ECLOSED, TL_EPROTO (another byte, another
 * number of fds), TL_ENET; fds beyond n are closed. */
int tl_shm_recv_fds(int sock, int64_t deadline, int *fds, int n);

/* Maps fd (read-only, or read-write if writable) after checking it is a
 * region of exactly bytes bytes; closes fd either way. 0 with *p, or
 * TL_EPROTO (wrong size or kind), TL_EIO. */
int tl_shm_map(int fd, size_t bytes, int writable, void **p);
void tl_shm_unmap(const void *p, size_t bytes);

#endif
