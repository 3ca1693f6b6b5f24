#!/usr/bin/env bash
# e2e_partition.sh - `tl partition` end to end on Fashion-MNIST.
#
#   bash tests/e2e_partition.sh <path to tl> <tests/data dir>
#
# Splits the installed Fashion-MNIST training set (the project's setup
# installs /usr/share/datasets/fashion-mnist) into node directories in a
# temporary directory and checks sizes, that the contiguous split is the
# original cut in order, the per-node totals of every scheme, the usage errors
# and the refusal to overwrite. Last line: "N passed, M failed"; exit status 1
# on any failure.
set -u

TL=${1:?usage: e2e_partition.sh <tl> <tests/data dir>}
TL=$(realpath "$TL") # the script changes directory
DATA=/usr/share/datasets/fashion-mnist
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL: $1"; }
check() { # check "description" command...
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

if [ ! -r "$DATA/train-labels-idx1-ubyte.gz" ] || [ ! -r "$DATA/train-images-idx3-ubyte.gz" ]; then
    bad "Fashion-MNIST is not installed in $DATA (apt-get install dataset-fashion-mnist)"
    finish
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# First dimension (sample count) of a gzipped IDX file, from its header.
idx_count() {
    local b
    read -r -a b < <(zcat "$1" | head -c 8 | od -An -tu1 -w8)
    echo $(((b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7]))
}
# Payload of a gzipped IDX file of rank r (header of 4 + 4r bytes skipped).
payload() { zcat "$1" | tail -c +$((4 + 4 * $2 + 1)); }

# Sum of the "total" column of a partition table (rows: node total c0 c1 ...),
# and whether every row's class counts add up to its total.
table_total() { awk '$1 ~ /^[0-9]+$/ { t += $2 } END { print t + 0 }' "$1"; }
table_rows() { awk '$1 ~ /^[0-9]+$/ { n++ } END { print n + 0 }' "$1"; }
table_consistent() {
    awk '$1 ~ /^[0-9]+$/ { s = 0; for (i = 3; i <= NF; i++) s += $i; if (s != $2) bad = 1 }
         END { exit bad }' "$1"
}

# A usage error: exit 2, one "tl partition: ..." line, then only the --help hint.
usage_error() { # usage_error "description" args...
    local what=$1
    shift
    "$TL" partition "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    local lines problems
    lines=$(wc -l <"$TMP/err")
    problems=$(grep -c '^tl partition: ' "$TMP/err")
    if [ "$rc" -eq 2 ] && [ "$problems" -eq 1 ] && [ "$lines" -le 2 ] &&
        { [ "$lines" -eq 1 ] || grep -qx "Try 'tl partition --help'." "$TMP/err"; } &&
        [ ! -s "$TMP/out" ]; then
        ok "$what (exit 2: $(head -n 1 "$TMP/err"))"
    else
        bad "$what: exit $rc, stderr:"
        sed 's/^/    /' "$TMP/err"
    fi
}

# --- help ---------------------------------------------------------------------
"$TL" partition --help >"$TMP/help" 2>&1
check "--help exits 0" test $? -eq 0
check "--help names the defaults" grep -q "$DATA" "$TMP/help"
check "--help shows the default scheme" grep -q '\[contiguous\]' "$TMP/help"

# --- contiguous: the original, cut in order -----------------------------------
OUT=$TMP/contig
"$TL" partition --nodes 3 --scheme contiguous --out "$OUT" >"$TMP/table" 2>"$TMP/err"
check "contiguous into 3 nodes succeeds" test $? -eq 0
check "contiguous prints nothing on stderr" test ! -s "$TMP/err"
check "table has one row per node" test "$(table_rows "$TMP/table")" -eq 3
check "table totals 60000" test "$(table_total "$TMP/table")" -eq 60000
check "table class counts add up to each node's total" table_consistent "$TMP/table"
for k in 1 2 3; do
    check "node-$k has 20000 labels" test "$(idx_count "$OUT/node-$k/train-labels-idx1-ubyte.gz")" -eq 20000
    check "node-$k has 20000 images" test "$(idx_count "$OUT/node-$k/train-images-idx3-ubyte.gz")" -eq 20000
    check "node-$k holds only its two train files" \
        test "$(ls "$OUT/node-$k" | tr '\n' ' ')" = "train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz "
done
check "no node-4" test ! -e "$OUT/node-4"
check "concatenated node labels equal the original" cmp -s \
    <(for k in 1 2 3; do payload "$OUT/node-$k/train-labels-idx1-ubyte.gz" 1; done) \
    <(payload "$DATA/train-labels-idx1-ubyte.gz" 1)
check "concatenated node images equal the original" cmp -s \
    <(for k in 1 2 3; do payload "$OUT/node-$k/train-images-idx3-ubyte.gz" 3; done) \
    <(payload "$DATA/train-images-idx3-ubyte.gz" 3)

# A tiny data set of its own: the first 5 samples.
TINY=$TMP/tiny
mkdir -p "$TINY"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x05'; payload "$DATA/train-labels-idx1-ubyte.gz" 1 | head -c 5; } |
    gzip >"$TINY/train-labels-idx1-ubyte.gz"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c\x00\x00\x00\x1c'
  payload "$DATA/train-images-idx3-ubyte.gz" 3 | head -c $((5 * 784)); } |
    gzip >"$TINY/train-images-idx3-ubyte.gz"
