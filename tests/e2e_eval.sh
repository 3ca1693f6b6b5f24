#!/usr/bin/env bash
# e2e_eval.sh - `tl eval` and `tl partition --test-fraction` (issue 10, items 5, 6).
#
#   bash tests/e2e_eval.sh <path to tl> <tests/data dir>
#
#   - IDX: tl train --max-steps 200 --save, then tl eval --model prints the same
#     test loss, accuracy, macro-F1 and AUC as tl train's epoch line;
#   - CSV (a generated table with string labels; breast_cancer.csv too when
#     $TL_SKLEARN_DIR holds it, else a visible SKIP line): --normalize
#     standardize --test-fraction: tl eval with the same fraction and seed
#     prints tl train's figures, and writes them as a JSON line;
#   - a model whose input or output width does not fit the data, and a file
#     without tl's metadata: refused with one line, exit 1; bad options: one
#     line, exit 2;
#   - tl partition --test-fraction: each node's train and t10k rows together are
#     exactly the node's rows without it (sizes add up, no row in both).
# Last line "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_eval.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")
require_data
cd "$W" || exit 1

# the figures of a line: from "test loss" to the end, without the run's tail
figs() { grep -o 'test loss [^(]*\((+-[^)]*)\)\?' "$1" | head -n 1; }

# --- IDX: tl train's epoch line == tl eval's ---
timeout $TMO "$TL" train --data "$DATA" --max-steps 200 --save m.st >train.out 2>train.err
timeout $TMO "$TL" eval --model m.st --data "$DATA" --metrics ev.jsonl >eval.out 2>eval.err
rc=$?
a=$(grep '^epoch 1:' train.out | figs /dev/stdin) b=$(figs eval.out)
check "IDX: tl eval prints tl train's test figures" "train '$a' eval '$b' rc $rc $(cat eval.err)" \
    test $rc -eq 0 -a -n "$a" -a "$a" = "$b"
check "IDX: 10000 rows and a 10x10 confusion matrix" "$(cat eval.out)" \
    test "$(grep -c '10000 rows' eval.out)" = 1 -a "$(tail -n 10 eval.out | awk 'NF == 10' | wc -l)" = 10
check "IDX: --metrics writes one JSON line" "$(cat ev.jsonl 2>&1)" \
    grep -q '^{"event":"eval",.*"test_accuracy":.*"test_confusion":\[\[' ev.jsonl

# --- CSV: a table with a header and string labels ---
awk 'BEGIN { srand(7); print "f1,f2,f3,f4,kind";
    for (i = 0; i < 400; i++) { c = i % 3; printf "%.4f,%.4f,%.4f,%.4f,%s\n",
        100 + 30 * c + 20 * rand(), 0.01 * c + 0.02 * rand(), rand(), -5 * c + 8 * rand(),
        substr("abc", c + 1, 1) } }' >t.csv
csv_same() { # name file label model
    local n=$1 f=$2 l=$3 m=$4
    timeout $TMO "$TL" train --data "$f" --label "$l" --normalize standardize --test-fraction 0.2 \
        --seed 3 --model "$m" --epochs 5 --batch-size 16 --save "$n.st" >"$n.train" 2>"$n.terr"
    timeout $TMO "$TL" eval --model "$n.st" --data "$f" --label "$l" --test-fraction 0.2 --seed 3 \
        >"$n.eval" 2>"$n.eerr"
    local rc=$?
    a=$(grep '^epoch' "$n.train" | tail -n 1 | figs /dev/stdin) b=$(figs "$n.eval")
    check "$n: tl eval on the held-out rows prints tl train's figures" \
        "train '$a' eval '$b' rc $rc $(cat "$n.terr" "$n.eerr" | tail -n 3)" \
        test $rc -eq 0 -a -n "$a" -a "$a" = "$b"
}
csv_same table t.csv kind linear:8,relu,linear:3
if [ -n "${TL_SKLEARN_DIR:-}" ] && [ -r "$TL_SKLEARN_DIR/breast_cancer.csv" ]; then
    csv_same breast_cancer "$TL_SKLEARN_DIR/breast_cancer.csv" target linear:32,relu,linear:2
else
    echo "SKIP - breast_cancer.csv: TL_SKLEARN_DIR is not set (scripts/sklearn-data.sh makes it)"
fi

