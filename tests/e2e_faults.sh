#!/usr/bin/env bash
# e2e_faults.sh - a distributed run survives lost nodes and a lost orchestrator
# and ends bit-identical to an undisturbed run (DESIGN §6, issue 4 item 7).
#
#   bash tests/e2e_faults.sh <path to tl> <tests/data dir>
#
# Every scenario runs twice: in sealed mode (the default: the node side stays
# at the nodes; a node back without it gets a live node's, sealed; a resumed
# orchestrator rolls the nodes back to their saved side of its checkpoint;
# the model is node 1's --save) and with --privacy open; each is compared
# with an undisturbed run of its own mode.
# Every run: 3 nodes (contiguous partition of Fashion-MNIST), plaintext
# (--insecure; TLS is tested elsewhere), --threads 1, --max-steps 300,
# --heartbeat 300, --reconnect-timeout 30 unless stated. Scenarios:
#   a. reference: an undisturbed run -> ref.st (and a second one, identical)
#   b. kill -9 a random node at a random step, restart it
#   c. kill -STOP a node until the orchestrator declares it lost (4 heartbeats),
#      then (c1) kill -CONT it, (c2) kill it and start a fresh one
#   d. kill -9 the orchestrator (--checkpoint, --checkpoint-every 50), start it
#      again on the same port with --resume; the nodes reconnect by themselves
#   e. --resume with a checkpoint of another configuration (--seed 2): refused
#      at once, before listening and without any node
#   f. a node lost for good with --reconnect-timeout 3: non-zero exit, a message
#      saying how to resume, a recovery file; the other nodes keep retrying (as
#      the message says); resuming on the same port with node K restarted completes
#   h. b over a unix socket, where the nodes share memory with the orchestrator
#   i. tl run --checkpoint, then tl run --resume (new node processes; sealed:
#      they roll back to the node side kept next to the checkpoint) against an
#      uninterrupted tl run from the same --init
#   g. (not simulated) a crash in the middle of writing a checkpoint: covered by
#      the atomic write (temporary file, fsync, rename)
# b, c, d, f end with `tl compare ref.st X` printing "(bit-identical)".
# Random choices come from $RANDOM, seeded by TL_FAULT_SEED if set (printed).
# Each check prints "ok - ..." or "FAIL - ...: detail"; the last line is
# "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"
# every check names the privacy mode it ran in
ok() { pass=$((pass + 1)); echo "ok - ${PRIV:+[$PRIV] }$1"; }
bad() { fail=$((fail + 1)); echo "FAIL - ${PRIV:+[$PRIV] }$1: $2"; }

