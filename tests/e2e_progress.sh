#!/usr/bin/env bash
# e2e_progress.sh - what a training command shows when nobody watches a terminal
# (nohup, systemd, a log file), and what it reports without a test set.
#
#   bash tests/e2e_progress.sh <path to tl> <tests/data dir>
#
# Runs `tl train` and `tl run` with stderr to a file and checks: periodic
# progress lines (timestamped, no \r), whose step counts and ETA cover the whole
# run (all epochs, or up to --max-steps); the closing summary (wall time,
# steps, where the model was saved); without a test set "not evaluated" on the
# terminal and null in the metrics, never -100% or -1; every documented metrics
# field (README.md, "Metrics"). Last line: "N passed, M failed"; exit 1 on any
# failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_progress.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")
require_data
cd "$W" || exit 1

# has FILE REGEX: FILE has a line matching the extended REGEX
has() { grep -Eq -- "$2" "$1"; }
count() { grep -Ec -- "$2" "$1"; }
LINE='^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} train: epoch [0-9]+/[0-9]+ batch [0-9]+/938 \([0-9]+%\), step [0-9]+/'

# 1. --max-steps 200, stderr to a file: lines at each tenth of the run, then a summary.
timeout "$TMO" "$TL" train --max-steps 200 --save "$W/m.safetensors" --metrics "$W/m.jsonl" \
    --batch-metrics >"$W/out1" 2>"$W/err1"
rc=$?
check "tl train --max-steps 200 succeeds" "exit $rc" [ $rc -eq 0 ]
n=$(count "$W/err1" "${LINE}200 \([0-9]+%\), loss [0-9.]+, [0-9]+ samples/s, elapsed [0-9]+:[0-9]{2}, ETA ([0-9]+:[0-9]{2}|\?)$")
check "progress lines on a non-terminal stderr (a line per tenth of the run)" \
    "$n lines; stderr: $(head -c 600 "$W/err1")" [ "$n" -ge 10 ]
check "the last progress line is step 200/200 (100%)" "$(tail -n 3 "$W/err1")" \
    has "$W/err1" 'step 200/200 \(100%\)'
check "no carriage return or escape sequence in the log" "$(od -c "$W/err1" | head -5)" \
    bash -c '! grep -q $'"'"'[\r\033]'"'"' "$1"' _ "$W/err1"
check "summary: wall time, steps, where the model was saved" "$(tail -n 1 "$W/err1")" \
    has "$W/err1" "^tl train: done in [0-9]+:[0-9]{2} \([0-9.]+ s\): 200 steps, epoch 1 of 1 \(stopped at --max-steps\), test accuracy [0-9.]+%; model saved to $W/m.safetensors$"
check "the summary is the last line" "$(tail -n 1 "$W/err1")" \
    bash -c 'tail -n 1 "$1" | grep -q "^tl train: done"' _ "$W/err1"
check "the epoch line on stdout has the test accuracy" "$(cat "$W/out1")" \
    has "$W/out1" '^epoch 1: train loss [0-9.]+, test loss [0-9.]+, test accuracy [0-9.]+%, macro-F1 [0-9.]+, AUC [0-9.]+ \(\+-[0-9.e+-]+\) \(200 steps'

# Every metrics field the README documents, with numbers.
NUM='-?[0-9.]+(e-?[0-9]+)?'
ARR='\[[-0-9.e,null]*\]'
EPOCH_RE="^\{\"epoch\":1,\"steps\":200,\"train_loss\":$NUM,\"train_accuracy\":$NUM,\"test_n\":10000,\"test_loss\":$NUM,\"test_accuracy\":$NUM,\"test_macro_f1\":$NUM,\"test_auc\":$NUM,\"test_auc_bound\":$NUM,\"test_auc_classes\":10,\"test_precision\":$ARR,\"test_recall\":$ARR,\"test_confusion\":\[($ARR,){9}$ARR\],\"lr\":$NUM,\"seconds\":$NUM,\"partial\":true\}$"
check "metrics: the epoch line carries every documented field" "$(grep -v batch "$W/m.jsonl")" \
    has "$W/m.jsonl" "$EPOCH_RE"
n=$(count "$W/m.jsonl" "^\{\"epoch\":1,\"batch\":[0-9]+,\"steps\":[0-9]+,\"loss\":$NUM\}$")
check "metrics: 200 batch lines with epoch, batch, steps, loss" "$n" [ "$n" -eq 200 ]

