/* cmd_run.c - `tl run`: a whole Traversal Learning run on this machine. */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/orchopts.h"
#include "cli/trainopts.h"
#include "tl/batch.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/groupkey.h"
#include "tl/idx.h"
#include "tl/norm.h"
#include "tl/partition.h"
#include "tl/provision.h"

enum { OPT_PARTITION = OPT_CMD_BASE, OPT_KEEP };

#define DEFAULT_SCHEME "contiguous" /* --scheme */

/* --scheme, as in `tl partition`; --partition is accepted as its old name */
static const struct option own_longopts[] = {
    {"scheme", required_argument, 0, OPT_PARTITION},
    {"partition", required_argument, 0, OPT_PARTITION},
    {"keep", no_argument, 0, OPT_KEEP},
    {0, 0, 0, 0},
};

static void usage(void) {
    printf("usage: tl run --nodes N [options]\n\n"
           "The whole system on one machine: splits the training data into N private\n"
           "data sets (in a temporary directory), provisions a temporary CA and TLS kits,\n"
           "starts an orchestrator and N node processes connected by a unix socket in that\n"
           "directory (sharing parameters and gradients in memory, see --no-shm),\n"
           "shows the orchestrator's progress and exits with its status.\n"
           "Interrupting it stops every process it started and removes the directory.\n"
           "tl run makes its own TLS kits.\n\n"
           "  --data DIR            MNIST-layout directory: train-* files are split among\n"
           "                        the nodes, t10k-* files evaluate [" TL_DEFAULT_DATA "]\n"
           "  --test-data DIR       take the t10k-* files from DIR instead\n"
           "  --data FILE.csv       a table (or a NumPy directory: x.npy, y.npy): loaded and\n"
           "                        split here; with --test-fraction F every node holds\n"
           "                        out its own rows and evaluates them after each epoch\n"
           "                        (only sums reach the orchestrator); --normalize\n"
           "                        standardize uses the nodes' training rows\n"
           "  --scheme SCHEME       how the data is split, as in 'tl partition':\n"
           "                        contiguous (the reference's split), iid, label,\n"
           "                        dirichlet:ALPHA [" DEFAULT_SCHEME "]; seeded by --seed\n"
           "  --keep                keep the temporary directory (printed at the end)\n"
           "  --insecure            no TLS between the processes (they still talk over a\n"
           "                        unix socket in a private directory; a warning is printed)\n\n"
           "%s\n%s\n"
           "  -h, --help            this text\n",
           cli_orch_help, cli_train_help);
}

/* ------------------------------------------------------- process control */

static volatile sig_atomic_t got_signal;
static pid_t children[1 + TL_MAX_NODES];
static int n_children;

static void on_signal(int sig) { got_signal = sig; }

/* Sends sig to every child still running. */
static void signal_children(int sig) {
    for (int i = 0; i < n_children; i++)
        if (children[i] > 0) kill(children[i], sig);
}

/* Marks pid as exited; returns its slot or -1. */
static int reap(pid_t pid) {
    for (int i = 0; i < n_children; i++)
        if (children[i] == pid) {
            children[i] = 0;
            return i;
        }
    return -1;
}

static int running(void) {
    int n = 0;
    for (int i = 0; i < n_children; i++) n += children[i] > 0;
    return n;
}

/* Reaps children as they exit, for up to grace_ms: until none runs or, with
 * orchestrator_only, until the orchestrator (children[0]) has exited or a
 * new signal came. The orchestrator's exit status goes to *status (if not
 * NULL) when it is reaped. */
static void reap_for(int grace_ms, int orchestrator_only, int *status) {
    struct timespec ts = {0, 20 * 1000000L};
    for (int waited = 0; waited < grace_ms; waited += 20) {
        pid_t pid;
        int st;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            if (reap(pid) == 0 && status)
                *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (orchestrator_only ? children[0] <= 0 || got_signal : !running()) return;
        nanosleep(&ts, NULL);
    }
}

