#!/usr/bin/env bash
# Sets up (installs missing packages), builds, and runs the whole test suite with ctest.
# Fixture tests read ../shared beside the checkout (or $LLAVA_SHARED_DIR) and skip, saying so, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd "${LLAVA_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" "$@"
