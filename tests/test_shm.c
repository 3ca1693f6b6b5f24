/* test_shm.c - shared memory between the orchestrator and local nodes (shm.h):
 * regions cross a unix socket as SCM_RIGHTS, the parameters' descriptor only
 * reads, sizes are sealed, and anything else on the socket is refused. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tl/conn.h"
#include "tl/error.h"
#include "tl/shm.h"

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
    assert_int_equal(tl_shm_create(N * sizeof(float), &params), 0);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_both_ways),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
