/*
 * checkpoint.h - a training run's whole state in one safetensors file, so an
 * interrupted run continues to the same bit-identical result (DESIGN §6).
 *
 * Contents: the parameters under their PyTorch names (the file loads in
 * PyTorch as a model), one tensor "optim.<name>" F32 [P] per optimizer state
 * buffer, under PyTorch's state_dict names (adadelta optim.square_avg,
 * optim.acc_delta; sgd with momentum optim.momentum_buffer, without none;
 * adam/adamw optim.exp_avg, optim.exp_avg_sq: whatever tl_optim_state lists),
 * "rng.state" I64 [625] (the batch generator's MT19937 state before the
 * current epoch's draw, then its index), and __metadata__:
 *   format      "tl-checkpoint-2" (files of "tl-checkpoint-1", which held the
 *               buffers as one "optim.state" F32 [2, P], buffer i in row i,
 *               still load)
 *   config      the run's signature (model, batch size, seed, reshuffle,
 *               optimizer and schedule, epochs, cut, mode, data); a checkpoint
 *               is refused by a run whose signature differs, with both shown
 *   epoch       0-based epoch in progress
 *   batch       batches of that epoch already done (== batches per epoch once
 *               the epoch, and its evaluation, is complete)
 *   steps, optim_steps, epochs_started,
 *   loss_sum, correct, seen   the epoch's running totals (exact, %a)
 * Written atomically (temporary file, fsync, rename): a crash mid-write leaves
 * the previous checkpoint whole.
 */
#ifndef TL_CHECKPOINT_H
#define TL_CHECKPOINT_H

#include <stdint.h>

#include "tl/trainer.h"

/* Where a run stands; what a checkpoint restores besides the tensors. */
typedef struct tl_run_pos {
    int epoch;
    size_t batch;
    int64_t steps;
    double loss_sum;
    int64_t correct;
    uint64_t seen;
} tl_run_pos;

/* The signature of t's configuration (and data_sig), into buf. */
void tl_checkpoint_signature(const tl_trainer *t, char *buf, size_t len);

/* Saves t's state at position pos to path. TL_ENUMERIC, and nothing
 * written, if a parameter or optimizer state entry is NaN or Inf (named, e.g.
 * "optim.exp_avg[7] is NaN"). */
int tl_checkpoint_save(const char *path, const tl_trainer *t, const tl_run_pos *pos);

/* Checks, before any data is known, that path is a checkpoint of the
 * configuration cfg with model m: everything in the signature but the data.
 * A run that must wait for its data (an orchestrator, for its nodes) calls
 * this first, so that a wrong --resume fails at once instead of after the
 * wait. 0, or TL_EIO/TL_EFORMAT (unreadable, not a checkpoint), TL_ESTATE
 * (another configuration; the message shows the first field that differs) or
 * TL_ENUMERIC (a NaN/Inf parameter or optimizer state entry; the message
 * names the tensor and index). */
int tl_checkpoint_check(const char *path, const tl_runcfg *cfg, const tl_model *m);

/* Restores t (parameters, optimizer, generator) from path and fills *pos.
 * TL_ESTATE if the file belongs to another configuration (message shows the
 * first field that differs); TL_ENUMERIC, with t unchanged, if it holds a
 * NaN/Inf parameter or optimizer state entry (named). */
int tl_checkpoint_load(const char *path, tl_trainer *t, tl_run_pos *pos);

/* The steps taken by the run saved in path (its "steps"), without loading
 * it: what an orchestrator tells its nodes before the trainer has resumed
 * (sealed mode). TL_EIO/TL_EFORMAT. */
int tl_checkpoint_steps(const char *path, int64_t *steps);

#endif