"$TL" partition --data "$TINY" --nodes 5 --out "$TMP/t5" >"$TMP/table" 2>/dev/null
check "5 samples into 5 nodes succeeds" test $? -eq 0
check "... one sample each" test "$(awk '$1 ~ /^[0-9]+$/ && $2 == 1 { n++ } END { print n + 0 }' "$TMP/table")" -eq 5
check "... node-5 holds the 5th label" cmp -s <(payload "$TMP/t5/node-5/train-labels-idx1-ubyte.gz" 1) \
    <(payload "$TINY/train-labels-idx1-ubyte.gz" 1 | tail -c 1)

# --- the other schemes: every sample placed once -------------------------------
for scheme in iid label dirichlet:0.5; do
    dir=$TMP/${scheme/:/-}
    table=$TMP/table-${scheme/:/-}
    "$TL" partition --nodes 3 --scheme "$scheme" --seed 7 --out "$dir" >"$table" 2>"$TMP/err"
    rc=$?
    check "$scheme succeeds" test "$rc" -eq 0
    check "$scheme table totals 60000" test "$(table_total "$table")" -eq 60000
    check "$scheme class counts add up" table_consistent "$table"
    sum=0
    for k in 1 2 3; do
        f=$dir/node-$k/train-labels-idx1-ubyte.gz
        [ -r "$f" ] && sum=$((sum + $(idx_count "$f")))
    done
    check "$scheme node files hold 60000 labels in all" test "$sum" -eq 60000
    # The same labels overall, in some order.
    check "$scheme nodes hold the original labels (as a multiset)" cmp -s \
        <(for k in 1 2 3; do payload "$dir/node-$k/train-labels-idx1-ubyte.gz" 1; done | od -An -v -tu1 -w1 | sort) \
        <(payload "$DATA/train-labels-idx1-ubyte.gz" 1 | od -An -v -tu1 -w1 | sort)
done
check "label gives node 1 the lowest classes only" \
    awk '$1 == "1" { found = 1; if (!($3 == 6000 && $4 == 6000 && $5 == 6000 && $6 == 2000 && $7 == 0)) exit 1 }
         END { exit !found }' "$TMP/table-label"

# --- a partition directory is a centralized data set, in node order -----------
# tl train on the iid split trains on node-1, node-2, node-3 concatenated: the
# rows, in the order, of a distributed run over those nodes (same seed).
M=linear:32,relu,linear:10
"$TL" train --data "$TMP/iid" --seed 7 --model $M --max-steps 10 --save "$TMP/central.st" >/dev/null 2>"$TMP/err"
check "tl train --data PARTITION_DIR succeeds" test $? -eq 0
"$TL" run --privacy open --nodes 3 --partition iid --seed 7 --model $M --max-steps 10 --cut 1 --insecure \
    --save "$TMP/dist.st" >/dev/null 2>"$TMP/err"
