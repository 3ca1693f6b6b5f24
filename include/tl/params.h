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

#include "tl/dataset.h"
#include "tl/model.h"
#include "tl/norm.h"
#include "tl/safetensors.h"

/* Writes params (m->n_params floats) plus extra tensors and metadata. */
int tl_params_save(const char *path, const tl_model *m, const float *params,
                   const tl_st_tensor *extra, int n_extra, const tl_st_kv *meta, int n_meta);

/* What a user of the saved model needs to feed it (README, "Saved models"):
 *   normalize    "scale=S,mean=M,std=D" (x = (x_raw * S - M) / D), per-feature
 *                "scale=S,mean=m0;m1;...,std=s0;s1;...", or "scale=S,none";
 *                S is 1/255 for byte images, 1 for floats;
 *   input_shape  "C,H,W" or "F";
 *   classes      the class names, comma-separated (the label numbers when the
 *                data has no names).
 * From the data the model was trained on (d; NULL: the model's input width
 * and numbered classes) and the normalization in use. meta[0..3) point into
 * desc until tl_model_desc_free. TL_ENOMEM. */
typedef struct tl_model_desc {
    char shape[64];
    char classes[4096];
    char *norm;       /* heap: per-feature statistics can be long */
    tl_st_kv meta[3]; /* normalize, input_shape, classes */
} tl_model_desc;
int tl_model_desc_init(tl_model_desc *desc, const tl_model *m, const tl_dataset *d,
                       const tl_norm *norm);
/* Replaces desc's classes with names[0..n) (the model's class count of them;
 * numbers beyond n). */
void tl_model_desc_names(tl_model_desc *desc, const tl_model *m, char *const *names, int n);
void tl_model_desc_free(tl_model_desc *desc);

/* Copies the model's tensors from an opened file into params. */
int tl_params_from_st(const tl_st *st, const char *path, const tl_model *m, float *params);

/* Opens path and loads the model's tensors into params. Other tensors in the
 * file are an error. */
int tl_params_load(const char *path, const tl_model *m, float *params);

#endif