TL=${1:?usage: e2e_faults.sh <tl> <tests/data dir>}
TL=$(realpath "$TL") # the script changes directory
case $TL in /*) ;; *) TL=$PWD/$TL ;; esac
STEPS=300


SEED=${TL_FAULT_SEED:-$(( $(date +%s) % 32768 ))}
RANDOM=$SEED
echo "# random seed $SEED (rerun with TL_FAULT_SEED=$SEED)"


require_data

T0=$SECONDS
if ! timeout "$TMO" "$TL" partition --data "$DATA" --nodes 3 --out "$W/parts" >"$W/partition.log" 2>&1; then
    bad "tl partition --nodes 3" "$(tail -n 3 "$W/partition.log" | tr '\n' '|')"
    finish
fi

BASE=(--nodes 3 --insecure --threads 1 --max-steps "$STEPS" --heartbeat 300)
# the sealed nodes' group key (--insecure runs have no kits)
if ! timeout "$TMO" "$TL" provision --group-key-only "$W/group.key" >"$W/provision.log" 2>&1; then
    bad "tl provision --group-key-only" "$(tail -n 3 "$W/provision.log" | tr '\n' '|')"
    finish
fi
# set_privacy MODE: the orchestrator's options (COMMON) and the nodes' extra
# options (NODE_PRIV) for privacy mode MODE. Sealed (the default) nodes need
# the group key: --insecure runs have no kits, so one is made for them.
set_privacy() {
    if [ "$1" = open ]; then
        COMMON=("${BASE[@]}" --privacy open)
        NODE_PRIV=(--privacy open)
    else
        COMMON=("${BASE[@]}")
        NODE_PRIV=(--group-key "$W/group.key")
    fi
}

# --- helpers --------------------------------------------------------------

# spawn VAR DIR LOG cmd...: starts `timeout TMO cmd...` in the background with
# DIR as working directory and stdout+stderr to LOG; VAR gets the pid.
# In sealed mode the orchestrator holds no node side and cannot --save: the
# --save FILE of an orchestrator goes to node 1 instead (SAVE_TO; the whole
# model, as 'tl node --save' writes it), which start_node passes on.
spawn() {
    local __var=$1 dir=$2 log=$3
    shift 3
    local args=("$@") kept=() i
    if [ "$PRIV" = sealed ] && [ "${args[1]:-}" = orchestrator ]; then
        for ((i = 0; i < ${#args[@]}; i++)); do
            if [ "${args[i]}" = --save ]; then
                SAVE_TO=${args[i + 1]}
                i=$((i + 1))
            else
                kept+=("${args[i]}")
            fi
        done
        args=("${kept[@]}")
    fi
    (cd "$dir" && exec timeout "$TMO" "${args[@]}") >"$log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "$__var" '%s' "$pid"
}
# The tl process under a timeout wrapper (empty if none within 3 s).
tl_pid() {
    local p=$1 c i
    for ((i = 0; i < 300; i++)); do
        c=$(cat "/proc/$p/task/$p/children" 2>/dev/null)
        c=${c%% *}
        if [ -n "$c" ]; then
            echo "$c"
            return 0
        fi
        kill -0 "$p" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}
# wait_file FILE SECONDS: until FILE is non-empty.
wait_file() {
    local i
    for ((i = 0; i < $2 * 100; i++)); do
        [ -s "$1" ] && return 0
        sleep 0.01
    done
    return 1
}
# Steps done so far according to a --batch-metrics file (0 if none yet).
steps_of() {
    local l
    l=$(tail -n 1 "$1" 2>/dev/null)
    case $l in *'"steps":'*) ;; *) echo 0; return ;; esac
    l=${l#*\"steps\":}
    l=${l%%[!0-9]*}
    echo "${l:-0}"
}
# wait_steps METRICS R PID SECONDS: until the run reports >= R steps; fails if
# PID exits first or the time runs out.
wait_steps() {
    local i
    for ((i = 0; i < $4 * 200; i++)); do
        [ "$(steps_of "$1")" -ge "$2" ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.005
    done
    return 1
}
# wait_log FILE REGEX SECONDS
wait_log() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# wait_rc PID: waits for a background job (bounded by its timeout); sets RC.
wait_rc() {
    wait "$1" 2>/dev/null
    RC=$?
}
# start_orch VAR DIR NAME args...: an orchestrator listening on 127.0.0.1:0
# unless args say otherwise; NAME.log, NAME.port, NAME.metrics in DIR.
start_orch() {
    local __v=$1 dir=$2 name=$3
    shift 3
    rm -f "$dir/$name.port"
    spawn "$__v" "$dir" "$dir/$name.log" "$TL" orchestrator --listen 127.0.0.1:0 \
        --port-file "$dir/$name.port" --metrics "$dir/$name.metrics" --batch-metrics "${COMMON[@]}" "$@"
}
# start_node VAR DIR ID PORT LOG
start_node() {
    spawn "$1" "$2" "$5" "$TL" node --connect "127.0.0.1:$4" --id "$3" \
        --data "$W/parts/node-$3" --insecure --threads 1 "${NODE_PRIV[@]}" $(node_save "$3")
}
# node_save ID: sealed, node 1: --save SAVE_TO (see spawn)
node_save() { [ "$PRIV" = sealed ] && [ "$1" = 1 ] && echo "--save $SAVE_TO"; }
# same A B: `tl compare` says bit-identical; CMP holds its output.
same() {
    CMP=$(timeout 60 "$TL" compare "$1" "$2" 2>&1)
    [ $? -eq 0 ] && grep -q '(bit-identical)' <<<"$CMP"
}
tailof() { tail -n 4 "$1" 2>/dev/null | tr '\n' '|'; }
# lost_ids LOG: the node ids the orchestrator declared lost, sorted, unique.
lost_ids() { sed -n 's/.*orchestrator: node \([0-9]*\) (.*) lost: .*/\1/p' "$1" | sort -u | tr '\n' ' '; }