check "tl run --partition iid succeeds" test $? -eq 0
check "... and agrees with tl train on the partition directory to 1e-5 after 10 steps" \
    "$TL" compare "$TMP/central.st" "$TMP/dist.st" --tolerance 1e-5
"$TL" train --seed 7 --model $M --max-steps 10 --save "$TMP/pooled.st" >/dev/null 2>&1
check "... (training on the original order instead does not)" \
    test "$("$TL" compare "$TMP/pooled.st" "$TMP/dist.st" --tolerance 1e-5 >/dev/null 2>&1; echo $?)" -ne 0
"$TL" train --data "$TMP/contig" --seed 7 --model $M --max-steps 10 --save "$TMP/contig.st" >/dev/null 2>&1
check "a contiguous partition directory trains bit-identically to the original" \
    grep -q bit-identical <("$TL" compare "$TMP/pooled.st" "$TMP/contig.st")

# --- usage errors --------------------------------------------------------------
usage_error "bad --scheme" --nodes 3 --scheme bogus --out "$TMP/u1"
check "bad --scheme writes nothing" test ! -e "$TMP/u1"
usage_error "bad dirichlet ALPHA" --nodes 3 --scheme dirichlet:-1 --out "$TMP/u2"
usage_error "--nodes 0" --nodes 0 --out "$TMP/u3"
check "--nodes 0 writes nothing" test ! -e "$TMP/u3"
usage_error "--nodes not a number" --nodes three --out "$TMP/u4"
usage_error "missing --out" --nodes 3
usage_error "missing --nodes" --out "$TMP/u5"
usage_error "unknown option" --nodes 3 --out "$TMP/u6" --bogus
usage_error "bad --split" --nodes 3 --out "$TMP/u7" --split test
usage_error "more nodes than samples" --data "$TINY" --nodes 6 --out "$TMP/u8"
check "... writes nothing" test ! -e "$TMP/u8"

# --- refusing to overwrite -----------------------------------------------------
before=$(cat "$OUT"/node-*/* | md5sum)
"$TL" partition --nodes 3 --scheme iid --out "$OUT" >"$TMP/out" 2>"$TMP/err"
rc=$?
check "writing into non-empty node dirs exits 1" test "$rc" -eq 1
check "... with one line on stderr naming the directory" \
    test "$(wc -l <"$TMP/err")" -eq 1 -a "$(grep -c "^tl partition: .*node-1.*--force" "$TMP/err")" -eq 1
check "... and leaves the files alone" test "$(cat "$OUT"/node-*/* | md5sum)" = "$before"
mkdir -p "$TMP/one/node-2" && touch "$TMP/one/node-2/keep"
"$TL" partition --data "$TINY" --nodes 2 --out "$TMP/one" >/dev/null 2>&1
check "one non-empty node dir (node-2) is enough to refuse, before writing node-1" \
    test $? -eq 1 -a ! -e "$TMP/one/node-1"
mkdir -p "$TMP/empty/node-1"
"$TL" partition --data "$TINY" --nodes 2 --out "$TMP/empty" >/dev/null 2>&1
check "empty existing node dirs are fine" test $? -eq 0 -a -s "$TMP/empty/node-1/train-labels-idx1-ubyte.gz"
"$TL" partition --nodes 3 --scheme iid --out "$OUT" --force >"$TMP/table" 2>/dev/null
check "--force overwrites" test $? -eq 0 -a "$(cat "$OUT"/node-*/* | md5sum)" != "$before"
check "--force result totals 60000" test "$(table_total "$TMP/table")" -eq 60000

# --- a data directory that is not there ----------------------------------------
"$TL" partition --nodes 2 --data "$TMP/nowhere" --out "$TMP/x" >/dev/null 2>"$TMP/err"
rc=$?
check "missing data exits 1 with one line" test "$rc" -eq 1 -a "$(wc -l <"$TMP/err")" -eq 1

finish
