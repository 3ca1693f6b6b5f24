/* shm.c - shared memory regions: sealed memfds, read-only fds, SCM_RIGHTS. */
#define _GNU_SOURCE
#include "tl/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl/conn.h"
#include "tl/error.h"

#define FD_BYTE 'S'
#define MAX_FDS 4

int tl_shm_possible(int sock) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    return getsockname(sock, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX;
}

/* The seals of every region: its size is fixed (a reader's mapping cannot
 * fault on a page cut off under it), and so is the set of seals (F_SEAL_SEAL:
 * whoever holds a descriptor can add none, e.g. F_SEAL_WRITE on a gradient
 * region; seals are never removed). */
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* Creates the memfd, reserves and maps its bytes (writable, shared, not
 * inherited by a fork), seals it with SEALS plus extra, checks the seals
 * took, and opens the read-only descriptor. */
static int create(size_t bytes, int extra, tl_shm *s) {
    char path[64];
    memset(s, 0, sizeof *s);
    s->fd = s->fd_ro = -1;
    s->fd = memfd_create("tl-shared", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (s->fd < 0) return tl_error(TL_EIO, "memfd_create: %s", strerror(errno));
    /* the memory is reserved now: a shortage shows here, not on a first touch */
    if (ftruncate(s->fd, (off_t)bytes) < 0 || (bytes && fallocate(s->fd, 0, 0, (off_t)bytes) < 0)) {
        int e = errno;
        tl_shm_free(s);
        return tl_error(TL_EIO, "shared memory: %s", strerror(e));
    }
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        tl_shm_free(s);
        return tl_error(TL_ENOMEM, "shared memory: mmap: %s", strerror(e));
    }
    s->p = p;
    s->bytes = bytes;
    /* a child of this process gets no writable view (nothing forks it today) */
    madvise(p, bytes ? bytes : 1, MADV_DONTFORK);
    /* after the mapping: F_SEAL_FUTURE_WRITE leaves this one writable and
     * refuses every later writable mapping and write(2), whatever the fd */
    int want = SEALS | extra, got = -1;
    if (fcntl(s->fd, F_ADD_SEALS, want) < 0 || (got = fcntl(s->fd, F_GET_SEALS)) < 0 ||
        (got & want) != want) {
        int e = got < 0 ? errno : EPERM;
        tl_shm_free(s);
        return tl_error(TL_EIO, "shared memory: cannot seal it (%s)", strerror(e));
    }
    /* a descriptor that can only read: what the nodes get */
    snprintf(path, sizeof path, "/proc/self/fd/%d", s->fd);
    s->fd_ro = open(path, O_RDONLY | O_CLOEXEC);
    if (s->fd_ro < 0) {
        int e = errno;
        tl_shm_free(s);
        return tl_error(TL_EIO, "shared memory: %s: %s", path, strerror(e));
    }
    return 0;
}

int tl_shm_create(size_t bytes, tl_shm *s) { return create(bytes, 0, s); }

int tl_shm_create_readonly(size_t bytes, tl_shm *s) {
    return create(bytes, F_SEAL_FUTURE_WRITE, s);
}

void tl_shm_free(tl_shm *s) {
    if (s->p) munmap(s->p, s->bytes ? s->bytes : 1);
    if (s->fd >= 0) close(s->fd);
    if (s->fd_ro >= 0) close(s->fd_ro);
    memset(s, 0, sizeof *s);
    s->fd = s->fd_ro = -1;
}

int tl_shm_send_fds(int sock, const int *fds, int n) {
    char byte = FD_BYTE;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    } u;
    if (n < 1 || n > MAX_FDS) return tl_error(TL_EINVAL, "tl_shm_send_fds: %d fds", n);
    memset(&u, 0, sizeof u);
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = u.buf,
                        .msg_controllen = CMSG_SPACE((size_t)n * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)n * sizeof(int));
    for (;;) {
        ssize_t k = sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k == 1) return 0;
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return TL_EAGAIN;
        return tl_error(TL_ENET, "sending the shared memory: %s",
                        k < 0 ? strerror(errno) : "nothing sent");
    }
}

/* Moves the fds of mh's control messages into fds (up to max, in order) and
 * closes the rest. Returns how many there were in all. */
static int take_fds(struct msghdr *mh, int *fds, int max) {
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++, got++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < max) fds[got] = fd;
            else close(fd);
        }
    }
    return got;
}

int tl_shm_recv_fds(int sock, int64_t deadline, int *fds, int n) {
    char byte = 0;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
    } u;
    for (;;) {
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
        ssize_t k = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t left = deadline - tl_now_ms();
            if (left <= 0) return tl_error(TL_ETIMEDOUT, "no shared memory after WELCOME");
            struct pollfd pf = {sock, POLLIN, 0};
            poll(&pf, 1, left > 1000 ? 1000 : (int)left);
            continue;
        }
        if (k < 0) return tl_error(TL_ENET, "receiving the shared memory: %s", strerror(errno));
        if (k == 0) return tl_error(TL_ECLOSED, "connection closed before the shared memory");
        int got = take_fds(&mh, fds, n);
        if (byte != FD_BYTE || got != n || (mh.msg_flags & MSG_CTRUNC)) {
            for (int i = 0; i < (got < n ? got : n); i++) close(fds[i]);
            return tl_error(TL_EPROTO, "expected %d shared-memory descriptors after WELCOME", n);
        }
        return 0;
    }
}

int tl_shm_map(int fd, size_t bytes, int writable, void **p) {
    struct stat st;
    *p = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes) {
        close(fd);
        return tl_error(TL_EPROTO, "the shared memory is not a region of %zu bytes", bytes);
    }
    /* a region that could shrink under the mapping would fault on reading it */
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        close(fd);
        return tl_error(TL_EPROTO, "the shared memory is not sealed against shrinking");
    }
    void *m = mmap(NULL, bytes ? bytes : 1, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                   MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (m == MAP_FAILED) return tl_error(TL_EIO, "mapping the shared memory: %s", strerror(e));
    *p = m;
    return 0;
}

void tl_shm_unmap(const void *p, size_t bytes) {
    if (p) munmap((void *)p, bytes ? bytes : 1);
}
