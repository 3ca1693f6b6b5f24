/*
 * optim.h - optimizers with PyTorch's update rules (torch 1.13, single-tensor
 * path), as flat loops over the one parameter block. The golden tests hold
 * them to PyTorch's numbers to 1e-5.
 *
 *   adadelta  sq = rho sq + (1-rho) g^2; d = sqrt((acc+eps)/(sq+eps)) g (PyTorch
 *             takes the two roots apart: equal to within a rounding);
 *             acc = rho acc + (1-rho) d^2; p -= lr d
 *   sgd       g += wd p; buf = g (first step) or momentum buf + (1-dampening) g;
 *             g = nesterov ? g + momentum buf : buf; p -= lr g
 *   adam      g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *             p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)
 *   adamw     p *= 1 - lr wd, then adam without wd
 *
 * The state is a list of buffers of n floats each, named as PyTorch names them
 * in optimizer.state_dict(): adadelta square_avg, acc_delta; sgd
 * momentum_buffer (none without momentum); adam/adamw exp_avg, exp_avg_sq; plus
 * the step count. A checkpoint saves and restores it through
 * tl_optim_state_count / tl_optim_state / tl_optim_steps without knowing which
 * optimizer it has:
 *
 *   for (int i = 0; i < tl_optim_state_count(o); i++) {
 *       const char *name; float *buf; size_t len;
 *       tl_optim_state(o, i, &name, &buf, &len);   // save or fill buf[0, len)
 *   }
 *
 * The loops are compiled for several instruction sets (AVX-512, AVX2, the
 * build's baseline), chosen at run time; every one gives the same bits
 * (elementwise, no reductions over floats, no FMA contraction, IEEE sqrt and
 * division).
 */
#ifndef TL_OPTIM_H
#define TL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum tl_optim_kind {
    TL_OPT_ADADELTA = 1,
    TL_OPT_SGD,
    TL_OPT_ADAM,
    TL_OPT_ADAMW,
} tl_optim_kind;

typedef struct tl_optim_cfg {
    tl_optim_kind kind;
    double lr;       /* base learning rate */
    double rho, eps; /* adadelta: 0.9, 1e-6; adam/adamw eps: 1e-8 */
    double momentum, dampening, weight_decay;
    int nesterov;
    double beta1, beta2; /* adam/adamw: 0.9, 0.999 */
} tl_optim_cfg;

/* Fields are private: read and write the state through the functions below. */
typedef struct tl_optim {
    tl_optim_cfg cfg;
    size_t n;      /* parameters */
    int n_state;   /* buffers in state */
    float *state;  /* n_state x n floats, one allocation (owned) */
    int64_t steps; /* steps taken */
} tl_optim;

/* PyTorch's defaults, written once: tl_optim_defaults uses the numbers, the CLI's
 * help text their spelling (TL_STR, config.h). */
#define TL_OPTIM_ADADELTA_LR 1.0
#define TL_OPTIM_SGD_LR 0.01
#define TL_OPTIM_ADAM_LR 0.001 /* adam and adamw */
#define TL_OPTIM_ADAMW_WEIGHT_DECAY 0.01

/* Fills cfg with kind's PyTorch defaults (the lr and weight decay above; weight decay
 * 0 but for adamw). name: adadelta, sgd, adam, adamw. */
int tl_optim_defaults(const char *name, tl_optim_cfg *cfg);
const char *tl_optim_name(tl_optim_kind kind);

/* Sets o up for n parameters with zeroed state (PyTorch's initial state).
 * 0 or TL_ENOMEM. */
int tl_optim_init(tl_optim *o, const tl_optim_cfg *cfg, size_t n);
/* Frees the state; safe on a zeroed or freed o. */
void tl_optim_free(tl_optim *o);

/* One step on params with gradient grads at learning rate lr (the
 * scheduler's), which also clears grads (ready for the next batch's
 * accumulation). Returns 0, or
 *   TL_ENUMERIC  a gradient entry is NaN or Inf (the message names the first):
 *                checked BEFORE anything is modified, so params, the state,
 *                the step count and grads are exactly as before the call;
 *   TL_ERANGE    the step itself overflowed: some parameter or state entry it
 *                wrote is NaN or Inf (checked in the same pass as the update).
 *                The state is poisoned: do not save or use it. */
int tl_optim_step(tl_optim *o, float *params, float *grads, double lr);

/* How many state buffers o keeps (0 to TL_OPTIM_MAX_STATE): adadelta 2,
 * sgd 1 with momentum and 0 without, adam/adamw 2. */
#define TL_OPTIM_MAX_STATE 2
int tl_optim_state_count(const tl_optim *o);

/* State buffer i of o, 0 <= i < tl_optim_state_count(o): its PyTorch name
 * (a static string, e.g. "exp_avg"), its floats (owned by o, valid until
 * tl_optim_free; the caller may read them, or overwrite them to restore a
 * saved state) and their number (n). NULL outputs are skipped. 0, or
 * TL_EINVAL if i is out of range (outputs untouched). */
int tl_optim_state(const tl_optim *o, int i, const char **name, float **data, size_t *len);

/* Steps taken, part of the state (Adam's bias correction and SGD's first
 * momentum step depend on it). */
int64_t tl_optim_steps(const tl_optim *o);
/* Restores the step count from a saved state. 0, or TL_EINVAL if negative. */
int tl_optim_set_steps(tl_optim *o, int64_t steps);

#endif
