#!/usr/bin/env bash
# e2e_output.sh - nothing is lost to a bad output path, a planted link, a
# closed pipe, a full disk or a signal (issue 8, findings 7 and 8).
#
#   bash tests/e2e_output.sh <path to tl> <tests/data dir>
#
#  - an output path in a missing directory (or a directory as the path) is
#    refused before any training: exit 2, one line, nothing trained;
#  - links planted at --save, at its old temporary name and at --metrics and
#    --plan are replaced, their targets untouched;
#  - `tl run ... 2>&1 | head -2` completes (status 0, model saved) and leaves
#    no temporary directory; SIGTERM to `tl run` removes it and its children;
#  - Ctrl-C (SIGINT to its process group) on a sealed `tl run`: exit 130, the
#    state and the node sides saved, and --resume gives the undisturbed model;
#  - SIGTERM to `tl train` saves the recovery checkpoint, and resuming from it
#    gives the uninterrupted run's model bit for bit;
#  - `tl orchestrator ... 2>&1 | head -3` completes and saves (status 0);
#    SIGTERM to it saves the recovery checkpoint;
#  - --save on a full file system (a 64 KiB tmpfs in a private mount
#    namespace; skipped, visibly, where one cannot be made): the model goes
#    to $TMPDIR/tl-model-<pid>.safetensors, printed, exit 1, and it loads;
#  - under a file size limit (ulimit -f) the failed save is reported, exit 1,
#    instead of a kill by SIGXFSZ.
# Last line: "N passed, M failed"; exit status 1 on any failure.
set -u
TL=${1:?usage: e2e_output.sh <tl> <tests/data dir>}
TL=$(realpath "$TL")
. "$(dirname "$0")/lib.sh"
require_data
cd "$W" || exit 1
export TL_NO_WARMUP=1

