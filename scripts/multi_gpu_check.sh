#!/usr/bin/env bash
# On a machine with two GPUs: runs the multi_gpu tests (the NCCL KV transport, one process
# per GPU) and the KV transfer benchmark, and prints a short table last. Logs go to $OUT
# (default /tmp/multi_gpu_check).
#
# Binaries are taken from $BIN (default .bundle/, made on a build machine with
#   ../shared/tools/bundle-libs.sh .bundle/lib <binaries> && cp <binaries> .bundle/
# for nccl_kv_transfer_test, nccl_kv_test_peer and kv_transfer_bench), or from a build
# dir: BIN=build-nccl/.... NCCL is the machine's own: the CUDA toolkit's, else the one in
# Python's nvidia-nccl package. NVLink multicast stays off (NCCL_NVLS_ENABLE=0). Never set
# NCCL_DEBUG for the test: NCCL prints to stdout, which is the peers' line protocol.
#
#   scripts/multi_gpu_check.sh
#   SKIP_BENCH=1 scripts/multi_gpu_check.sh
#   SKIP_TESTS=1 BENCH_ARGS="--iters=40 --configs=128:16:2:b,64:16:2:b" scripts/multi_gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bundle}
OUT=${OUT:-/tmp/multi_gpu_check}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/$BIN/lib:$PWD/.bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}${nccl_dir:+:$nccl_dir}"
export TANDEM_NCCL_PEER_BIN="$BIN/nccl_kv_test_peer"

{ nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv; nvidia-smi topo -m; } \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
ldd "$BIN/nccl_kv_transfer_test" | grep -E "nccl|not found"

if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 200 "$BIN/nccl_kv_transfer_test" --gtest_output="json:$OUT/nccl_test.json" \
    > "$OUT/nccl_test.log" 2>&1
  echo "nccl_kv_transfer_test rc=$?"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  timeout 300 "$BIN/kv_transfer_bench" ${BENCH_ARGS:-} > "$OUT/kv_bench.json" 2> "$OUT/kv_bench.log"
  echo "kv_transfer_bench rc=$?"
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
path = os.path.join(out, "nccl_test.json")
print("\n== multi_gpu tests")
if os.path.exists(path):
    j = json.load(open(path))
    for s in j["testsuites"]:
        for t in s["testsuite"]:
            state = "FAILED" if t.get("failures") else t.get("result", "?")
            print(f'{t["name"]:62s} {state:10s} {t.get("time", "")}')
else:
    print("no result (see nccl_test.log)")
    os.system(f"tail -20 {out}/nccl_test.log")
path = os.path.join(out, "kv_bench.json")
if os.path.exists(path) and os.path.getsize(path) > 0:
    b = json.load(open(path))
    print(f'\n== KV transfer GPU0 -> GPU1, {b["shape"]}, median of {b["iters"]}, '
          f'tandem defaults {b.get("default_chunk_mib", "?")} MiB (edges {b.get("default_edge_mib", "?")} MiB) '
          f'x {b.get("default_slots", "?")} slots, blocking comm {b.get("default_blocking_comm", "?")}')
    print(f'{"tokens":>7s} {"MiB":>6s} {"raw1 GB/s":>10s} {"raw1blk":>8s} {"rawL GB/s":>10s} {"rawLblk":>8s} '
          f'{"rawPlanBlk":>10s} {"raw1reg":>8s} {"best raw":>9s} {"tandem GB/s":>12s} {"ms":>7s} {"of raw1":>8s} {"of best":>8s} {"noscat GB/s":>12s}')
    for r in b["sizes"]:
        print(f'{r["tokens"]:7d} {r["bytes"]/2**20:6.0f} {r["raw_one_message_gb_per_s"]:10.1f} '
              f'{r.get("raw_one_message_blocking_comm_gb_per_s", 0):8.1f} '
              f'{r["raw_layer_messages_gb_per_s"]:10.1f} {r.get("raw_layer_messages_blocking_comm_gb_per_s", 0):8.1f} '
              f'{r.get("raw_default_plan_blocking_comm_gb_per_s", 0):10.1f} '
              f'{r.get("raw_one_message_registered_gb_per_s", 0):8.1f} '
              f'{r.get("raw_best_gb_per_s", 0):9.1f} {r["tandem_gb_per_s"]:12.1f} '
              f'{r["tandem_ms"]:7.3f} {100*r.get("fraction_of_raw_one_message", 0):7.1f}% '
              f'{100*r["fraction_of_raw"]:7.1f}% {r["no_scatter_gb_per_s"]:12.1f}')
    print("\n== raw NCCL, messages of a chunk size (GB/s)")
    for r in b["sizes"]:
        chunks = r.get("raw_chunk_messages_gb_per_s", {})
        print(f'{r["tokens"]:7d} ' + " ".join(f'{k}:{v:.1f}' for k, v in chunks.items()))
    print("\n== tandem sweep (chunk MiB/edge MiB x slots [blk: blocking communicator][cN: copy kernels capped at N CTAs][rN: edges ramped by N][R: registered staging][D: direct writes]: GB/s, % of best raw)")
    for r in b["sizes"]:
        print(f'{r["tokens"]:7d} ' + " ".join(
            f'{c["chunk_mib"]}/{c.get("edge_mib", 0)}x{c["slots"]}{"blk" if c.get("blocking_comm") else ""}{"c" + str(c["pack_max_ctas"]) if c.get("pack_max_ctas") else ""}{"r" + str(c["ramp"]) if c.get("ramp", 1) > 1 else ""}{"R" if c.get("registered") else ""}{"D" if c.get("direct_write") else ""}:{c["gb_per_s"]:.1f}/{100*c["fraction_of_raw"]:.0f}%'
            for c in r.get("tandem_sweep", [])))
else:
    print("no bench result (see kv_bench.log)")
    os.system(f"tail -20 {out}/kv_bench.log")
PY
