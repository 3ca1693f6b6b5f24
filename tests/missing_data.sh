#!/usr/bin/env bash
# missing_data.sh - the data convention (tests/harness.h, tests/lib.sh): a test
# that needs Fashion-MNIST and does not find it FAILS, with a line naming the
# package dataset-fashion-mnist; it never passes silently or skips.
#
#   bash tests/missing_data.sh <tl> <tests dir> <test program>...
#
# Runs each C test program given, and each e2e script that sources lib.sh, with
# TL_FMNIST_DIR pointing at an empty directory. Last line: "N passed, M
# failed"; exit status 1 on any failure.
set -u
TL=${1:?usage: missing_data.sh <tl> <tests dir> <test program>...}
TESTS=${2:?usage: missing_data.sh <tl> <tests dir> <test program>...}
shift 2
. "$TESTS/lib.sh"
mkdir -p "$W/empty"
export TL_FMNIST_DIR=$W/empty

# expect_fail NAME COMMAND...: exits non-zero (not by a time limit) and says
# dataset-fashion-mnist.
expect_fail() {
    local name=$1 rc
    shift
    timeout 120 "$@" >"$W/$name.out" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$name without Fashion-MNIST" "exit 0 (passed without its data): $(tail -n 3 "$W/$name.out" | tr '\n' ' ')"
    elif [ "$rc" -eq 124 ]; then
        bad "$name without Fashion-MNIST" "timed out"
    elif ! grep -q 'dataset-fashion-mnist' "$W/$name.out"; then
        bad "$name without Fashion-MNIST" "exit $rc but no line naming dataset-fashion-mnist: $(tail -n 3 "$W/$name.out" | tr '\n' ' ')"
    else
        ok "$name without Fashion-MNIST: exit $rc, $(grep -m1 'dataset-fashion-mnist' "$W/$name.out")"
    fi
}

for prog in "$@"; do
    expect_fail "$(basename "$prog")" "$prog"
done
for script in "$TESTS"/e2e_*.sh; do
    grep -q '^require_data' "$script" || continue
    expect_fail "$(basename "$script" .sh)" bash "$script" "$TL" "$TESTS/data"
done
finish
