#!/usr/bin/env bash
# On the GPU machine: runs the gpu tests (and compute-sanitizer on the kernel tests), writes
# the random Llama-3-8B-shaped checkpoint to /tmp, runs the CUDA benchmark, and prints a
# short table last. Logs go to $OUT (default /tmp/gpu_check).
#
# Binaries are taken from $BIN (default .bundle/, made on a build machine with
#   ../shared/tools/bundle-libs.sh .bundle/lib <binaries> && cp <binaries> .bundle/
# because the GPU machine lacks gRPC/protobuf/Abseil), or from a build dir: BIN=build/....
#
#   scripts/gpu_check.sh            # everything
#   SKIP_BENCH=1 SKIP_SANITIZER=1 scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.bundle}
OUT=${OUT:-/tmp/gpu_check}
MODEL=${MODEL:-/tmp/llama8b}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/.bundle/lib:${LD_LIBRARY_PATH:-}"
export TANDEM_FIXTURES_DIR="$PWD/tests/fixtures"

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

"$BIN/cuda_kernels_test" --gtest_output="json:$OUT/kernels.json" > "$OUT/kernels.log" 2>&1
echo "kernels test rc=$?"
"$BIN/cuda_model_runner_test" --gtest_output="json:$OUT/runner.json" > "$OUT/runner.log" 2>&1
echo "runner test rc=$?"

if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer > /dev/null; then
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/cuda_kernels_test" \
    > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$?"
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 "$BIN/cuda_kernels_test" \
    --gtest_filter='*Attention*:*Norm*' > "$OUT/racecheck.log" 2>&1
  echo "racecheck rc=$?"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  [ -f "$MODEL/config.json" ] || PYTHONUNBUFFERED=1 python3 tools/make_random_llama8b.py --out "$MODEL" 2>&1 | tail -2
  "$BIN/cuda_model_bench" --model="$MODEL" > "$OUT/bench.json" 2> "$OUT/bench.log"
  echo "bench rc=$?"
fi

python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def gtest(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return "no result"
    j = json.load(open(path))
    failed = [t["name"] for s in j["testsuites"] for t in s["testsuite"] if t.get("failures")]
    return f'{j["tests"] - len(failed)}/{j["tests"]} passed' + (f' FAILED: {failed}' if failed else "")
print("\n== gpu tests")
print(f'cuda_kernels_test       {gtest("kernels.json")}')
print(f'cuda_model_runner_test  {gtest("runner.json")}')
for log in ("memcheck.log", "racecheck.log"):
    path = os.path.join(out, log)
    if os.path.exists(path):
        summary = [l.strip() for l in open(path) if "ERROR SUMMARY" in l or "RACECHECK SUMMARY" in l]
        print(f'{log:23s} {summary[-1] if summary else "no summary (timeout?)"}')
runner_log = os.path.join(out, "runner.log")
if os.path.exists(runner_log):
    for line in open(runner_log):
        if "teacher-forced" in line or "near-tie" in line and " seq 0:" in line:
            print("  " + line.strip())
path = os.path.join(out, "bench.json")
if os.path.exists(path) and os.path.getsize(path) > 0:
    b = json.load(open(path))
    c = b["ceilings"]
    print(f'\n== ceilings: copy {c["copy_gb_per_s"]:.0f} GB/s, bf16 GEMM {c["gemm_bf16_tflops"]:.0f} TFLOP/s')
    print(b["model"]["memory"])
    print(f'{"what":28s} {"ms":>9s} {"tok/s":>10s} {"roofline":>9s}')
    for p in b["prefill"]:
        print(f'{"prefill " + str(p["tokens"]):28s} {p["ms"]:9.2f} {p["tokens_per_s"]:10.0f} {100*p["roofline_fraction"]:8.1f}%')
    for d in b["decode"]:
        name = f'decode b{d["batch"]} ctx{d["context"]}'
        print(f'{name:28s} {d["step_ms"]:9.3f} {d["tokens_per_s"]:10.0f} {100*d["roofline_fraction"]:8.1f}%')
    print(f'logits D2H copy at batch 64: {b["logits_copy_ms_batch64"]:.2f} ms/step')
PY
