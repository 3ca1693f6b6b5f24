#!/usr/bin/env bash
# e2e_manual.sh - the README's manual multi-process recipe.
#
#   bash tests/e2e_manual.sh <path to tl> <tests/data dir>
#
# The same run by hand, as on separate machines: `tl partition` into 3
# contiguous node data sets, one `tl orchestrator`, three `tl node` processes
# each started on its own (in the background here) with only its own data
# directory. 10 steps, then the same with `tl run --nodes 3`: the two models
# must be bit-identical (same plan, same data split, same sums in plan order).
# The commands are printed ("# $ ...") so that the README can show them.
# Last line: "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_manual.sh <tl> <tests/data dir>}
TL=$(realpath "$TL") # the script changes directory
STEPS=10 # DESIGN §2 promises 1e-5 after 10 steps (float32 drift grows with steps)



require_data

# show cmd...: print a command as the README would write it (tl for the path,
# paths relative to the work directory).
show() {
    local s="$*"
    s=${s//"$TL"/tl}
    s=${s//"$W/"/}
    echo "# \$ $s"
}
bg() { # bg OUT ERR cmd...: any command (shown), unlike lib.sh's bg (tl); LAST = its pid
    local out=$1 err=$2
    shift 2
    show "$@" "&"
    timeout "$TMO" "$@" >"$out" 2>"$err" &
    LAST=$!
    PIDS+=("$LAST")
}
fg() { # fg LOG cmd...: run in the foreground under timeout; RC = its status
    local log=$1
    shift
    show "$@"
    timeout "$TMO" "$@" >"$log" 2>&1
    RC=$?
    return "$RC"
}

echo "# 1. split the training data: one directory per node (copy node-K to machine K)"
if ! fg "$W/partition.log" "$TL" partition --data "$DATA" --nodes 3 --scheme contiguous --out "$W/parts"; then
    bad "tl partition --nodes 3 --scheme contiguous" "exit $RC: $(oneline "$W/partition.log")"
    finish
fi
ok "tl partition --nodes 3 --scheme contiguous --out parts"
for k in 1 2 3; do
    check "parts/node-$k holds its train files" "$(ls "$W/parts/node-$k" 2>&1 | tr '\n' ' ')" \
        test -s "$W/parts/node-$k/train-images-idx3-ubyte.gz" -a -s "$W/parts/node-$k/train-labels-idx1-ubyte.gz"
done

echo "# 2. on the orchestrator's machine (here port 0 picks a free port, written to --port-file;"
echo "#    on a real deployment: --listen 0.0.0.0:7000 and TLS kits from tl provision)"
bg "$W/orch.out" "$W/orch.err" "$TL" orchestrator --privacy open --nodes 3 --listen 127.0.0.1:0 --port-file "$W/port" \
    --insecure --max-steps "$STEPS" --save "$W/manual.st" --threads 1
orch=$LAST
if ! port=$(wait_port "$W/port" "$orch"); then
    bad "orchestrator writes its port to --port-file" "$(oneline "$W/orch.err")"
    finish
fi
ok "orchestrator listening on 127.0.0.1:$port"

echo "# 3. on each node's machine, with only its own data"
nodes=()
for k in 1 2 3; do
    # Each node from its own working directory, as on a machine of its own.
    mkdir -p "$W/machine-$k"
    (cd "$W/machine-$k" && exec timeout "$TMO" "$TL" node --privacy open --connect "127.0.0.1:$port" --id "$k" \
        --data "$W/parts/node-$k" --insecure --threads 1 >"$W/node-$k.out" 2>"$W/node-$k.err") &
    show "$TL" node --privacy open --connect "127.0.0.1:$port" --id "$k" --data "$W/parts/node-$k" --insecure --threads 1 "&"
    nodes+=($!)
    PIDS+=($!)
done

reap "$orch"
check "orchestrator exits 0" "exit $RC: $(oneline "$W/orch.err")" test "$RC" -eq 0
check "orchestrator saved manual.st" "missing" test -s "$W/manual.st"
check "orchestrator reports $STEPS steps" "$(oneline "$W/orch.out")" grep -q "$STEPS steps" "$W/orch.out" "$W/orch.err"
for k in 1 2 3; do
    reap "${nodes[$((k - 1))]}"
    check "node $k exits 0 when the run is over" "exit $RC: $(oneline "$W/node-$k.err")" test "$RC" -eq 0
done

echo "# 4. the same run in one command"
if fg "$W/auto.log" "$TL" run --privacy open --nodes 3 --max-steps "$STEPS" --save "$W/auto.st" --insecure --threads 1; then
    ok "tl run --nodes 3 --max-steps $STEPS exits 0"
    fg "$W/cmp" "$TL" compare "$W/auto.st" "$W/manual.st"
    cat "$W/cmp" | sed 's/^/#   /'
    check "manual recipe bit-identical to tl run --nodes 3" "$(oneline "$W/cmp")" grep -q '(bit-identical)' "$W/cmp"
else
    bad "tl run --nodes 3 --max-steps $STEPS" "exit $RC: $(oneline "$W/auto.log")"
fi

echo "# 5. and against centralized training"
if fg "$W/train.log" "$TL" train --max-steps "$STEPS" --save "$W/train.st" --threads 1; then
    fg "$W/cmp-train" "$TL" compare "$W/train.st" "$W/manual.st" --tolerance 1e-5
    rc=$RC
    cat "$W/cmp-train" | sed 's/^/#   /'
    check "manual recipe within 1e-5 of tl train ($(sed -n 's/.*\(relative [^ ]*\).*/\1/p' "$W/cmp-train"))" \
        "exit $rc: $(oneline "$W/cmp-train")" test "$rc" -eq 0
else
    bad "tl train --max-steps $STEPS" "exit $RC: $(oneline "$W/train.log")"
fi

finish
