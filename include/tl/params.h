/*
 * params.h - model parameters as safetensors files a PyTorch user can load.
 *
 * Tensors are named as torch.nn.Sequential names them ("0.weight" [out,in],
 * "0.bias" [out], ...), float32, in parameter-block order. The header's
 * __metadata__ records the model spec ("model") and whatever extra keys the
 * caller passes (the tl commands add the run configuration, "normalize",
 * "input_shape", "classes" and "test_accuracy": README, "Saved models").
 *
 * Loading checks that every tensor the model needs is present with exactly its
 * shape and dtype F32, and that there is nothing else (besides names listed
 * in `ignore_prefixes` such as "optim." for checkpoints), and that every
 * value is finite (TL_ENUMERIC naming the tensor and index otherwise).
 */
#ifndef TL_PARAMS_H
#define TL_PARAMS_H

#include "tl/model.h"
#include "tl/safetensors.h"

/* Writes params (m->n_params floats) plus extra tensors and metadata. */
int tl_params_save(const char *path, const tl_model *m, const float *params,
                   const tl_st_tensor *extra, int n_extra, const tl_st_kv *meta, int n_meta);

/* Copies the model's tensors from an opened file into params. */
int tl_params_from_st(const tl_st *st, const char *path, const tl_model *m, float *params);

/* Opens path and loads the model's tensors into params. Other tensors in the
 * file are an error. */
int tl_params_load(const char *path, const tl_model *m, float *params);

#endif
