/* test_auc_exact.c - issue 10's acceptance for the AUC: the AUC that `tl run`
 * prints (terminal and --metrics) is within its stated bound of the exact AUC
 * computed here from the saved model's predictions on the same held-out rows,
 * and the confusion matrix of evaluation at the nodes equals the one of
 * evaluating the saved model centrally on the union of the nodes' test rows.
 *
 * The README's table example: breast cancer, 3 nodes, --test-fraction 0.2,
 * --normalize standardize. The held-out rows are rebuilt as tl run builds
 * them (src/cli/cmd_run.c, load_nodes): tl_dataset_open, tl_partition with
 * the default scheme "contiguous" and seed 1, tl_dataset_split of each share
 * with the same fraction and seed; the standardization from the union of the
 * nodes' training rows, added in node order. Reads
 * $TL_SKLEARN_DIR/breast_cancer.csv (scripts/sklearn-data.sh) and is skipped,
 * with a message, when it is absent. */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "tl/dataset.h"
#include "tl/error.h"
#include "tl/model.h"
#include "tl/norm.h"
#include "tl/params.h"
#include "tl/partition.h"

#define NODES 3
#define FRACTION 0.2
#define SEED 1u /* tl run's default --seed */
#define SPEC "linear:32,relu,linear:2"

typedef struct scored {
    double p1;
    int y;
} scored;

static int by_p1(const void *a, const void *b) {
    const double x = ((const scored *)a)->p1, y = ((const scored *)b)->p1;
    return (x > y) - (x < y);
}

/* Exact ROC AUC of class 1: P(p1 of a positive > p1 of a negative), ties 1/2. */
static double exact_auc(scored *s, size_t n) {
    qsort(s, n, sizeof *s, by_p1);
    double pos = 0, neg = 0, wins = 0, neg_below = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double p = 0, q = 0;
        for (; j < n && s[j].p1 == s[i].p1; j++) *(s[j].y == 1 ? &p : &q) += 1;
        wins += p * (neg_below + 0.5 * q);
        neg_below += q;
        pos += p;
        neg += q;
        i = j;
    }
    assert_true(pos > 0 && neg > 0);
    return wins / (pos * neg);
}

/* The number after "key": in line (asserted present). */
static double json_num(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(line, k);
    if (!p) fail_msg("%s missing in %s", key, line);
    return strtod(p + strlen(k), NULL);
}

