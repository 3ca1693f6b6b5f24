/*
 * trainer.h - the training loop, written once for every kind of run.
 *
 * The loop owns what all runs share: the virtual batches (batch.h), the
 * optimizer and its schedule, --max-steps, evaluation on the test set after
 * each epoch, and the callbacks that report progress. What differs between a
 * centralized and a distributed run is only where the gradient of a batch
 * comes from, so that is a callback (tl_grad_fn):
 *
 *   - `tl train` computes it locally (localgrad.h);
 *   - the orchestrator gathers it from the nodes (orchestrator.c).
 *
 * For every batch the loop calls the gradient function on a zeroed gradient
 * block and takes one optimizer step, which also checks that the gradient is
 * finite and clears it for the next batch.
 *
 * Poison is never committed or saved: a gradient with NaN/Inf (a sum of
 * finite parts can overflow) stops the run before the step, with the state
 * before the batch saved (to the checkpoint, else the recovery file); a step
 * that makes a parameter or optimizer state entry NaN/Inf stops the run
 * without saving that state (the last checkpoint stays as it was); and
 * tl_checkpoint_save refuses non-finite state in any case.
 */
#ifndef TL_TRAINER_H
#define TL_TRAINER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "tl/batch.h"
#include "tl/config.h"
#include "tl/dataset.h"
#include "tl/evalstats.h"
#include "tl/model.h"
#include "tl/norm.h"
#include "tl/optim.h"
#include "tl/sched.h"

/* Computes into grads (all zero on entry, n_params floats) the gradient of
 * the MEAN loss over batch b at params; adds the batch's loss sum and correct
 * count into *loss_sum and *correct. Returns 0 or a negative TL_E* code
 * (the run stops with it). */
typedef int (*tl_grad_fn)(void *ctx, const tl_batch *b, const float *params, float *grads,
                          double *loss_sum, int64_t *correct);

typedef struct tl_progress {
    int epoch, epochs;     /* 0-based epoch and total */
    size_t batch, batches; /* batch just done (1-based count) and per epoch */
    int64_t steps;         /* optimizer steps so far */
    double loss;           /* mean training loss of the epoch so far */
    double samples_per_s;  /* this epoch */
    double elapsed_s;      /* this epoch */
} tl_progress;

typedef struct tl_epoch_report {
    int epoch; /* 1-based */
    int64_t steps;
    double train_loss, train_accuracy;
    double test_loss, test_accuracy; /* -1 if no test set */
    double lr;
    double seconds;
    int partial; /* stopped early by max_steps */
    /* the evaluation's sums and the metrics from them (accuracy, macro-F1,
     * AUC, confusion matrix); NULL without evaluation. Owned by the trainer,
     * valid during on_epoch. test_loss and test_accuracy are theirs. */
    const tl_evalstats *eval;
    const tl_eval_metrics *metrics;
} tl_epoch_report;

/* Evaluates params (after `steps` optimizer steps) into sums, which are zero
 * on entry (C = the model's classes, B = TL_EVAL_BINS): the orchestrator asks
 * its nodes (EVAL) and merges their sums; tl train runs tl_evaluate_sums on
 * its test set. 0 or a negative TL_E* code (the run stops with it). */
typedef int (*tl_eval_fn)(void *ctx, const float *params, int64_t steps, tl_evalstats *sums);

typedef struct tl_trainer_hooks {
    void *ud;
    void (*on_batch)(void *ud, const tl_progress *p);
    void (*on_epoch)(void *ud, const tl_epoch_report *r);
} tl_trainer_hooks;

/* Optional: told which batch comes next while the current one is computed,
 * so a gradient source can prepare it (the local source gathers its rows on
 * a loader thread). b's pointers are only valid during the call. */
typedef void (*tl_prefetch_fn)(void *ctx, const tl_batch *b);

