#!/usr/bin/env bash
# Builds tandem and runs the main job: `tandem up` starts a local cluster (a router, one
# prefill and one decode worker, CPU backend, the embedded default model) and
# `tandem generate --server` streams a completion from it; then the cluster is stopped.
# Extra arguments go to `tandem generate` (e.g. --prompt="..." --max_tokens=48).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target tandem tandem-router tandem-prefill tandem-decode

work=$(mktemp -d)
"$BUILD_DIR/cli/tandem" up --listen=127.0.0.1:0 --ready_file="$work/up.ready" \
  --log_dir="$work/logs" &
up_pid=$!
trap 'kill -INT $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
  [[ -s "$work/up.ready" ]] && break
  kill -0 $up_pid 2>/dev/null || { echo "tandem up failed; logs in $work/logs" >&2; exit 1; }
  sleep 0.2
done
[[ -s "$work/up.ready" ]] || { echo "tandem up not ready after 120 s" >&2; exit 1; }
address=$(sed -E 's/.*"grpc":"([^"]+)".*/\1/' "$work/up.ready")
"$BUILD_DIR/cli/tandem" generate --server="$address" "$@"
