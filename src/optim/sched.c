/* sched.c - StepLR and cosine annealing. */
#include "tl/sched.h"

#include <math.h>
#include <string.h>

#include "tl/error.h"

int tl_sched_init(tl_sched *s, const char *name, double base_lr, double gamma, int step_size,
                  int t_max) {
    memset(s, 0, sizeof *s);
    s->base_lr = base_lr;
    s->gamma = gamma;
    s->step_size = step_size < 1 ? 1 : step_size;
    s->t_max = t_max < 1 ? 1 : t_max;
    if (!strcmp(name, "step")) s->kind = TL_SCHED_STEP;
    else if (!strcmp(name, "cosine")) s->kind = TL_SCHED_COSINE;
    else if (!strcmp(name, "none")) s->kind = TL_SCHED_NONE;
    else return tl_error(TL_EINVAL, "unknown schedule '%s' (step, cosine, none)", name);
    return 0;
}

double tl_sched_lr(const tl_sched *s, int epoch) {
    switch (s->kind) {
    case TL_SCHED_STEP: {
        double lr = s->base_lr;
        for (int e = 1; e <= epoch; e++)
            if (e % s->step_size == 0) lr *= s->gamma;
        return lr;
    }
    case TL_SCHED_COSINE: return s->base_lr * (1.0 + cos(M_PI * epoch / s->t_max)) / 2.0;
    case TL_SCHED_NONE: break;
    }
    return s->base_lr;
}
