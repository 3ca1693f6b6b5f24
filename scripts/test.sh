#!/usr/bin/env bash
# Runs the whole test suite: the release build's tests, then the same suite built
# with AddressSanitizer + UndefinedBehaviorSanitizer, then a short run of every
# libFuzzer target. Expects scripts/setup.sh to have run.
# Before the tests it converts scikit-learn's tables (scripts/sklearn-data.sh into
# build/sklearn, from Debian's python3-sklearn .deb) and exports TL_SKLEARN_DIR so
# that test_csv's real-table cases run; if the package cannot be had it says so and
# those cases are skipped, visibly, rather than failed.
# Usage: scripts/test.sh [--quick]   (--quick: release build only)
#
# Prints a line when each phase starts and one when it ends (ok or FAILED, with
# its elapsed seconds). Builds write their output to <build dir>/test-build.log;
# while one runs, a line every 30 s says how far it is, and a failed build
# prints the log's errors. ctest prints its own lines. Exits 1 if any phase
# failed (every phase runs regardless), 0 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
status=0
t_all=$SECONDS

# phase_start NAME, phase_end NAME RC T0: the lines around each phase.
phase_start() { echo "== $1 ..."; }
phase_end() {
  local secs=$((SECONDS - $3))
  if [ "$2" -eq 0 ]; then
    echo "== $1: ok (${secs} s)"
  else
    echo "== $1: FAILED (exit $2, ${secs} s)"
    status=1
  fi
}

# build NAME DIR CONFIGURE-ENV... -- CMAKE-ARGS...: configures and builds DIR
# quietly into DIR/test-build.log, reporting progress every 30 s.
build() {
  local name=$1 dir=$2 t0=$SECONDS rc env=()
  shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  phase_start "$name"
  mkdir -p "$dir"
  local log=$dir/test-build.log
  (env "${env[@]}" cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j"$jobs") >"$log" 2>&1 &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % 30)) -eq 0 ]; then
      local at
      at=$(grep -Eo '^\[ *[0-9]+%\]' "$log" | tail -n 1)
      echo "   ... $name: ${waited} s, ${at:-configuring}, $(grep -c 'Building C object' "$log") files compiled"
    fi
  done
  wait "$pid"
  rc=$?
  local warnings
  warnings=$(grep -c 'warning:' "$log")
  echo "   $name: $(grep -c 'Building C object' "$log") files compiled, $warnings warnings (log: $log)"
  if [ "$rc" -ne 0 ]; then
    echo "   --- errors in $log:"
    grep -E 'error|Error|FAILED' "$log" | head -n 20 | sed 's/^/   /'
    echo "   --- last lines:"
    tail -n 10 "$log" | sed 's/^/   /'
  fi
  phase_end "$name" "$rc" "$t0"
  return "$rc"
}

# run_ctest NAME ARGS...: ctest with its own output, framed by phase lines.
run_ctest() {
  local name=$1 t0=$SECONDS rc
  shift
  phase_start "$name"
  ctest "$@"
  rc=$?
  phase_end "$name" "$rc" "$t0"
}

# sklearn_tables DIR: the scikit-learn tables into DIR, TL_SKLEARN_DIR exported if
# they are there; a line either way (not a failed phase: the tables are optional).
sklearn_tables() {
  local dir=$1 t0=$SECONDS
  phase_start "scikit-learn tables ($dir)"
  mkdir -p "$(dirname "$dir")"
  # sklearn-data.sh runs apt-get update itself as root; as a user, with sudo, we do.
  if [ -r "$dir/breast_cancer.csv" ] || scripts/sklearn-data.sh "$dir" >"$dir.log" 2>&1 ||
     { [ "$(id -u)" -ne 0 ] && sudo -n apt-get update -qq >/dev/null 2>&1 &&
       scripts/sklearn-data.sh "$dir" >"$dir.log" 2>&1; }; then
    export TL_SKLEARN_DIR=$PWD/$dir
    echo "== scikit-learn tables: ok, TL_SKLEARN_DIR=$TL_SKLEARN_DIR ($((SECONDS - t0)) s)"
  else
    echo "== scikit-learn tables: not available, test_csv's table cases will be SKIPPED: $(tail -n 1 "$dir.log")"
  fi
}

if build "release build (build/)" build -- -DCMAKE_BUILD_TYPE=Release; then
  sklearn_tables build/sklearn
  run_ctest "release build: ctest" --test-dir build --output-on-failure -j"$jobs"
fi

if [ "${1:-}" != "--quick" ]; then
  if build "ASan+UBSan build (build-asan/)" build-asan -- -DCMAKE_BUILD_TYPE=Debug -DTL_SANITIZE=ON; then
    run_ctest "ASan+UBSan build: ctest" --test-dir build-asan --output-on-failure -j"$jobs"
  fi

  if [ -f fuzz/CMakeLists.txt ]; then
    if build "libFuzzer build (build-fuzz/, clang)" build-fuzz CC=clang -- \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTL_FUZZ=ON -DTL_TESTS=OFF; then
      run_ctest "libFuzzer targets: short runs" --test-dir build-fuzz/fuzz --output-on-failure -R '^fuzz_'
    fi
  fi
fi
if [ "$status" -eq 0 ]; then
  echo "== all phases ok ($((SECONDS - t_all)) s)"
else
  echo "== some phase FAILED ($((SECONDS - t_all)) s)"
fi
exit $status