/* Stops every child: TERM, then KILL after grace_ms. */
static void stop_children(int grace_ms) {
    signal_children(SIGTERM);
    reap_for(grace_ms, 0, NULL);
    signal_children(SIGKILL);
    pid_t pid;
    int st;
    while (running() && (pid = waitpid(-1, &st, 0)) > 0) reap(pid);
}

/* After the first signal: the orchestrator (children[0]) alone gets it and
 * stops after its current batch, saving the run's state (in sealed mode
 * the nodes, still running, save their side with it); up to STOP_GRACE_S
 * seconds, or until a second signal. Returns tl run's exit status: the
 * orchestrator's (128 + its signal, or 1), or 128 + sig if it had to be killed. */
#define STOP_GRACE_S 60
static int stop_orchestrator(int sig, int status) {
    fprintf(stderr,
            "\ntl run: interrupted (%s); the orchestrator stops after the current batch and "
            "saves the run's state (up to %d s; a second signal stops everything at once)\n",
            strsignal(sig), STOP_GRACE_S);
    got_signal = 0;
    kill(children[0], sig); /* the same signal: it reports it, and exits 128 + sig */
    reap_for(STOP_GRACE_S * 1000, 1, &status);
    if (children[0] > 0)
        fprintf(stderr, "tl run: %s; stopping everything now\n",
                got_signal ? "a second signal" : "the orchestrator did not stop in time");
    return status == 0 ? 128 + sig : status;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

static void remove_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* ---------------------------------------------------------- preparation */

/* Writes node k's rows of d as raw IDX files into dir/node-k. */
static int write_node(const char *dir, int k, const tl_dataset *d, const size_t *rows, size_t n) {
    char path[4096];
    tl_dataset sub;
    int rc = tl_dataset_subset(d, rows, n, &sub);
    if (rc < 0) return rc;
    snprintf(path, sizeof path, "%s/node-%d", dir, k);
    if (mkdir(path, 0700) < 0) {
        tl_dataset_free(&sub);
        return tl_error(TL_EIO, "%s: %s", path, strerror(errno));
    }
    tl_idx img = {3, {(uint32_t)n, sub.rows, sub.cols, 0}, n * sub.dim, sub.images};
    tl_idx lab = {1, {(uint32_t)n, 0, 0, 0}, n, sub.labels};
    snprintf(path, sizeof path, "%s/node-%d/train-images-idx3-ubyte", dir, k);
    /* scratch data for this run only: no fsync */
    rc = tl_idx_write(path, &img, TL_IDX_NOSYNC);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/node-%d/train-labels-idx1-ubyte", dir, k);
        rc = tl_idx_write(path, &lab, TL_IDX_NOSYNC);
    }
    tl_dataset_free(&sub);
    return rc;
}

/* Splits cfg's training set into dir/node-1..N, calling after(ud, k) once
 * node k's data is written (so it can start while the others are written). */
static int prepare_data(const char *dir, const tl_runcfg *cfg, int nodes, const char *scheme,
                        void (*after)(void *ud, int k), void *ud) {
    tl_dataset d;
    size_t *rows = NULL, *counts = calloc((size_t)nodes, sizeof *counts);
    int rc = tl_dataset_load(cfg->data_dir, "train", &d);
    if (rc < 0) {
        free(counts);
        return rc;
    }
    if (!counts) rc = tl_error(TL_ENOMEM, "out of memory");
    if (rc == 0) rc = tl_partition(&d, nodes, scheme, cfg->seed, &rows, counts);
    size_t first = 0;
    for (int k = 0; rc == 0 && k < nodes; k++) {
        rc = write_node(dir, k + 1, &d, rows + first, counts[k]);
        first += counts[k];
        if (rc == 0 && after) after(ud, k + 1);
    }
    free(rows);
    free(counts);
    tl_dataset_free(&d);
    return rc;
}

/* One node's share when tl run must know the data before the orchestrator
 * starts (tables, arrays, held-out rows, standardize). */
