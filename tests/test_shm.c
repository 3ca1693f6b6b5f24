/* test_shm.c - shared memory between the orchestrator and local nodes (shm.h):
 * regions cross a unix socket as SCM_RIGHTS, the parameters region cannot be
 * written by anyone but its creator's mapping (a node trying every way it has
 * included), sizes are sealed, and anything else on the socket is refused. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tl/conn.h"
#include "tl/error.h"
#include "tl/shm.h"

#include "harness.h"

#define N 1000

static void expect_errmsg(const char *needle) {
    if (!strstr(tl_errmsg(), needle))
        fail_msg("error message \"%s\" lacks \"%s\"", tl_errmsg(), needle);
}

static void pair(int sv[2]) {
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_true(tl_shm_possible(sv[0]));
}

/* Parameters one way, a gradient region the other: both sides see each
 * other's writes; the read-only side cannot write or resize. */
static void test_share_both_ways(void **state) {
    (void)state;
    int sv[2], got[2];
    tl_shm params, grads;
    pair(sv);
    assert_int_equal(tl_shm_create_readonly(N * sizeof(float), &params), 0);
    assert_int_equal(tl_shm_create(N * sizeof(float), &grads), 0);
    int fds[2] = {params.fd_ro, grads.fd};
    assert_int_equal(tl_shm_send_fds(sv[0], fds, 2), 0);
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 2), 0);
    int dup_ro = dup(got[0]); /* to try writing through later */
    void *p, *g;
    assert_int_equal(tl_shm_map(got[0], N * sizeof(float), 0, &p), 0);
    assert_int_equal(tl_shm_map(got[1], N * sizeof(float), 1, &g), 0);
    for (int i = 0; i < N; i++) params.p[i] = (float)i;
    assert_memory_equal(p, params.p, N * sizeof(float));
    ((float *)g)[7] = 42.0f;
    assert_true(grads.p[7] == 42.0f);
    /* the parameters' descriptor only reads: no writable mapping, no resize */
    assert_true(mmap(NULL, N * sizeof(float), PROT_READ | PROT_WRITE, MAP_SHARED, dup_ro, 0) ==
                MAP_FAILED);
    assert_int_equal(ftruncate(dup_ro, 4), -1);
    /* and the writable gradient region cannot shrink (the reader would fault) */
    assert_int_equal(ftruncate(grads.fd, 4), -1);
    close(dup_ro);
    tl_shm_unmap(p, N * sizeof(float));
    tl_shm_unmap(g, N * sizeof(float));
    tl_shm_free(&params);
    tl_shm_free(&grads);
    close(sv[0]), close(sv[1]);
}

/* What a node must refuse: another byte, too few fds, the wrong size, an
 * unsealed region, a closed socket, silence. */
/* The same through tl_conn (conn.h), as the orchestrator and the node do it. */
static void test_through_conn(void **state) {
    (void)state;
    int sv[2], got[2] = {-1, -1};
    tl_conn *a, *b;
    tl_shm params;
    pair(sv);
    assert_int_equal(tl_conn_tcp_new(sv[0], "a", &a), 0);
    assert_int_equal(tl_conn_tcp_new(sv[1], "b", &b), 0);
    assert_true(tl_conn_can_pass_fds(a) && tl_conn_can_pass_fds(b));
    assert_int_equal(tl_shm_create_readonly(N * sizeof(float), &params), 0);
    int fds[2] = {params.fd_ro, params.fd_ro};
    assert_int_equal(tl_conn_send_fds(a, fds, 2), 0);
    assert_int_equal(tl_conn_recv_fds(b, tl_now_ms() + 2000, got, 2), 0);
    void *p;
    assert_int_equal(tl_shm_map(got[0], N * sizeof(float), 0, &p), 0);
    params.p[3] = 3.0f;
    assert_true(((float *)p)[3] == 3.0f);
    munmap(p, N * sizeof(float));
    close(got[1]);
    tl_shm_free(&params);
    tl_conn_free(a);
    tl_conn_free(b);
}