typedef struct tl_trainer {
    const tl_runcfg *cfg;
    const tl_model *model;
    float *params;   /* caller's, n_params */
    float *grads;    /* owned */
    tl_optim optim;  /* over params[opt_from, n_params) */
    size_t opt_from; /* 0, or sealed mode's node-side size (tl_trainer_set_opt_from) */
    tl_sched sched;
    tl_batcher *batcher;
    const tl_dataset *test; /* may be NULL: evaluated after each epoch with tl_evaluate_sums
                             * and the run's normalization, unless eval is set */
    tl_eval_fn eval;        /* optional: evaluation after each epoch (replaces test) */
    void *eval_ctx;
    tl_evalstats sums;       /* the last evaluation's (owned) */
    tl_eval_metrics metrics; /* ... and its metrics (owned) */
    int64_t steps;
    FILE *plan;              /* cfg->plan_path: each epoch's plan as JSON lines */
    tl_prefetch_fn prefetch; /* optional, called with the same ctx as the gradient fn */
    /* optional, with the gradient fn's ctx: called before a checkpoint of
     * the state after `steps` steps is written (sealed mode: the nodes save
     * their side of that step first) */
    void (*checkpointing)(void *ctx, int64_t steps);
    char data_sig[512]; /* what the data is (counts, fingerprints), for checkpoints */
    /* optional: fills data_sig when it is first needed (a checkpoint is written
     * or loaded), for a signature that costs something to compute, such as a
     * fingerprint of the whole data set; called at most once */
    void (*data_sig_fn)(void *ud, char *sig, size_t cap);
    void *data_sig_ud;
    const char *recovery_path;   /* without cfg->checkpoint_path, where a failing run saves */
    const char *saved_path;      /* set when a failing run saved its state there */
    volatile sig_atomic_t *stop; /* optional: nonzero (a signal handler) stops the run between
                                  * batches as a failure does: state saved, TL_ESTATE */
    int resumed;                 /* state came from a checkpoint: continue at `start` */
    int start_epoch;
    size_t start_batch;
    double start_loss_sum;
    int64_t start_correct;
    uint64_t start_seen;
} tl_trainer;

/* Sets up a loop over nodes with counts[0..n_nodes) samples (one "node" for
 * centralized training). params must already hold the initial parameters. */
int tl_trainer_init(tl_trainer *t, const tl_runcfg *cfg, const tl_model *m, float *params,
                    const uint64_t *counts, int n_nodes, const tl_dataset *test);
/* Describes the data for checkpoint signatures: e.g. "nodes 20000:9f..,20000:..". */
void tl_trainer_set_data_sig(tl_trainer *t, const char *sig);

/* Sealed mode (DESIGN §4): the optimizer steps only params[from, n_params),
 * the orchestrator's side; params[0, from) (the node side, held by the nodes)
 * is never touched. Call after init and before resume/run. 0, TL_EINVAL if
 * from >= n_params, or TL_ENOMEM. */
int tl_trainer_set_opt_from(tl_trainer *t, size_t from);

/* Loads cfg->checkpoint_path and continues from it (call after init). */
int tl_trainer_resume(tl_trainer *t);

/* Runs all epochs (or until cfg->max_steps). With cfg->checkpoint_path it
 * saves a checkpoint every cfg->checkpoint_every batches and after each epoch.
 * When the gradient function fails, or the gradient is not finite, it saves
 * the state before the failing batch (to cfg->checkpoint_path, else to
 * recovery_path; saved_path then says where) and returns the error; when the
 * step overflows it returns TL_ENUMERIC and saves nothing. */
int tl_trainer_run(tl_trainer *t, tl_grad_fn fn, void *ctx, const tl_trainer_hooks *hooks);
void tl_trainer_free(tl_trainer *t);

/* Mean loss and accuracy of params on all of d (in chunks). */
int tl_evaluate(const tl_model *m, const float *params, const tl_dataset *d, float mean, float std,
                double *loss, double *accuracy);

/* Adds the evaluation of params on all of d to s (evalstats.h): the rows in
 * order, in chunks of TL_EVAL_CHUNK normalized with nm (tl_dataset_gather_norm),
 * the model's full forward pass, tl_evalstats_add per chunk. The loss sum and
 * hit count are tl_evaluate's bit for bit (scalar nm), and a node evaluating
 * its test rows with this function fills exactly the sums tl train would on
 * the same rows. TL_EINVAL if d's width is not the model's input, nm is
 * per-feature of another width, s has other classes than the model, or a
 * label of d is not below them; TL_ENOMEM; what tl_evalstats_add returns
 * (TL_ENUMERIC for a non-finite logit). On an input error s is unchanged; after a
 * failing chunk it holds the chunks before it (reset before reuse). */
int tl_evaluate_sums(const tl_model *m, const float *params, const tl_dataset *d, const tl_norm *nm,
                     tl_evalstats *s);

#define TL_EVAL_CHUNK 1000

#endif
