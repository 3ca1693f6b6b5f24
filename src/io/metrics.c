/* metrics.c - JSON lines metrics. */
#include "tl/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tl/error.h"
#include "tl/file.h"

struct tl_metrics {
    FILE *f;
    char path[512];
};

int tl_metrics_open(const char *path, int append, tl_metrics **out) {
    tl_metrics *m = calloc(1, sizeof *m);
    if (!m) return tl_error(TL_ENOMEM, "metrics: out of memory");
    /* created without following a link planted at path (file.h) */
    int rc = tl_file_open_stream(path, append, &m->f);
    if (rc < 0) {
        free(m);
        return rc;
    }
    snprintf(m->path, sizeof m->path, "%s", path);
    *out = m;
    return 0;
}

/* Flushes and reports a write failure (disk full, ...). */
static int finish_line(tl_metrics *m) {
    if (fflush(m->f) != 0 || ferror(m->f))
        return tl_error(TL_EIO, "%s: write failed: %s", m->path, strerror(errno));
    return 0;
}

/* Writes ,"name":value with %.*g, or ,"name":null for the trainer's -1 (no
 * test set) and for a value JSON cannot hold (NaN, infinity). */
static void put_opt(FILE *f, const char *name, double v, int digits) {
    if (v < 0 || !isfinite(v)) fprintf(f, ",\"%s\":null", name);
    else fprintf(f, ",\"%s\":%.*g", name, digits, v);
}

int tl_metrics_epoch(tl_metrics *m, const tl_epoch_report *r) {
    fprintf(m->f, "{\"epoch\":%d,\"steps\":%lld,\"train_loss\":%.9g,\"train_accuracy\":%.6g",
            r->epoch, (long long)r->steps, r->train_loss, r->train_accuracy);
    if (r->eval && r->metrics) {
        /* the evaluation's sums: test_n, test_loss, test_accuracy, test_macro_f1,
         * test_auc, test_auc_bound, ..., test_confusion (evalstats.h) */
        char *buf = NULL;
        size_t len = 0, cap = 0;
        int rc = tl_eval_json(r->eval, r->metrics, "test_", &buf, &len, &cap);
        if (rc < 0) {
            free(buf);
            return rc;
        }
        fprintf(m->f, ",%s", buf);
        free(buf);
    } else {
        put_opt(m->f, "test_loss", r->test_loss, 9);
        put_opt(m->f, "test_accuracy", r->test_accuracy, 6);
    }
    fprintf(m->f, ",\"lr\":%.9g,\"seconds\":%.4f%s}\n", r->lr, r->seconds,
            r->partial ? ",\"partial\":true" : "");
    return finish_line(m);
}

int tl_metrics_batch(tl_metrics *m, const tl_progress *p) {
    fprintf(m->f, "{\"epoch\":%d,\"batch\":%zu,\"steps\":%lld,\"loss\":%.9g}\n", p->epoch + 1,
            p->batch, (long long)p->steps, p->loss);
    return finish_line(m);
}

void tl_metrics_close(tl_metrics *m) {
    if (!m) return;
    fclose(m->f);
    free(m);
}