typedef struct node_data {
    tl_dataset train, test; /* test empty without --test-fraction */
} node_data;

static void free_nodes(node_data *nd, int nodes) {
    for (int k = 0; nd && k < nodes; k++) {
        tl_dataset_free(&nd[k].train);
        tl_dataset_free(&nd[k].test);
    }
    free(nd);
}

/* Loads cfg's data (any source, cfg->data_opts), partitions it as
 * prepare_data does and, with cfg->test_fraction, splits each node's share
 * into its training and held-out rows (tl_dataset_split seeded with
 * cfg->seed: what `tl node --test-fraction` would hold out of that share).
 * *in_dim gets the width; for --normalize standardize, *norm gets the mean
 * and deviation of the union of the nodes' training rows, added up in node
 * order (what tl train computes on the same rows in that order). */
static int load_nodes(const tl_runcfg *cfg, int nodes, const char *scheme, node_data **out,
                      tl_norm *norm, int *in_dim) {
    tl_dataset d;
    size_t *rows = NULL, *counts = calloc((size_t)nodes, sizeof *counts);
    node_data *nd = calloc((size_t)nodes, sizeof *nd);
    tl_norm_stats st = {0};
    int rc = tl_dataset_open(cfg->data_dir, "train", &cfg->data_opts, &d);
    if (rc < 0) {
        free(counts);
        free(nd);
        return rc;
    }
    if (!counts || !nd) rc = tl_error(TL_ENOMEM, "out of memory");
    if (rc == 0) rc = tl_partition(&d, nodes, scheme, cfg->seed, &rows, counts);
    const int standardize = cfg->norm.kind == TL_NORM_FEATURE && cfg->norm.dim == 0;
    if (rc == 0 && standardize) rc = tl_norm_stats_init(&st, d.dim);
    size_t first = 0;
    for (int k = 0; rc == 0 && k < nodes; k++) {
        rc = tl_dataset_subset(&d, rows + first, counts[k], &nd[k].train);
        first += counts[k];
        if (rc == 0 && cfg->test_fraction > 0) {
            tl_dataset share = nd[k].train;
            memset(&nd[k].train, 0, sizeof nd[k].train);
            rc = tl_dataset_split(&share, cfg->test_fraction, cfg->seed, &nd[k].train, &nd[k].test);
            tl_dataset_free(&share);
            if (rc < 0) rc = tl_error(rc, "node %d: %s", k + 1, tl_errmsg());
        }
        if (rc == 0 && standardize) rc = tl_norm_stats_add(&st, &nd[k].train, NULL, nd[k].train.n);
    }
    if (rc == 0 && standardize) rc = tl_norm_finish(&st, norm);
    *in_dim = (int)d.dim;
    tl_norm_stats_free(&st);
    free(rows);
    free(counts);
    tl_dataset_free(&d);
    if (rc < 0) {
        free_nodes(nd, nodes);
        return rc;
    }
    *out = nd;
    return 0;
}

/* Writes load_nodes' shares: dir/node-k holds the training rows ("train")
 * and the held-out rows ("t10k") in the format tl_dataset_save picks. */
static int write_nodes(const char *dir, const node_data *nd, int nodes,
                       void (*after)(void *ud, int k), void *ud) {
    char path[4096];
    for (int k = 0; k < nodes; k++) {
        snprintf(path, sizeof path, "%s/node-%d", dir, k + 1);
        int rc = tl_dataset_save(path, "train", &nd[k].train);
        if (rc == 0 && nd[k].test.n) rc = tl_dataset_save(path, "t10k", &nd[k].test);
        if (rc < 0) return rc;
        if (after) after(ud, k + 1);
    }
    return 0;
}

typedef struct run_ctx {
    const char *self, *dir;
    const cli_trainopts *t;
    const cli_orchopts *oo;
    int port_pipe;  /* orchestrator child -> parent: it listens */
    int listening;  /* parent: 1 once the orchestrator said so, -1 if it never will */
    int node_tests; /* nodes get their held-out rows (--test-data node-k) */
} run_ctx;

