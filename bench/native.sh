#!/usr/bin/env bash
# What -march=native buys over the portable default build: wall time of
# `tl train --epochs 1 --threads 1` (load, train, evaluate; as bench/epoch.sh)
# with two builds, run as interleaved pairs (A, B, A, B, ...) so that load from
# neighbours on a shared machine falls on both alike. Prints each run and the
# medians. Build the two first, e.g.:
#   cmake -S . -B build-portable -DTL_NATIVE=OFF -DTL_TESTS=OFF && cmake --build build-portable -j2
#   cmake -S . -B build-native   -DTL_NATIVE=ON  -DTL_TESTS=OFF && cmake --build build-native -j2
# Usage: bench/native.sh [--reps R] DIR_A DIR_B   (default 5 pairs)
set -euo pipefail
reps=5
[ "${1:-}" = --reps ] && { reps=$2; shift 2; }
[ $# -eq 2 ] || { echo "usage: bench/native.sh [--reps R] DIR_A DIR_B" >&2; exit 2; }
wall() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {print b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ta=() tb=()
for i in $(seq "$reps"); do
  ta+=("$(wall "$1/tl" train --epochs 1 --threads 1)")
  tb+=("$(wall "$2/tl" train --epochs 1 --threads 1)")
  printf 'pair %d: %s %.3f s   %s %.3f s\n' "$i" "$1" "${ta[-1]}" "$2" "${tb[-1]}"
done
ma=$(printf '%s\n' "${ta[@]}" | median)
mb=$(printf '%s\n' "${tb[@]}" | median)
printf 'median of %d: %s %.3f s, %s %.3f s, B/A %.3f\n' "$reps" "$1" "$ma" "$2" "$mb" \
  "$(awk -v a="$ma" -v b="$mb" 'BEGIN {print b / a}')"
