#!/usr/bin/env bash
# Builds tandem and runs the main job: a streamed completion from the embedded default
# model (tests/fixtures/models/llama3-tiny). Extra arguments go to `tandem generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target tandem
exec "$BUILD_DIR/cli/tandem" generate "$@"
