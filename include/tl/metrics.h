/*
 * metrics.h - training metrics as JSON lines: one object per epoch
 * {"epoch":1,"steps":938,"train_loss":..,"train_accuracy":..,"test_loss":..,
 *  "test_accuracy":..,"lr":..,"seconds":..} (plus "partial":true for an epoch
 * cut short by --max-steps; test_loss and test_accuracy are null when there is
 * no test set; with an evaluation, its fields from tl_eval_json with the
 * prefix "test_" take their place: test_n, test_loss, test_accuracy,
 * test_macro_f1, test_auc, test_auc_bound, test_auc_classes, test_precision,
 * test_recall, test_confusion) and, if asked, one per batch
 * {"epoch":1,"batch":12,"steps":..,"loss":..}. Each line is flushed as it is written, so a crashed
 * run keeps what it had. README.md ("Metrics") documents every field.
 */
#ifndef TL_METRICS_H
#define TL_METRICS_H

#include <stdio.h>

#include "tl/trainer.h"

typedef struct tl_metrics tl_metrics;

/* Opens path for writing (truncates; append if append is nonzero). */
int tl_metrics_open(const char *path, int append, tl_metrics **out);
int tl_metrics_epoch(tl_metrics *m, const tl_epoch_report *r);
int tl_metrics_batch(tl_metrics *m, const tl_progress *p);
void tl_metrics_close(tl_metrics *m); /* NULL-safe */

#endif
