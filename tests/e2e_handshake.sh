#!/usr/bin/env bash
# e2e_handshake.sh - startup order and handshake refusals, hand-made deployment.
#
#   bash tests/e2e_handshake.sh <path to tl> <tests/data dir>
#
# Partitions Fashion-MNIST into 3 node directories, then drives one
# `tl orchestrator` and separate `tl node` processes on loopback:
#   - a node started before the orchestrator retries and joins; the run ends
#     with every process exiting 0;
#   - refusals while a run waits for its nodes: id out of range, duplicate id,
#     a HELLO with protocol version 5 (hand-made bytes over bash's /dev/tcp),
#     garbage instead of a frame; each refused peer is told why, the
#     orchestrator logs it, and the legitimate nodes then complete the run;
#   - usage errors and a node without training data.
# Last line: "N passed, M failed"; exit status 1 on any failure.
set -u
. "$(dirname "$0")/lib.sh"

TL=${1:?usage: e2e_handshake.sh <tl> <tests/data dir>}
TL=$(realpath "$TL") # the script changes directory

require_data

# stop PID: kill and reap.
stop() {
    kill "$1" 2>/dev/null
    reap "$1"
}
alive() { kill -0 "$1" 2>/dev/null; }

P=$W/parts
if ! timeout "$TMO" "$TL" partition --data "$DATA" --nodes 3 --out "$P" >"$W/partition.log" 2>&1; then
    bad "tl partition --nodes 3" "$(oneline "$W/partition.log")"
    finish
fi
ok "tl partition --nodes 3 --out parts"

ORCH_OPTS=(--privacy open --nodes 3 --insecure --max-steps 5 --threads 1)
NODE_OPTS=(--privacy open --insecure --threads 1)

# ---------------------------------------------------------------------------
# 1. A node started before the orchestrator.
# The node must know the port before anything listens on it: let an
# orchestrator pick a free port, stop it, start the node (which finds nothing
# and retries), then start the real orchestrator on that port. Should another
# process grab the port meanwhile, try again with a fresh one.
# ---------------------------------------------------------------------------
D=$W/early
mkdir -p "$D"
started=0
for attempt in 1 2 3; do
    rm -f "$D/port0" "$D/port"
    bg "$D/probe.out" "$D/probe.err" orchestrator "${ORCH_OPTS[@]}" --listen 127.0.0.1:0 --port-file "$D/port0"
    probe=$LAST
    port=$(wait_port "$D/port0" "$probe") || port=
    stop "$probe"
    [ -n "$port" ] || continue

    bg "$D/n1.out" "$D/n1.err" node --connect "127.0.0.1:$port" --id 1 --data "$P/node-1" "${NODE_OPTS[@]}"
    n1=$LAST
    sleep 2
    if ! alive "$n1"; then
        reap "$n1"
        bad "node started first keeps retrying while nothing listens" "exited $RC after <2 s: $(oneline "$D/n1.err")"
        break
    fi
    bg "$D/orch.out" "$D/orch.err" orchestrator "${ORCH_OPTS[@]}" --listen "127.0.0.1:$port" \
        --port-file "$D/port" --save "$D/o.st"
    orch=$LAST
    if ! wait_port "$D/port" "$orch" >/dev/null; then
        stop "$orch"
        stop "$n1"
        echo "# port $port was taken meanwhile (attempt $attempt): $(oneline "$D/orch.err")"
        continue
    fi
    started=1
    break
done
if [ "$started" -eq 1 ]; then
    ok "node started first keeps retrying while nothing listens (still running after 2 s)"
    bg "$D/n2.out" "$D/n2.err" node --connect "127.0.0.1:$port" --id 2 --data "$P/node-2" "${NODE_OPTS[@]}"
    n2=$LAST
    bg "$D/n3.out" "$D/n3.err" node --connect "127.0.0.1:$port" --id 3 --data "$P/node-3" "${NODE_OPTS[@]}"
    n3=$LAST
    reap "$orch"
    check "early node: orchestrator exits 0" "exit $RC: $(oneline "$D/orch.err")" test "$RC" -eq 0
    check "early node: final model saved" "no $D/o.st" test -s "$D/o.st"
    k=0
    for pid in "$n1" "$n2" "$n3"; do
        k=$((k + 1))
        reap "$pid"
        check "early node: node $k exits 0" "exit $RC: $(oneline "$D/n$k.err")" test "$RC" -eq 0
    done
    check "early node: node 1 joined (orchestrator log)" "$(oneline "$D/orch.err")" \
        grep -Eq 'node 1\b.*join' "$D/orch.err"
else
    bad "node started before the orchestrator" "could not start an orchestrator on a reserved port"
fi

# ---------------------------------------------------------------------------
# 2. Refusals while a run waits for node 3; then node 3 comes and the run ends.
# ---------------------------------------------------------------------------
D=$W/refuse
mkdir -p "$D"
bg "$D/orch.out" "$D/orch.err" orchestrator "${ORCH_OPTS[@]}" --listen 127.0.0.1:0 --port-file "$D/port" \
    --save "$D/o.st"
