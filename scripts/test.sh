#!/usr/bin/env bash
# Installs what is missing, builds everything (CUDA code too when nvcc is present), and runs
# the whole test suite (ctest -L unit and -L integration; -L gpu needs an NVIDIA GPU and
# -L multi_gpu two of them; each is skipped when the GPUs are not visible).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
labels="unit|integration"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  labels="unit|integration|gpu"
  if [ "$(nvidia-smi -L | grep -c '^GPU')" -ge 2 ]; then labels="$labels|multi_gpu"; fi
fi
cd "$BUILD_DIR"
ctest -L "$labels" --output-on-failure -j "${JOBS:-2}" --timeout 600
