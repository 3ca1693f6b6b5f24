#!/usr/bin/env bash
# e2e_data.sh - a user's own table, evaluation at the nodes (issue 10).
#
#   bash tests/e2e_data.sh <path to tl> <tests/data dir>
#
# With a small table it writes (string labels in the first column):
#   - tl partition --label/--header (the same options as tl train);
#   - its NumPy node directories carry classes.txt, so a model trained from
#     them has the names in its "classes" metadata (old directories without
#     the file still load; nodes naming classes differently are refused);
#   - nodes started by hand with --data DIR/node-K evaluate the held-out rows
#     tl partition --test-fraction wrote there, unless --test-data none.
# With breast_cancer.csv from Debian's python3-sklearn (scripts/sklearn-data.sh;
# the test says SKIP and passes if the package cannot be had):
#   - tl run, 3 nodes, --normalize standardize --test-fraction 0.2: the nodes hold
#     their held-out rows and evaluate them (sums only); tl train on the same
#     rows (the kept partition directory) from the same --init agrees to
#     <= 1e-5 and prints the same accuracy, macro-F1 and AUC; the confusion
#     matrix merged from the nodes' sums equals the central evaluation's on the
#     union of their held-out rows (metrics JSONL);
#   - 1 node: bit-identical;
#   - hostile inputs: a node whose table has another width is refused at the
#     handshake with the reason; a bad cell stops tl train before training,
#     naming line and column.
# Last line "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_data.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")
ROOT=$(realpath "$(dirname "$0")/..")

# A small table of our own (no package needed): string labels in the first
# column, a header row. tl partition reads it with --label and --header.
cd "$W" || exit 1
{
    echo "species,weight,height"
    for i in $(seq 0 35); do
        case $((i % 3)) in 0) s=cat ;; 1) s=dog ;; *) s=owl ;; esac
        echo "$s,$((i % 3)).$((i % 7)),$((i % 5)).25"
    done
} >pets.csv
run() { # run LOG cmd...: tl under timeout, stdout into LOG.out, stderr into LOG.err
    local log=$1
    shift
    timeout "$TMO" "$TL" "$@" >"$log.out" 2>"$log.err"
}
run part1 partition --data pets.csv --label species --header yes --nodes 2 --out p1
rc=$?
check "tl partition --label species --header yes: exits 0" "rc $rc; $(tr '\n' '|' <part1.err)" \
    test "$rc" -eq 0
check "... the label column is species: 3 classes, 18 rows a node" "$(tr '\n' '|' <part1.out)" \
    grep -Eq '^ +1 +18 +6 +6 +6$' part1.out
run part1i partition --data pets.csv --label 0 --nodes 2 --out p1i
check "tl partition --label 0 (header detected): exits 0" "$(tr '\n' '|' <part1i.err)" \
    grep -Eq '^ +2 +18 +6 +6 +6$' part1i.out
run part1h partition --data pets.csv --header maybe --nodes 2 --out p1h
rc=$?
check "tl partition --header maybe: usage error (2), train's message" "rc $rc; $(cat part1h.err)" \
    test "$rc" -eq 2 -a "$(cat part1h.err)" = "tl partition: --header: 'maybe' (want yes or no)"

# Class names through a NumPy partition: classes.txt beside x.npy (and in
# t10k/), read back by the loader, so a model trained from it is named.
check "p1/node-1/classes.txt names the classes, one a line" "$(cat p1/node-1/classes.txt 2>&1 | tr '\n' '|')" \
    test "$(cat p1/node-1/classes.txt 2>/dev/null)" = "$(printf 'cat\ndog\nowl')"
# metadata "classes" of a saved model
classes() { grep -ao '"classes":"[^"]*"' "$1" | head -n 1; }
PET=(--model linear:4,relu,linear:3 --optimizer sgd --epochs 1)
run names train --data p1/node-1 "${PET[@]}" --save names.st
check "tl train --data p1/node-1: the model's classes are cat,dog,owl" "$(classes names.st); $(tail -n 1 names.err)" \
    test "$(classes names.st)" = '"classes":"cat,dog,owl"'
run namesev eval --model names.st --data pets.csv --label species
check "... so tl eval takes the CSV's named labels against it" "$(tail -n 1 namesev.err)" \
    grep -q '^pets.csv: 36 rows: test loss' namesev.out