orch=$LAST
if ! port=$(wait_port "$D/port" "$orch"); then
    bad "orchestrator writes --port-file" "$(oneline "$D/orch.err")"
    finish
fi
ok "orchestrator on 127.0.0.1:0 writes its port ($port) to --port-file"
ADDR=127.0.0.1:$port

bg "$D/n1.out" "$D/n1.err" node --connect "$ADDR" --id 1 --data "$P/node-1" "${NODE_OPTS[@]}"
n1=$LAST
bg "$D/n2.out" "$D/n2.err" node --connect "$ADDR" --id 2 --data "$P/node-2" "${NODE_OPTS[@]}"
n2=$LAST
# Joined when the orchestrator has logged both (nodes 1 and 2, in any order).
wait_grep "$D/orch.err" 'node 1\b.*join' && wait_grep "$D/orch.err" 'node 2\b.*join'
check "nodes 1 and 2 joined (orchestrator log)" "$(oneline "$D/orch.err")" \
    grep -Eq 'node 2\b.*join' "$D/orch.err"

# refused NAME ID DATA NODE_PATTERN ORCH_PATTERN: a node that must be refused.
refused() {
    local name=$1 id=$2 data=$3 npat=$4 opat=$5
    # --give-up: a duplicate id is retried (the old connection may be a dead one)
    timeout 60 "$TL" node --connect "$ADDR" --id "$id" --data "$data" "${NODE_OPTS[@]}" \
        --give-up 3 >"$D/$name.out" 2>"$D/$name.err"
    local rc=$?
    check "$name: node exits non-zero (not by timeout)" "exit $rc: $(oneline "$D/$name.err")" \
        test "$rc" -ne 0 -a "$rc" -ne 124
    check "$name: node's stderr gives the reason" "$(oneline "$D/$name.err")" \
        grep -Eiq "$npat" "$D/$name.err"
    wait_grep "$D/orch.err" "$opat" 10
    check "$name: orchestrator logs the refusal" "$(oneline "$D/orch.err")" \
        grep -Eiq "$opat" "$D/orch.err"
}

refused "id out of range (--id 4 of 3)" 4 "$P/node-1" 'out of range' 'refused.*(id|node) 4\b.*range'

timeout 60 "$TL" node --connect "$ADDR" --id 0 --data "$P/node-1" "${NODE_OPTS[@]}" >"$D/id0.out" 2>"$D/id0.err"
rc=$?
check "--id 0: usage error, exit 2" "exit $rc: $(oneline "$D/id0.err")" test "$rc" -eq 2
check "--id 0: the message names --id" "$(oneline "$D/id0.err")" grep -q -- '--id' "$D/id0.err"

refused "duplicate id 2" 2 "$P/node-2" 'already|duplicate' 'refused.*(id|node) 2\b.*(already|duplicate)'

# A HELLO from a future protocol version 5 (docs/protocol.md §2, §3.3, §9, §10):
# frame header "TLN1", frame version 1, type 1, flags 0, reserved 0, payload_len
# 33; payload node_id 3, proto_version 5, flags 0, sample_count 20000,
# fingerprint, software_version "0.1.0" (what follows it is a newer version's).
HELLO_NEXT='\x54\x4c\x4e\x31\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00'
HELLO_NEXT+='\x21\x00\x00\x00\x00\x00\x00\x00'
HELLO_NEXT+='\x03\x00\x00\x00\x05\x00\x00\x00\x20\x4e\x00\x00\x00\x00\x00\x00'
HELLO_NEXT+='\xef\xcd\xab\x89\x67\x45\x23\x01\x05\x00\x00\x00\x30\x2e\x31\x2e\x30'
# raw_exchange BYTES REPLY: connect, send, read the reply until the peer closes
# (10 s at most); status 124 if it did not close in time, 125 if the
# connection could not be made (a reset counts as closing: status 1).
raw_exchange() {
    local fd
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 125
    printf "$1" 2>/dev/null 1>&"$fd" # the peer may close before reading it all
    timeout 10 cat <&"$fd" >"$2" 2>/dev/null
    local rc=$?
    exec {fd}>&-
    return "$rc"
}
# u16/u32 little-endian at a byte offset of a file.
le() { od -An -tu"$3" -j "$2" -N "$3" "$1" | tr -d ' '; }
raw_exchange "$HELLO_NEXT" "$D/reply"
rc=$?
if [ "$rc" -ne 124 ] && [ "$rc" -ne 125 ]; then
    ok "protocol v5 HELLO: the orchestrator answers and closes"
else
    bad "protocol v5 HELLO: the orchestrator answers and closes" "status $rc (124: no close within 10 s, 125: no connection)"
fi
check "protocol v5 HELLO: reply starts with a frame header (magic TLN1)" \
    "$(od -An -tx1 -N 24 "$D/reply" | tr -s ' \n' ' ')" test "$(head -c 4 "$D/reply")" = TLN1
