#!/usr/bin/env bash
# Runs the whole test suite: the release build's tests, then the same suite built
# with AddressSanitizer + UndefinedBehaviorSanitizer, then a short run of every
# libFuzzer target. Expects scripts/setup.sh to have run.
# Usage: scripts/test.sh [--quick]   (--quick: release build only)
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
status=0

echo "== release build: ctest"
ctest --test-dir build --output-on-failure -j"$jobs" || status=1

if [ "${1:-}" != "--quick" ]; then
  echo "== ASan+UBSan build: ctest"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTL_SANITIZE=ON >/dev/null &&
    cmake --build build-asan -j"$jobs" >/dev/null &&
    ctest --test-dir build-asan --output-on-failure -j"$jobs" || status=1

  if [ -f fuzz/CMakeLists.txt ]; then
    echo "== libFuzzer targets: short runs"
    CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTL_FUZZ=ON -DTL_TESTS=OFF >/dev/null &&
      cmake --build build-fuzz -j"$jobs" >/dev/null &&
      ctest --test-dir build-fuzz/fuzz --output-on-failure -R '^fuzz_' || status=1
  fi
fi
exit $status
