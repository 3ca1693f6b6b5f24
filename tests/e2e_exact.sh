#!/usr/bin/env bash
# e2e_exact.sh - the distributed system computes what centralized training computes.
#
#   bash tests/e2e_exact.sh <path to tl> <tests/data dir>
#
# For a linear and a ReLU model, from one shared --init file, 10 steps of
# `tl train` against 10 steps of `tl run` for N in {1,2,3,5} nodes, cut in
# {1,2,3} and both modes (DESIGN §2): one node bit-identical, several nodes
# max|dθ|/max|θ| <= 1e-5, in sealed mode (the default) and --privacy open
# (open, one node: bit-identical; sealed sums in fixed point: within 1e-5).
# Then TLS against plaintext (bit-identical), one epoch of sealed tl run
# against tl train (test accuracy within 0.3 points), and the --plan file of
# a 3-node run. Prints a table of the relative differences,
# then as the last line "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_exact.sh <tl> <tests/data dir>}
TL=$(realpath "$TL") # the script changes directory
RC=0 # status of the last run()



require_data

# run LOG cmd...: runs tl under timeout, stdout+stderr into LOG; returns its status.
run() {
    local log=$1
    shift
    timeout "$TMO" "$TL" "$@" >"$log" 2>&1
    RC=$?
    return $RC
}
# Last lines of a log, on one line, for FAIL details.
tailof() { tail -n 3 "$1" 2>/dev/null | tr '\n' '|'; }
# The "relative X" figure of a `tl compare` output.
relative() { sed -n 's/.*relative \([^ ]*\).*/\1/p' "$1" | head -n 1; }

TABLE=$W/table
printf '%-6s %-6s %2s %3s %-8s %s\n' model privacy N cut mode relative >"$TABLE"

declare -A MODELS=(
    [linear]="linear:256,linear:128,linear:64,linear:10"
    [relu]="linear:256,relu,linear:128,relu,linear:64,relu,linear:10"
)

for tag in linear relu; do
    model=${MODELS[$tag]}
    D=$W/$tag
    mkdir -p "$D"

    # The shared starting point: lr 0 leaves the parameters as initialized.
    # A seed other than the runs' own (1) makes sure --init is really used.
    if ! run "$D/init.log" train --model "$model" --seed 7 --epochs 1 --max-steps 1 --lr 0 \
        --save "$D/init.st" --threads 1; then
        bad "$tag: create init.st" "exit $RC: $(tailof "$D/init.log")"
        continue
    fi
    run "$D/init3.log" train --model "$model" --seed 7 --epochs 1 --max-steps 3 --lr 0 \
        --save "$D/init3.st" --threads 1
    timeout "$TMO" "$TL" compare "$D/init.st" "$D/init3.st" >"$D/cmp-init" 2>&1
    if grep -q 'bit-identical' "$D/cmp-init"; then
        ok "$tag: --lr 0 leaves the parameters unchanged (1 and 3 steps bit-identical)"
    else
        bad "$tag: --lr 0 leaves the parameters unchanged" "$(cat "$D/cmp-init")"
    fi
    run "$D/seed1.log" train --model "$model" --epochs 1 --max-steps 1 --lr 0 \
        --save "$D/seed1.st" --threads 1
    timeout "$TMO" "$TL" compare "$D/init.st" "$D/seed1.st" >"$D/cmp-seed" 2>&1
    if [ -s "$D/seed1.st" ] && ! grep -q 'bit-identical' "$D/cmp-seed"; then
        ok "$tag: init.st (seed 7) differs from the seed-1 initialization"
    else
        bad "$tag: init.st (seed 7) differs from the seed-1 initialization" "$(cat "$D/cmp-seed")"
    fi

    if ! run "$D/train.log" train --model "$model" --init "$D/init.st" --max-steps 10 \
        --save "$D/train.st" --threads 1; then
        bad "$tag: tl train --init init.st --max-steps 10" "exit $RC: $(tailof "$D/train.log")"
        continue
    fi
    ok "$tag: tl train --init init.st --max-steps 10"

    for P in sealed open; do
    for N in 1 2 3 5; do
        for C in 1 2 3; do
            for M in traverse split; do
                what="$tag: run --privacy $P --nodes $N --cut $C --mode $M"
                st=$D/run-$P-$N-$C-$M.st
                if ! run "$D/run-$P-$N-$C-$M.log" run --privacy "$P" --nodes "$N" --cut "$C" \
                    --mode "$M" --model "$model" --init "$D/init.st" --max-steps 10 --save "$st" \
                    --insecure --threads 1; then
                    bad "$what" "tl run exit $RC: $(tailof "$D/run-$P-$N-$C-$M.log")"
                    printf '%-6s %-6s %2s %3s %-8s %s\n' "$tag" "$P" "$N" "$C" "$M" "run-failed" >>"$TABLE"
                    continue
                fi
                cmp=$D/cmp-$P-$N-$C-$M
                timeout "$TMO" "$TL" compare "$D/train.st" "$st" --tolerance 1e-5 >"$cmp" 2>&1
                rc=$?
                rel=$(relative "$cmp")
                # open, one node: the same float operations in the same order. Sealed
                # sums in 64-bit fixed point (2^-32 resolution): within 1e-5.
                if [ "$N" -eq 1 ] && [ "$P" = open ]; then
                    if [ "$rc" -eq 0 ] && grep -q '(bit-identical)' "$cmp"; then
                        ok "$what: bit-identical to tl train (relative $rel)"
                        rel="$rel (bit-identical)"
                    else
                        bad "$what: bit-identical to tl train" "compare exit $rc: $(tailof "$cmp")"
                    fi
                else
                    if [ "$rc" -eq 0 ] && [ -n "$rel" ]; then
                        ok "$what: max|d|/max|theta| = $rel <= 1e-5"
                    else
                        bad "$what: within 1e-5 of tl train" "compare exit $rc: $(tailof "$cmp")"
                    fi
                fi
                printf '%-6s %-6s %2s %3s %-8s %s\n' "$tag" "$P" "$N" "$C" "$M" "${rel:-?}" >>"$TABLE"
            done
        done
    done
    done
