#!/usr/bin/env bash
# Installs every Debian package aicon needs, then configures and builds it.
# Idempotent: packages already present are not fetched again; the build is
# incremental (ccache when present). Works as root on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libcaf-dev libssl-dev
  capnproto libcapnp-dev
  liblmdb-dev libsodium-dev
  libboost-test-dev
  liblua5.4-dev libedit-dev
  libeigen3-dev
  libcli11-dev libtomlplusplus-dev libfmt-dev zlib1g-dev
  libtorch-dev                 # researchers' TorchScript models (CPU; ~130 MB)
  python3-torch                # tests only: makes the TorchScript test models (/usr/bin/python3)
  iproute2                     # tests only: the netns + netem federation run
  python3                      # tests only: a TLS 1.2 client outside aicon's process
  openmpi-bin libopenmpi-dev   # bench only: the MPI_Allreduce baseline
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

build_dir=${AICON_BUILD_DIR:-build}
if [[ ! -f "$build_dir/build.ninja" ]]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build_dir" -j "$(nproc)"
echo "setup: built $build_dir/aicon"
