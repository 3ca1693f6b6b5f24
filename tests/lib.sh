# lib.sh - what the tests/e2e_*.sh scripts share; sourced, not run:
#
#   . "$(dirname "$0")/lib.sh"     # counters, work dir $W, cleanup of $PIDS
#   require_data                   # Fashion-MNIST present, or fail and stop
#                                  # (one line naming dataset-fashion-mnist; the
#                                  # same convention as tests/harness.h)
#   ok "what"; bad "what" "detail"; check "what" "detail" command...
#   finish                         # prints "N passed, M failed"; exit 0 or 1
#   wait_port FILE PID             # the port an orchestrator wrote to --port-file
#   bg OUT ERR args...; reap PID   # tl in the background (LAST = its pid), and its end
#                                  # (RC = its exit status)
#   wait_grep FILE ERE [SECONDS]   # until FILE has a matching line (30 s at most)
#   oneline FILE                   # FILE on one line, cut, for failure details
#
# Background processes go into PIDS; they are killed (with their process
# group: run them under `timeout`, which leads its own group) and reaped on
# exit, and the work directory $W is removed.

DATA=${TL_FMNIST_DIR:-/usr/share/datasets/fashion-mnist} # TL_FMNIST_DIR: as in harness.h
TMO=120 # seconds: bound on every tl invocation
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1: $2"; }
check() { # check "description" "detail if it fails" command...
    local what=$1 detail=$2
    shift 2
    if "$@"; then ok "$what"; else bad "$what" "$detail"; fi
}
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ] && exit 0
    exit 1
}

W=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_data() {
    if [ ! -r "$DATA/train-images-idx3-ubyte.gz" ] || [ ! -r "$DATA/t10k-images-idx3-ubyte.gz" ]; then
        bad "Fashion-MNIST" "not installed in $DATA (apt-get install dataset-fashion-mnist)"
        finish
    fi
}

# wait_port FILE PID: prints the port once FILE (an orchestrator's --port-file)
# holds one, read twice to be sure it is whole; waits 30 s at most and only
# while PID lives; status 1 if it never does.
wait_port() {
    local f=$1 pid=$2 i a b
    for ((i = 0; i < 300; i++)); do
        if [ -s "$f" ]; then
            a=$(tr -d ' \n' <"$f")
            sleep 0.05
            b=$(tr -d ' \n' <"$f")
            if [ "$a" = "$b" ] && [[ $a =~ ^[0-9]+$ ]] && [ "$a" -gt 0 ]; then
                echo "$a"
                return 0
            fi
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# bg OUT ERR args...: `tl args...` in the background under timeout, its output
# into OUT and ERR; LAST = its pid (in PIDS until reaped).
LAST=
bg() {
    local out=$1 err=$2
    shift 2
    timeout "$TMO" "$TL" "$@" >"$out" 2>"$err" &
    LAST=$!
    PIDS+=("$LAST")
}

# reap PID: waits for it and forgets it; RC = its exit status.
RC=0
reap() {
    wait "$1"
    RC=$?
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    PIDS=("${keep[@]}")
    return 0
}

# wait_grep FILE PATTERN [SECONDS]: until FILE has a line matching PATTERN
# (ERE), 30 s at most; status 1 if it never does.
wait_grep() {
    local i n=$((${3:-30} * 10))
    for ((i = 0; i < n; i++)); do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# oneline FILE: the file on one line (newlines as |), its first 600 characters.
oneline() { tr '\n' '|' <"$1" | cut -c 1-600; }
