#!/usr/bin/env bash
# On a machine with two GPUs: the disaggregated cluster on GPUs. Runs the multi_gpu cluster
# test (tandem-prefill on GPU 0, tandem-decode on GPU 1, KV over NCCL, against the colocated
# engine), then the TTFT benchmark on the random Llama-3-8B-shaped checkpoint: `tandem up`
# disaggregated (1 prefill worker on GPU 0, 1 decode worker on GPU 1) and colocated (one
# worker on GPU 0 running whole requests), `tandem bench` one request at a time at 512, 2048
# and 8000 prompt tokens, and prints a short table last. Logs go to $OUT.
#
# Binaries come from $BIN (tandem, tandem-router, tandem-prefill, tandem-decode,
# gpu_cluster_test, libraries in $BIN/lib; see docs/kv_transfer.md for the bundle step).
#
#   BIN=.bundle scripts/gpu_cluster_check.sh
#   SKIP_TEST=1 BIN=.bundle scripts/gpu_cluster_check.sh     # the benchmark only
#   NO_OVERLAP=1 ...   # also the disaggregated cluster with --kv_overlap=false (A/B)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bundle}
OUT=${OUT:-/tmp/gpu_cluster_check}
MODEL=${MODEL:-/tmp/llama8b}
LENGTHS=${LENGTHS:-"512 2048 8000"}
REQUESTS=${REQUESTS:-10}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
export LD_LIBRARY_PATH="$PWD/$BIN/lib:${LD_LIBRARY_PATH:-}"
export TANDEM_FIXTURES_DIR="$PWD/tests/fixtures"
nvidia-smi -L

if [ -z "${SKIP_TEST:-}" ]; then
  TANDEM_BIN_DIR="$PWD/$BIN" timeout 400 "$BIN/gpu_cluster_test" --gtest_output="json:$OUT/gpu_cluster_test.json" \
    > "$OUT/gpu_cluster_test.log" 2>&1
  echo "gpu_cluster_test rc=$?"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  if [ ! -f "$MODEL/config.json" ]; then
    PYTHONUNBUFFERED=1 python3 tools/make_random_llama8b.py --out "$MODEL" > "$OUT/make_model.log" 2>&1
    echo "make_random_llama8b rc=$?"
  fi
  # name, then `tandem up` flags
  run_config() {
    local name=$1
    shift
    rm -f "$OUT/$name.ready"
    "$BIN/tandem" up --bin_dir="$BIN" --model="$MODEL" --backend=cuda --listen=127.0.0.1:0 \
      --ready_file="$OUT/$name.ready" --log_dir="$OUT/$name-logs" --num_kv_blocks=0 \
      --gpu_memory_fraction=0.85 --max_num_batched_tokens=8192 "$@" > "$OUT/$name.up.log" 2>&1 &
    local up=$!
    for _ in $(seq 1 300); do
      [ -s "$OUT/$name.ready" ] && break
      kill -0 $up 2> /dev/null || break
      sleep 1
    done
    if [ ! -s "$OUT/$name.ready" ]; then
      echo "$name: cluster never became ready"
      tail -5 "$OUT/$name.up.log" "$OUT/$name-logs"/*.log
      kill -INT $up 2> /dev/null
      wait $up
      return
    fi
    local addr
    addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grpc'])" "$OUT/$name.ready")
    for len in $LENGTHS; do
      # warm-up: cuBLASLt plans, CUDA graphs, the NCCL communicator
      "$BIN/tandem" bench --server="$addr" --requests=3 --concurrency=1 --prompt_len="$len" \
        --output_len=2 > /dev/null 2>&1
      "$BIN/tandem" bench --server="$addr" --requests="$REQUESTS" --concurrency=1 \
        --prompt_len="$len" --output_len=2 --json_out="$OUT/$name-$len.json" \
        > "$OUT/$name-$len.txt" 2>&1
      echo "$name $len rc=$?"
    done
    grep -h "event=kv_transport\|KV pool" "$OUT/$name-logs"/*.log | head -4
    kill -INT $up
    wait $up
  }
  run_config colocated --num_prefill=0 --num_decode=1 --decode_devices=0
  run_config disaggregated --num_prefill=1 --num_decode=1 --prefill_devices=0 --decode_devices=1 \
    --kv_transport=nccl
  if [ -n "${NO_OVERLAP:-}" ]; then  # the same, KV sent after the first token (A/B)
    run_config no-overlap --num_prefill=1 --num_decode=1 --prefill_devices=0 --decode_devices=1 \
      --kv_transport=nccl --kv_overlap=false
  fi
fi

python3 - "$OUT" "$LENGTHS" <<'PY'
import json, os, sys
out, lengths = sys.argv[1], sys.argv[2].split()
path = os.path.join(out, "gpu_cluster_test.json")
if os.path.exists(path):
    print("\n== multi_gpu cluster test")
    for s in json.load(open(path))["testsuites"]:
        for t in s["testsuite"]:
            state = "FAILED" if t.get("failures") else t.get("result", "?")
            print(f'{t["name"]:78s} {state:10s} {t.get("time", "")}')
rows = []
for n in lengths:
    r = {}
    for name in ("colocated", "disaggregated", "no-overlap"):
        p = os.path.join(out, f"{name}-{n}.json")
        if os.path.exists(p):
            j = json.load(open(p))
            d = {x["percentage"]: x["latency_ms"] for x in j["ttftDistribution"]}
            r[name] = (d[50.0], d[90.0], j["statusCodeDistribution"])
    rows.append((n, r))
if any(r for _, r in rows):
    print("\n== TTFT, one request at a time (ms; p50 / p90)")
    print(f'{"prompt":>7s} {"colocated":>18s} {"disaggregated":>18s} {"ratio p50":>10s} {"no overlap":>18s} {"ratio":>7s}')
    for n, r in rows:
        c, d, x = r.get("colocated"), r.get("disaggregated"), r.get("no-overlap")
        fmt = lambda v: f"{v[0]:8.2f} / {v[1]:7.2f}" if v else " " * 18
        ratio = f"{d[0] / c[0]:10.3f}" if c and d else " " * 10
        xratio = f"{x[0] / c[0]:7.3f}" if c and x else ""
        print(f"{n:>7s} {fmt(c):>18s} {fmt(d):>18s} {ratio} {fmt(x) if x else '':>18s} {xratio}")
    for n, r in rows:
        for name, v in r.items():
            if list(v[2].keys()) != ["OK"]:
                print(f"  {name} {n}: status {v[2]}")
PY
