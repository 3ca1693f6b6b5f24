#!/usr/bin/env bash
# e2e_sealed.sh - sealed mode's refusals and checks, hand-made deployment
# (issue 11, docs/protocol.md §8.1).
#
#   bash tests/e2e_sealed.sh <path to tl> <tests/data dir>
#
# Drives `tl orchestrator` and separate `tl node` processes on loopback:
#   - a sealed node without a group key stops at once, naming the way out;
#   - a node holding another group's key is refused with the reason, and a
#     node whose --privacy differs from the run's too; the run then completes;
#   - a node whose node side was perturbed by 2^-10 (test-only variable
#     TL_TEST_PERTURB_NODE_SIDE) stops the run at the first PARAM_MAC with
#     "node 2's node-side parameters differ from node 1's at step N";
#   - with TLS kits from `tl provision` (group.key in each node kit) every
#     node's `tl node --save` writes the same whole model;
#   - over shared memory, nodes that sit out steps get later sums in frames,
#     and the model is the --no-shm run's, bit for bit.
# Last line: "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_sealed.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")

require_data
cd "$W" || exit 1 # a stopped orchestrator writes tl-recovery.safetensors here

P=$W/parts
if ! timeout "$TMO" "$TL" partition --data "$DATA" --nodes 2 --out "$P" >"$W/partition.log" 2>&1; then
    bad "tl partition --nodes 2" "$(oneline "$W/partition.log")"
    finish
fi

# --- group keys for --insecure runs -----------------------------------------
timeout "$TMO" "$TL" provision --group-key-only "$W/k1" >"$W/k1.out" 2>&1
rc1=$?
timeout "$TMO" "$TL" provision --group-key-only "$W/k2" >"$W/k2.out" 2>&1
check "tl provision --group-key-only: exit 0, mode 0600" "exit $rc1, mode $(stat -c %a "$W/k1" 2>&1)" \
    test "$rc1" -eq 0 -a "$(stat -c %a "$W/k1" 2>/dev/null)" = 600

# --- a sealed node without a key --------------------------------------------
timeout 10 "$TL" node --connect 127.0.0.1:9 --id 1 --data "$P/node-1" --insecure >"$W/nokey.out" 2>"$W/nokey.err"
rc=$?
check "sealed node without a key: exit 2 at once" "exit $rc: $(oneline "$W/nokey.err")" test "$rc" -eq 2
check "... the message names the way out (tl provision, --group-key, --privacy open)" \
    "$(oneline "$W/nokey.err")" grep -q "tl provision.*--group-key FILE.*--privacy open" "$W/nokey.err"

# --- another group's key, another privacy mode -------------------------------
D=$W/refuse
mkdir -p "$D"
bg "$D/orch.out" "$D/orch.err" orchestrator --nodes 2 --insecure --max-steps 5 --threads 1 \
    --listen 127.0.0.1:0 --port-file "$D/port"
ORCH=$LAST
if ! port=$(wait_port "$D/port" "$ORCH"); then
    bad "orchestrator listens" "$(oneline "$D/orch.err")"
    finish
fi
bg "$D/n1.out" "$D/n1.err" node --connect "127.0.0.1:$port" --id 1 --data "$P/node-1" --insecure \
    --group-key "$W/k1" --threads 1
N1=$LAST
wait_grep "$D/orch.err" 'node 1 joined' || bad "node 1 joins" "$(oneline "$D/orch.err")"
timeout 30 "$TL" node --connect "127.0.0.1:$port" --id 2 --data "$P/node-2" --insecure \
    --group-key "$W/k2" --threads 1 >"$D/bad.out" 2>"$D/bad.err"
rc=$?
check "node 2 with another group's key: refused, exits nonzero" "exit $rc" test "$rc" -ne 0
check "... told why: \"holds another group's key\"" "$(oneline "$D/bad.err")" \
    grep -q "node 2 holds another group's key" "$D/bad.err"
check "... the orchestrator logs it" "$(oneline "$D/orch.err")" \
    grep -q "refused.*node 2 holds another group's key" "$D/orch.err"
timeout 30 "$TL" node --connect "127.0.0.1:$port" --id 2 --data "$P/node-2" --insecure \
    --privacy open --threads 1 >"$D/open.out" 2>"$D/open.err"
rc=$?
check "an open node at a sealed run: refused with the reason" "exit $rc: $(oneline "$D/open.err")" \
    grep -q "node 2 wants open mode, this run is sealed" "$D/open.err"
bg "$D/n2.out" "$D/n2.err" node --connect "127.0.0.1:$port" --id 2 --data "$P/node-2" --insecure \
    --group-key "$W/k1" --threads 1
N2=$LAST
reap "$ORCH"
check "then node 2 with the group's key joins and the run completes" \
    "orchestrator exit $RC: $(oneline "$D/orch.err")" test "$RC" -eq 0
reap "$N1"
r1=$RC
reap "$N2"
check "... both nodes exit 0" "exit $r1 $RC" test "$r1" -eq 0 -a "$RC" -eq 0

# --- forced divergence ------------------------------------------------------
D=$W/diverge
mkdir -p "$D"
bg "$D/orch.out" "$D/orch.err" orchestrator --nodes 2 --insecure --max-steps 8 --mac-every 3 \
    --threads 1 --listen 127.0.0.1:0 --port-file "$D/port"
ORCH=$LAST
port=$(wait_port "$D/port" "$ORCH") || bad "orchestrator listens" "$(oneline "$D/orch.err")"
bg "$D/n1.out" "$D/n1.err" node --connect "127.0.0.1:$port" --id 1 --data "$P/node-1" --insecure \
    --group-key "$W/k1" --threads 1 --give-up 5
