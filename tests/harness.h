/*
 * harness.h - what the tests share (tests/harness.c, linked into every test
 * program; include after <cmocka.h>): child processes with time limits, log
 * scraping, scratch files, raw protocol clients, forged frames and the
 * Fashion-MNIST convention.
 *
 *   harness_init("test_x", 180, 400);  // in the group setup: names the program,
 *                                      // bounds children (180 s) and it (400 s)
 *   if (require_fmnist() < 0) return -1;  // no data set: one line, tests fail
 *   make_root(root, sizeof root, "tl-x");  // a scratch tree under $TMPDIR
 *   pid_t p = spawn(pathf("%s/o.log", root), argv);  // tl ARGV..., remembered
 *   int code = wait_exit(p, 60000);   // exit code, 1000+signal, -1: timed out
 *   ...
 *   kids_kill_all(); rm_tree(root);   // in the teardowns
 *
 * Conventions:
 * - Every child (spawn, fork_child) is remembered until reaped; kids_kill_all
 *   kills and reaps the rest, and the program alarm kills them and exits 3.
 * - Exit codes: exit_code() maps a wait status to the exit code, 1000 + the
 *   signal for a signal, -1 for a timeout (the child is then killed).
 * - Missing data: Fashion-MNIST (the package dataset-fashion-mnist, which the
 *   project's setup installs) is required; a test that needs it and does not
 *   find it FAILS with one line naming the package. TL_FMNIST_DIR overrides
 *   its directory (the missing_data test points it at nowhere).
 * - Log lines are searched as text; log_find strips everything up to
 *   "orchestrator: " so that a table shows the message, not the timestamp.
 *
 * Strings returned by pathf and line_with live in static buffers (pathf
 * rotates 16); slurp's result is the caller's to free().
 */
#ifndef TL_TESTS_HARNESS_H
#define TL_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tl/conn.h"
#include "tl/frame.h"
#include "tl/msg.h"

/* ---- the program ------------------------------------------------------------ */

/* Names the program (for the time-limit message), ignores SIGPIPE, installs
 * the SIGALRM handler that kills every child and exits 3, and sets an alarm of
 * program_alarm_s (0: none). Children get an alarm of child_alarm_s across
 * exec (0: none). */
void harness_init(const char *name, int child_alarm_s, int program_alarm_s);

/* ---- processes ----------------------------------------------------------------- */

/* Remembers p (kills it and fails the test if the table is full). */
void kids_add(pid_t p);
/* Forgets p (it was reaped). */
void kids_forget(pid_t p);
/* Kills and reaps every remembered child. */
void kids_kill_all(void);
/* kids_kill_all as a cmocka case teardown; 0. */
int kids_teardown(void **state);
/* kids_kill_all, then scratch_teardown: a group teardown; 0. */
int kids_scratch_teardown(void **state);

int64_t now_ms(void); /* CLOCK_MONOTONIC */
void sleep_ms(int ms);

/* Runs TL_BIN with argv (argv[0] ignored) in the background, stdin from
 * /dev/null, stdout and stderr to log; remembers the child. */
pid_t spawn(const char *log, const char *const *argv);
/* fork(), the child remembered; in the child (0 returned) SIGALRM is reset and
 * the child alarm set. Fails the test if fork fails. */
pid_t fork_child(void);
/* Waits up to timeout_ms for p: its wait status, or -1 on timeout (p is then
 * killed and reaped). */
int wait_status(pid_t p, int timeout_ms);
/* Exit code of a wait status; 1000+signal for a signal; -1 for a timeout. */
int exit_code(int st);
/* exit_code(wait_status(p, timeout_ms)). */
int wait_exit(pid_t p, int timeout_ms);
/* 1 while p runs (without reaping it: wait_exit still gets its status). */
int alive(pid_t p);
/* Runs TL_BIN argv to completion (bounded) with its output, also written to
 * log, into out (NUL-terminated); its exit code as wait_exit. */
int run_capture(const char *log, const char *const *argv, char *out, size_t cap, int timeout_ms);

/* ---- files ----------------------------------------------------------------------- */

/* A formatted path in one of 16 rotating static buffers. */
const char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The whole file as a string ("" if it does not exist); free() it. */
char *slurp(const char *path);
/* The whole file as bytes (free() them), *n its length; asserts that it can
 * be read. */
uint8_t *read_bytes(const char *path, size_t *n);
/* Size of the file, -1 if it does not exist. */
long file_size(const char *path);
/* Copies the (< 64 KiB) file from to a new file to with mode. Asserts. */
void copy_file(const char *from, const char *to, mode_t mode);
/* Creates $TMPDIR/<prefix>-XXXXXX (TMPDIR default /tmp) into root; 0 or -1. */
int make_root(char *root, size_t cap, const char *prefix);
/* Removes the scratch tree at dir (unless TL_KEEP_TMP is set, to look at it). */
void rm_tree(const char *dir);
/* A scratch directory for one test program: scratch_setup (a cmocka group
 * setup) makes $TMPDIR/tl_test-XXXXXX into scratch_dir (or a test makes it
 * with make_root(scratch_dir, PATH_MAX, prefix)), scratch_teardown removes
 * it (rm_tree), tpath(name) is scratch_dir/name (pathf's buffers). */
