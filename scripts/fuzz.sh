#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer targets with clang and run each one for a while.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     # default 60 s, every fuzz/fuzz_*.c
#   scripts/fuzz.sh 600 idx safetensors
#
# Builds in build-fuzz/ (CC=clang, -DTL_FUZZ=ON). Each target runs, niced, on a
# copy of its seed corpus fuzz/corpus/<name>/ in a temporary directory (the
# committed corpus is never written), with fuzz/<name>.dict if present. Prints
# per target: executions per second, final coverage (cov/ft) and corpus size,
# and whether it crashed. On a crash the reproducer and the log are kept and
# their paths printed. Exits 1 if any target crashed (or failed to start).
#
# Environment: BUILD_DIR (default build-fuzz), NICE (default 10), JOBS (build
# parallelism, default 2), FUZZ_ARGS (extra libFuzzer flags), KEEP=1 keeps the
# temporary directories (grown corpora) even without a crash.
set -u

cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
case $secs in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a number, got '$secs'" >&2; exit 2 ;; esac
build=${BUILD_DIR:-build-fuzz}
nice_level=${NICE:-10}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_*.c; do
        [ -e "$f" ] || continue
        n=${f#fuzz/fuzz_}
        targets+=("${n%.c}")
    done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz.sh: no fuzz targets found in fuzz/" >&2
    exit 2
fi

echo "== building ${targets[*]} in $build (clang, TL_FUZZ=ON)"
if ! CC=${CC_FUZZ:-clang} cmake -S . -B "$build" -DTL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        >"$build.configure.log" 2>&1; then
    cat "$build.configure.log" >&2
    exit 2
fi
rm -f "$build.configure.log"
build_targets=()
for t in "${targets[@]}"; do build_targets+=(--target "fuzz_$t"); done
if ! nice -n "$nice_level" cmake --build "$build" -j"${JOBS:-2}" "${build_targets[@]}"; then
    echo "fuzz.sh: build failed" >&2
    exit 2
fi

crashed=0
summary=()
for t in "${targets[@]}"; do
    exe=$build/fuzz/fuzz_$t
    seeds=fuzz/corpus/$t
    if [ ! -x "$exe" ]; then
        echo "fuzz.sh: $exe was not built" >&2
        crashed=1
        summary+=("$(printf '%-14s NOT BUILT' "$t")")
        continue
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tl-fuzz-$t.XXXXXX")
    mkdir -p "$tmp/corpus" "$tmp/artifacts"
    [ -d "$seeds" ] && cp -R "$seeds/." "$tmp/corpus/"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="$root/fuzz/$t.dict")
    echo "== fuzz_$t: ${secs}s on a copy of $seeds ($(ls "$tmp/corpus" | wc -l) seeds) in $tmp"
    # shellcheck disable=SC2086
    nice -n "$nice_level" "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$tmp/artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} \
        "$tmp/corpus" >"$tmp/log" 2>&1
    rc=$?
    # Last status line, e.g. "#123456 DONE cov: 812 ft: 2301 corp: 310/20Kb ... exec/s: 4096"
    last=$(grep -E '^#[0-9]+' "$tmp/log" | tail -n 1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(sed -nE 's/.* corp: ([^ ]+).*/\1/p' <<<"$last")
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$tmp/log")
    eps=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$tmp/log")
    rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+)/\1/p' "$tmp/log")
    repro=$(ls "$tmp/artifacts" 2>/dev/null | head -n 1)
    if [ $rc -ne 0 ] || [ -n "$repro" ]; then
        crashed=1
        status="CRASH (exit $rc)"
        echo "-- fuzz_$t crashed; log: $tmp/log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*CHECK failed|.*deadly signal)' "$tmp/log" | head -n 5
        if [ -n "$repro" ]; then
            echo "-- reproducer: $tmp/artifacts/$repro"
            echo "   rerun: $exe $tmp/artifacts/$repro"
        fi
    else
        status="ok"
    fi
    line=$(printf '%-14s %-16s exec/s %-7s execs %-10s cov %-5s ft %-6s corpus %-12s rss %sMB' \
        "$t" "$status" "${eps:-?}" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}")
    echo "$line"
    summary+=("$line")
    if [ "$status" = ok ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$tmp"
    else
        echo "-- kept $tmp"
    fi
done

echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit $crashed
