#!/usr/bin/env bash
# What -march=native buys over the portable default build: wall time of
# `tl train --epochs 1 --threads 1` (load, train, evaluate; as bench/epoch.sh)
# with two builds, run as interleaved pairs (A, B, A, B, ...) so that load from
# neighbours on a shared machine falls on both alike. Prints each run's wall
# and CPU (user + system) seconds and the medians of both. Build the two first, e.g.:
#   cmake -S . -B build-portable -DTL_NATIVE=OFF -DTL_TESTS=OFF && cmake --build build-portable -j2
#   cmake -S . -B build-native   -DTL_NATIVE=ON  -DTL_TESTS=OFF && cmake --build build-native -j2
# Usage: bench/native.sh [--reps R] DIR_A DIR_B   (default 5 pairs)
set -euo pipefail
reps=5
[ "${1:-}" = --reps ] && { reps=$2; shift 2; }
[ $# -eq 2 ] || { echo "usage: bench/native.sh [--reps R] DIR_A DIR_B" >&2; exit 2; }
# one RUN: "wall cpu" seconds (cpu = user + system, less sensitive to neighbours)
one() {
  local TIMEFORMAT='%R %U %S' t
  t=$({ time "$1/tl" train --epochs 1 --threads 1 >/dev/null 2>&1; } 2>&1)
  awk '{printf "%.3f %.3f\n", $1, $2 + $3}' <<<"$t"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wa=() wb=() ca=() cb=()
for i in $(seq "$reps"); do
  read -r w c <<<"$(one "$1")"; wa+=("$w"); ca+=("$c")
  read -r w c <<<"$(one "$2")"; wb+=("$w"); cb+=("$c")
  printf 'pair %d: %s wall %s s cpu %s s   %s wall %s s cpu %s s\n' "$i" "$1" "${wa[-1]}" \
    "${ca[-1]}" "$2" "${wb[-1]}" "${cb[-1]}"
done
for what in wall cpu; do
  if [ $what = wall ]; then a=("${wa[@]}") b=("${wb[@]}"); else a=("${ca[@]}") b=("${cb[@]}"); fi
  ma=$(printf '%s\n' "${a[@]}" | median)
  mb=$(printf '%s\n' "${b[@]}" | median)
  printf 'median %-4s of %d: %s %.3f s, %s %.3f s, B/A %.3f\n' "$what" "$reps" "$1" "$ma" "$2" \
    "$mb" "$(awk -v a="$ma" -v b="$mb" 'BEGIN {print b / a}')"
done
