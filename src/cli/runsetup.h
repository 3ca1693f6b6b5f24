/*
 * runsetup.h - the start and end of a training command: load the data sets,
 * build the model, initialize or load the parameters; save them with the
 * run's metadata at the end. Shared by `tl train` and `tl orchestrator`.
 */
#ifndef TL_CLI_RUNSETUP_H
#define TL_CLI_RUNSETUP_H

#include "tl/config.h"
#include "tl/dataset.h"
#include "tl/model.h"
#include "tl/trainer.h"

typedef struct cli_run {
    tl_dataset train, test;
    int have_train, have_test;
    tl_norm norm; /* standardize: the training rows' means and deviations (owned) */
    tl_model model;
    float *params;
    char *const *class_names; /* borrowed; if set, the saved model's classes (else the data's) */
    int n_class_names;
} cli_run;

/* Loads the training set from cfg->data_dir if with_train (its width fixes the
 * model's input; any source tl_dataset_open reads, with cfg->data_opts), the
 * test set from cfg->test_dir (or data_dir's t10k split), or, with
 * cfg->test_fraction, holds that fraction of the training rows out as the test
 * set (tl_dataset_split seeded with cfg->seed),
 * parses the model, initializes params (cfg->seed) or loads cfg->init_path.
 * Sets the gemm thread count. Returns 0, or 1 after printing the error. */
int cli_run_setup(cli_run *r, const tl_runcfg *cfg, const char *cmd, int with_train);

/* --normalize standardize: fills r->norm with the per-feature mean and
 * standard deviation of r->train (norm.h) and points cfg->norm at it (cfg
 * borrows r's arrays). Nothing for other kinds. 0, or 1 after printing. */
int cli_run_standardize(cli_run *r, tl_runcfg *cfg, const char *cmd);

/* Like cli_run_setup without a training set: the input width comes from the
 * test set, or from in_dim if there is none (in_dim 0: required). */
int cli_run_setup_dim(cli_run *r, const tl_runcfg *cfg, const char *cmd, int in_dim);

/* Writes cfg->save_path (if set) with metadata from cfg and the last epoch.
 * Returns 0, or 1 after printing the error; if save_path cannot be written,
 * the model is written to a fallback path (outputs.h), which is printed, and
 * 1 is still returned. */
int cli_run_save(const cli_run *r, const tl_runcfg *cfg, const tl_epoch_report *last,
                 const char *cmd);

void cli_run_free(cli_run *r);

#endif
