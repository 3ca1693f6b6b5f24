#!/usr/bin/env bash
# Installs what tl needs from Debian's packages (when missing) and builds it into build/.
# Usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(cmake make gcc clang libclang-rt-14-dev clang-format pkg-config
      libdnnl-dev zlib1g-dev libzstd-dev libdeflate-dev libssl-dev libcmocka-dev
      dataset-fashion-mnist)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/tl (portable; -DTL_NATIVE=ON compiles for this CPU only, README \"Build options\")"