# tl run: its orchestrator holds no rows, but the saved model is named too
for P in sealed open; do
    run runnames$P run --privacy $P --nodes 2 --insecure --data pets.csv --label species \
        --cut 1 "${PET[@]}" --save runnames$P.st
    check "tl run --privacy $P --data pets.csv: the model's classes are cat,dog,owl" \
        "$(classes runnames$P.st); $(tail -n 2 runnames$P.err | tr '\n' '|')" \
        test "$(classes runnames$P.st)" = '"classes":"cat,dog,owl"'
done
run part2 partition --data pets.csv --label species --nodes 2 --out p2 --test-fraction 0.25
check "tl partition --test-fraction: t10k/classes.txt too" "$(find p2 | tr '\n' ' ')" \
    cmp -s p2/node-1/classes.txt p2/node-2/t10k/classes.txt
run names2 train --data p2 --test-data p2 "${PET[@]}" --save names2.st
check "tl train --data p2 --test-data p2 (partition directory): classes cat,dog,owl" \
    "$(classes names2.st); $(tail -n 1 names2.err)" test "$(classes names2.st)" = '"classes":"cat,dog,owl"'
cp -r p1 p1old && rm p1old/node-*/classes.txt
run old train --data p1old "${PET[@]}" --save old.st
check "a NumPy directory without classes.txt still trains: classes 0,1,2" "$(classes old.st); $(tail -n 1 old.err)" \
    test "$(classes old.st)" = '"classes":"0,1,2"'
cp p1/node-1/classes.txt p1old/node-1/ # node-1 named, node-2 not
run mixed train --data p1old "${PET[@]}"
check "a partition whose nodes disagree on class names is refused, naming the node" \
    "$(tail -n 1 mixed.err)" grep -q 'p1old/node-2: its class names (classes.txt) are not' mixed.err
printf 'cat\n' >p1old/node-1/classes.txt
run short train --data p1old/node-1 "${PET[@]}"
check "a classes.txt naming fewer classes than the labels is refused" "$(tail -n 1 short.err)" \
    grep -q 'classes.txt: 1 class names, but label 1 in row 1' short.err

# Nodes started by hand with only --data p2/node-K evaluate the held-out rows
# tl partition --test-fraction wrote there (its t10k split), saying so once;
# --test-data none turns it off. Sealed, so that the orchestrator (whose
# --test-data only gives the input width) cannot evaluate by itself.
# by_hand TAG [node options...]
"$TL" provision --group-key-only pets.key >/dev/null 2>&1
by_hand() {
    local tag=$1 k rc
    shift
    timeout "$TMO" "$TL" orchestrator --nodes 2 --insecure --listen 127.0.0.1:0 --port-file $tag.port \
        --test-data pets.csv --label species "${PET[@]}" --cut 1 >$tag.out 2>$tag.err &
    local opid=$!
    PIDS+=("$opid")
    if ! PORT=$(wait_port $tag.port "$opid"); then
        bad "$tag: the orchestrator listens" "$(tail -n 2 $tag.err | tr '\n' '|')"
        return
    fi
    for k in 1 2; do
        timeout "$TMO" "$TL" node --connect 127.0.0.1:"$PORT" --id $k --data p2/node-$k \
            --insecure --group-key pets.key --give-up 30 "$@" >$tag-n$k.out 2>$tag-n$k.err &
        PIDS+=("$!")
    done
    wait "$opid"
    rc=$?
    check "$tag: the orchestrator exits 0" "rc $rc; $(tail -n 2 $tag.err | tr '\n' '|')" test "$rc" -eq 0
}
by_hand own
check "... each node evaluates its own held-out rows by default, and says so" "$(grep -h held-out own-n*.err | tr '\n' '|')" \
    test "$(grep -c 'evaluating on 6 held-out rows, the t10k split of p2/node-[12] ' own-n1.err own-n2.err | tr '\n' ' ')" = "own-n1.err:1 own-n2.err:1 "
check "... the orchestrator evaluates at the nodes: 12 held-out rows" "$(grep -h evaluat own.err | tr '\n' '|')" \
    grep -q 'evaluating at the nodes: 12 held-out rows' own.err