# check_bit WHAT FILE: compares FILE with the reference.
check_bit() {
    if [ ! -s "$2" ]; then
        bad "$1: bit-identical to ref.st" "$2 was not written"
    elif same "$RD/a/ref.st" "$2"; then
        ok "$1: bit-identical to ref.st ($(grep -o 'tensors.*' <<<"$CMP"))"
    else
        bad "$1: bit-identical to ref.st" "$CMP"
    fi
}
# check_transfer WHAT: sealed mode: node K came back without the node side of
# the run's step and got a live node's, sealed and relayed (orchestrator log),
# and installed it (its log FILE).
check_transfer() {
    [ "$PRIV" = sealed ] || return 0
    local sent got
    sent=$(grep -m1 -oE "node $K: gets the node side of step [0-9]+ from node [0-9]+ \(sealed, [0-9]+ bytes, relayed\)" "$D/orch.log")
    got=$(grep -m1 -oE "took the node side of step [0-9]+ from node [0-9]+ \(sealed, [0-9]+ bytes\)" "$2")
    if [ -n "$sent" ] && [ -n "$got" ]; then
        ok "$1: node $K got the node side from a live node: $sent / node $K: $got"
    else
        bad "$1: node $K got the node side from a live node" "$(grep -E 'node side' "$D/orch.log" "$2" | tr '\n' '|')"
    fi
}
# check_nodes_done WHAT LOGDIR PIDVAR...: every listed node job exited 0.
# check_restarted TAG PID: node K's process is now PID; only node K was
# declared lost, every node exits 0 and $D/out.st is bit-identical to the
# reference.
check_restarted() {
    local others=() i lost
    lost=$(lost_ids "$D/orch.log")
    if [ "$lost" = "$K " ]; then
        ok "$1: only node $K was dropped"
    else
        bad "$1: only node $K was dropped" "nodes declared lost: $lost; $(grep ' lost: ' "$D/orch.log" | tr '\n' '|')"
    fi
    for i in 1 2 3; do [ "$i" -ne "$K" ] && others+=("$(eval echo "\$N$i")"); done
    check_nodes_done "$1" "${others[@]}" "$2"
    check_bit "$1" "$D/out.st"
}
# signal_node SIG: picks a node K and a step R (20..169) at random, waits for
# the run in $D to reach step R and sends node K's tl process SIG. Sets K, R,
# victim (that pid), at (the step it was signalled at) and NK (a name for the
# variable holding node K's spawned pid). Nonzero if the run ended or stalled
# before step R.
signal_node() {
    K=$((1 + RANDOM % 3))
    R=$((20 + RANDOM % 150))
    declare -gn NK=N$K
    wait_steps "$D/orch.metrics" "$R" "$OP" 60 && victim=$(tl_pid "$NK") && kill "-$1" "$victim" ||
        return 1
    at=$(steps_of "$D/orch.metrics")
}
check_nodes_done() {
    local what=$1 p rcs="" allok=1
    shift
    for p in "$@"; do
        wait_rc "$p"
        rcs="$rcs $RC"
        [ "$RC" -eq 0 ] || allok=0
    done
    if [ $allok -eq 1 ]; then ok "$what: the nodes exit 0"; else bad "$what: the nodes exit 0" "exit codes$rcs"; fi
}

