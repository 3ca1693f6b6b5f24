#!/usr/bin/env bash
# The cost of sealed mode: wall time of `tl run --nodes 3 --epochs 1 --threads 1`
# sealed (the default) and with --privacy open, over shared memory (tl run's
# default: nodes on a unix socket map parameters and gradients) and over the
# sockets (--no-shm: every tensor in frames, as over TCP), the four runs
# interleaved in each repetition, REPS times (default 3). Prints every run,
# the medians, the ratio sealed / open per transport (target <= 1.3), and the
# traffic per batch per node the orchestrator reports, against the floor:
#   sealed: one u64 per node-side parameter up (the masked gradient) and the same
#           down (the masked sum), plus the cut tensors: rows x (d_c + classes)
#           floats up (h, g), rows x d_c floats down (dh) and the row indices;
#           traverse mode also sends the orchestrator side down (floats).
#   open:   the whole parameter block down (floats), the node-side gradient up
#           (floats), plus the same cut tensors.
# The floor is for the default model (784-256-128-64-10) at the default cut 2.
# The machine may be shared with other jobs: the runs are interleaved so that
# load hits every variant alike; compare medians, and say so when quoting.
# Usage: bench/sealed.sh [path to tl] [extra tl run options, e.g. --insecure]
#        (default build/tl; REPS=N in the environment)
set -euo pipefail
tl=${1:-build/tl}
[ $# -gt 0 ] && shift
extra=("$@")
reps=${REPS:-3}
if [ ! -x "$tl" ]; then
  echo "usage: bench/sealed.sh [path to tl] [tl run options]   ($tl is not an executable)" >&2
  exit 2
fi
args=(run --nodes 3 --epochs 1 --threads 1 "${extra[@]}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run NAME options...: one run; prints its wall time; keeps its log in $tmp/NAME.log
# (the last run's). A failed run stops the benchmark, its output shown.
run() {
  local name=$1 s e rc=0
  shift
  s=$(date +%s.%N)
  "$tl" "${args[@]}" "$@" >"$tmp/$name.log" 2>&1 || rc=$?
  e=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then
    echo "tl ${args[*]} $* failed (exit $rc):" >&2
    tail -n 20 "$tmp/$name.log" >&2
    exit 1
  fi
  awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f\n", b - a}'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

variants=(sealed-shm open-shm sealed-sock open-sock)
declare -A opts=(
  [sealed-shm]="" [open-shm]="--privacy open"
  [sealed-sock]="--no-shm" [open-sock]="--privacy open --no-shm"
)
declare -A times
for i in $(seq "$reps"); do
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    t=$(run "$v" ${opts[$v]})
    times[$v]="${times[$v]:-} $t"
    printf 'rep %d  %-12s %s s\n' "$i" "$v" "$t"
  done
done

echo
echo "tl ${args[*]}: median of $reps interleaved runs each"
declare -A med
for v in "${variants[@]}"; do
  # shellcheck disable=SC2086
  med[$v]=$(printf '%s\n' ${times[$v]} | median)
done
for tr in shm sock; do
  label=$([ $tr = shm ] && echo "shared memory" || echo "sockets (--no-shm)")
  awk -v s="${med[sealed-$tr]}" -v o="${med[open-$tr]}" -v l="$label" 'BEGIN {
    printf "  %-20s sealed %.3f s   open %.3f s   sealed / open %.3f (target <= 1.3)\n", l, s, o, s / o }'
done

# Traffic: "sent X MB, received Y MB (A KB out and B KB in per batch per node)".
# Rows per node per batch come from the sample count and the node batches
# (sent bytes / bytes per node batch).
P_NODE=$((784 * 256 + 256 + 256 * 128 + 128)) # node side at cut 2
P_ORCH=$((128 * 64 + 64 + 64 * 10 + 10))       # orchestrator side
D_C=128 CLASSES=10 SAMPLES=60000
echo
echo "  traffic per batch per node (orchestrator's count, frames incl. headers) against the floor:"
for v in "${variants[@]}"; do
  line=$(grep -oE 'sent [0-9.]+ MB, received [0-9.]+ MB \([0-9]+ KB out and [0-9]+ KB in' "$tmp/$v.log" | tail -n 1 || true)
  if [ -z "$line" ]; then
    printf '  %-12s (no traffic line in the log)\n' "$v"
    continue
  fi
  read -r mb_out kb_out kb_in <<<"$(sed -E 's/sent ([0-9.]+) MB, received [0-9.]+ MB \(([0-9]+) KB out and ([0-9]+) KB in/\1 \2 \3/' <<<"$line")"
  awk -v v="$v" -v mbo="$mb_out" -v ko="$kb_out" -v ki="$kb_in" -v pn="$P_NODE" -v po="$P_ORCH" \
      -v dc="$D_C" -v nc="$CLASSES" -v ns="$SAMPLES" 'BEGIN {
    nb = (ko > 0) ? mbo * 1e6 / (ko * 1e3) : 0        # node batches
    r = (nb > 0) ? ns / nb : 0                          # rows per node batch
    cut_up = r * (dc + nc) * 4; cut_down = r * (dc * 4 + 4)
    if (v ~ /^sealed/) { up = pn * 8 + cut_up; down = pn * 8 + po * 4 + cut_down }
    else               { up = pn * 4 + cut_up; down = (pn + po) * 4 + cut_down }
    note = (v ~ /shm$/) ? "  (shared memory: the tensors in shared regions are not counted)" : ""
    printf "  %-12s out %5d KB (floor %5.0f)   in %5d KB (floor %5.0f)   %.1f rows/node/batch%s\n",
           v, ko, down / 1e3, ki, up / 1e3, r, note }'
done
