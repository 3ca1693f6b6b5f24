#!/usr/bin/env bash
# One-epoch timings on the default data, in the same run:
#   floor  = the matrix products of one epoch of the default model (bench/gemm_floor.c)
#   train  = wall time of `tl train --epochs 1 --threads 1`
#   run N  = wall time of `tl run --nodes N --epochs 1 --threads 1` (TLS unless --insecure)
# The floor is the best of REPS repetitions (gemm_floor); the two commands are
# run REPS times each (default 3), alternately, and both their best and their
# median are printed. Ratios compare like with like: best with best (the least
# disturbed runs; this machine is a VM whose neighbours add +-5% of noise),
# median with median.
# Options after `--` go to `tl run` as they are, e.g. `-- --privacy open` to time
# the open protocol (sealed is the default since protocol 3; builds older than
# that know only the open one and take no --privacy).
# Usage: bench/epoch.sh [--build DIR] [--reps R] [--nodes N] [--insecure] [-- RUN-OPTIONS]
set -euo pipefail
build=build reps=3 nodes=3 insecure=""
usage="usage: bench/epoch.sh [--build DIR] [--reps R] [--nodes N] [--insecure] [-- RUN-OPTIONS]"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --insecure) insecure=--insecure; shift ;;
    --) shift; break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
extra=("$@")
tl=$build/tl
wall() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN {print b - a}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {print a / b}'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

floor=$("$build/gemm_floor" --reps "$reps" 2>/dev/null)
t_train=() t_run=()
for _ in $(seq "$reps"); do
  t_train+=("$(wall "$tl" train --epochs 1 --threads 1)")
  t_run+=("$(wall "$tl" run --nodes "$nodes" --epochs 1 --threads 1 $insecure "${extra[@]}")")
done
best() { sort -g | head -1; }
train=$(printf '%s\n' "${t_train[@]}" | best)
train_med=$(printf '%s\n' "${t_train[@]}" | median)
run=$(printf '%s\n' "${t_run[@]}" | best)
run_med=$(printf '%s\n' "${t_run[@]}" | median)
printf 'floor (matrix products of one epoch)    %.3f s   (best of %s)\n' "$floor" "$reps"
printf 'tl train --epochs 1 --threads 1          best %.3f s (%.2fx the floor)   median %.3f s (%.2fx)\n' \
  "$train" "$(div "$train" "$floor")" "$train_med" "$(div "$train_med" "$floor")"
printf 'tl run --nodes %s --epochs 1 %-10s  best %.3f s (%.2fx tl train)    median %.3f s (%.2fx)\n' \
  "$nodes" "$insecure${extra[*]:+ ${extra[*]}}" "$run" "$(div "$run" "$train")" "$run_med" "$(div "$run_med" "$train_med")"