static void test_refusals(void **state) {
    (void)state;
    int sv[2], got[2];
    void *p;
    pair(sv);
    assert_int_equal(write(sv[0], "T", 1), 1); /* a frame, not the fd byte */
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 2), TL_EPROTO);
    expect_errmsg("shared-memory descriptors");

    tl_shm a;
    assert_int_equal(tl_shm_create(N * sizeof(float), &a), 0);
    assert_int_equal(tl_shm_send_fds(sv[0], &a.fd_ro, 1), 0); /* one where two belong */
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 2), TL_EPROTO);

    assert_int_equal(tl_shm_send_fds(sv[0], &a.fd_ro, 1), 0);
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 1), 0);
    assert_int_equal(tl_shm_map(got[0], 2 * N * sizeof(float), 0, &p), TL_EPROTO);
    expect_errmsg("not a region of");

    int loose = memfd_create("loose", MFD_CLOEXEC);
    assert_true(loose >= 0);
    assert_int_equal(ftruncate(loose, N * sizeof(float)), 0);
    assert_int_equal(tl_shm_send_fds(sv[0], &loose, 1), 0);
    close(loose);
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 1), 0);
    assert_int_equal(tl_shm_map(got[0], N * sizeof(float), 0, &p), TL_EPROTO);
    expect_errmsg("sealed");

    int64_t t0 = tl_now_ms();
    assert_int_equal(tl_shm_recv_fds(sv[1], t0 + 200, got, 1), TL_ETIMEDOUT);
    assert_true(tl_now_ms() - t0 >= 150);
    close(sv[0]);
    assert_int_equal(tl_shm_recv_fds(sv[1], tl_now_ms() + 2000, got, 1), TL_ECLOSED);
    close(sv[1]);
    tl_shm_free(&a);
}

/* ------------------------------------------------ a node that attacks */

#define NP 4096 /* floats: four pages, so a page can be punched out */
#define PB (NP * sizeof(float))

static int report_fd = -1;

/* The node's side: one line to report_fd per way of writing that worked. */
static void worked(const char *how) {
    char line[128];
    int k = snprintf(line, sizeof line, "%s; ", how);
    if (write(report_fd, line, (size_t)k) < 0) _exit(4);
}

/* What a hostile node on the unix socket can try: it receives the two fds
 * as a node does (tl_shm_recv_fds, tl_shm_map), reopens its read-only
 * parameters descriptor read-write through /proc/self/fd, and tries every way
 * to change the parameters (NaN everywhere it can) or the size of either
 * region. Runs in a fork of the "orchestrator", so it also checks that the
 * orchestrator's writable mapping was not inherited. */