extern char scratch_dir[];
int scratch_setup(void **state);
int scratch_teardown(void **state);
const char *tpath(const char *name);
/* 1 once the file at path is non-empty (within timeout_ms), else 0. */
int wait_file(const char *path, int timeout_ms);
/* The port in an orchestrator's --port-file, waiting up to timeout_ms while p
 * lives (p 0: without that check); 0 if none. */
int wait_port(const char *portf, pid_t p, int timeout_ms);

/* ---- logs ------------------------------------------------------------------------------ */

/* The first line of the file holding every one of the needles (a, b; b may be
 * NULL), from after "orchestrator: " if there is one, into out. 1 if found. */
int log_find(const char *path, const char *a, const char *b, char *out, size_t cap);
/* log_find, retried until timeout_ms has passed. */
int log_wait(const char *path, const char *a, const char *b, char *out, size_t cap, int timeout_ms);
/* Lines holding a (and b if not NULL). */
int log_count(const char *path, const char *a, const char *b);
/* The first line of text that contains needle (in a static buffer), or NULL. */
const char *line_with(const char *text, const char *needle);
/* Asserts that the file at path contains needle (within 5 s), showing the file
 * if not; prints the matching line prefixed with what. */
void expect_in_file(const char *path, const char *needle, const char *what);
/* Asserts that the file at path does not contain needle. */
void expect_not_in_file(const char *path, const char *needle);
/* Waits up to timeout_ms for needle to appear in the file at path. */
void wait_for_text(const char *path, const char *needle, int timeout_ms);

/* ---- data ------------------------------------------------------------------------------ */

/* Fashion-MNIST's directory: $TL_FMNIST_DIR, or /usr/share/datasets/fashion-mnist. */
const char *fmnist_dir(void);
/* 0 if Fashion-MNIST's training images are there; else prints one line
 * naming the directory and the package dataset-fashion-mnist and returns -1
 * (the caller fails: a group setup returns -1, a test calls fail()). */
int require_fmnist(void);

/* ---- raw clients ------------------------------------------------------------------------ */

/* A connection of ours to an orchestrator, with its own framing state. */
typedef struct client {
    tl_conn *c;
    tl_frame_reader r;
    tl_frame_writer w;
    char name[32]; /* "127.0.0.1:PORT" as the orchestrator logs it */
    char tag[40];  /* name + ": " : what a log line about us contains */
} client;

/* Connects to 127.0.0.1:port (5 s); 0 or -1 (tl_errmsg says why). */
int client_open(client *k, int port);
/* Makes a client of a connection made otherwise (TLS, accepted, unix), which
 * k then owns; frames read are capped at max_frame (0: the default). */
void client_attach(client *k, tl_conn *c, const char *name, uint64_t max_frame);
void client_close(client *k);
/* Writes the bytes (5 s); 0 or a TL_E* code. */
int client_send(client *k, const void *p, size_t n);
/* What the orchestrator says and does after our input: the frames it sends
 * until it closes (or timeout_ms passes), as text into out. */
void client_outcome(client *k, int timeout_ms, char *out, size_t cap);
/* Says HELLO on an open k as node id with this data and version string; 0 and
 * the WELCOME in *w if welcomed, then READY too if ready. -1 otherwise, why
 * saying what came instead ("REJECT reason", an error, "READY: error"). */
int client_hello(client *k, uint32_t id, uint64_t count, uint64_t fp, const char *version,
                 int ready, int timeout_ms, tl_msg *w, char *why, size_t cap);
/* client_open on port, then client_hello (20 s). */
int client_join(client *k, int port, uint32_t id, uint64_t count, uint64_t fp, const char *version,
                int ready, tl_msg *w, char *why, size_t cap);

/* ---- forged files and frames
 * ----------------------------------------------------------------------- */

/* The encoded payload of m flattened into buf (asserts it fits); its length. */
size_t encode_flat(const tl_msg *m, uint8_t *buf, size_t cap);
/* A frame header with any field values into out[TL_FRAME_HEADER_SIZE]. */
void put_header(uint8_t *out, uint32_t magic, uint16_t version, uint16_t type, uint32_t flags,
                uint32_t reserved, uint64_t len);
/* A HELLO payload (not a frame) with these fields into buf; its length. */
size_t hello_payload(uint8_t *buf, size_t cap, uint32_t id, uint16_t proto, uint64_t count,
                     uint64_t fp, const char *version);
/* A whole frame: header (fields as given, payload_len = claim) + the len
 * bytes of p, into out; its length. */
size_t frame(uint8_t *out, uint32_t magic, uint16_t version, uint16_t type, uint32_t flags,
             uint32_t reserved, uint64_t claim, const uint8_t *p, size_t len);

/* Writes a copy of the safetensors file src to dst with element e of the F32
 * tensor name set to v (forging what tl never writes). Asserts. */
void st_forge(const char *src, const char *dst, const char *name, size_t e, float v);

#endif
