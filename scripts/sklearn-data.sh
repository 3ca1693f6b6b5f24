#!/usr/bin/env bash
# Real tables for tests and examples, from Debian's python3-sklearn package, without Python.
#
# Usage: scripts/sklearn-data.sh OUTDIR [PACKAGE.deb]
#
# Gets the .deb with `apt-get download python3-sklearn` (running `apt-get update` first if the
# package is unknown and we are root), unpacks it with `dpkg-deb -x` into a temporary directory,
# and converts the tables under .../sklearn/datasets/data/ to plain CSV in OUTDIR:
#   breast_cancer.csv  569 rows, 30 features, target 0 = malignant, 1 = benign
#   wine.csv           178 rows, 13 features, target 0..2 (class_0..class_2)
#   iris.csv           150 rows,  4 features, target 0..2 (setosa, versicolor, virginica)
#   digits.csv        1797 rows, 64 features, target 0..9
# Each has a header row: the feature names scikit-learn gives them (read from the package's
# sklearn/datasets/_base.py; f0, f1, ... if they cannot be found there), then `target`, the
# integer class. The package's own first line ("n_samples,n_features,class names...") is not a
# header: it is checked against the data and dropped. digits.csv.gz has no such line.
# Exits non-zero with a message if the package cannot be had or a file is not as expected.
set -euo pipefail

die() { echo "sklearn-data: $*" >&2; exit 1; }
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [PACKAGE.deb]"
out=$1
deb=${2:-}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$deb" ]; then
  command -v apt-get >/dev/null || die "apt-get not found: pass python3-sklearn's .deb as the second argument"
  if ! (cd "$work" && apt-get download python3-sklearn >"$work/apt.log" 2>&1); then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      (cd "$work" && apt-get download python3-sklearn >"$work/apt.log" 2>&1) ||
        die "cannot download python3-sklearn: $(tail -1 "$work/apt.log")"
    else
      die "cannot download python3-sklearn (try 'sudo apt-get update' first): $(tail -1 "$work/apt.log")"
    fi
  fi
  deb=$(ls "$work"/python3-sklearn_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || die "apt-get download left no python3-sklearn .deb"
fi
[ -r "$deb" ] || die "$deb: not readable"
dpkg-deb -x "$deb" "$work/x" || die "$deb: dpkg-deb -x failed"
data=$(find "$work/x" -type d -path '*/sklearn/datasets/data' | head -1)
[ -n "$data" ] || die "$deb: no sklearn/datasets/data directory in the package"
base=$(dirname "$data")/_base.py

# feature_names FILE: the quoted names of the feature_names list that follows the line naming
# FILE in _base.py, one per line (nothing if not found).
feature_names() {
  [ -r "$base" ] || return 0
  awk -v f="\"$1\"" '
    !found && index($0, "data_file_name") && index($0, f) { found = 1; next }
    found && !collect && /feature_names = / { collect = 1; next }
    collect && /^[ \t]*\]/ { exit }
    collect && /"/ { s = $0; sub(/^[^"]*"/, "", s); sub(/".*$/, "", s); gsub(/,/, ";", s); print s }
  ' "$base"
}

# header NFEATURES NAME...: the header line: the names if there are NFEATURES of them, else f0..
header() {
  local n=$1; shift
  local i h=""
  if [ $# -eq "$n" ]; then
    for i in "$@"; do h+="$i,"; done
  else
    [ $# -eq 0 ] || echo "sklearn-data: found $# feature names for $n features; using f0.." >&2
    for ((i = 0; i < n; i++)); do h+="f$i,"; done
  fi
  echo "${h}target"
}

# convert SRC DEST: a package table with its "n,F,class names" first line -> DEST with a header.
convert() {
  local src=$data/$1 dest=$out/$2 first n f names=()
  [ -r "$src" ] || die "$1: not in the package"
  first=$(head -1 "$src" | tr -d '\r')
  n=${first%%,*}; f=$(echo "$first" | cut -d, -f2)
  [[ $n =~ ^[0-9]+$ && $f =~ ^[0-9]+$ ]] || die "$1: first line is not 'n_samples,n_features,...': $first"
  mapfile -t names < <(feature_names "$1")
  { header "$f" "${names[@]}"; tail -n +2 "$src" | tr -d '\r'; } >"$dest.tmp"
  check "$dest.tmp" "$n" "$f" "$1"
  mv "$dest.tmp" "$dest"
  echo "sklearn-data: wrote $dest ($n rows, $f features, target: $(echo "$first" | cut -d, -f3- |
    tr -d '\r' | awk -F, '{ for (i = 1; i <= NF; i++) printf "%s%d=%s", (i > 1 ? " " : ""), i - 1, $i }'))"
}

# check FILE ROWS FEATURES NAME: FILE has a header and ROWS rows of FEATURES+1 cells.
check() {
  awk -F, -v n="$2" -v f="$3" -v name="$4" '
    NF != f + 1 { printf "sklearn-data: %s: line %d has %d cells, expected %d\n", name, NR, NF, f + 1 > "/dev/stderr"; bad = 1; exit 1 }
    END { if (!bad && NR != n + 1) { printf "sklearn-data: %s: %d rows, expected %d\n", name, NR - 1, n > "/dev/stderr"; exit 1 } }
  ' "$1" || exit 1
}

convert breast_cancer.csv breast_cancer.csv
convert wine_data.csv wine.csv
convert iris.csv iris.csv

# digits: 1797 rows of 64 pixels and the digit, no first line; names as scikit-learn makes them.
[ -r "$data/digits.csv.gz" ] || die "digits.csv.gz: not in the package"
digit_names=()
for r in 0 1 2 3 4 5 6 7; do for c in 0 1 2 3 4 5 6 7; do digit_names+=("pixel_${r}_${c}"); done; done
{ header 64 "${digit_names[@]}"; gzip -dc "$data/digits.csv.gz" | tr -d '\r'; } >"$out/digits.csv.tmp"
check "$out/digits.csv.tmp" 1797 64 digits.csv.gz
mv "$out/digits.csv.tmp" "$out/digits.csv"
echo "sklearn-data: wrote $out/digits.csv (1797 rows, 64 features, target classes: 0..9)"
