/*
 * config.h - a training run's configuration, shared by `tl train`,
 * `tl orchestrator` and `tl run` (the orchestrator is the single source of a
 * distributed run's configuration; nodes learn it in WELCOME).
 */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include <stdint.h>

#include "tl/model.h"
#include "tl/optim.h"

#define TL_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define TL_DEFAULT_MODEL "linear:256,linear:128,linear:64,linear:10"

typedef enum tl_mode { TL_MODE_TRAVERSE = 0, TL_MODE_SPLIT = 1 } tl_mode;

typedef struct tl_runcfg {
    char model[TL_MAX_SPEC];
    int epochs;
    int64_t max_steps;   /* 0: no limit */
    int batch_size;
    tl_optim_cfg optim;
    char sched[16];      /* step, cosine, none */
    double gamma;
    int step_size;       /* epochs between StepLR decays */
    uint32_t seed;
    int reshuffle;       /* 1: new permutation each epoch; 0: epoch 1's order every epoch */
    float mean, std;     /* input normalization after scaling to [0,1] */
    int threads;
    int batch_metrics;   /* also write one metrics line per batch */
    const char *data_dir, *test_dir;
    const char *init_path, *save_path, *metrics_path, *plan_path;
    /* distributed only */
    int cut;
    tl_mode mode;
    const char *checkpoint_path;
    int checkpoint_every; /* batches; 0: only at epoch ends */
    int resume;
} tl_runcfg;

/* The reference configuration (DESIGN §9). */
void tl_runcfg_defaults(tl_runcfg *c);

#endif
