#!/usr/bin/env bash
# libFuzzer runs of aicon's fuzz targets (fuzz/), built with Debian's clang
# and AddressSanitizer in their own build directory:
#   scripts/fuzz.sh [TARGET|all] [SECONDS]      (default: all, 60 s each)
# Targets: envelope ingest config checkpoint lua block stream. Each starts from the
# seed corpus in fuzz/corpus/TARGET and keeps what it finds in
# build-fuzz/corpus/TARGET; a crash is written as crash-* in the current
# directory (add it to fuzz/corpus/TARGET as a regression seed once fixed).
# ctest runs the same targets for a few seconds each through the ordinary
# build's replay driver (no clang needed).
# clang 14 cannot capture a structured binding in a lambda (C++20): keep
# such captures as plain variables, or this build stops.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-60}
build=${AICON_FUZZ_BUILD_DIR:-build-fuzz}
command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang (apt-get install clang)" >&2; exit 2; }
if [[ ! -f "$build/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DAICON_FUZZ=ON
fi
targets=(envelope ingest config checkpoint lua block stream)
[[ "$target" != all ]] && targets=("$target")
for t in "${targets[@]}"; do
  cmake --build "$build" --target "fuzz_$t"
  mkdir -p "$build/corpus/$t"
  echo "fuzz.sh: $t for $seconds s"
  "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$build/corpus/$t" "fuzz/corpus/$t"
done
