/* harness.c - the tests' shared harness (harness.h): processes, files, logs,
 * data, raw clients and forged frames. */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tl/error.h"
#include "tl/net.h"
#include "tl/safetensors.h"

/* ---- the program ------------------------------------------------------------ */

#define MAX_KIDS 32
static volatile pid_t kids[MAX_KIDS];
static char prog_name[64] = "test";
static size_t prog_name_len = 4;
static int child_alarm_s;

/* SIGALRM handler for the whole program: kill the children, say so, exit 3.
 * Only async-signal-safe calls. */
static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = ": time limit reached, killing children\n";
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0) kill(kids[i], SIGKILL);
    ssize_t w = write(2, prog_name, prog_name_len);
    w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

void harness_init(const char *name, int child_alarm, int program_alarm_s) {
    snprintf(prog_name, sizeof prog_name, "%s", name);
    prog_name_len = strlen(prog_name);
    child_alarm_s = child_alarm;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)program_alarm_s);
}

/* ---- processes ----------------------------------------------------------------- */

void kids_add(pid_t p) {
    for (int i = 0; i < MAX_KIDS; i++)
        if (!kids[i]) {
            kids[i] = p;
            return;
        }
    kill(p, SIGKILL);
    fail_msg("too many children");
}

void kids_forget(pid_t p) {
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == p) kids[i] = 0;
}

void kids_kill_all(void) {
    for (int i = 0; i < MAX_KIDS; i++) {
        pid_t p = kids[i];
        if (p > 0) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            kids[i] = 0;
        }
    }
}

int kids_teardown(void **state) {
    (void)state;
    kids_kill_all();
    return 0;
}

int kids_scratch_teardown(void **state) {
    kids_kill_all();
    return scratch_teardown(state);
}

int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

pid_t fork_child(void) {
    fflush(NULL);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm((unsigned)child_alarm_s);
        return 0;
    }
    kids_add(p);
    return p;
}

pid_t spawn(const char *log, const char *const *argv) {
    pid_t p = fork_child();
    if (p == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0) _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execv(TL_BIN, (char *const *)argv);
        _exit(127);
    }
    return p;
}

int wait_status(pid_t p, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(p, &st, WNOHANG);
        if (r == p) {
            kids_forget(p);
            return st;
        }
        if (r < 0 && errno != EINTR) fail_msg("waitpid: %s", strerror(errno));
        if (now_ms() > end) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            kids_forget(p);
            return -1;
        }
        sleep_ms(10);
    }
}

int exit_code(int st) {
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 1000 + WTERMSIG(st);
    return 2000;
}

int wait_exit(pid_t p, int timeout_ms) { return exit_code(wait_status(p, timeout_ms)); }

int alive(pid_t p) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)p, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

int run_capture(const char *log, const char *const *argv, char *out, size_t cap, int timeout_ms) {
    pid_t p = spawn(log, argv);
    int rc = wait_exit(p, timeout_ms);
    char *s = slurp(log);
    snprintf(out, cap, "%s", s);
    free(s);
    return rc;
}

/* ---- files ----------------------------------------------------------------------- */

const char *pathf(const char *fmt, ...) {
    static char buf[16][PATH_MAX + 128];
    static int next;
    char *b = buf[next++ % 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof buf[0], fmt, ap);
    va_end(ap);
    return b;
}

char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    if (f) {
        size_t r;
        while ((r = fread(s + n, 1, cap - n - 1, f)) > 0) {
            n += r;
            if (cap - n < 2) {
                cap *= 2;
                s = realloc(s, cap);
                assert_non_null(s);
            }
        }
        fclose(f);
    }
    s[n] = 0;
    return s;
}

uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

void copy_file(const char *from, const char *to, mode_t mode) {
    FILE *f = fopen(from, "rb");
    assert_non_null(f);
    char *s = malloc(1 << 16);
    assert_non_null(s);
    size_t n = fread(s, 1, 1 << 16, f);
    fclose(f);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, s, n), (ssize_t)n);
    close(fd);
    free(s);
}