check "... and prints the nodes' figures" "$(cat own.out)" grep -q 'test accuracy [0-9.]*%, macro-F1' own.out
by_hand none --test-data none
check "... --test-data none: the nodes hold no test rows" "$(grep -h evaluat none.err none-n*.err | tr '\n' '|')" \
    test "$(grep -c held-out none.err none-n1.err none-n2.err | tr '\n' ' ')" = "none.err:0 none-n1.err:0 none-n2.err:0 "
check "... and nothing is evaluated" "$(cat none.out)" grep -q 'test not evaluated' none.out

SK=${TL_SKLEARN_DIR:-}
if [ -z "$SK" ] || [ ! -r "$SK/breast_cancer.csv" ]; then
    SK=$W/sk
    if ! bash "$ROOT/scripts/sklearn-data.sh" "$SK" >"$W/sk.log" 2>&1; then
        echo "SKIP - breast_cancer.csv unavailable (python3-sklearn cannot be downloaded): $(tail -n 1 "$W/sk.log")"
        finish
    fi
fi
BC=$SK/breast_cancer.csv
relative() { sed -n 's/.*relative \([^ ]*\).*/\1/p' "$1" | head -n 1; }
maxdiff() { sed -n 's/.*max|A-B| \([^ ,]*\).*/\1/p' "$1" | head -n 1; }
# The epoch lines' test figures (accuracy, macro-F1, AUC) of a log.
figures() { grep -o 'test accuracy [^(]*AUC [0-9.]*' "$1.out"; }
# The epoch lines' confusion matrices of a metrics file.
confusions() { grep -o '"test_confusion":\[\[[^]]*\]\(,\[[^]]*\]\)*\]' "$1"; }

MODEL=linear:32,relu,linear:2
run init train --data "$BC" --model $MODEL --max-steps 1 --save init.safetensors
COMMON=(--model $MODEL --cut 1 --normalize standardize --test-fraction 0.2 --optimizer sgd
        --lr 0.05 --epochs 2 --init init.safetensors)