/* In the orchestrator child: tell the parent our port. */
static int send_port(void *ud, int port) {
    run_ctx *r = ud;
    if (write(r->port_pipe, &port, sizeof port) != sizeof port) return 1;
    close(r->port_pipe);
    return 0;
}

/* prepare_data's callback: once the orchestrator listens, starts node k. */
static pid_t spawn_node(const run_ctx *r, int k);
static void start_node(void *ud, int k) {
    run_ctx *r = ud;
    if (r->listening == 0) {
        int port;
        ssize_t got;
        do got = read(r->port_pipe, &port, sizeof port);
        while (got < 0 && errno == EINTR && !got_signal);
        r->listening = got == sizeof port ? 1 : -1; /* -1: it failed; it says why */
    }
    if (r->listening < 0 || got_signal) return;
    pid_t pid = spawn_node(r, k);
    if (pid > 0) children[n_children++] = pid;
}

/* Starts node k (exec of this program) on the orchestrator's unix socket. */
static pid_t spawn_node(const run_ctx *r, int k) {
    char connect[4200], id[16], data[4096], threads[16], tls[4096], key[4200], model[4200],
        state[4200];
    snprintf(connect, sizeof connect, "unix:%s/orchestrator.sock", r->dir);
    snprintf(id, sizeof id, "%d", k);
    snprintf(data, sizeof data, "%s/node-%d", r->dir, k);
    snprintf(threads, sizeof threads, "%d", r->t->cfg.threads);
    snprintf(tls, sizeof tls, "%s/tls/node-%d", r->dir, k);
    snprintf(key, sizeof key, "%s/group.key", r->dir);
    snprintf(model, sizeof model, "%s/model.safetensors", r->dir);
    char *argv[32];
    int a = 0;
    argv[a++] = "tl";
    argv[a++] = "node";
    argv[a++] = "--connect";
    argv[a++] = connect;
    argv[a++] = "--id";
    argv[a++] = id;
    argv[a++] = "--data";
    argv[a++] = data;
    argv[a++] = "--threads";
    argv[a++] = threads;
    argv[a++] = "--give-up";
    argv[a++] = "60";
    argv[a++] = "--quiet";
    if (r->oo->insecure) {
        argv[a++] = "--insecure";
    } else {
        argv[a++] = "--tls-dir";
        argv[a++] = tls;
    }
    if (r->oo->zstd) argv[a++] = "--zstd";
    argv[a++] = "--privacy";
    argv[a++] = r->oo->privacy ? "sealed" : "open";
    if (r->oo->privacy) { /* the node side is the nodes': same start, node 1 saves the model */
        if (r->oo->insecure) {
            argv[a++] = "--group-key";
            argv[a++] = key;
        }
        if (r->t->cfg.init_path) {
            argv[a++] = "--init";
            argv[a++] = (char *)r->t->cfg.init_path;
        }
        /* the node sides of the orchestrator's checkpoints, next to them, so that
         * --resume (new node processes) rolls back to them */
        snprintf(state, sizeof state, "%s.node-%d",
                 r->t->cfg.checkpoint_path ? r->t->cfg.checkpoint_path : "tl-recovery.safetensors",
                 k);
        argv[a++] = "--state";
        argv[a++] = state;
        if (k == 1 && r->oo->model_from) {
            argv[a++] = "--save";
            argv[a++] = model;
        }
    }
    if (r->node_tests) {
        argv[a++] = "--test-data";
        argv[a++] = data;
    }
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        setpgid(0, 0);            /* not in the terminal's group: signals come from tl run */
        signal(SIGTTOU, SIG_IGN); /* and its output still reaches the terminal (stty tostop) */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        execv(r->self, argv);
        fprintf(stderr, "tl run: cannot start %s: %s\n", r->self, strerror(errno));
        _exit(127);
    }
    if (pid > 0) setpgid(pid, pid); /* also here: no window for a Ctrl-C (EACCES after exec) */
    return pid;
}