done

# --- TLS: tl run provisions its own CA and kits; the numbers must not change --
D=$W/linear
if [ -s "$D/run-sealed-3-2-traverse.st" ]; then
    if run "$W/tls3.log" run --nodes 3 --cut 2 --mode traverse --init "$D/init.st" --max-steps 10 \
        --save "$W/tls3.st" --threads 1; then
        ok "TLS: tl run --nodes 3 (no --insecure) completes"
        if grep -qi 'tls' "$W/tls3.log" && ! grep -qi 'plaintext' "$W/tls3.log"; then
            ok "TLS: the log says the connections are TLS, not plaintext"
        else
            bad "TLS: the log says the connections are TLS" "$(grep -i -m 3 -e tls -e plaintext "$W/tls3.log" | tr '\n' '|')"
        fi
        timeout "$TMO" "$TL" compare "$D/run-sealed-3-2-traverse.st" "$W/tls3.st" >"$W/cmp-tls3" 2>&1
        if grep -q '(bit-identical)' "$W/cmp-tls3"; then
            ok "TLS: 3 nodes over TLS bit-identical to 3 nodes --insecure"
        else
            bad "TLS: 3 nodes over TLS bit-identical to --insecure" "$(cat "$W/cmp-tls3")"
        fi
    else
        bad "TLS: tl run --nodes 3 (no --insecure)" "exit $RC: $(tailof "$W/tls3.log")"
    fi
else
    bad "TLS: 3 nodes" "no --insecure result to compare with"
fi
if [ -s "$D/train.st" ] &&
    run "$W/tls1.log" run --privacy open --nodes 1 --init "$D/init.st" --max-steps 10 \
        --save "$W/tls1.st" --threads 1; then
    timeout "$TMO" "$TL" compare "$D/train.st" "$W/tls1.st" >"$W/cmp-tls1" 2>&1
    if grep -q '(bit-identical)' "$W/cmp-tls1"; then
        ok "TLS: 1 node over TLS bit-identical to tl train (open)"
    else
        bad "TLS: 1 node over TLS bit-identical to tl train (open)" "$(cat "$W/cmp-tls1")"
    fi
