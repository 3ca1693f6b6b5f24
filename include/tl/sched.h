/*
 * sched.h - learning-rate schedules, stepped once per epoch as PyTorch's are.
 *
 *   step    StepLR(step_size, gamma): lr_e = lr_{e-1} * gamma when e % step == 0
 *           (computed by repeated multiplication in double, as PyTorch does)
 *   cosine  CosineAnnealingLR(T_max = epochs, eta_min = 0), closed form
 *   none    constant
 */
#ifndef TL_SCHED_H
#define TL_SCHED_H

typedef enum tl_sched_kind { TL_SCHED_STEP = 1, TL_SCHED_COSINE, TL_SCHED_NONE } tl_sched_kind;

typedef struct tl_sched {
    tl_sched_kind kind;
    double base_lr, gamma;
    int step_size, t_max;
} tl_sched;

/* name: "step", "cosine" or "none". */
int tl_sched_init(tl_sched *s, const char *name, double base_lr, double gamma, int step_size,
                  int t_max);
/* Learning rate for 0-based epoch e. */
double tl_sched_lr(const tl_sched *s, int epoch);

#endif
