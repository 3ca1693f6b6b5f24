/* config.c - the reference defaults and the normalization view. */
#include "tl/config.h"

#include <stdio.h>
#include <string.h>

void tl_runcfg_defaults(tl_runcfg *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "%s", TL_DEFAULT_MODEL);
    c->epochs = 1;
    c->batch_size = 64;
    tl_optim_defaults("adadelta", &c->optim);
    snprintf(c->sched, sizeof c->sched, "step");
    c->gamma = 0.7;
    c->step_size = 1;
    c->seed = 1;
    c->reshuffle = 1;
    c->mean = 0.1307f;
    c->std = 0.3081f;
    c->norm.kind = TL_NORM_SCALAR;
    c->threads = 1;
    c->data_dir = TL_DEFAULT_DATA;
    c->cut = 2;
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
