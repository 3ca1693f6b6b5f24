/* config.c - the reference defaults and the normalization view. */
#include "tl/config.h"

#include <stdio.h>
#include <string.h>

void tl_runcfg_defaults(tl_runcfg *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "%s", TL_DEFAULT_MODEL);
    c->epochs = TL_DEFAULT_EPOCHS;
    c->batch_size = TL_DEFAULT_BATCH_SIZE;
    tl_optim_defaults(TL_DEFAULT_OPTIMIZER, &c->optim);
    snprintf(c->sched, sizeof c->sched, "%s", TL_DEFAULT_SCHEDULE);
    c->gamma = TL_DEFAULT_GAMMA;
    c->step_size = TL_DEFAULT_STEP_SIZE;
    c->seed = TL_DEFAULT_SEED;
    c->reshuffle = 1;
    c->mean = TL_FLOAT(TL_DEFAULT_MEAN);
    c->std = TL_FLOAT(TL_DEFAULT_STD);
    c->norm.kind = TL_NORM_SCALAR;
    c->threads = TL_DEFAULT_THREADS;
    c->data_dir = TL_DEFAULT_DATA;
    c->cut = TL_DEFAULT_CUT;
    c->mode = TL_MODE_TRAVERSE;
}

void tl_runcfg_norm(const tl_runcfg *c, tl_norm *out) {
    memset(out, 0, sizeof *out);
    out->kind = c->norm.kind;
    if (c->norm.kind == TL_NORM_SCALAR) {
        out->mean = c->mean;
        out->std = c->std;
    } else if (c->norm.kind == TL_NORM_FEATURE) {
        *out = c->norm;
    }
}