# while_alive PID cmd...: polls cmd (every 0.1 s, 30 s at most) until it
# succeeds or PID has exited.
while_alive() {
    local pid=$1 i
    shift
    for ((i = 0; i < 300; i++)); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
lines_at_least() { [ "$(cat "$1" 2>/dev/null | wc -l)" -ge "$2" ]; }
joined_twice() { [ "$(grep -c joined "$1" 2>/dev/null)" -ge 2 ]; }

# ---- 1. bad output paths are refused before training --------------------
refused() { # refused "what" <expected option> command...: exit 2, one line, no epoch
    local what=$1 opt=$2
    shift 2
    timeout $TMO "$@" >out.txt 2>err.txt
    local st=$? lines
    lines=$(wc -l <err.txt)
    if [ "$st" -eq 2 ] && [ "$lines" -eq 1 ] && grep -q -- "--$opt" err.txt && ! grep -q epoch out.txt; then
        ok "$what: refused before training"
    else
        bad "$what: refused before training" "status $st, stderr: $(head -c 300 err.txt), stdout: $(head -c 200 out.txt)"
    fi
}
refused "train --save in a missing directory" save "$TL" train --max-steps 5 --save "$W/missing/m.safetensors"
refused "train --checkpoint in a missing directory" checkpoint "$TL" train --max-steps 5 --checkpoint "$W/missing/c.safetensors"
refused "train --metrics in a missing directory" metrics "$TL" train --max-steps 5 --metrics "$W/missing/m.jsonl"
refused "train --plan in a missing directory" plan "$TL" train --max-steps 5 --plan "$W/missing/p.jsonl"
refused "train --save is a directory" save "$TL" train --max-steps 5 --save "$W"
refused "orchestrator --save in a missing directory" save "$TL" orchestrator --privacy open --nodes 1 --insecure --listen 127.0.0.1:0 --wait-timeout 5 --save "$W/missing/m.safetensors"
refused "orchestrator --port-file in a missing directory" port-file "$TL" orchestrator --privacy open --nodes 1 --insecure --listen 127.0.0.1:0 --wait-timeout 5 --port-file "$W/missing/port"
mkdir -p "$W/runtmp"
refused "run --save in a missing directory" save env TMPDIR="$W/runtmp" "$TL" run --nodes 2 --insecure --max-steps 5 --save "$W/missing/m.safetensors"
check "run refused without leaving a temporary directory" "$(ls "$W/runtmp")" [ -z "$(ls -A "$W/runtmp")" ]
refused "partition --out under a file" out "$TL" partition --nodes 2 --out "$W/err.txt/parts"

# ---- 2. links planted at output paths are replaced, never followed --------
echo "victim 1" >victim1
echo "victim 2" >victim2
echo "victim 3" >victim3
echo "victim 4" >victim4
ln -s "$W/victim1" model.safetensors
ln -s "$W/victim2" model.safetensors.tmp # the temporary name tl used to use
ln -s "$W/victim3" metrics.jsonl
ln -s "$W/victim4" plan.jsonl
timeout $TMO "$TL" train --max-steps 20 --save model.safetensors --metrics metrics.jsonl \
    --plan plan.jsonl >out.txt 2>err.txt
st=$?
check "train with planted links exits 0" "status $st: $(tail -c 300 err.txt)" [ "$st" -eq 0 ]
for i in 1 2 3 4; do
    check "victim $i unchanged" "$(head -c 100 victim$i | tr -d '\0')" [ "$(cat victim$i)" = "victim $i" ]
done
for f in model.safetensors metrics.jsonl plan.jsonl; do
    check "$f is a regular file now" "$(ls -l $f)" test -f $f -a ! -L $f
done
check "the model saved through the planted link loads" "$(tail -c 300 err.txt)" \
    sh -c "timeout $TMO '$TL' compare model.safetensors model.safetensors >/dev/null"
timeout $TMO "$TL" train --max-steps 2 --checkpoint ck.safetensors --metrics first.jsonl >/dev/null 2>&1
ln -s "$W/victim3" appended.jsonl
timeout $TMO "$TL" train --max-steps 4 --checkpoint ck.safetensors --resume --metrics appended.jsonl >/dev/null 2>err.txt
st=$?
check "--resume's append to --metrics never writes through a link" "$(cat victim3)" [ "$(cat victim3)" = "victim 3" ]
check "--resume's append to a link is refused, saying why" "status $st: $(tail -c 300 err.txt)" \
    sh -c "[ $st -ne 0 ] && grep -q 'symbolic link' err.txt"

# ---- 3. a closed pipe does not kill tl run, nor leave its directory ------
rm -rf "$W/runtmp" && mkdir -p "$W/runtmp"
TMPDIR="$W/runtmp" timeout $TMO "$TL" run --nodes 2 --insecure --epochs 4 --batch-size 2048 \
    --save "$W/piped.safetensors" 2>&1 | head -2 >/dev/null
st=${PIPESTATUS[0]}
check "tl run 2>&1 | head -2: status 0" "status $st" [ "$st" -eq 0 ]
check "tl run 2>&1 | head -2: the model is saved" "" [ -s "$W/piped.safetensors" ]
check "tl run 2>&1 | head -2: no temporary directory left" "$(ls "$W/runtmp")" [ -z "$(ls -A "$W/runtmp")" ]

# ---- 4. SIGTERM to tl run: children stopped, directory removed ------------
rm -rf "$W/runtmp" && mkdir -p "$W/runtmp"
TMPDIR="$W/runtmp" "$TL" run --nodes 2 --insecure --epochs 50 --batch-size 256 >run.out 2>run.err &
RP=$!
PIDS+=("$RP")
while_alive "$RP" joined_twice run.err # until the nodes have joined
kids=$(cat /proc/$RP/task/$RP/children 2>/dev/null)
check "tl run started an orchestrator and 2 nodes" "children: '$kids'" [ "$(echo $kids | wc -w)" -eq 3 ]
kill -TERM "$RP"
for ((i = 0; i < 300; i++)); do kill -0 "$RP" 2>/dev/null || break; sleep 0.1; done
wait "$RP"
st=$?
check "SIGTERM: tl run exits 143" "status $st" [ "$st" -eq 143 ]
alive=""
for k in $kids; do kill -0 "$k" 2>/dev/null && alive="$alive $k"; done
check "SIGTERM: no child left" "alive:$alive" [ -z "$alive" ]
check "SIGTERM: no temporary directory left" "$(ls "$W/runtmp")" [ -z "$(ls -A "$W/runtmp")" ]

# ---- 4b. Ctrl-C on a sealed tl run: the state saved, node sides too --------
# A terminal's Ctrl-C goes to the whole foreground process group. tl run keeps
# its children out of that group, asks the orchestrator alone to stop (it saves
# the state, and the nodes their sides beside it), then stops the nodes.
timeout $TMO "$TL" train --max-steps 1 --lr 0 --threads 1 --save init4b.st >/dev/null 2>&1
run4b=(run --nodes 2 --insecure --epochs 4 --batch-size 256 --threads 1 --init init4b.st)
setsid "$TL" "${run4b[@]}" --checkpoint ck4b.st >int.out 2>int.err &
RP=$!
PIDS+=("$RP")
while_alive "$RP" grep -q 'step [0-9]' int.err # until it trains
kill -INT -- "-$(ps -o pgid= "$RP" | tr -d ' ')"
wait "$RP"
st=$?
check "Ctrl-C (SIGINT to the process group): tl run exits 130" "status $st: $(tail -n 3 int.err | tr '\n' '|')" \
    [ "$st" -eq 130 ]
check "Ctrl-C: the state is saved, the node sides beside it, and the way to resume is printed" \
    "$(ls ck4b.st* 2>&1 | tr '\n' ' ') $(tail -n 1 int.err)" \
    [ -s ck4b.st -a -s ck4b.st.node-1.0 -a -s ck4b.st.node-2.0 ] && grep -q -- '--checkpoint ck4b.st --resume' int.err
timeout $TMO "$TL" "${run4b[@]}" --checkpoint ck4b.st --resume --save res4b.st >res4b.out 2>&1
timeout $TMO "$TL" "${run4b[@]}" --save und4b.st >und4b.out 2>&1
timeout $TMO "$TL" compare res4b.st und4b.st >cmp4b.txt 2>&1
check "Ctrl-C: the resumed run gives the undisturbed model bit for bit" \
    "$(cat cmp4b.txt) $(tail -n 2 res4b.out | tr '\n' '|')" grep -q 'bit-identical' cmp4b.txt

# ---- 5. SIGTERM to tl train: recovery checkpoint, exact resume ------------
mkdir -p sig && cd sig || exit 1
"$TL" train --epochs 30 --metrics m.jsonl --batch-metrics --save never.safetensors >out.txt 2>err.txt &
TP=$!
PIDS+=("$TP")
while_alive "$TP" lines_at_least m.jsonl 5
kill -TERM "$TP"
wait "$TP"
st=$?
check "SIGTERM: tl train exits 143" "status $st: $(tail -c 300 err.txt)" [ "$st" -eq 143 ]
check "SIGTERM: tl train saved its state" "$(tail -c 300 err.txt)" [ -s tl-recovery.safetensors ]
check "SIGTERM: tl train says where" "$(tail -c 300 err.txt)" grep -q "saved in tl-recovery.safetensors" err.txt
steps=$(sed -n 's/.*"steps":\([0-9]*\).*/\1/p' m.jsonl | tail -1)
n=$((steps + 30))
timeout $TMO "$TL" train --epochs 30 --max-steps $n --checkpoint tl-recovery.safetensors --resume \
    --save resumed.safetensors >/dev/null 2>err2.txt
timeout $TMO "$TL" train --epochs 30 --max-steps $n --save straight.safetensors >/dev/null 2>&1
check "SIGTERM then --resume = the uninterrupted run (step $n)" "$(tail -c 300 err2.txt)" \
    sh -c "'$TL' compare resumed.safetensors straight.safetensors | grep -q bit-identical"
cd "$W" || exit 1

# ---- 5b. tl orchestrator: a closed pipe is no kill; SIGTERM saves the state --
timeout $TMO "$TL" partition --nodes 2 --out "$W/parts" >/dev/null 2>&1
start_nodes() { # start_nodes SOCKET: two nodes in the background, pids in NP
    NP=()
    local k
    for k in 1 2; do
        timeout $TMO "$TL" node --privacy open --connect "unix:$1" --id $k --data "$W/parts/node-$k" --insecure \
            --give-up 30 >/dev/null 2>"$1.node$k.log" &
        NP+=($!)
        PIDS+=($!)
    done
}
stop_nodes() { kill -TERM "${NP[@]}" 2>/dev/null; wait "${NP[@]}" 2>/dev/null; }
start_nodes "$W/o1.sock"
{
    timeout $TMO "$TL" orchestrator --privacy open --nodes 2 --insecure --listen "unix:$W/o1.sock" --epochs 4 \
        --batch-size 2048 --save "$W/orch.safetensors" 2>&1
    echo $? >"$W/orch.status"
} | head -3 >/dev/null
stop_nodes
st=$(cat "$W/orch.status")
check "tl orchestrator 2>&1 | head -3: status 0" "status $st" [ "$st" -eq 0 ]
check "tl orchestrator 2>&1 | head -3: the model is saved" "" [ -s "$W/orch.safetensors" ]

mkdir -p osig && cd osig || exit 1
start_nodes "$W/o2.sock"
"$TL" orchestrator --privacy open --nodes 2 --insecure --listen "unix:$W/o2.sock" --epochs 50 --batch-size 256 \
    --metrics m.jsonl --batch-metrics >out.txt 2>err.txt &
OP=$!
PIDS+=("$OP")
while_alive "$OP" lines_at_least m.jsonl 5
kill -TERM "$OP"
wait "$OP"
st=$?
# the nodes log what they were told when they read it: give them a moment
for ((i = 0; i < 100; i++)); do
    [ "$(cat "$W/o2.sock.node1.log" "$W/o2.sock.node2.log" 2>/dev/null |
        grep -c 'stopped by the operator')" -ge 2 ] && break
    sleep 0.1
done
stop_nodes
check "SIGTERM: tl orchestrator exits 143" "status $st: $(tail -c 300 err.txt)" [ "$st" -eq 143 ]
check "SIGTERM: tl orchestrator saved its state" "$(tail -c 300 err.txt)" \
    sh -c "[ -s tl-recovery.safetensors ] && grep -q 'saved in tl-recovery.safetensors' err.txt"
for k in 1 2; do
    check "SIGTERM: node $k was told why and that the run can be resumed" "$(tail -c 400 "$W/o2.sock.node$k.log")" \
        grep -q "stopped by the operator; the state is saved in tl-recovery.safetensors and the run can be resumed" "$W/o2.sock.node$k.log"
done
cd "$W" || exit 1

# ---- 5c. SIGTERM while the orchestrator still waits for its nodes ---------
"$TL" orchestrator --nodes 2 --insecure --listen "unix:$W/o3.sock" >/dev/null 2>"$W/o3.err" &
OP=$!
PIDS+=("$OP")
for ((i = 0; i < 100; i++)); do [ -S "$W/o3.sock" ] && break; sleep 0.05; done
kill -TERM "$OP"
for ((i = 0; i < 60; i++)); do kill -0 "$OP" 2>/dev/null || break; sleep 0.1; done
kill -0 "$OP" 2>/dev/null && { kill -KILL "$OP"; st=timeout; } || { wait "$OP"; st=$?; }
check "SIGTERM while waiting for nodes: tl orchestrator stops (exit 143)" "status $st: $(tail -c 300 "$W/o3.err")" \
    [ "$st" = 143 ]

# ---- 6. a full disk at the end: the model goes to the fallback path ------
mkdir -p small fb
if unshare -rm true 2>/dev/null && unshare -rm sh -c "mount -t tmpfs -o size=64k none '$W/small'" 2>/dev/null; then
    unshare -rm sh -c "mount -t tmpfs -o size=64k none '$W/small' && cd '$W' && \
        TMPDIR='$W/fb' exec timeout $TMO '$TL' train --max-steps 20 --save '$W/small/m.safetensors'" \
        >out.txt 2>err.txt
    st=$?
    fbf=$(sed -n 's/.*the model is saved in \(.*\) instead of.*/\1/p' err.txt)
    check "full disk: exit 1" "status $st: $(tail -c 300 err.txt)" [ "$st" -eq 1 ]
    check "full disk: the fallback path is printed" "$(tail -c 300 err.txt)" [ -n "$fbf" ]
    check "full disk: the fallback is in \$TMPDIR" "'$fbf'" [ "$(dirname "$fbf")" = "$W/fb" ]
    timeout $TMO "$TL" train --max-steps 20 --save ref.safetensors >/dev/null 2>&1
    check "full disk: the fallback model is the trained one" "$fbf" \
        sh -c "'$TL' compare '$fbf' ref.safetensors | grep -q bit-identical"
else
    echo "SKIP - full disk: cannot mount a tmpfs in a private mount namespace here (unshare -rm)"
fi

# ---- 7. a file size limit: reported, not a kill by SIGXFSZ ----------------
(ulimit -f 100 && TMPDIR="$W/fb" exec timeout $TMO "$TL" train --max-steps 5 --save "$W/limited.safetensors") \
    >out.txt 2>err.txt
st=$?
check "file size limit: exit 1 with the reason" "status $st: $(tail -c 300 err.txt)" \
    sh -c "[ $st -eq 1 ] && grep -q 'could not be saved anywhere' err.txt"
check "file size limit: no temporary left" "$(ls -a "$W" "$W/fb" | grep -E 'limited.*tmp|tl-model.*tmp')" \
    sh -c "! ls -a '$W' '$W/fb' | grep -Eq 'limited.*tmp|tl-model.*tmp'"

finish
