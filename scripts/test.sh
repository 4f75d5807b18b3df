#!/usr/bin/env bash
# Builds aicon if needed and runs the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${AICON_BUILD_DIR:-build}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" -j "$(nproc)"
cd "$build_dir"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