else
    bad "TLS: tl run --nodes 1 (no --insecure)" "exit $RC: $(tailof "$W/tls1.log")"
fi

# --- shared memory: tl run's nodes (unix sockets) map the parameters and write
# their gradients in shared memory; --no-shm sends both over the sockets. The
# numbers must not change, in either mode.
D=$W/linear
for M in traverse split; do
    ref=$D/run-open-3-2-$M.st
    if [ ! -s "$ref" ]; then
        bad "shm: $M" "no 3-node result to compare with"
        continue
    fi
    if grep -q 'shared memory' "$D/run-open-3-2-$M.log"; then
        ok "shm: $M: the nodes joined with shared memory ($(grep -c 'shared memory' "$D/run-open-3-2-$M.log") of 3)"
    else
        bad "shm: $M: the nodes joined with shared memory" "$(grep -m 3 'joined' "$D/run-open-3-2-$M.log" | tr '\n' '|')"
    fi
    if run "$W/noshm-$M.log" run --privacy open --nodes 3 --cut 2 --mode "$M" --init "$D/init.st" --max-steps 10 \
        --save "$W/noshm-$M.st" --insecure --threads 1 --no-shm; then
        timeout "$TMO" "$TL" compare "$ref" "$W/noshm-$M.st" >"$W/cmp-noshm-$M" 2>&1
        if grep -q '(bit-identical)' "$W/cmp-noshm-$M" && ! grep -q 'shared memory' "$W/noshm-$M.log"; then
            ok "shm: $M: --no-shm (tensors over the sockets) bit-identical to shared memory"
        else
            bad "shm: $M: --no-shm bit-identical to shared memory" "$(cat "$W/cmp-noshm-$M")"
        fi
    else
        bad "shm: $M: tl run --no-shm" "exit $RC: $(tailof "$W/noshm-$M.log")"
    fi
done

# sealed traverse: the masked vectors and the masked sum go through each node's
# shared gradient region (SEALED_STEP then carries no sum); same numbers.
ref=$D/run-sealed-3-2-traverse.st
if [ -s "$ref" ] && grep -q 'shared memory' "$D/run-sealed-3-2-traverse.log" &&
    run "$W/noshm-sealed.log" run --nodes 3 --cut 2 --init "$D/init.st" --max-steps 10 \
        --save "$W/noshm-sealed.st" --insecure --threads 1 --no-shm; then
    timeout "$TMO" "$TL" compare "$ref" "$W/noshm-sealed.st" >"$W/cmp-noshm-sealed" 2>&1
    check "shm: sealed traverse: --no-shm bit-identical to shared memory" \
        "$(cat "$W/cmp-noshm-sealed")" grep -q '(bit-identical)' "$W/cmp-noshm-sealed"
else
    bad "shm: sealed traverse: shared memory and --no-shm runs" "exit $RC: $(tailof "$W/noshm-sealed.log")"
fi

# --- one epoch, sealed: the same test accuracy as tl train (+-0.3 points) -----
# Sealed mode's orchestrator holds no node side: tl run takes the final model
# from node 1 (tl node --save) and evaluates that.
acc_of() { sed -n 's/.*done in .*test accuracy \([0-9.]*\)%.*/\1/p' "$1" | tail -n 1; }
D=$W/linear
if run "$W/epoch-train.log" train --init "$D/init.st" --epochs 1 --threads 2 --save "$W/epoch-train.st" &&
    run "$W/epoch-run.log" run --nodes 3 --init "$D/init.st" --epochs 1 --insecure --threads 1 \
        --save "$W/epoch-run.st"; then
    a=$(acc_of "$W/epoch-train.log")
    b=$(acc_of "$W/epoch-run.log")
    if [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; exit !(d <= 0.3 && d >= -0.3) }'; then
        ok "one epoch, sealed 3 nodes: test accuracy $b% vs tl train $a% (within 0.3 points)"
    else
        bad "one epoch, sealed 3 nodes: test accuracy within 0.3 points of tl train" "train '$a', run '$b': $(tailof "$W/epoch-run.log")"
    fi
