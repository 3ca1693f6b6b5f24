#!/usr/bin/env bash
# One-epoch timings on the default data, in the same run:
#   floor  = the matrix products of one epoch of the default model (bench/gemm_floor.c)
#   train  = wall time of `tl train --epochs 1 --threads 1`
#   run N  = wall time of `tl run --nodes N --epochs 1 --threads 1` (TLS unless --insecure)
# Each is the median of REPS runs (default 3), run alternately.
# Usage: bench/epoch.sh [--build DIR] [--reps R] [--nodes N] [--insecure]
set -euo pipefail
build=build reps=3 nodes=3 insecure=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --insecure) insecure=--insecure; shift ;;
    *) echo "usage: bench/epoch.sh [--build DIR] [--reps R] [--nodes N] [--insecure]" >&2; exit 2 ;;
  esac
done
tl=$build/tl
wall() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {print b - a}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {print a / b}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

floor=$("$build/gemm_floor" --reps 5 2>/dev/null)
t_train=() t_run=()
for _ in $(seq "$reps"); do
  t_train+=("$(wall "$tl" train --epochs 1 --threads 1)")
  t_run+=("$(wall "$tl" run --nodes "$nodes" --epochs 1 --threads 1 $insecure)")
done
train=$(printf '%s\n' "${t_train[@]}" | median)
run=$(printf '%s\n' "${t_run[@]}" | median)
printf 'floor (matrix products of one epoch)   %.3f s\n' "$floor"
printf 'tl train --epochs 1 --threads 1         %.3f s   (%.2fx the floor)\n' "$train" "$(div "$train" "$floor")"
printf 'tl run --nodes %s --epochs 1 %-10s %.3f s   (%.2fx tl train)\n' "$nodes" "$insecure" "$run" "$(div "$run" "$train")"