int make_root(char *root, size_t cap, const char *prefix) {
    const char *tmp = getenv("TMPDIR");
    snprintf(root, cap, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    return mkdtemp(root) ? 0 : -1;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

void rm_tree(const char *dir) {
    if (dir[0] && !getenv("TL_KEEP_TMP")) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char scratch_dir[PATH_MAX];

int scratch_setup(void **state) {
    (void)state;
    return make_root(scratch_dir, sizeof scratch_dir, "tl_test");
}

int scratch_teardown(void **state) {
    (void)state;
    rm_tree(scratch_dir);
    return 0;
}

const char *tpath(const char *name) { return pathf("%s/%s", scratch_dir, name); }

int wait_file(const char *path, int timeout_ms) {
    int64_t until = now_ms() + timeout_ms;
    struct stat st;
    while (now_ms() < until) {
        if (stat(path, &st) == 0 && st.st_size > 0) return 1;
        sleep_ms(10);
    }
    return 0;
}

int wait_port(const char *portf, pid_t p, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        int port = 0;
        FILE *f = fopen(portf, "r");
        if (f) {
            if (fscanf(f, "%d", &port) != 1) port = 0;
            fclose(f);
        }
        if (port > 0) return port;
        if ((p && !alive(p)) || now_ms() > end) return 0;
        sleep_ms(10);
    }
}

/* ---- logs ------------------------------------------------------------------------------ */

int log_find(const char *path, const char *a, const char *b, char *out, size_t cap) {
    char *s = slurp(path);
    int found = 0;
    for (char *line = s; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (strstr(line, a) && (!b || strstr(line, b))) {
            const char *t = strstr(line, "orchestrator: ");
            snprintf(out, cap, "%s", t ? t + strlen("orchestrator: ") : line);
            found = 1;
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    free(s);
    return found;
}

int log_wait(const char *path, const char *a, const char *b, char *out, size_t cap,
             int timeout_ms) {
    int64_t until = now_ms() + timeout_ms;
    do {
        if (log_find(path, a, b, out, cap)) return 1;
        sleep_ms(20);
    } while (now_ms() < until);
    return 0;
}

int log_count(const char *path, const char *a, const char *b) {
    char *s = slurp(path);
    int n = 0;
    for (char *line = s; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (strstr(line, a) && (!b || strstr(line, b))) n++;
        line = nl ? nl + 1 : NULL;
    }
    free(s);
    return n;
}

const char *line_with(const char *text, const char *needle) {
    static char line[2048];
    const char *hit = strstr(text, needle);
    if (!hit) return NULL;
    const char *b = hit, *e = hit;
    while (b > text && b[-1] != '\n') b--;
    while (*e && *e != '\n') e++;
    size_t n = (size_t)(e - b) < sizeof line - 1 ? (size_t)(e - b) : sizeof line - 1;
    memcpy(line, b, n);
    line[n] = '\0';
    return line;
}

void expect_in_file(const char *path, const char *needle, const char *what) {
    char *s = slurp(path);
    const char *l = line_with(s, needle);
    /* the other process may log a moment after the client saw the result */
    for (int tries = 0; !l && tries < 100; tries++) {
        sleep_ms(50);
        free(s);
        s = slurp(path);
        l = line_with(s, needle);
    }
    if (!l) {
        print_error("%s: no \"%s\" in %s:\n%s\n", what, needle, path, s);
        free(s);
        fail();
    }
    print_message("    %s: %s\n", what, l);
    free(s);
}

void expect_not_in_file(const char *path, const char *needle) {
    char *s = slurp(path);
    if (strstr(s, needle)) {
        print_error("unexpected \"%s\" in %s:\n%s\n", needle, path, s);
        free(s);
        fail();
    }
    free(s);
}

void wait_for_text(const char *path, const char *needle, int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        char *s = slurp(path);
        int hit = strstr(s, needle) != NULL;
        free(s);
        if (hit || now_ms() > end) return;
        sleep_ms(20);
    }
}

/* ---- data ------------------------------------------------------------------------------ */

const char *fmnist_dir(void) {
    const char *d = getenv("TL_FMNIST_DIR");
    return d && *d ? d : "/usr/share/datasets/fashion-mnist";
}

int require_fmnist(void) {
    const char *d = fmnist_dir();
    if (access(pathf("%s/train-images-idx3-ubyte.gz", d), R_OK) == 0 ||
        access(pathf("%s/train-images-idx3-ubyte", d), R_OK) == 0)
        return 0;
    fprintf(stderr,
            "%s: FAIL: Fashion-MNIST not found in %s (install the package "
            "dataset-fashion-mnist: scripts/setup.sh does)\n",
            prog_name, d);
    return -1;
}

/* ---- raw clients ------------------------------------------------------------------------ */

/* "127.0.0.1:PORT" of a local address, as the orchestrator logs the peer. */
static const char *name_buf(const struct sockaddr_in *sa) {
    static char b[32];
    snprintf(b, sizeof b, "127.0.0.1:%d", ntohs(sa->sin_port));
    return b;
}

int client_open(client *k, int port) {
    memset(k, 0, sizeof *k);
    int fd;
    if (tl_net_connect("127.0.0.1", port, 5000, &fd) < 0) return -1;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    tl_conn *c;
    if (tl_conn_tcp_new(fd, name_buf(&sa), &c) < 0) return -1;
    client_attach(k, c, name_buf(&sa), 0);
    return 0;
}

void client_attach(client *k, tl_conn *c, const char *name, uint64_t max_frame) {
    char n[sizeof k->name];
    snprintf(n, sizeof n, "%s", name); /* name may be k->name */
    memset(k, 0, sizeof *k);
    k->c = c;
    snprintf(k->name, sizeof k->name, "%s", n);
    snprintf(k->tag, sizeof k->tag, "%s: ", k->name);
    tl_frame_reader_init(&k->r, max_frame);
    tl_frame_writer_init(&k->w);
}

void client_close(client *k) {
    tl_conn_free(k->c);
    tl_frame_reader_free(&k->r);
    tl_frame_writer_free(&k->w);
    memset(k, 0, sizeof *k);
}

int client_send(client *k, const void *p, size_t n) {
    struct iovec v = {(void *)p, n};
    return tl_conn_writev_full(k->c, &v, 1, tl_now_ms() + 5000);
}

void client_outcome(client *k, int timeout_ms, char *out, size_t cap) {
    int64_t until = tl_now_ms() + timeout_ms;
    size_t len = 0;
    out[0] = 0;
    for (;;) {
        tl_msg m;
        int rc = tl_msg_recv(k->c, &k->r, &m, until);
        if (rc == TL_ETIMEDOUT) {
            snprintf(out + len, cap - len, "%sconnection still open after %d ms", len ? ", " : "",
                     timeout_ms);
            return;
        }
        if (rc < 0) {
            snprintf(out + len, cap - len, "%sconnection closed", len ? ", then " : "");
            return;
        }
        if (m.type == TL_MSG_ERROR)
            len += snprintf(out + len, cap - len, "%sERROR %u \"%.80s\"", len ? ", " : "",
                            m.u.error.code, m.u.error.message);
        else if (m.type == TL_MSG_REJECT)
            len += snprintf(out + len, cap - len, "%sREJECT %u \"%.80s\"", len ? ", " : "",
                            m.u.reject.code, m.u.reject.reason);
        else
            len += snprintf(out + len, cap - len, "%s%s", len ? ", " : "",
                            tl_msg_type_name(m.type));
        if (len >= cap) return;
    }
}

/* A HELLO message with these fields into *m. */
static void hello_msg(tl_msg *m, uint32_t id, uint16_t proto, uint64_t count, uint64_t fp,
                      const char *version) {
    memset(m, 0, sizeof *m);
    m->type = TL_MSG_HELLO;
    m->u.hello.node_id = id;
    m->u.hello.proto_version = proto;
    m->u.hello.sample_count = count;
    m->u.hello.fingerprint = fp;
    snprintf(m->u.hello.version, sizeof m->u.hello.version, "%s", version);
}

int client_hello(client *k, uint32_t id, uint64_t count, uint64_t fp, const char *version,
                 int ready, int timeout_ms, tl_msg *w, char *why, size_t cap) {
    tl_msg m;
    hello_msg(&m, id, TL_PROTO_VERSION, count, fp, version);
    int64_t deadline = tl_now_ms() + timeout_ms;
    if (tl_msg_send(k->c, &k->w, &m, deadline) < 0 || tl_msg_recv(k->c, &k->r, w, deadline) < 0) {
        snprintf(why, cap, "%s", tl_errmsg());
        return -1;
    }
    if (w->type != TL_MSG_WELCOME) {
        snprintf(why, cap, "%s %s", tl_msg_type_name(w->type),
                 w->type == TL_MSG_REJECT ? w->u.reject.reason : "");
        return -1;
    }
    if (!ready) return 0;
    memset(&m, 0, sizeof m);
    m.type = TL_MSG_READY;
    m.u.ready.run_id = w->u.welcome.run_id;
    if (tl_msg_send(k->c, &k->w, &m, deadline) < 0) {
        snprintf(why, cap, "READY: %s", tl_errmsg());
        return -1;
    }
    return 0;
}

int client_join(client *k, int port, uint32_t id, uint64_t count, uint64_t fp, const char *version,
                int ready, tl_msg *w, char *why, size_t cap) {
    snprintf(why, cap, "no connection");
    if (client_open(k, port) < 0) {
        snprintf(why, cap, "cannot connect: %s", tl_errmsg());
        return -1;
    }
    return client_hello(k, id, count, fp, version, ready, 20000, w, why, cap);
}

/* ---- forged frames ----------------------------------------------------------------------- */

size_t encode_flat(const tl_msg *m, uint8_t *buf, size_t cap) {
    static tl_msg_enc e;
    assert_int_equal(tl_msg_encode(m, &e), 0);
    size_t len = 0;
    for (int i = 0; i < e.iovcnt; i++) {
        assert_true(len + e.iov[i].iov_len <= cap);
        memcpy(buf + len, e.iov[i].iov_base, e.iov[i].iov_len);
        len += e.iov[i].iov_len;
    }
    return len;
}

void put_header(uint8_t *out, uint32_t magic, uint16_t version, uint16_t type, uint32_t flags,
                uint32_t reserved, uint64_t len) {
    tl_frame_header h = {magic, version, type, flags, reserved, len};
    tl_frame_header_encode(&h, out);
}

size_t hello_payload(uint8_t *buf, size_t cap, uint32_t id, uint16_t proto, uint64_t count,
                     uint64_t fp, const char *version) {
    tl_msg m;
    hello_msg(&m, id, proto, count, fp, version);
    return encode_flat(&m, buf, cap);
}

size_t frame(uint8_t *out, uint32_t magic, uint16_t version, uint16_t type, uint32_t flags,
             uint32_t reserved, uint64_t claim, const uint8_t *p, size_t len) {
    put_header(out, magic, version, type, flags, reserved, claim);
    memcpy(out + TL_FRAME_HEADER_SIZE, p, len);
    return TL_FRAME_HEADER_SIZE + len;
}

void st_forge(const char *src, const char *dst, const char *name, size_t e, float v) {
    tl_st *st;
    assert_int_equal(tl_st_read(src, &st), 0);
    int n = tl_st_count(st), nm = tl_st_meta_count(st);
    tl_st_tensor *t = calloc((size_t)n, sizeof *t);
    tl_st_kv *kv = calloc((size_t)nm + 1, sizeof *kv);
    assert_non_null(t);
    assert_non_null(kv);
    for (int i = 0; i < n; i++) {
        t[i] = *tl_st_get(st, i);
        if (!strcmp(t[i].name, name)) ((float *)t[i].data)[e] = v;
    }
    for (int i = 0; i < nm; i++) kv[i] = *tl_st_meta_get(st, i);
    assert_int_equal(tl_st_write(dst, t, n, kv, nm), 0);
    free(t);
    free(kv);
    tl_st_free(st);
}