else
    bad "one epoch: tl train / tl run (sealed)" "exit $RC: $(tailof "$W/epoch-train.log") $(tailof "$W/epoch-run.log")"
fi

# --- the traversal plan ---------------------------------------------------------
# Summarize a plan line as "node:count ..." and list its rows as global indices
# (node k's local row r is global (k-1)*SIZE + r, SIZE = 20000 for 3 contiguous
# nodes of 60000), one per line. Plain awk: no python in CI.
plan_counts() {
    awk '{ n = split($0, part, /\{"node":/)
           for (i = 2; i <= n; i++) {
               id = part[i]; sub(/[^0-9].*/, "", id)
               r = part[i]; sub(/^[^[]*\[/, "", r); sub(/\].*/, "", r)
               c = (r == "") ? 0 : split(r, xs, ",")
               printf "%s%s:%d", (i > 2 ? " " : ""), id, c
           }
           printf "\n" }'
}
plan_rows() { # plan_rows SIZE: global row indices of one plan line
    awk -v size="$1" '{ n = split($0, part, /\{"node":/)
           for (i = 2; i <= n; i++) {
               id = part[i]; sub(/[^0-9].*/, "", id)
               r = part[i]; sub(/^[^[]*\[/, "", r); sub(/\].*/, "", r)
               c = split(r, xs, ",")
               for (j = 1; j <= c; j++) print (id - 1) * size + xs[j]
           } }'
}
if run "$W/plan.log" run --nodes 3 --max-steps 10 --plan "$W/plan.jsonl" --insecure --threads 1; then
    first=$(head -n 1 "$W/plan.jsonl" | plan_counts)
    total=$(echo "$first" | tr ' ' '\n' | awk -F: '{ t += $2 } END { print t + 0 }')
    ids=$(echo "$first" | tr ' ' '\n' | cut -d: -f1 | tr '\n' ' ')
    if [ "$ids" = "1 2 3 " ] && [ "$total" -eq 64 ]; then
        ok "plan: first line names nodes 1, 2, 3 with row counts summing to 64 ($first)"
    else
        bad "plan: first line names nodes 1, 2, 3 with rows summing to 64" "got '$first' (total $total)"
    fi
    # Each node's rows ascending and inside its 20000 samples.
    if head -n 1 "$W/plan.jsonl" | awk '{ n = split($0, part, /\{"node":/)
            for (i = 2; i <= n; i++) {
                r = part[i]; sub(/^[^[]*\[/, "", r); sub(/\].*/, "", r)
                c = split(r, xs, ",")
                for (j = 1; j <= c; j++) {
                    if (xs[j] + 0 < 0 || xs[j] + 0 >= 20000) bad = 1
                    if (j > 1 && xs[j] + 0 <= xs[j - 1] + 0) bad = 1
                }
            } }
            END { exit bad }'; then
        ok "plan: each node's rows are ascending local indices below 20000"
    else
        bad "plan: each node's rows ascending local indices" "$(head -c 300 "$W/plan.jsonl")"
    fi
    # The same batch as centralized training's first batch (DESIGN §3).
    if run "$W/tplan.log" train --max-steps 1 --plan "$W/tplan.jsonl" --threads 1 &&
        cmp -s <(head -n 1 "$W/plan.jsonl" | plan_rows 20000) <(head -n 1 "$W/tplan.jsonl" | plan_rows 60000) &&
        [ "$(head -n 1 "$W/tplan.jsonl" | plan_rows 60000 | wc -l)" -eq 64 ]; then
        ok "plan: batch 0 is tl train's batch 0, same rows in the same order"
    else
        bad "plan: batch 0 is tl train's batch 0" "run: $(head -c 200 "$W/plan.jsonl") train: $(head -c 200 "$W/tplan.jsonl" 2>/dev/null)"
    fi
else
    bad "plan: tl run --nodes 3 --plan" "exit $RC: $(tailof "$W/plan.log")"
fi

echo "# relative difference max|A-B|/max|A| after 10 steps, tl train vs tl run:"
sed 's/^/# /' "$TABLE"
finish