N1=$LAST
TL_TEST_PERTURB_NODE_SIDE=2 bg "$D/n2.out" "$D/n2.err" node --connect "127.0.0.1:$port" --id 2 \
    --data "$P/node-2" --insecure --group-key "$W/k1" --threads 1 --give-up 5
N2=$LAST
reap "$ORCH"
check "node side perturbed (one weight, by 2^-10) at node 2: the run stops nonzero" \
    "exit $RC: $(oneline "$D/orch.err")" test "$RC" -ne 0
check "... with \"node 2's node-side parameters differ from node 1's at step 3 (divergence is a bug)\"" \
    "$(oneline "$D/orch.err")" \
    grep -q "node 2's node-side parameters differ from node 1's at step 3 (divergence is a bug)" "$D/orch.err"
kill "$N1" "$N2" 2>/dev/null
reap "$N1"
reap "$N2"

# --- kits: the key from the kit, tl node --save -------------------------------
D=$W/kits
mkdir -p "$D"
if ! timeout "$TMO" "$TL" provision --nodes 2 --out "$D/kit" >"$D/prov.out" 2>&1; then
    bad "tl provision --nodes 2" "$(oneline "$D/prov.out")"
    finish
fi
check "provision: node kits hold group.key (0600), the orchestrator's kit only its id" \
    "$(ls -l "$D/kit/node-1" "$D/kit/orchestrator" | tr '\n' '|')" \
    test "$(stat -c %a "$D/kit/node-1/group.key" 2>/dev/null)" = 600 -a \
    -s "$D/kit/orchestrator/group-key.id" -a ! -e "$D/kit/orchestrator/group.key"
bg "$D/orch.out" "$D/orch.err" orchestrator --nodes 2 --tls-dir "$D/kit/orchestrator" \
    --max-steps 5 --threads 1 --listen 127.0.0.1:0 --port-file "$D/port"
ORCH=$LAST
port=$(wait_port "$D/port" "$ORCH") || bad "orchestrator listens" "$(oneline "$D/orch.err")"
for k in 1 2; do
    bg "$D/n$k.out" "$D/n$k.err" node --connect "localhost:$port" --id "$k" --data "$P/node-$k" \
        --tls-dir "$D/kit/node-$k" --threads 1 --save "$D/model-$k.st"
    eval "N$k=\$LAST"
done
reap "$ORCH"
check "TLS kits: the sealed run completes" "exit $RC: $(oneline "$D/orch.err")" test "$RC" -eq 0
reap "$N1"
reap "$N2"
timeout "$TMO" "$TL" compare "$D/model-1.st" "$D/model-2.st" >"$D/cmp" 2>&1
check "tl node --save: both nodes write the same whole model (bit-identical)" "$(oneline "$D/cmp")" \
    grep -q 'bit-identical' "$D/cmp"
hdr=$(head -c 4096 "$D/model-1.st" | tr -c '[:print:]' ' ')
check "tl node --save: the model says how to feed it (normalize, input_shape, classes)" "$hdr" \
    grep -q '"normalize":"scale=1/255,mean=0.1307,std=0.3081".*"input_shape":"1,28,28".*"classes":"0,1,2' \
    <<<"$hdr"

# --- split mode, a large orchestrator side: FINAL fits the node's frame cap ---
# (cut activations 4 wide, an orchestrator side of 2.1 MB: FINAL is larger
# than any FORWARD or BACKWARD of split mode)
timeout "$TMO" "$TL" run --nodes 2 --mode split --cut 1 --model linear:4,linear:1024,linear:512,linear:10 \
    --max-steps 2 --insecure --threads 1 --save "$W/big.st" >"$W/big.log" 2>&1
rc=$?
check "split, 2.1 MB orchestrator side: the sealed run ends with FINAL and saves the model" \
    "exit $rc: $(tail -n 3 "$W/big.log" | tr '\n' '|')" test "$rc" -eq 0 -a -s "$W/big.st"

# --- shared memory, nodes sitting out steps -----------------------------------
# Batches of 4 over 3 nodes leave a node out of about one step in five: its
# region may still hold an unread sum, so the next sum travels in the frame
# (docs/protocol.md §8.2). The model is the --no-shm run's, bit for bit.
timeout "$TMO" "$TL" train --max-steps 1 --lr 0 --threads 1 --save "$W/sit-init.st" >"$W/sit-init.log" 2>&1
for v in shm sock; do
    opt=()
    [ $v = sock ] && opt=(--no-shm)
    timeout "$TMO" "$TL" run --nodes 3 --batch-size 4 --max-steps 200 --init "$W/sit-init.st" \
        --threads 1 --save "$W/sit-$v.st" "${opt[@]}" >"$W/sit-$v.log" 2>&1
    rc=$?
    check "batch 4 over 3 nodes ($v): the sealed run completes" \
        "exit $rc: $(tail -n 3 "$W/sit-$v.log" | tr '\n' '|')" test "$rc" -eq 0
done
# over shared memory a batch moves ~12 KB per node when sums stay in the
# regions; sums in frames (1.9 MB each) lift the average well above that
out=$(sed -n 's/.*(\([0-9]*\) KB out and.*/\1/p' "$W/sit-shm.log")
check "shared memory: the sums of steps after a sat-out one travel in frames ($out KB out per batch per node)" \
    "$(tail -n 2 "$W/sit-shm.log" | tr '\n' '|')" test "${out:-0}" -gt 100 -a "${out:-0}" -lt 1900
timeout "$TMO" "$TL" compare "$W/sit-shm.st" "$W/sit-sock.st" >"$W/sit.cmp" 2>&1
check "shared memory and sockets give the same model (bit-identical)" "$(oneline "$W/sit.cmp")" \
    grep -q 'bit-identical' "$W/sit.cmp"

finish