check "protocol v5 HELLO: reply is a REJECT (type 3 at byte 6)" \
    "type $(le "$D/reply" 6 2)" test "$(le "$D/reply" 6 2)" = 3
check "protocol v5 HELLO: REJECT code 4 (VERSION)" "code $(le "$D/reply" 24 4)" test "$(le "$D/reply" 24 4)" = 4
check "protocol v5 HELLO: payload_len matches the bytes received" \
    "payload_len $(le "$D/reply" 16 4), received $(($(wc -c <"$D/reply") - 24))" \
    test "$(le "$D/reply" 16 4)" -eq $(($(wc -c <"$D/reply") - 24))
echo "# REJECT reason: $(tail -c +33 "$D/reply")"
wait_grep "$D/orch.err" 'refused.*version' 10
check "protocol v5 HELLO: orchestrator logs \"refused\" with the version" "$(oneline "$D/orch.err")" \
    grep -Eiq 'refused.*version' "$D/orch.err"

# Garbage in place of a frame: the connection is closed, nothing else happens.
raw_exchange 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' "$D/garbage"
rc=$?
# A reset (unread bytes when it closed) is a close too; 124 is our timeout.
check "garbage instead of HELLO: the orchestrator closes the connection" "status $rc (124: no close within 10 s, 125: no connection)" \
    test "$rc" -ne 124 -a "$rc" -ne 125
wait_grep "$D/orch.err" "magic" 10
check "garbage instead of HELLO: orchestrator logs the bad magic" "$(oneline "$D/orch.err")" \
    grep -qi "magic" "$D/orch.err"

check "after the refusals the orchestrator is still running" "$(oneline "$D/orch.err")" alive "$orch"
check "after the refusals node 1 is still connected" "$(oneline "$D/n1.err")" alive "$n1"
check "after the refusals node 2 is still connected" "$(oneline "$D/n2.err")" alive "$n2"

bg "$D/n3.out" "$D/n3.err" node --connect "$ADDR" --id 3 --data "$P/node-3" "${NODE_OPTS[@]}"
n3=$LAST
reap "$orch"
check "refusals: orchestrator exits 0 once node 3 joins" "exit $RC: $(oneline "$D/orch.err")" test "$RC" -eq 0
check "refusals: final model saved" "no o.st" test -s "$D/o.st"
k=0
for pid in "$n1" "$n2" "$n3"; do
    k=$((k + 1))
    reap "$pid"
    check "refusals: node $k exits 0" "exit $RC: $(oneline "$D/n$k.err")" test "$RC" -eq 0
done
# The refusals changed nothing: the same 5 steps as centralized training.
if timeout "$TMO" "$TL" train --max-steps 5 --save "$D/train.st" --threads 1 >"$D/train.log" 2>&1; then
    timeout "$TMO" "$TL" compare "$D/train.st" "$D/o.st" --tolerance 1e-5 >"$D/cmp" 2>&1
    rc=$?
    check "refusals: the model is tl train's within 1e-5 ($(sed -n 's/.*\(relative [^ ]*\).*/\1/p' "$D/cmp"))" \
        "$(oneline "$D/cmp")" test "$rc" -eq 0
else
    bad "tl train --max-steps 5" "$(oneline "$D/train.log")"
fi

# ---------------------------------------------------------------------------
# 3. Node-side errors that need no orchestrator.
# ---------------------------------------------------------------------------
D=$W/errors
mkdir -p "$D/t10k-only"
ln -s "$DATA/t10k-images-idx3-ubyte.gz" "$DATA/t10k-labels-idx1-ubyte.gz" "$D/t10k-only/"
# Nothing listens at the address given: the node must fail on its data first.
timeout 30 "$TL" node --connect 127.0.0.1:1 --id 1 --data "$D/t10k-only" --give-up 5 "${NODE_OPTS[@]}" \
    >"$D/nodata.out" 2>"$D/nodata.err"
rc=$?
check "data dir without train files: exit 1" "exit $rc: $(oneline "$D/nodata.err")" test "$rc" -eq 1
check "data dir without train files: the message names the directory and the missing train file" \
    "$(oneline "$D/nodata.err")" \
    grep -q "t10k-only.*train-\|train-.*t10k-only" "$D/nodata.err"

timeout 30 "$TL" node --connect 127.0.0.1:1 --id 1 --data "$P/node-1" --threads 1 >"$D/notls.out" 2>"$D/notls.err"
rc=$?
check "tl node without --insecure or --tls-dir: usage error, exit 2" "exit $rc: $(oneline "$D/notls.err")" \
    test "$rc" -eq 2
check "tl node without --insecure or --tls-dir: the message names both options" "$(oneline "$D/notls.err")" \
    grep -q -- '--tls-dir.*--insecure\|--insecure.*--tls-dir' "$D/notls.err"

finish
