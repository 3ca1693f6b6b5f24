/*
 * config.h - a training run's configuration, shared by `tl train`,
 * `tl orchestrator` and `tl run` (the orchestrator is the single source of a
 * distributed run's configuration; nodes learn it in WELCOME).
 */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include <stdint.h>

#include "tl/model.h"
#include "tl/norm.h"
#include "tl/optim.h"

/* The defaults of a run, written once: tl_runcfg_defaults uses the values, the CLI's
 * help texts their spelling (TL_STR). The optimizers' own are in optim.h. */
#define TL_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define TL_DEFAULT_MODEL "linear:256,linear:128,linear:64,linear:10"
#define TL_DEFAULT_EPOCHS 1
#define TL_DEFAULT_BATCH_SIZE 64
#define TL_DEFAULT_OPTIMIZER "adadelta"
#define TL_DEFAULT_SCHEDULE "step"
#define TL_DEFAULT_GAMMA 0.7
#define TL_DEFAULT_STEP_SIZE 1
#define TL_DEFAULT_SEED 1
#define TL_DEFAULT_MEAN 0.1307 /* a float: TL_FLOAT(TL_DEFAULT_MEAN) is 0.1307f */
#define TL_DEFAULT_STD 0.3081
#define TL_DEFAULT_THREADS 1
#define TL_DEFAULT_CUT 2 /* distributed runs */

/* TL_STR(M): macro M's value as a string literal; TL_FLOAT(M): as a float literal. */
#define TL_STR_(x) #x
#define TL_STR(x) TL_STR_(x)
#define TL_FLOAT_(x) x##f
#define TL_FLOAT(x) TL_FLOAT_(x)

typedef enum tl_mode { TL_MODE_TRAVERSE = 0, TL_MODE_SPLIT = 1 } tl_mode;

typedef struct tl_runcfg {
    char model[TL_MAX_SPEC];
    int epochs;
    int64_t max_steps; /* 0: no limit */
    int batch_size;
    tl_optim_cfg optim;
    char sched[16]; /* step, cosine, none */
    double gamma;
    int step_size; /* epochs between StepLR decays */
    uint32_t seed;
    int reshuffle;        /* 1: new permutation each epoch; 0: epoch 1's order every epoch */
    float mean, std;      /* TL_NORM_SCALAR's values: x = (v - mean) / std (norm.h) */
    tl_norm norm;         /* the kind of input normalization: TL_NORM_SCALAR (the default)
                           * uses mean and std above, not norm's own fields; TL_NORM_NONE;
                           * TL_NORM_FEATURE ("standardize") uses norm.mean_f / std_f, with
                           * dim 0 until they are computed from the training rows (tl train)
                           * or the nodes' STATS (the orchestrator). The arrays belong to
                           * whoever filled them. Read it through tl_runcfg_norm. */
    double test_fraction; /* rows held out of the training data for testing
                           * (tl_dataset_split with seed); 0: none */
    int threads;
    int batch_metrics; /* also write one metrics line per batch */
    const char *data_dir, *test_dir;
    tl_dataset_opts data_opts; /* how a CSV is read: label column, header row (dataset.h) */
    const char *init_path, *save_path, *metrics_path, *plan_path;
    /* distributed only */
    int cut;
    tl_mode mode;
    const char *checkpoint_path;
    int checkpoint_every; /* batches; 0: only at epoch ends */
    int resume;
} tl_runcfg;

/* The reference configuration (DESIGN §9): scalar normalization 0.1307, 0.3081,
 * no held-out rows. */
void tl_runcfg_defaults(tl_runcfg *c);

/* The run's normalization descriptor as one tl_norm (a view: *out borrows c's
 * arrays, so no tl_norm_free): {TL_NORM_SCALAR, c->mean, c->std}, {TL_NORM_NONE},
 * or c->norm for TL_NORM_FEATURE. */
void tl_runcfg_norm(const tl_runcfg *c, tl_norm *out);

#endif