static void test_printed_auc_vs_exact(void **state) {
    (void)state;
    const char *dir = getenv("TL_SKLEARN_DIR");
    char csv[4096];
    snprintf(csv, sizeof csv, "%s/breast_cancer.csv", dir ? dir : "");
    if (!dir || access(csv, R_OK) != 0) {
        print_message("SKIPPED: breast_cancer.csv not found (run scripts/sklearn-data.sh DIR "
                      "and set TL_SKLEARN_DIR=DIR)\n");
        skip();
    }
    char model[PATH_MAX], metrics[PATH_MAX], log[PATH_MAX];
    snprintf(model, sizeof model, "%s/m.st", scratch_dir);
    snprintf(metrics, sizeof metrics, "%s/m.jsonl", scratch_dir);
    snprintf(log, sizeof log, "%s/run.log", scratch_dir);
    const char *argv[] = {
        "tl",  "run",     "--nodes", "3",           "--insecure",  "--data",
        csv,   "--label", "target",  "--normalize", "standardize", "--test-fraction",
        "0.2", "--model", SPEC,      "--cut",       "1",           "--optimizer",
        "sgd", "--lr",    "0.05",    "--schedule",  "none",        "--epochs",
        "10",  "--save",  model,     "--metrics",   metrics,       NULL};
    static char out[1 << 16];
    int rc = run_capture(log, argv, out, sizeof out, 300000);
    if (rc != 0) fail_msg("tl run exited %d:\n%s", rc, out);

    /* what tl printed: the last epoch's metrics line and terminal line */
    char *js = slurp(metrics);
    char *last = js, *nl;
    while ((nl = strchr(last, '\n')) && nl[1]) last = nl + 1;
    assert_non_null(strstr(last, "\"epoch\":10,"));
    const double auc = json_num(last, "test_auc"), bound = json_num(last, "test_auc_bound");
    const double test_n = json_num(last, "test_n");
    const char *cm = strstr(last, "\"test_confusion\":");
    assert_non_null(cm);
    unsigned long long conf[2][2];
    assert_int_equal(sscanf(cm, "\"test_confusion\":[[%llu,%llu],[%llu,%llu]]", &conf[0][0],
                            &conf[0][1], &conf[1][0], &conf[1][1]),
                     4);
    const char *ep = line_with(out, "epoch 10:");
    assert_non_null(ep);
    const char *ap = strstr(ep, ", AUC ");
    assert_non_null(ap);
    const double auc_term = strtod(ap + 6, NULL);

    /* the nodes' held-out rows and the standardization, as tl run makes them */
    tl_dataset_opts o = {"target", 0};
    tl_dataset d;
    assert_int_equal(tl_dataset_open(csv, "train", &o, &d), 0);
    size_t *rows = NULL, counts[NODES] = {0};
    assert_int_equal(tl_partition(&d, NODES, "contiguous", SEED, &rows, counts), 0);
    tl_dataset train[NODES], test[NODES];
    tl_norm_stats st;
    tl_norm nm;
    assert_int_equal(tl_norm_stats_init(&st, d.dim), 0);
    size_t first = 0, n_test = 0;
    for (int k = 0; k < NODES; k++) {
        tl_dataset share;
        assert_int_equal(tl_dataset_subset(&d, rows + first, counts[k], &share), 0);
        first += counts[k];
        assert_int_equal(tl_dataset_split(&share, FRACTION, SEED, &train[k], &test[k]), 0);
        tl_dataset_free(&share);
        assert_int_equal(tl_norm_stats_add(&st, &train[k], NULL, train[k].n), 0);
        n_test += test[k].n;
    }
    assert_int_equal(tl_norm_finish(&st, &nm), 0);
    assert_true(test_n == (double)n_test);

    /* the saved model's predictions on every node's test rows */
    tl_model m;
    assert_int_equal(tl_model_parse(SPEC, (int)d.dim, &m), 0);
    float *params = malloc(m.n_params * sizeof *params);
    assert_non_null(params);
    assert_int_equal(tl_params_load(model, &m, params), 0);
    scored *s = calloc(n_test, sizeof *s);
    assert_non_null(s);
    unsigned long long mine[2][2] = {{0, 0}, {0, 0}};
    size_t at = 0;
    for (int k = 0; k < NODES; k++) {
        tl_ws ws;
        const int n = (int)test[k].n;
        assert_int_equal(tl_ws_init(&ws, &m, n), 0);
        int32_t *y = malloc((size_t)n * sizeof *y);
        assert_non_null(y);
        tl_dataset_gather_norm(&test[k], NULL, (size_t)n, &nm, ws.h[0], y);
        tl_model_forward(&m, params, &ws, n, 0, m.n_modules);
        const float *z = ws.h[m.n_modules];
        for (int i = 0; i < n; i++, at++) {
            const double z0 = z[2 * i], z1 = z[2 * i + 1];
            s[at].p1 = 1.0 / (1.0 + exp(z0 - z1)); /* softmax, class 1 */
            s[at].y = y[i];
            mine[y[i]][z1 > z0 ? 1 : 0]++;
        }
        free(y);
        tl_ws_free(&ws);
    }
    const double exact = exact_auc(s, n_test);
    print_message("printed AUC %.9g (terminal %.4f) +- %.3g, exact %.9g; confusion "
                  "[[%llu,%llu],[%llu,%llu]]\n",
                  auc, auc_term, bound, exact, conf[0][0], conf[0][1], conf[1][0], conf[1][1]);
    /* within the bound, plus the rounding of the printed digits (%.9g, %.4f) */
    assert_true(bound >= 0 && bound < 0.05);
    assert_true(fabs(auc - exact) <= bound + 5e-9);
    assert_true(fabs(auc_term - exact) <= bound + 5e-5);
    /* evaluation at the nodes: exactly the central confusion matrix */
    assert_memory_equal(conf, mine, sizeof conf);

    free(s);
    free(params);
    for (int k = 0; k < NODES; k++) {
        tl_dataset_free(&train[k]);
        tl_dataset_free(&test[k]);
    }
    tl_norm_free(&nm);
    tl_norm_stats_free(&st);
    free(rows);
    tl_dataset_free(&d);
    free(js);
}

static int group_setup(void **state) {
    harness_init("test_auc_exact", 300, 600);
    return scratch_setup(state);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printed_auc_vs_exact),
    };
    return cmocka_run_group_tests(tests, group_setup, kids_scratch_teardown);
}
