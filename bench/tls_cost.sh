#!/usr/bin/env bash
# The cost of TLS: wall time of a one-epoch `tl run --nodes 3 --epochs 1 --threads 1`
# with TLS (the default: tl run provisions its own CA and kits) and with --insecure
# (plaintext), run alternately in the same invocation, REPS times each (default 3).
# Prints every run, the medians and the ratio TLS / plaintext.
# Usage: bench/tls_cost.sh [path to tl]      (default build/tl; REPS=N in the environment)
set -euo pipefail
tl=${1:-build/tl}
reps=${REPS:-3}
if [ ! -x "$tl" ]; then
  echo "usage: bench/tls_cost.sh [path to tl]   ($tl is not an executable)" >&2
  exit 2
fi
args=(run --nodes 3 --epochs 1 --threads 1)

# Wall time of one run in seconds; a failed run stops the benchmark (its output shown).
wall() {
  local s e out rc=0
  out=$(mktemp)
  s=$(date +%s.%N)
  "$tl" "${args[@]}" "$@" >"$out" 2>&1 || rc=$?
  e=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then
    echo "tl ${args[*]} $* failed (exit $rc):" >&2
    cat "$out" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
  awk -v a="$s" -v b="$e" 'BEGIN {printf "%.3f\n", b - a}'
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

t_tls=() t_plain=()
for i in $(seq "$reps"); do
  t=$(wall)
  t_tls+=("$t")
  printf 'run %d  TLS        %s s\n' "$i" "$t"
  t=$(wall --insecure)
  t_plain+=("$t")
  printf 'run %d  plaintext  %s s\n' "$i" "$t"
done
tls=$(printf '%s\n' "${t_tls[@]}" | median)
plain=$(printf '%s\n' "${t_plain[@]}" | median)
echo "tl ${args[*]}: median of $reps runs each, alternating"
printf '  TLS (default)   %.3f s\n' "$tls"
printf '  --insecure      %.3f s\n' "$plain"
awk -v a="$tls" -v b="$plain" 'BEGIN {printf "  ratio TLS / plaintext  %.3f  (%+.1f%%)\n", a / b, (a / b - 1) * 100}'
