#!/usr/bin/env bash
# Whether two builds train the same bits: `tl train --epochs 1` (default data,
# model and seed) with Adadelta, SGD with momentum (also Nesterov and weight
# decay), Adam, Adam with weight decay and AdamW, in each build, and `cmp` of
# the saved models. Use it when the build flags or the optimizer's loops change
# (e.g. the portable build against -DTL_NATIVE=ON, or before against after).
# Build the two first, e.g.:
#   cmake -S . -B build-portable -DTL_NATIVE=OFF -DTL_TESTS=OFF && cmake --build build-portable -j2
#   cmake -S . -B build-native   -DTL_NATIVE=ON  -DTL_TESTS=OFF && cmake --build build-native -j2
# Usage: bench/bitexact.sh DIR_A DIR_B   (prints one line per optimizer; exit 1 if any differ)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/bitexact.sh DIR_A DIR_B" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
while IFS= read -r opts; do
  for side in a b; do
    dir=$1; [ $side = b ] && dir=$2
    # shellcheck disable=SC2086
    "$dir/tl" train $opts --epochs 1 --save "$tmp/$side.st" >"$tmp/$side.log" 2>&1 ||
      { echo "$dir/tl train $opts failed:" >&2; tail -3 "$tmp/$side.log" >&2; exit 1; }
  done
  if cmp -s "$tmp/a.st" "$tmp/b.st"; then
    printf 'identical  %s\n' "$opts"
  else
    printf 'DIFFERENT  %s\n' "$opts"; status=1
  fi
done <<'LIST'
--optimizer adadelta
--optimizer sgd --momentum 0.9
--optimizer sgd --momentum 0.9 --nesterov --weight-decay 0.0001
--optimizer adam
--optimizer adam --weight-decay 0.01
--optimizer adamw
LIST
exit $status
