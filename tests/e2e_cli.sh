#!/usr/bin/env bash
# e2e_cli.sh - what a newcomer meets at the command line (issue 9, items 5, 6).
#
#   bash tests/e2e_cli.sh <path to tl> <tests/data dir>
#
# For every command: --help exits 0; a bogus option, a bad value and a missing
# required option exit 2 with exactly one line on stderr starting "tl CMD:".
# Then the help texts (--tls-dir names the kit's sub-directory and its files,
# tl run lists no --tls-dir, the --metrics fields, --data takes a partition
# directory, tl node does not promise that inputs "never leave"), a model typo
# and an out-of-range --cut as usage errors, tl run's --insecure warning about
# its unix socket, tl run --scheme (and its old name --partition), the --plan
# counting from 1, and the __metadata__ of a saved model with and without a
# test set. Last line: "N passed, M failed"; exit status 1 on any failure.
set -u

TL=${1:?usage: e2e_cli.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")
. "$(dirname "$0")/lib.sh"
cd "$W" || exit 1

M=linear:16,linear:16,linear:10 # a small model: quick runs

# usage_error "what" CMD ARGS...: `tl CMD ARGS...` exits 2 with one stderr
# line "tl CMD: ..." (newline-terminated) and nothing on stdout
usage_error() {
    local what=$1 cmd=$2
    shift 2
    timeout "$TMO" "$TL" "$cmd" "$@" >"$W/out" 2>"$W/err"
    local rc=$? lines
    lines=$(wc -l <"$W/err")
    if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && [ "$(tail -c 1 "$W/err" | od -An -c | tr -d ' ')" = '\n' ] &&
        grep -q "^tl $cmd: " "$W/err" && [ ! -s "$W/out" ]; then
        ok "$what: exit 2, one line: $(cat "$W/err")"
    else
        bad "$what" "exit $rc, $lines lines: $(head -c 400 "$W/err")"
    fi
}

# help_has CMD REGEX what / help_lacks CMD REGEX what
help_has() {
    if "$TL" "$1" --help 2>/dev/null | tr '\n' ' ' | tr -s ' ' | grep -Eq -- "$2"; then ok "$3"; else bad "$3" "'tl $1 --help' lacks /$2/"; fi
}
help_lacks() {
    if "$TL" "$1" --help 2>/dev/null | tr '\n' ' ' | tr -s ' ' | grep -Eq -- "$2"; then bad "$3" "'tl $1 --help' has /$2/"; else ok "$3"; fi
}

# --- every command: --help, a bogus option, a bad value, a missing required option
for cmd in train partition orchestrator node run provision compare; do
    "$TL" "$cmd" --help >"$W/out" 2>"$W/err"
    rc=$?
    check "tl $cmd --help exits 0 with the usage on stdout" "exit $rc" \
        test $rc -eq 0 -a -s "$W/out" -a ! -s "$W/err"
    usage_error "tl $cmd --bogus" "$cmd" --bogus
done
usage_error "tl train --max-steps 0" train --max-steps 0
usage_error "tl train --epochs x" train --epochs x
usage_error "tl train --lr (no value)" train --lr
usage_error "tl train --resume without --checkpoint" train --resume
usage_error "tl partition --nodes 0" partition --nodes 0 --out "$W/p"
usage_error "tl partition without --out" partition --nodes 2
usage_error "tl orchestrator --heartbeat -1" orchestrator --nodes 2 --insecure --heartbeat -1
usage_error "tl orchestrator without --nodes" orchestrator --insecure
usage_error "tl node --id 0" node --connect 127.0.0.1:1 --id 0 --data "$W" --insecure
usage_error "tl node without --connect" node --id 1 --data "$W" --insecure
usage_error "tl node --give-up (no value)" node --give-up
usage_error "tl run --nodes x" run --nodes x
usage_error "tl run without --nodes" run --insecure
usage_error "tl run --tls-dir" run --nodes 2 --tls-dir "$W"
usage_error "tl provision --nodes 0" provision --nodes 0 --out "$W/k"
usage_error "tl provision without --out" provision --nodes 2
usage_error "tl compare --tolerance x" compare a b --tolerance x
usage_error "tl compare with one file" compare a
# a model typo and a cut the model lacks are usage errors, found before any data loads
usage_error "tl train --model typo" train --model linear:10,rleu
usage_error "tl run --model typo" run --nodes 2 --insecure --model linera:10
usage_error "tl run --cut 4 (default model: 4 linear layers)" run --nodes 2 --insecure --cut 4
usage_error "tl orchestrator --cut 3 for a 3-layer model" orchestrator --nodes 2 --insecure --model $M --cut 3
usage_error "tl run --scheme bogus" run --nodes 2 --insecure --scheme bogus
"$TL" frobnicate 2>"$W/err"
rc=$?
check "tl frobnicate: exit 2, one line" "exit $rc: $(cat "$W/err")" \
    test $rc -eq 2 -a "$(wc -l <"$W/err")" -eq 1

# --- help texts
help_has orchestrator "--tls-dir DIR .*KIT/orchestrator.* cert.pem, key.pem and ca.pem" \
    "orchestrator --tls-dir names KIT/orchestrator and its files"
help_has node "--tls-dir DIR .*KIT/node-K.* cert.pem, key.pem and ca.pem" \
    "node --tls-dir names KIT/node-K and its files"
help_lacks run "--tls-dir" "tl run --help does not list --tls-dir"
help_lacks node "never leave" "tl node --help does not promise inputs never leave"
help_has node "rebuild" "tl node --help says the orchestrator can rebuild the inputs"
help_has run "--scheme SCHEME" "tl run documents --scheme, as tl partition"
help_lacks run "--partition SCHEME" "tl run documents one name for the scheme"
for cmd in train orchestrator run; do
    help_has "$cmd" "--metrics FILE JSON lines, one per epoch: epoch, steps, train_loss, train_accuracy, test_loss, test_accuracy \(fractions; null without a test set\), with a test set also test_n, test_macro_f1, test_auc, test_auc_bound, test_precision, test_recall, test_confusion; lr, seconds, partial \(only when --max-steps cut the epoch short\) --batch-metrics also one line per batch: epoch, batch, steps, loss" \
        "tl $cmd --metrics help names every field written"
done
help_has train "partition directory \(node-1, node-2, ... from 'tl partition'\): trains on the nodes' data in node order" \
    "tl train --data help mentions a partition directory"
help_has orchestrator "--heartbeat MS .*\[2000\]" "orchestrator help shows the heartbeat default"
help_has node "--give-up SEC .*\[3600\]" "node help shows the give-up default"

require_data

# --- the metrics fields the help names are the ones written
"$TL" train --model $M --max-steps 3 --metrics "$W/m.jsonl" --batch-metrics --plan "$W/plan.jsonl" \
    --save "$W/model.safetensors" >/dev/null 2>"$W/train.err"
rc=$?
check "tl train --max-steps 3 succeeds" "$(tail -n 3 "$W/train.err")" test $rc -eq 0
ep=$(grep -v '"batch"' "$W/m.jsonl" | head -n 1)
for f in epoch steps train_loss train_accuracy test_loss test_accuracy lr seconds partial; do
    check "epoch metrics line has '$f'" "$ep" grep -q "\"$f\":" <<<"$ep"
done
bl=$(grep '"batch"' "$W/m.jsonl" | head -n 1)
check "batch metrics line is epoch, batch, steps, loss" "$bl" \
    grep -Eq '^\{"epoch":1,"batch":1,"steps":[0-9]+,"loss":[-0-9.e]+\}$' <<<"$bl"
check "--plan counts epochs and batches from 1, as the metrics" "$(head -c 100 "$W/plan.jsonl")" \
    grep -q '^{"epoch":1,"batch":1,"parts"' "$W/plan.jsonl"

# --- the __metadata__ of a saved model: 8 bytes little-endian length, then JSON
header() { # header FILE: prints the header JSON
    local n
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -lt 1000000 ] || return 1
    tail -c +9 "$1" | head -c "$n"
}
h=$(header "$W/model.safetensors")
check "saved model: header readable" "$(head -c 200 "$W/model.safetensors" | od -c | head -3)" test -n "$h"
for kv in '"model":"linear:16,linear:16,linear:10"' \
    '"normalize":"scale=1/255,mean=0.1307,std=0.3081"' \
    '"input_shape":"1,28,28"' '"classes":"0,1,2,3,4,5,6,7,8,9"' '"test_accuracy":"0.' \
    '"format":"pt"' '"optimizer":"adadelta"' '"steps":"3"' '"seed":"1"' '"producer":"tl '; do
    check "saved model metadata has $kv" "$h" grep -qF -- "$kv" <<<"$h"
