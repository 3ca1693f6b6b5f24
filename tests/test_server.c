/* test_server.c - the poll server (server.h) over loopback sockets, and the
 * frame reader's buffer hand-back (frame.h) it relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "tl/error.h"
#include "tl/frame.h"
#include "tl/net.h"
#include "tl/server.h"

/* A frame of type 1 whose payload is len bytes of (i * 7 + seed). */
static uint8_t *make_frame(size_t len, int seed, size_t *total) {
    uint8_t *b = malloc(TL_FRAME_HEADER_SIZE + len);
    assert_non_null(b);
    tl_frame_header h = {
        .magic = TL_FRAME_MAGIC, .version = TL_FRAME_VERSION, .type = 1, .payload_len = len};
    tl_frame_header_encode(&h, b);
    for (size_t i = 0; i < len; i++) b[TL_FRAME_HEADER_SIZE + i] = (uint8_t)(i * 7 + seed);
    *total = TL_FRAME_HEADER_SIZE + len;
    return b;
}

static void check_payload(const tl_frame *f, size_t len, int seed) {
    assert_int_equal(f->len, len);
    for (size_t i = 0; i < len; i++)
        if (f->payload[i] != (uint8_t)(i * 7 + seed))
            fail_msg("payload byte %zu is %u, expected %u", i, f->payload[i],
                     (uint8_t)(i * 7 + seed));
}

/* A taken buffer handed back while the reader holds half of the next frame
 * must not replace the buffer that half is in (the orchestrator recycles a
 * node's gradient payload whenever the batch's sum gets to it). */
static void test_recycle_mid_frame(void **state) {
    (void)state;
    tl_frame_reader r;
    tl_frame_reader_init(&r, 0);
    size_t n1, n2, used;
    uint8_t *big = make_frame(100000, 1, &n1), *small = make_frame(1000, 2, &n2);
    tl_frame f;
    assert_int_equal(tl_frame_reader_feed(&r, big, n1, &used, &f), 0);
    check_payload(&f, 100000, 1);
    size_t cap;
    void *kept = tl_frame_reader_take(&r, &cap);
    assert_non_null(kept);
    size_t half = TL_FRAME_HEADER_SIZE + 500;
    assert_int_equal(tl_frame_reader_feed(&r, small, half, &used, &f), TL_EAGAIN);
    tl_frame_reader_recycle(&r, kept, cap); /* larger than the reader's buffer */
    assert_int_equal(tl_frame_reader_feed(&r, small + half, n2 - half, &used, &f), 0);
    check_payload(&f, 1000, 2);
    tl_frame_reader_free(&r);
    free(big);
    free(small);
}

/* ------------------------------------------------------------ the server */

typedef struct ctx {
    tl_server *s;
    int frames, dropped;
    tl_peer *victim; /* dropped by the first frame of another peer */
} ctx;

static int cb_frame(void *ud, tl_peer *p, const tl_frame *f) {
    ctx *c = ud;
    (void)f;
    c->frames++;
    for (int i = 0; i < tl_server_npeers(c->s); i++)
        if (tl_server_peer(c->s, i) != p) {
            c->victim = tl_server_peer(c->s, i);
            tl_server_drop(c->s, c->victim); /* another peer, during the round */
            break;
        }
    return 0;
}

static void cb_dropped(void *ud, tl_peer *p) {
    ctx *c = ud;
    assert_ptr_equal(p, c->victim);
    c->dropped++;
}

/* Two peers have a frame ready in the same round; handling the first drops
 * the second. The second is not handled after that (nor freed under the
 * loop: the sanitizer build checks), its dropped callback runs once, and it
 * is gone after the round. */
static void test_drop_other_peer_in_round(void **state) {
    (void)state;
    ctx c = {0};
    tl_server_cfg cfg = {.host = "127.0.0.1",
                         .max_pending = 8,
                         .tick_ms = 50,
                         .user_size = 16,
                         .cb = {.ud = &c, .frame = cb_frame, .dropped = cb_dropped}};
    assert_int_equal(tl_server_new(&cfg, &c.s), 0);
    int fd[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(tl_net_connect("127.0.0.1", tl_server_port(c.s), 2000, &fd[i]), 0);
    int64_t end = tl_now_ms() + 5000;
    while (tl_server_npeers(c.s) < 2 && tl_now_ms() < end) tl_server_round(c.s, tl_now_ms() + 50);
    assert_int_equal(tl_server_npeers(c.s), 2);
    size_t n;
    uint8_t *fr = make_frame(16, 3, &n);
    for (int i = 0; i < 2; i++) assert_int_equal(write(fd[i], fr, n), (ssize_t)n);
    usleep(100000); /* both frames are in before the round */
    while (!c.frames && tl_now_ms() < end) tl_server_round(c.s, tl_now_ms() + 50);
    assert_int_equal(c.frames, 1);
    assert_int_equal(c.dropped, 1);
    assert_int_equal(tl_server_npeers(c.s), 1);
    free(fr);
    close(fd[0]);
    close(fd[1]);
    tl_server_free(c.s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recycle_mid_frame),
        cmocka_unit_test(test_drop_other_peer_in_round),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