# --- refusals: one line each ---
refused() { # what want-rc want-pattern command...
    local what=$1 want=$2 pat=$3
    shift 3
    timeout $TMO "$@" >r.out 2>r.err
    local rc=$?
    check "$what" "rc $rc, stderr: $(cat r.err)" \
        test $rc -eq "$want" -a "$(wc -l <r.err)" -eq 1 -a -n "$(grep -E "$pat" r.err)"
}
refused "an image model on a 4-feature table: refused" 1 'takes 784 inputs.*has 4 features' \
    "$TL" eval --model m.st --data t.csv --label kind
awk 'BEGIN { FS = OFS = "," } NR > 1 && NR % 2 == 0 { $5 = "d" } { print }' t.csv >t4.csv
refused "a 3-class model on 4 classes: refused" 1 'has 3 outputs, the data has 4 classes' \
    "$TL" eval --model table.st --data t4.csv --label kind
printf '\x26\0\0\0\0\0\0\0{"__metadata__":{"model":"linear:10"}}' >bare.st
refused "a file without tl's metadata: refused" 1 'no "normalize" metadata' \
    "$TL" eval --model bare.st --data "$DATA"
refused "no --model: usage error" 2 '^tl eval: --model FILE is required$' "$TL" eval --data "$DATA"
refused "--header maybe: usage error" 2 '^tl eval: --header' "$TL" eval --model m.st --header maybe
refused "--test-fraction 2: usage error" 2 '^tl eval: ' "$TL" eval --model m.st --test-fraction 2
refused "unknown option: usage error" 2 "^tl eval: unknown option '--bogus'$" "$TL" eval --bogus
refused "--metrics in a missing directory: refused" 2 '^tl eval: --metrics' \
    "$TL" eval --model m.st --metrics nodir/x.jsonl
refused "partition --test-fraction with --split t10k" 2 '^tl partition: --test-fraction' \
    "$TL" partition --nodes 2 --out pp --split t10k --test-fraction 0.1

# --- tl partition --test-fraction: each node's rows, split in two ---
timeout $TMO "$TL" partition --data "$DATA" --nodes 3 --scheme iid --seed 5 --out whole >whole.out 2>&1
timeout $TMO "$TL" partition --data "$DATA" --nodes 3 --scheme iid --seed 5 --test-fraction 0.25 \
    --out held >held.out 2>&1
rc=$?
check "partition --test-fraction: t10k files in each node" "rc $rc $(cat held.out)" \
    test $rc -eq 0 -a -r held/node-3/t10k-images-idx3-ubyte.gz -a -r held/node-3/t10k-labels-idx1-ubyte.gz
rows() { zcat "$1" | tail -c +17 | od -An -v -tx1 -w784; } # one line per image
count() { zcat "$1" | head -c 8 | od -An -tu1 | awk '{ print $5 * 16777216 + $6 * 65536 + $7 * 256 + $8 }'; }
total=0
for k in 1 2 3; do
    nt=$(count held/node-$k/train-labels-idx1-ubyte.gz) ne=$(count held/node-$k/t10k-labels-idx1-ubyte.gz)
    nw=$(count whole/node-$k/train-labels-idx1-ubyte.gz)
    total=$((total + nt + ne))
    check "node-$k: $nt train + $ne test rows = its $nw rows, a quarter held out" "" \
        test $((nt + ne)) -eq "$nw" -a $((ne * 4 - nw)) -le 40 -a $((nw - ne * 4)) -le 40
done
check "the nodes' rows add up to 60000" "$total" test "$total" -eq 60000
# the node's images (with their labels) before and after: the same multiset
{ rows held/node-2/train-images-idx3-ubyte.gz; rows held/node-2/t10k-images-idx3-ubyte.gz; } | sort >split.rows
rows whole/node-2/train-images-idx3-ubyte.gz | sort >whole.rows
check "node-2: train and t10k rows are disjoint and are its rows" "" cmp -s split.rows whole.rows
# a run's test set: tl train on the partition evaluates the nodes' held-out rows
timeout $TMO "$TL" eval --model m.st --data held >held.eval 2>&1
n=$(grep -o '[0-9]* rows' held.eval | head -n 1)
check "tl eval on the partition directory evaluates the held-out rows" "$(cat held.eval)" \
    test "$n" = "$(( $(count held/node-1/t10k-labels-idx1-ubyte.gz) + $(count held/node-2/t10k-labels-idx1-ubyte.gz) + $(count held/node-3/t10k-labels-idx1-ubyte.gz) )) rows"
finish
