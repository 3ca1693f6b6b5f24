#!/usr/bin/env bash
# Formats the C sources with clang-format and the repository's .clang-format.
# Usage: scripts/format.sh           rewrites every tracked .c and .h file in place
#        scripts/format.sh --check   rewrites nothing; prints each file that would
#                                    change, then exits 1 if there was one
# Exit status: 0 clean (or formatted), 1 (--check) files differ, 2 usage error,
# 77 clang-format is missing (the "skipped" code ctest's format test expects).
# The output depends on clang-format's version: the style was tuned with 14 (Debian 12's
# package `clang-format`), which is preferred when several are installed; CLANG_FORMAT=PATH
# picks another. Regions between `// clang-format off` and `// clang-format on` (help texts,
# aligned tables) are left as written.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
case "${1-}" in
  "") ;;
  --check) check=1 ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "format.sh: unknown argument '$1' (usage: scripts/format.sh [--check])" >&2; exit 2 ;;
esac

cf=${CLANG_FORMAT:-}
if [ -z "$cf" ]; then
  cf=$(command -v clang-format-14 || command -v clang-format || true)
fi
if [ -z "$cf" ] || ! command -v "$cf" >/dev/null 2>&1; then
  echo "format.sh: clang-format not found; install the Debian package clang-format" \
       "(apt-get install clang-format, or run scripts/setup.sh)" >&2
  exit 77
fi
ver=$("$cf" --version | sed -n 's/.*version \([0-9]*\).*/\1/p')
if [ "$ver" != 14 ]; then
  echo "format.sh: warning: $cf is version ${ver:-unknown}; .clang-format was tuned with 14," \
       "other versions may format some lines differently" >&2
fi

# every tracked C file; outside a git checkout, every one under the source directories
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- '*.c' '*.h')
else
  mapfile -t files < <(find src include tests fuzz bench -name '*.[ch]' 2>/dev/null | sort)
fi

if [ "$check" -eq 0 ]; then
  "$cf" -i --style=file --fallback-style=none -- "${files[@]}"
  exit 0
fi

differ=0
for f in "${files[@]}"; do
  if ! "$cf" --style=file --fallback-style=none -- "$f" | cmp -s - "$f"; then
    echo "$f"
    differ=1
  fi
done
if [ "$differ" -ne 0 ]; then
  echo "format.sh: the files above are not formatted (scripts/format.sh rewrites them)" >&2
fi
exit "$differ"
