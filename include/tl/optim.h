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
 * The state (up to two moment buffers) is one allocation of 2 x n floats,
 * which a checkpoint saves as it is.
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
    double lr;           /* base learning rate */
    double rho, eps;     /* adadelta: 0.9, 1e-6; adam/adamw eps: 1e-8 */
    double momentum, dampening, weight_decay;
    int nesterov;
    double beta1, beta2; /* adam/adamw: 0.9, 0.999 */
} tl_optim_cfg;

typedef struct tl_optim {
    tl_optim_cfg cfg;
    size_t n;
    float *s1, *s2;  /* state: adadelta sq/acc, sgd buf, adam m/v (views into one block) */
    int64_t steps;   /* steps taken */
} tl_optim;

/* Fills cfg with kind's PyTorch defaults (adadelta lr 1.0; sgd lr 0.01;
 * adam/adamw lr 1e-3, adamw weight decay 1e-2). name: adadelta, sgd, adam, adamw. */
int tl_optim_defaults(const char *name, tl_optim_cfg *cfg);
const char *tl_optim_name(tl_optim_kind kind);

int tl_optim_init(tl_optim *o, const tl_optim_cfg *cfg, size_t n);
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

/* The state block (2 x n floats) for checkpoints. */
static inline float *tl_optim_state(tl_optim *o) { return o->s1; }

#endif