# 2. The ETA covers the whole run: two epochs (the step total is 2 x 938).
timeout "$TMO" "$TL" train --epochs 2 >"$W/out2" 2>"$W/err2"
rc=$?
check "tl train --epochs 2 succeeds" "exit $rc" [ $rc -eq 0 ]
check "progress counts the steps of both epochs" "$(head -n 3 "$W/err2")" \
    has "$W/err2" "${LINE}1876 "
n=$(count "$W/err2" "${LINE}1876 ")
check "a line per tenth of each epoch" "$n lines" [ "$n" -ge 20 ]
check "epoch 2 lines" "$(tail -n 3 "$W/err2")" has "$W/err2" 'train: epoch 2/2 batch 938/938 \(100%\), step 1876/1876 \(100%\)'
check "summary without --save says so" "$(tail -n 1 "$W/err2")" \
    has "$W/err2" '^tl train: done in .*1876 steps, epoch 2 of 2, test accuracy [0-9.]+%; model not saved \(no --save\)$'

# 2b. --max-steps in the second epoch: the total is --max-steps, and its last step has a line.
timeout "$TMO" "$TL" train --epochs 2 --max-steps 1500 >"$W/out2b" 2>"$W/err2b"
rc=$?
check "tl train --epochs 2 --max-steps 1500 succeeds" "exit $rc" [ $rc -eq 0 ]
check "the step total is --max-steps" "$(head -n 3 "$W/err2b")" has "$W/err2b" "${LINE}1500 "
check "a line at the last step" "$(tail -n 3 "$W/err2b")" \
    has "$W/err2b" 'train: epoch 2/2 batch 562/938 \(59%\), step 1500/1500 \(100%\)'

# 3. No test set: "not evaluated", null in the metrics.
mkdir -p "$W/notest"
ln -s "$DATA/train-images-idx3-ubyte.gz" "$DATA/train-labels-idx1-ubyte.gz" "$W/notest/"
timeout "$TMO" "$TL" train --data "$W/notest" --max-steps 50 --metrics "$W/n.jsonl" \
    >"$W/out3" 2>"$W/err3"
rc=$?
check "tl train without a test set succeeds" "exit $rc" [ $rc -eq 0 ]
check "epoch line: test not evaluated" "$(cat "$W/out3")" \
    has "$W/out3" '^epoch 1: train loss [0-9.]+, test not evaluated \(no test set\) \(50 steps'
check "no negative accuracy anywhere" "$(cat "$W/out3" "$W/err3")" \
    bash -c '! grep -q -- "-100" "$1" "$2"' _ "$W/out3" "$W/err3"
check "metrics: test_loss and test_accuracy are null" "$(cat "$W/n.jsonl")" \
    has "$W/n.jsonl" "^\{\"epoch\":1,\"steps\":50,\"train_loss\":$NUM,\"train_accuracy\":$NUM,\"test_loss\":null,\"test_accuracy\":null,\"lr\":$NUM,\"seconds\":$NUM,\"partial\":true\}$"
check "metrics: no -1" "$(cat "$W/n.jsonl")" bash -c '! grep -q ":-1" "$1"' _ "$W/n.jsonl"
check "summary: test not evaluated" "$(tail -n 1 "$W/err3")" \
    has "$W/err3" '^tl train: done in .*50 steps, epoch 1 of 1 \(stopped at --max-steps\), test not evaluated; model not saved'

# 4. The distributed run reports the same way (the orchestrator's progress).
timeout "$TMO" "$TL" run --nodes 2 --insecure --max-steps 100 --save "$W/r.safetensors" \
    >"$W/out4" 2>"$W/err4"
rc=$?
check "tl run --max-steps 100 succeeds" "exit $rc; $(tail -n 5 "$W/err4")" [ $rc -eq 0 ]
n=$(count "$W/err4" '^[0-9-]+ [0-9:]+ run: epoch 1/1 batch [0-9]+/938 \([0-9]+%\), step [0-9]+/100 ')
check "tl run: progress lines" "$n lines" [ "$n" -ge 10 ]
check "tl run: summary names the saved model" "$(tail -n 2 "$W/err4")" \
    has "$W/err4" "^tl run: done in .*100 steps, epoch 1 of 1 \(stopped at --max-steps\), test accuracy [0-9.]+%; model saved to $W/r.safetensors$"

finish