done
# without a test set: no test_accuracy key (not "-1")
"$TL" partition --nodes 2 --out "$W/parts" >/dev/null 2>&1
"$TL" train --model $M --max-steps 2 --data "$W/parts" --save "$W/notest.safetensors" \
    >/dev/null 2>"$W/notest.err"
rc=$?
check "tl train on a partition directory, no test set, succeeds" "$(tail -n 3 "$W/notest.err")" test $rc -eq 0
h=$(header "$W/notest.safetensors")
check "no test set: no test_accuracy in the metadata" "$h" \
    test -n "$h" -a "$(grep -c test_accuracy <<<"$h")" -eq 0
check "no test set: the metadata still has normalize, input_shape and classes" "$h" \
    grep -q '"normalize":.*"input_shape":"1,28,28".*"classes":"0,' <<<"$h"

# --- tl run: --insecure warns truly (unix socket in a private directory); --partition still works
timeout "$TMO" "$TL" run --nodes 2 --insecure --model $M --cut 1 --max-steps 2 --partition iid \
    >/dev/null 2>"$W/run.err"
rc=$?
check "tl run --partition iid (the old name of --scheme) succeeds" "$(tail -n 3 "$W/run.err")" test $rc -eq 0
check "tl run --insecure warns about its unix socket, not a port" "$(grep warning "$W/run.err")" \
    grep -q "tl run: warning: --insecure: no TLS; the nodes connect over a unix socket in a private directory" "$W/run.err"
check "tl run --insecure does not mention a port" "$(grep warning "$W/run.err")" \
    test "$(grep -c 'reach the port' "$W/run.err")" -eq 0

# A model whose outputs do not fit a table's classes: refused before any node
# starts (exit 2, one line); a node that stops by itself stops tl run.
{ echo "a,b,label"; for i in 0 1 2 3 4 5 6 7 8; do echo "$i.5,$((i % 3)).25,$((i / 3))"; done; } >"$W/three.csv"
usage_error "tl run: 2 outputs for 3 classes" run --nodes 3 --insecure --data "$W/three.csv" \
    --model linear:4,relu,linear:2 --cut 1 --max-steps 1
check "... names the node and the classes" "$(cat "$W/err" 2>/dev/null)" \
    grep -q "2 outputs, but node 3's data has 3 classes" "$W/err"

finish