typedef struct run_opts {
    const char *scheme;
    int keep;
} run_opts;

static int own_option(void *ud, int key, const char *arg) {
    run_opts *r = ud;
    if (key == OPT_PARTITION) r->scheme = arg;
    else r->keep = 1;
    return 0;
}

int cmd_run(int argc, char **argv) {
    const char *cmd = "run";
    cli_trainopts t;
    cli_orchopts oo;
    run_opts ro = {DEFAULT_SCHEME, 0};
    cli_trainopts_init(&t);
    cli_orchopts_init(&oo);
    int rc0 = cli_parse_options(argc, argv, cmd, &t, &oo, own_longopts, own_option, &ro, usage);
    if (rc0 >= 0) return rc0;
    const char *scheme = ro.scheme;
    const int keep = ro.keep;
    if (!oo.nodes) return cli_usage_error(cmd, "--nodes N is required");
    if (oo.tls_dir)
        return cli_usage_error(cmd,
                               "--tls-dir: tl run provisions its own TLS kits (--tls-dir is for "
                               "'tl orchestrator' and 'tl node')");
    if (tl_partition_check_scheme(scheme) < 0)
        return cli_usage_error(cmd, "--scheme: %s", tl_errmsg());
    if (cli_trainopts_finish(&t, cmd) || cli_orchopts_finish(&oo, &t, cmd)) return 2;
    /* IDX data as always: the orchestrator evaluates on the t10k files. Tables,
     * arrays, held-out rows or standardize: the data is loaded (and split) here
     * first, the nodes evaluate their own held-out rows. */
    const int tables = t.cfg.test_fraction > 0 || t.cfg.norm.kind == TL_NORM_FEATURE ||
                       !tl_dataset_has_split(t.cfg.data_dir, "t10k");
    node_data *nd = NULL;
    tl_norm norm = {0};
    if (!tables && !t.cfg.test_dir) t.cfg.test_dir = t.cfg.data_dir;
    if (tables) {
        if (load_nodes(&t.cfg, oo.nodes, scheme, &nd, &norm, &oo.in_dim) < 0) {
            fprintf(stderr, "tl run: %s\n", tl_errmsg());
            return 1;
        }
        if (norm.dim) t.cfg.norm = norm; /* borrowed until the end */
        /* the names of the classes, for the saved model (the orchestrator holds no rows) */
        oo.class_names = nd[0].train.class_names;
        oo.n_class_names = nd[0].train.class_names ? nd[0].train.classes : 0;
        /* a model that does not fit the data is refused before any node starts */
        tl_model m;
        int bad = tl_model_parse(t.cfg.model, oo.in_dim, &m) < 0;
        for (int k = 0; !bad && k < oo.nodes; k++)
            if (nd[k].train.classes > m.n_classes) {
                const int classes = nd[k].train.classes;
                free_nodes(nd, oo.nodes);
                tl_norm_free(&norm);
                return cli_usage_error(cmd,
                                       "--model: %d outputs, but node %d's data has %d "
                                       "classes",
                                       m.n_classes, k + 1, classes);
            }
        if (bad) {
            free_nodes(nd, oo.nodes);
            tl_norm_free(&norm);
            return cli_usage_error(cmd, "--model: %s", tl_errmsg());
        }
    }

    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        fprintf(stderr, "tl run: cannot find my own executable\n");
        return 1;
    }
    self[len] = 0;
    /* From here on a signal is a flag: every exit path below stops the
     * children and removes the directory (SIGPIPE is ignored in main). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tl-run-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "tl run: cannot create a temporary directory in %s: %s\n",
                tmp && *tmp ? tmp : "/tmp", strerror(errno));
        return 1;
    }

    int status = 1, pipefd[2] = {-1, -1};
    char orch_kit[4200];
    if (!oo.insecure) {
        char kits[4200];
        snprintf(kits, sizeof kits, "%s/tls", dir);
        tl_provision_opts po;
        tl_provision_opts_init(&po);
        po.nodes = oo.nodes;
        po.not_after_s = 7L * 86400;
        if (tl_provision(kits, &po) < 0) {
            fprintf(stderr, "tl run: %s\n", tl_errmsg());
            goto out;
        }
        snprintf(orch_kit, sizeof orch_kit, "%s/orchestrator", kits);
        oo.tls_dir = orch_kit;
    }
    char model_path[4200];
    if (oo.privacy) {
        /* sealed: without kits the group key is a file of the private directory */
        char key_path[4200];
        snprintf(key_path, sizeof key_path, "%s/group.key", dir);
        tl_group_key gk;
        int krc = !oo.insecure                     ? 0
                  : tl_group_key_generate(&gk) < 0 ? -1
                                                   : tl_group_key_save(key_path, &gk, 0);
        if (oo.insecure) tl_group_key_wipe(&gk);
        if (krc < 0) {
            fprintf(stderr, "tl run: %s\n", tl_errmsg());
            goto out;
        }
        snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
        if (t.cfg.save_path || t.cfg.test_dir) oo.model_from = model_path;
    }
    if (got_signal) goto out;
    if (pipe(pipefd) < 0) goto out;
    run_ctx rc = {self, dir, &t, &oo, pipefd[1], 0, tables && t.cfg.test_fraction > 0};
    fflush(stdout);
    fflush(stderr);
    /* The orchestrator starts first (it loads the test set and listens) while
     * this process splits the data; each node starts as soon as its data is
     * written. */
    pid_t orch = fork();
    if (orch < 0) goto out;
    if (orch == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Its own process group, like the nodes: a Ctrl-C in the terminal
         * reaches only tl run, which then asks the orchestrator (once) to
         * stop with the state saved, and stops the nodes after it. */
        setpgid(0, 0);
        signal(SIGTTOU, SIG_IGN);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        close(pipefd[0]);
        /* a unix socket: only this machine's processes can reach it, and it moves
         * bytes about twice as fast as loopback TCP */
        char addr[4200];
        snprintf(addr, sizeof addr, "unix:%s/orchestrator.sock", dir);
        _exit(cli_orchestrate(&t, &oo, addr, 0, "run", send_port, &rc));
    }
    setpgid(orch, orch);
    children[n_children++] = orch;
    close(pipefd[1]);
    pipefd[1] = -1;
    rc.port_pipe = pipefd[0];
    if ((tables ? write_nodes(dir, nd, oo.nodes, start_node, &rc)
                : prepare_data(dir, &t.cfg, oo.nodes, scheme, start_node, &rc)) < 0) {
        fprintf(stderr, "tl run: %s\n", tl_errmsg());
        goto out;
    }
    /* Wait for the orchestrator; nodes exit when it says DONE. */
    while (!got_signal && children[0] > 0) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break;
        }
        int slot = reap(pid);
        if (slot == 0) status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        else if (slot > 0 && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
            fprintf(stderr, "tl run: node %d exited with status %d\n", slot,
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    const int interrupted = got_signal;
    if (interrupted) {
        status = 128 + interrupted;
        if (children[0] > 0) status = stop_orchestrator(interrupted, status);
    }
out:
    /* Nodes that got DONE are exiting; give them a moment, then make sure.
     * After a signal, the orchestrator has told them it stopped (they would
     * wait to rejoin): they are stopped at once. */
    stop_children(interrupted || got_signal ? 500 : 3000);
    if (pipefd[0] >= 0) close(pipefd[0]);
    if (pipefd[1] >= 0) close(pipefd[1]);
    if (keep) fprintf(stderr, "tl run: kept %s\n", dir);
    else remove_tree(dir);
    free_nodes(nd, oo.nodes);
    tl_norm_free(&norm);
    return status;
}