static void hostile_node(int sock, const void *orch_params) {
    const float nan4[4] = {NAN, NAN, NAN, NAN};
    int fds[2];
    void *p, *g;
    alarm(20);
    /* first, before a mapping of its own can land at that address */
    if (msync((void *)orch_params, PB, MS_ASYNC) == 0) {
        ((float *)orch_params)[5] = NAN;
        worked("inherited the orchestrator's writable mapping");
    }
    if (tl_shm_recv_fds(sock, tl_now_ms() + 5000, fds, 2) < 0) _exit(2);
    int gfd = dup(fds[1]);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    int rw = open(path, O_RDWR); /* allowed: the inode's mode is 0777 */
    if (rw < 0 || gfd < 0) _exit(3);
    if (tl_shm_map(fds[0], PB, 0, &p) < 0 || tl_shm_map(fds[1], PB, 1, &g) < 0) _exit(3);

    float *q = mmap(NULL, PB, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
    if (q != MAP_FAILED) {
        q[0] = NAN;
        worked("mmap MAP_SHARED writable");
    }
    q = mmap(NULL, PB, PROT_READ, MAP_SHARED, rw, 0);
    if (q != MAP_FAILED && mprotect(q, PB, PROT_READ | PROT_WRITE) == 0) {
        q[1] = NAN;
        worked("mprotect of a new read-only mapping");
    }
    if (mprotect(p, PB, PROT_READ | PROT_WRITE) == 0) {
        ((float *)p)[2] = NAN;
        worked("mprotect of the node's mapping");
    }
    if (madvise(p, PB, MADV_REMOVE) == 0) worked("madvise MADV_REMOVE");
    if (q != MAP_FAILED && madvise(q, PB, MADV_REMOVE) == 0) worked("madvise MADV_REMOVE (rw fd)");
    if (write(rw, nan4, sizeof nan4) > 0) worked("write");
    if (pwrite(rw, nan4, sizeof nan4, 64) > 0) worked("pwrite");
    struct iovec iov = {(void *)nan4, sizeof nan4};
    if (pwritev(rw, &iov, 1, 128) > 0) worked("pwritev");
    if (ftruncate(rw, PB / 2) == 0) worked("ftruncate shrink");
    if (ftruncate(rw, PB * 2) == 0) worked("ftruncate grow");
    if (fallocate(rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) == 0)
        worked("fallocate punch hole");
    if (fallocate(rw, 0, 0, PB * 2) == 0) worked("fallocate grow");
    if (fcntl(rw, F_ADD_SEALS, F_SEAL_WRITE) == 0) worked("F_ADD_SEALS");
    int src = memfd_create("src", MFD_CLOEXEC);
    if (src >= 0 && pwrite(src, nan4, sizeof nan4, 0) == sizeof nan4) {
        off_t in = 0, out = 256;
        if (copy_file_range(src, &in, rw, &out, sizeof nan4, 0) > 0) worked("copy_file_range");
        close(src);
    }
    int pp[2];
    if (pipe(pp) == 0 && write(pp[1], nan4, sizeof nan4) == sizeof nan4) {
        loff_t out = 512;
        if (splice(pp[0], NULL, rw, &out, sizeof nan4, 0) > 0) worked("splice");
        close(pp[0]), close(pp[1]);
    }
    int mem = open("/proc/self/mem", O_RDWR);
    if (mem >= 0) {
        if (pwrite(mem, nan4, sizeof nan4, (off_t)(uintptr_t)p + 1024) > 0)
            worked("/proc/self/mem");
        close(mem);
    }
    /* a private writable mapping is allowed, and private: the parent checks */
    q = mmap(NULL, PB, PROT_READ | PROT_WRITE, MAP_PRIVATE, rw, 0);
    if (q != MAP_FAILED)
        for (size_t i = 0; i < NP; i++) q[i] = NAN;

    /* the gradient region is the node's to write, but not to resize or seal */
    if (ftruncate(gfd, PB / 2) == 0) worked("gradient region shrink");
    if (ftruncate(gfd, PB * 2) == 0) worked("gradient region grow");
    if (fcntl(gfd, F_ADD_SEALS, F_SEAL_WRITE) == 0) worked("gradient region F_ADD_SEALS");
    /* punching a hole is writing zeros: allowed, and the reader must not fault */
    ((float *)g)[NP - 1] = 3.0f;
    if (fallocate(gfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096) < 0) _exit(5);
    _exit(0);
}

/* Issue 8 finding 4: a node on the unix socket could reopen its read-only
 * parameters descriptor read-write and change the model. Now every way it
 * has is refused and the orchestrator's view is unchanged (a private mapping
 * stays private); the orchestrator still writes through its own mapping; the
 * gradient region keeps its size, so reading all of it cannot fault. */
static void test_node_cannot_write_parameters(void **state) {
    (void)state;
    int sv[2], rp[2];
    tl_shm params, grads;
    static float want[NP];
    pair(sv);
    assert_int_equal(pipe(rp), 0);
    assert_int_equal(tl_shm_create_readonly(PB, &params), 0);
    assert_int_equal(tl_shm_create(PB, &grads), 0);
    for (int i = 0; i < NP; i++) params.p[i] = want[i] = 0.5f * (float)i;
    for (int i = 0; i < NP; i++) grads.p[i] = 1.0f;
    /* (vm.memfd_noexec may add F_SEAL_EXEC: only these bits are checked) */
    const int seals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL | F_SEAL_WRITE |
                      F_SEAL_FUTURE_WRITE;
    assert_int_equal(fcntl(params.fd, F_GET_SEALS) & seals, seals & ~F_SEAL_WRITE);
    assert_int_equal(fcntl(grads.fd, F_GET_SEALS) & seals,
                     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);

    pid_t pid = fork_child();
    if (pid == 0) {
        close(sv[0]), close(rp[0]);
        report_fd = rp[1];
        hostile_node(sv[1], params.p);
    }
    close(sv[1]), close(rp[1]);
    int fds[2] = {params.fd_ro, grads.fd};
    assert_int_equal(tl_shm_send_fds(sv[0], fds, 2), 0);
    char got[2048] = "";
    size_t n = 0;
    ssize_t k;
    while (n < sizeof got - 1 && (k = read(rp[0], got + n, sizeof got - 1 - n)) > 0) n += (size_t)k;
    got[n] = 0;
    int code = wait_exit(pid, 30000);
    close(rp[0]), close(sv[0]);
    if (code != 0) fail_msg("the node's side ended with exit code %d", code);
    if (n) fail_msg("the node got write access to shared memory: %s", got);
    assert_memory_equal(params.p, want, PB);
    assert_int_equal(fcntl(params.fd, F_GET_SEALS) & seals, seals & ~F_SEAL_WRITE);
    struct stat sb;
    assert_int_equal(fstat(params.fd, &sb), 0);
    assert_int_equal(sb.st_size, PB);
    assert_int_equal(fstat(grads.fd, &sb), 0);
    assert_int_equal(sb.st_size, PB);
    /* the first page was punched out (zeros), the rest is the node's 1s and 3 */
    double sum = 0;
    for (int i = 0; i < NP; i++) sum += grads.p[i];
    assert_true(sum == (double)(NP - 1024 - 1) + 3.0);

    /* the orchestrator's own mapping still writes, and a node sees it */
    params.p[7] = -1.0f;
    void *p;
    assert_int_equal(tl_shm_map(dup(params.fd_ro), PB, 0, &p), 0);
    assert_true(((float *)p)[7] == -1.0f);
    tl_shm_unmap(p, PB);
    /* and not even the creator's descriptor can write any more */
    assert_int_equal(pwrite(params.fd, want, sizeof(float), 0), -1);
    assert_int_equal(errno, EPERM);
    tl_shm_free(&params);
    tl_shm_free(&grads);
}

/* In a fork: makes fcntl(F_ADD_SEALS) fail with err (as on a kernel without
 * the seals), or succeed without sealing anything (err 0), then checks that
 * no region is created: refused, never shared unsealed. Exits 0 if so. */
static void without_seals(int err) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fcntl, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]) +
                                               (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? 4 : 0)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_ADD_SEALS, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)err & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        _exit(2);
    tl_shm s;
    if (tl_shm_create_readonly(PB, &s) != TL_EIO || s.p || s.fd != -1 || s.fd_ro != -1) _exit(3);
    if (!strstr(tl_errmsg(), "cannot seal")) _exit(4);
    if (tl_shm_create(PB, &s) != TL_EIO || s.p) _exit(5);
    _exit(0);
}

/* A kernel that cannot seal the regions (before Linux 5.1), or claims to and
 * does not: tl_shm_create_readonly refuses (the orchestrator then logs it and
 * sends the parameters over the sockets). */
static void test_no_seals_no_sharing(void **state) {
    (void)state;
    const int errs[] = {EINVAL, 0};
    for (int i = 0; i < 2; i++) {
        pid_t pid = fork_child();
        if (pid == 0) without_seals(errs[i]);
        int code = wait_exit(pid, 30000);
        if (code != 0)
            fail_msg("errno %d: the region was not refused (exit code %d)", errs[i], code);
    }
}

/* Every forked node side is bounded (30 s each, 120 s in all) and reaped. */
static int group_setup(void **state) {
    (void)state;
    harness_init("test_shm", 0, 120);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_both_ways),
        cmocka_unit_test(test_through_conn),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test_teardown(test_node_cannot_write_parameters, kids_teardown),
        cmocka_unit_test_teardown(test_no_seals_no_sharing, kids_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