# A run of the standard configuration; the orchestrator's port goes to PORT.
# run_plain DIR NAME args...: orchestrator + 3 nodes, sets OP N1 N2 N3 PORT.
run_start() {
    local dir=$1 name=$2
    shift 2
    mkdir -p "$dir"
    start_orch OP "$dir" "$name" "$@"
    if ! wait_file "$dir/$name.port" 20; then
        PORT=
        return 1
    fi
    PORT=$(cat "$dir/$name.port")
    start_node N1 "$dir" 1 "$PORT" "$dir/n1.log"
    start_node N2 "$dir" 2 "$PORT" "$dir/n2.log"
    start_node N3 "$dir" 3 "$PORT" "$dir/n3.log"
}

# All of it, in one privacy mode: PRIV (sealed or open); the runs go under
# $RD = $W/$PRIV.
scenarios() {
RD=$W/$PRIV
mkdir -p "$RD"
echo "# --- privacy mode: $PRIV"
# --- a. reference ---------------------------------------------------------
D=$RD/a
t=$SECONDS
if ! run_start "$D" ref --save "$D/ref.st"; then
    bad "a: reference run" "no port file: $(tailof "$D/ref.log")"
    finish
fi
wait_rc "$OP"
if [ "$RC" -eq 0 ] && [ -s "$D/ref.st" ]; then
    ok "a: undisturbed 3-node run of $STEPS steps -> ref.st ($((SECONDS - t)) s)"
else
    bad "a: undisturbed 3-node run" "exit $RC: $(tailof "$D/ref.log")"
    finish
fi
check_nodes_done "a" "$N1" "$N2" "$N3"
REF_STEPS=$(steps_of "$D/ref.metrics")
run_start "$D" ref2 --save "$D/ref2.st"
wait_rc "$OP"
wait "$N1" "$N2" "$N3"
if [ "$RC" -eq 0 ] && same "$D/ref.st" "$D/ref2.st"; then
    ok "a: a second undisturbed run is bit-identical (the baseline is deterministic)"
else
    bad "a: a second undisturbed run is bit-identical" "exit $RC; ${CMP:-}"
fi

# --- b. kill -9 a node at a random step, restart it -------------------------
D=$RD/b
t=$SECONDS
run_start "$D" orch --reconnect-timeout 30 --save "$D/out.st"
if signal_node KILL; then
    wait "$NK" 2>/dev/null
    start_node NEW "$D" "$K" "$PORT" "$D/n$K-restarted.log"
    wait_rc "$OP"
    orc=$RC
    if [ "$orc" -eq 0 ]; then
        ok "b: kill -9 node $K at step $at (target $R), restarted: the run completes ($((SECONDS - t)) s)"
    else
        bad "b: kill -9 node $K at step $at, restarted: the run completes" "exit $orc: $(tailof "$D/orch.log")"
    fi
    if grep -qE "node $K \(.*\) lost: " "$D/orch.log" &&
        grep -qE 'discarded partial results; waiting up to 30 s .*replaying the batch' "$D/orch.log" &&
        grep -qE ' [1-9][0-9]* replayed' "$D/orch.log"; then
        ok "b: the log shows node $K lost and the batch replayed: $(grep -m1 -oE "node $K \(.*\) lost: .*" "$D/orch.log") / $(grep -m1 -oE 'epoch [0-9]+ batch [0-9]+: discarded[^;]*' "$D/orch.log") / $(grep -m1 -oE '[0-9]+ replayed' "$D/orch.log")"
    else
        bad "b: the log shows the loss and the replay" "$(grep -E 'lost|discarded|replayed' "$D/orch.log" | tr '\n' '|')"
    fi
    check_transfer "b" "$D/n$K-restarted.log"
    check_restarted "b" "$NEW"
else
    bad "b: kill -9 node $K at step $R" "the run ended (or stalled) before step $R: $(tailof "$D/orch.log")"
fi
unset -n NK

# --- c. a node stops responding (SIGSTOP) -----------------------------------
for variant in cont fresh; do
    D=$RD/c-$variant
    t=$SECONDS
    run_start "$D" orch --reconnect-timeout 30 --save "$D/out.st"
    if signal_node STOP; then
        if wait_log "$D/orch.log" "node $K \(.*\) lost: silent for more than 4 heartbeats" 20; then
            ok "c/$variant: node $K stopped at step $at: $(grep -m1 -oE "node $K \(.*\) lost: .*" "$D/orch.log")"
        else
            bad "c/$variant: node $K stopped at step $at is declared lost after 4 heartbeats" \
                "$(tailof "$D/orch.log")"
        fi
        if [ $variant = cont ]; then
            kill -CONT "$victim"
            restarted=$NK
        else
            kill -KILL "$victim"
            wait "$NK" 2>/dev/null
            start_node restarted "$D" "$K" "$PORT" "$D/n$K-fresh.log"
        fi
        wait_rc "$OP"
        if [ "$RC" -eq 0 ]; then
            ok "c/$variant: after kill -$([ $variant = cont ] && echo CONT || echo 'KILL + a fresh node') the run completes ($((SECONDS - t)) s)"
        else
            bad "c/$variant: the run completes" "exit $RC: $(tailof "$D/orch.log")"
        fi
        if [ $variant = cont ]; then
            if grep -qE "node $K joined" <(grep -A1000 -E "node $K \(.*\) lost" "$D/orch.log") &&
                grep -q 'reconnecting' "$D/n$K.log"; then
                ok "c/cont: the resumed node reconnected by itself: $(grep -m1 -o 'lost the orchestrator.*' "$D/n$K.log")"
            else
                bad "c/cont: the resumed node reconnected by itself" "$(tailof "$D/n$K.log")"
            fi
        fi
        if [ $variant = fresh ]; then
            check_transfer "c/fresh" "$D/n$K-fresh.log"
        elif [ "$PRIV" = sealed ]; then
            # it kept its node side while stopped; never a stale step: either it
            # was the run's (no transfer) or it got a live node's
            if grep -qE "node $K holds (the node side of step [0-9]+, the run is at|no node side)" "$D/orch.log"; then
                check_transfer "c/cont" "$D/n$K.log"
            else
                ok "c/cont: node $K came back with the node side of the run's step (no transfer needed)"
            fi
        fi
        check_restarted "c/$variant" "$restarted"
    else
        bad "c/$variant: kill -STOP node $K at step $R" "the run ended (or stalled) before step $R: $(tailof "$D/orch.log")"
    fi
    unset -n NK
done

# --- d. kill -9 the orchestrator, --resume on the same port -----------------
D=$RD/d
R=$((60 + RANDOM % 180))
t=$SECONDS
CK=(--checkpoint "$D/ck.st" --checkpoint-every 50 --reconnect-timeout 30 --save "$D/out.st")
run_start "$D" orch1 "${CK[@]}"
if wait_steps "$D/orch1.metrics" "$R" "$OP" 60 && victim=$(tl_pid "$OP") && kill -KILL "$victim"; then
    at=$(steps_of "$D/orch1.metrics")
    wait "$OP" 2>/dev/null
    if [ -s "$D/ck.st" ]; then
        ok "d: orchestrator killed at step $at (target $R); checkpoint ck.st exists"
    else
        bad "d: orchestrator killed at step $at; checkpoint ck.st exists" "$(ls -la "$D")"
    fi
    # The nodes keep retrying 127.0.0.1:PORT: the new orchestrator must get it.
    spawn OP2 "$D" "$D/orch2.log" "$TL" orchestrator --listen "127.0.0.1:$PORT" \
        --metrics "$D/orch2.metrics" --batch-metrics "${COMMON[@]}" "${CK[@]}" --resume
    wait_rc "$OP2"
    if grep -qiE 'address already in use|cannot (bind|listen)' "$D/orch2.log"; then
        bad "d: restart on port $PORT" "the port was taken by another process in the meantime (not a tl bug; rerun): $(tailof "$D/orch2.log")"
    elif [ "$RC" -eq 0 ] && grep -q 'resumed from the checkpoint' "$D/orch2.log"; then
        ok "d: restarted with --resume on port $PORT: the run completes ($((SECONDS - t)) s); resumed at step $(sed -n '1s/.*"steps":\([0-9]*\).*/\1/p' "$D/orch2.metrics")"
    else
        bad "d: restarted with --resume on port $PORT: the run completes" "exit $RC: $(tailof "$D/orch2.log")"
    fi
    n=0
    for i in 1 2 3; do grep -q 'lost the orchestrator.*reconnecting' "$D/n$i.log" && n=$((n + 1)); done
    if [ $n -eq 3 ]; then
        ok "d: the 3 nodes reconnected by themselves ($(grep -m1 -o 'lost the orchestrator.*' "$D/n1.log"))"
    else
        bad "d: the 3 nodes reconnected by themselves" "$n of 3 logged it; $(tailof "$D/n1.log")"
    fi
    check_nodes_done "d" "$N1" "$N2" "$N3"
    if [ "$PRIV" = sealed ]; then
        # every node rolled back to its own saved node side of the checkpoint's step
        n=0
        for i in 1 2 3; do grep -qE "(took the node side of step [0-9]+ from .*saved at the orchestrator's checkpoint|kept its node side of step)" "$D/n$i.log" && n=$((n + 1)); done
        if [ $n -eq 3 ]; then
            ok "d: the 3 nodes rolled back to their saved node side of the checkpoint's step: $(grep -m1 -oE "(took|kept) .* node side of step .*" "$D/n1.log")"
        else
            bad "d: the 3 nodes rolled back to their saved node side of the checkpoint's step" "$n of 3; $(grep -h 'node side' "$D"/n?.log | tr '\n' '|')"
        fi
    fi
    check_bit "d" "$D/out.st"
else
    bad "d: kill -9 the orchestrator at step $R" "the run ended (or stalled) before step $R: $(tailof "$D/orch1.log")"
fi

# --- e. a checkpoint from another configuration -----------------------------
D=$RD/e
mkdir -p "$D"
if [ -s "$RD/d/ck.st" ]; then
    cp "$RD/d/ck.st" "$D/ck.st"
    # No node is started: the configuration is checked before waiting for them.
    t=$SECONDS
    start_orch OP "$D" orch --seed 2 --checkpoint "$D/ck.st" --resume --reconnect-timeout 30 --save "$D/out.st"
    wait_rc "$OP"
    msg=$(grep -m1 'another configuration' "$D/orch.log")
    if [ "$RC" -ne 0 ] && grep -q "seed=2" <<<"$msg" && grep -q "seed=1" <<<"$msg" && [ ! -e "$D/orch.port" ]; then
        ok "e: --seed 2 --resume from a seed-1 checkpoint is refused before listening, without nodes ($((SECONDS - t)) s, exit $RC): ${msg#tl orchestrator: }"
    else
        bad "e: --seed 2 --resume from a seed-1 checkpoint is refused before listening, naming the difference" "exit $RC: $(tailof "$D/orch.log")"
    fi
    if cmp -s "$RD/d/ck.st" "$D/ck.st" && [ ! -e "$D/out.st" ]; then
        ok "e: the refused run left the checkpoint untouched and saved no model"
    else
        bad "e: the refused run left the checkpoint untouched" "ck.st changed or out.st written"
    fi
else
    bad "e: checkpoint from another configuration" "no checkpoint from d to try"
fi

# --- f. a node that never returns --------------------------------------------
D=$RD/f
t=$SECONDS
run_start "$D" orch --reconnect-timeout 3 --save "$D/out.st"
if signal_node KILL; then
    wait "$NK" 2>/dev/null
    wait_rc "$OP"
    secs=$((SECONDS - t))
    how=$(grep -m1 'to continue' "$D/orch.log")
    saved=$(sed -n 's/.*plus --checkpoint \([^ ]*\) --resume.*/\1/p' <<<"$how")
    if [ "$RC" -ne 0 ] && grep -qE "node $K did not come back within 3 s" "$D/orch.log" && [ -n "$saved" ]; then
        ok "f: node $K killed at step $at and never back: exit $RC ($secs s): $(grep -m1 -o "node $K did not come back[^;]*" "$D/orch.log")"
        ok "f: the message tells how to resume: ${how#tl orchestrator: }"
    else
        bad "f: node $K never back: non-zero exit with a message telling how to resume" "exit $RC: $(tailof "$D/orch.log")"
    fi
    case $saved in /*) ;; ?*) saved=$D/$saved ;; esac
    if [ -n "$saved" ] && [ -s "$saved" ]; then
        ok "f: the recovery file exists ($saved)"
    else
        bad "f: the recovery file exists" "'$saved' missing; $(ls "$D")"
    fi
    # The message promises "nodes reconnect by themselves": the surviving nodes
    # must still be there, retrying the same port, when the run is resumed.
    sleep 2
    alive=()
    gone=()
    for i in 1 2 3; do
        [ "$i" -eq "$K" ] && continue
        p=$(eval echo "\$N$i")
        if kill -0 "$p" 2>/dev/null; then alive+=("$i"); else gone+=("$i"); fi
    done
    if [ ${#gone[@]} -eq 0 ]; then
        ok "f: the surviving nodes keep retrying after the orchestrator gave up"
    else
        why=
        for i in "${gone[@]}"; do why="$why node $i: $(grep -oE '(run finished|lost the orchestrator).*' "$D/n$i.log" | tail -n 1);"; done
        bad "f: the surviving nodes keep retrying after the orchestrator gave up (the message says 'nodes reconnect by themselves')" \
            "node(s) ${gone[*]} exited;$why"
    fi
    if [ -s "$saved" ]; then
        rm -f "$D/out.st"
        mkdir -p "$D/resume"
        # same port: the surviving nodes retry it
        spawn OP "$D/resume" "$D/resume/orch.log" "$TL" orchestrator --listen "127.0.0.1:$PORT" \
            --metrics "$D/resume/orch.metrics" --batch-metrics "${COMMON[@]}" \
            --reconnect-timeout 3 --save "$D/out.st" --checkpoint "$saved" --resume
        nodes=()
        for i in 1 2 3; do
            if [ "$i" -eq "$K" ] || [[ " ${gone[*]} " == *" $i "* ]]; then
                start_node p "$D/resume" "$i" "$PORT" "$D/resume/n$i.log"
                nodes+=("$p")
            else
                nodes+=("$(eval echo "\$N$i")")
            fi
        done
        wait_rc "$OP"
        if grep -qiE 'address already in use' "$D/resume/orch.log"; then
            bad "f: resume on port $PORT" "the port was taken by another process in the meantime (not a tl bug; rerun)"
        elif [ "$RC" -eq 0 ] && grep -q 'resumed from the checkpoint' "$D/resume/orch.log"; then
            ok "f: resuming from $(basename "$saved") with all three nodes (node $K restarted) completes (resumed at step $(sed -n '1s/.*"steps":\([0-9]*\).*/\1/p' "$D/resume/orch.metrics"))"
        else
            bad "f: resuming with all three nodes completes" "exit $RC: $(tailof "$D/resume/orch.log")"
        fi
        check_nodes_done "f: resumed run" "${nodes[@]}"
        if [ "$PRIV" = sealed ]; then
            D=$D/resume check_transfer "f: resumed run" "$D/resume/n$K.log"
        fi
        check_bit "f" "$D/out.st"
    fi
else
    bad "f: kill -9 node $K at step $R" "the run ended (or stalled) before step $R: $(tailof "$D/orch.log")"
fi
unset -n NK

# --- h. b over a unix socket, where nodes share memory with the orchestrator --
D=$RD/h
mkdir -p "$D"
t=$SECONDS
SOCK=$D/orch.sock
spawn OP "$D" "$D/orch.log" "$TL" orchestrator --listen "unix:$SOCK" --metrics "$D/orch.metrics" \
    --batch-metrics "${COMMON[@]}" --reconnect-timeout 30 --save "$D/out.st"
start_unix_node() {
    spawn "$1" "$D" "$3" "$TL" node --connect "unix:$SOCK" --id "$2" --data "$W/parts/node-$2" \
        --insecure --threads 1 "${NODE_PRIV[@]}" $(node_save "$2")
}
start_unix_node N1 1 "$D/n1.log"
start_unix_node N2 2 "$D/n2.log"
start_unix_node N3 3 "$D/n3.log"
if signal_node KILL; then
    wait "$NK" 2>/dev/null
    start_unix_node NEW "$K" "$D/n$K-restarted.log"
    wait_rc "$OP"
    if [ "$RC" -eq 0 ]; then
        ok "h: unix socket: kill -9 node $K at step $at (target $R), restarted: the run completes ($((SECONDS - t)) s)"
    else
        bad "h: unix socket: kill -9 node $K, restarted: the run completes" "exit $RC: $(tailof "$D/orch.log")"
    fi
    joins=$(grep -c 'joined from unix.*shared memory' "$D/orch.log")
    if [ "$joins" -eq 4 ]; then
        ok "h: all 4 connections (3 + the restarted node) shared memory"
    else
        bad "h: all 4 connections shared memory" "$joins: $(grep 'joined' "$D/orch.log" | tr '\n' '|')"
    fi
    check_transfer "h" "$D/n$K-restarted.log"
    check_restarted "h" "$NEW"
else
    bad "h: unix socket: kill -9 node $K at step $R" "the run ended (or stalled) before step $R: $(tailof "$D/orch.log")"
fi
unset -n NK


# --- i. tl run stopped and resumed: new node processes (sealed: they roll back
# to the node side they kept next to the checkpoint, CHECKPOINT.node-K.*) -----
D=$RD/i
mkdir -p "$D"
RUN=(run --nodes 3 --insecure --threads 1 --privacy "$PRIV" --init "$W/init.st")
if timeout "$TMO" "$TL" train --max-steps 1 --threads 1 --save "$W/init.st" >"$D/init.log" 2>&1 &&
    (cd "$D" && timeout "$TMO" "$TL" "${RUN[@]}" --max-steps 120 --checkpoint ck.st \
        --checkpoint-every 50 --save first.st) >"$D/run1.log" 2>&1 &&
    (cd "$D" && timeout "$TMO" "$TL" "${RUN[@]}" --max-steps 200 --checkpoint ck.st --resume \
        --save resumed.st) >"$D/run2.log" 2>&1 &&
    (cd "$D" && timeout "$TMO" "$TL" "${RUN[@]}" --max-steps 200 --save whole.st) >"$D/run3.log" 2>&1; then
    if same "$D/whole.st" "$D/resumed.st"; then
        ok "i: tl run --resume (at step 120 of 200, new processes$([ "$PRIV" = sealed ] && echo ", node sides from $(cd "$D" && ls ck.st.node-1.* | tr '\n' ' ')")) is bit-identical to an uninterrupted tl run"
    else
        bad "i: tl run --resume is bit-identical to an uninterrupted tl run" "$CMP"
    fi
else
    bad "i: tl run, then tl run --resume" "$(tail -n 3 "$D"/*.log | tr '\n' '|')"
fi
}

for PRIV in sealed open; do
    set_privacy "$PRIV"
    scenarios
done

# --- g -------------------------------------------------------------------------
echo "# g: a crash in the middle of writing a checkpoint is not simulated: checkpoints are"
echo "#    written to a temporary file, fsync'ed and renamed (checkpoint.c / tl_params_save)"

echo "# reference run: $REF_STEPS steps; total time $((SECONDS - T0)) s"
finish
