#!/usr/bin/env bash
# Installs what llava-train needs on Debian/Ubuntu (apt-get when root, else prints the sudo line),
# then configures and builds into build/ (Release, all cores). Idempotent: quick when nothing changed.
#   LLAVA_BUILD_DIR  build folder (default: build)
#   LLAVA_SKIP_APT=1 never call apt-get (you installed the packages yourself)
#   extra arguments are passed to cmake's configure step (e.g. -DTorch_DIR=...).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  libtorch-dev libgloo-dev libopenblas0-pthread   # LibTorch 1.13 (CPU) + c10d Gloo headers + a fast BLAS
  libsentencepiece-dev libstb-dev libturbojpeg0-dev libsimdjson-dev
  nlohmann-json3-dev libcxxopts-dev libspdlog-dev libyaml-cpp-dev libgtest-dev
  cmake g++ make pkg-config ccache
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A user who points us at their own LibTorch 2.x does not need Debian's.
if [[ -n "${LIBTORCH:-}" || " $* " == *"Torch_DIR"* ]]; then
  missing=("${missing[@]/libtorch-dev}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if (( ${#missing[@]} )); then
  if [[ "${LLAVA_SKIP_APT:-0}" == 1 ]]; then
    echo "setup: LLAVA_SKIP_APT=1 but these packages are missing: ${missing[*]}" >&2
  elif [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing packages. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

BUILD_DIR=${LLAVA_BUILD_DIR:-build}
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" || $# -gt 0 ]]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built $BUILD_DIR/llava-train"