# sealed mode (the default) evaluates at the nodes too: each adds its own node side
for PN in open:3 open:1 sealed:3; do
    P=${PN%:*} N=${PN#*:}
    run run$N run --privacy "$P" --nodes "$N" --insecure --keep --data "$BC" "${COMMON[@]}" \
        --save run$N.safetensors --metrics run$N.jsonl
    rc=$?
    D=$(sed -n 's/^tl run: kept //p' run$N.err)
    check "$P, $N node(s): tl run exits 0 and keeps its partition" "rc $rc; $(grep -v " run: epoch .* batch " run$N.err | tail -n 12 | tr '\n' '|')" \
        test "$rc" -eq 0 -a -d "$D"
    check "$P, $N node(s): the orchestrator evaluates at the nodes" "$(grep -c 'evaluating at the nodes' run$N.err)" \
        grep -Eq 'evaluating at the nodes: [0-9]+ held-out rows' run$N.err
    # tl train on exactly the nodes' rows: their training rows, their held-out rows
    run train$N train --data "$D" --test-data "$D" --model $MODEL --normalize standardize \
        --optimizer sgd --lr 0.05 --epochs 2 --init init.safetensors \
        --save train$N.safetensors --metrics train$N.jsonl
    rc=$? # (before the check: its message's $(...) would reset $?)
    check "$N node(s): tl train on the same rows exits 0" "rc $rc; $(tail -n 12 train$N.err | tr '\n' '|')" \
        test "$rc" -eq 0
    "$TL" compare run$N.safetensors train$N.safetensors >cmp$N 2>&1
    if [ "$N" -eq 1 ]; then
        check "1 node: bit-identical to tl train" "$(cat cmp$N)" test "$(maxdiff cmp$N)" = 0
    else
        check "$P, $N nodes: max|dθ|/max|θ| <= 1e-5 against tl train" "$(cat cmp$N)" \
            awk -v r="$(relative cmp$N)" 'BEGIN { exit !(r != "" && r + 0 <= 1e-5) }'
    fi
    check "$P, $N node(s): the same accuracy, macro-F1 and AUC printed" \
        "run: $(figures run$N | tr '\n' '|') train: $(figures train$N | tr '\n' '|')" \
        test "$(figures run$N)" = "$(figures train$N)" -a -n "$(figures run$N)"
    check "$P, $N node(s): the nodes' merged confusion matrix is the central one" \
        "run: $(confusions run$N.jsonl | tr '\n' ' ') train: $(confusions train$N.jsonl | tr '\n' ' ')" \
        test "$(confusions run$N.jsonl)" = "$(confusions train$N.jsonl)" -a -n "$(confusions run$N.jsonl)"
    if [ "$P:$N" = open:3 ]; then
        D3=$D
        cp run3.safetensors open3.safetensors
    else
        rm -rf "$D"
    fi
done

# The same 3 nodes started by hand: the orchestrator collects their STATS
# (count, per-feature sums, sums of squares) for standardize and WELCOMEs them
# with the combined means and deviations; the model matches tl run's.
timeout "$TMO" "$TL" orchestrator --privacy open --nodes 3 --insecure --listen 127.0.0.1:0 --port-file sport \
    --test-data "$D3/node-1" --model $MODEL --cut 1 --normalize standardize --optimizer sgd \
    --lr 0.05 --epochs 2 --init init.safetensors --save so.safetensors >so.out 2>so.err &
OPID=$!
PIDS+=("$OPID")
if PORT=$(wait_port sport "$OPID"); then
    for k in 1 2 3; do
        timeout "$TMO" "$TL" node --privacy open --connect 127.0.0.1:"$PORT" --id $k \
            --data "$D3/node-$k" --test-data "$D3/node-$k" --insecure --give-up 30 \
            >sn$k.out 2>sn$k.err &
        PIDS+=("$!")
    done
    wait "$OPID"
    rc=$?
    check "standardize by STATS: the orchestrator exits 0" "rc $rc; $(tail -n 12 so.err | tr '\n' '|')" \
        test "$rc" -eq 0
    check "... combined the nodes' sums" "$(grep -c standardize so.err)" \
        grep -q "standardize: per-feature means and deviations of the nodes' 455 training rows" so.err
    "$TL" compare open3.safetensors so.safetensors >cmps 2>&1
    check "... and trains what tl run trains (<= 1e-5)" "$(cat cmps)" \
        awk -v r="$(relative cmps)" 'BEGIN { exit !(r != "" && r + 0 <= 1e-5) }'
else
    bad "orchestrator collecting STATS" "$(tail -n 12 so.err | tr '\n' '|')"
fi
rm -rf "$D3"

# Hostile: node 2's table has 13 features, the run's model 30 inputs.
timeout "$TMO" "$TL" orchestrator --privacy open --nodes 2 --insecure --listen 127.0.0.1:0 \
    --port-file port --test-data "$BC" --model $MODEL --cut 1 --epochs 1 >o.out 2>o.err &
OPID=$!
PIDS+=("$OPID")
if PORT=$(wait_port port "$OPID"); then
    timeout "$TMO" "$TL" node --privacy open --connect 127.0.0.1:"$PORT" --id 1 --data "$BC" \
        --insecure --give-up 20 >n1.out 2>n1.err &
    PIDS+=("$!")
    run n2 node --privacy open --connect 127.0.0.1:"$PORT" --id 2 --data "$SK/wine.csv" --insecure --give-up 20
    rc=$?
    check "a node with 13 features is refused (exit nonzero)" "rc $rc" test "$rc" -ne 0
    check "... told why: its width against the model's input" "$(tr '\n' '|' <n2.err)" \
        grep -q 'samples \[13\] have 13 features, the model.s input 30' n2.err
    check "... and the orchestrator logs the refusal" "$(grep refused o.err | tail -n 1)" \
        grep -q 'refused.*13 features' o.err
else
    bad "orchestrator for the hostile node" "$(tail -n 12 o.err | tr '\n' '|')"
fi

# Hostile: a bad cell is an error naming line and column, before any training.
{ head -n 5 "$BC"; head -n 6 "$BC" | tail -n 1 | sed 's/^[^,]*,/oops,/'; } >bad.csv
run bad train --data bad.csv --model $MODEL --save bad.safetensors
rc=$?
check "a non-numeric cell: tl train fails" "rc $rc" test "$rc" -ne 0
check "... naming file:line:column (bad.csv:6:1)" "$(tr '\n' '|' <bad.err)" \
    grep -q 'bad.csv:6:1: not a number' bad.err
check "... and writes no model" "$(ls)" test ! -e bad.safetensors

finish
