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

# The bf16 error floor: Hugging Face transformers itself in bf16 on this GPU against the
# same fp32 goldens, with the test's metrics (whole-tensor and per-row ||dlogits|| / ||logits||).
PYTHONUNBUFFERED=1 python3 - > "$OUT/hf_bf16_floor.txt" 2>&1 <<'PY'
import json, torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM
for name in ("llama3-tiny", "llama2-tiny"):
    d = f"tests/fixtures/models/{name}"
    model = LlamaForCausalLM.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager").cuda()
    golden, logits = json.load(open(f"{d}/golden.json")), load_file(f"{d}/golden.safetensors")
    worst, diff2, ref2 = 0.0, 0.0, 0.0
    for i, p in enumerate(golden["prompts"]):
        with torch.no_grad():
            got = model(torch.tensor([p["ids"]]).cuda()).logits[0].float().cpu()
        ref = logits[f"prompt{i}.logits"].float().reshape(got.shape)
        worst = max(worst, ((got - ref).norm(dim=-1) / ref.norm(dim=-1)).max().item())
        diff2 += (got - ref).double().pow(2).sum().item()
        ref2 += ref.double().pow(2).sum().item()
    print(f"{name}: transformers bf16 worst row relative error {worst:.4f}, "
          f"whole-tensor {(diff2 / ref2) ** 0.5:.4f}")
PY
echo "hf bf16 floor rc=$?"

if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer > /dev/null; then
  export TANDEM_SANITIZER_SMALL_CASES=1  # the kernel test skips its long attention cases
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/cuda_kernels_test" \
    > "$OUT/memcheck.log" 2>&1
  echo "memcheck rc=$?"
  timeout 120 compute-sanitizer --tool racecheck --error-exitcode 3 "$BIN/cuda_kernels_test" \
    --gtest_filter='*Attention*:*Norm*' > "$OUT/racecheck.log" 2>&1
  echo "racecheck rc=$?"
  unset TANDEM_SANITIZER_SMALL_CASES
fi

# End to end with --backend=cuda (needs tandem, tandem-router, tandem-prefill, tandem-decode in
# $BIN): in-process greedy generation of the fixture prompts against the reference text, then a
# local cluster (colocated: 0 prefill + 1 decode; disaggregated: 1 + 1, KV over TCP through the
# managed-memory host view) streaming one greedy completion.
if [ -z "${SKIP_E2E:-}" ] && [ -x "$BIN/tandem" ]; then
  python3 - "$BIN" "$OUT" > "$OUT/e2e.txt" 2>&1 <<'PY'
import json, subprocess, sys, time, os, signal
bin_dir, out = sys.argv[1], sys.argv[2]
model = "tests/fixtures/models/llama3-tiny"
golden = json.load(open(f"{model}/golden.json"))
def gen(args, prompt):
    r = subprocess.run([f"{bin_dir}/tandem", "generate", f"--prompt={prompt}", "--max_tokens=32",
                        "--ignore_eos", f"--model={model}"] + args,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr.strip().splitlines()[-1:] if r.stderr else []
for i, p in enumerate(golden["prompts"]):
    rc, text, err = gen(["--backend=cuda"], p["text"])
    want = p["text"] + p["greedy_text"] + "\n"
    same = next((k for k in range(min(len(text), len(want))) if text[k] != want[k]), min(len(text), len(want)))
    print(f"generate --backend=cuda prompt {i}: rc={rc} {'IDENTICAL' if text == want else f'differs at char {same} of {len(want)}'} {err}")
    if text != want:
        print("   got: " + repr(text[len(p['text']):]))
        print("  want: " + repr(p["greedy_text"]))
for prefill in (0, 1):
    ready = f"{out}/up{prefill}.ready"
    if os.path.exists(ready): os.remove(ready)
    up = subprocess.Popen([f"{bin_dir}/tandem", "up", f"--model={model}", "--backend=cuda",
                           f"--num_prefill={prefill}", "--num_decode=1", "--num_kv_blocks=256",
                           f"--log_dir={out}/up{prefill}", f"--ready_file={ready}"],
                          stdout=subprocess.DEVNULL, stderr=open(f"{out}/up{prefill}.err", "w"))
    for _ in range(600):
        if os.path.exists(ready) and os.path.getsize(ready) > 0: break
        time.sleep(0.1)
    try:
        addr = json.load(open(ready))["grpc"]
        p = golden["prompts"][0]
        rc, text, err = gen([f"--server={addr}"], p["text"])
        want = p["text"] + p["greedy_text"] + "\n"
        print(f"tandem up --backend=cuda prefill={prefill} decode=1: rc={rc} "
              f"{'IDENTICAL' if text == want else 'DIFFERS: ' + repr(text)} {err}")
    except Exception as e:
        print(f"tandem up --backend=cuda prefill={prefill}: no cluster ({e})")
    up.send_signal(signal.SIGINT)
    try: up.wait(30)
    except subprocess.TimeoutExpired: up.kill()
PY
  echo "e2e rc=$?"
fi

if [ -z "${SKIP_BENCH:-}" ]; then
  [ -f "$MODEL/config.json" ] || PYTHONUNBUFFERED=1 python3 tools/make_random_llama8b.py --out "$MODEL" 2>&1 | tail -2
  "$BIN/cuda_model_bench" --model="$MODEL" ${BENCH_ARGS:-} > "$OUT/bench.json" 2> "$OUT/bench.log"
  echo "bench rc=$?"
fi

# Issue 6's 8B check (SKIP_HF8B=1 skips; needs cuda_logits_dump in $BIN): the runner's
# teacher-forced logits on the random 8B-shaped checkpoint against transformers on this GPU,
# in bf16 (the error floor) and fp32 (the reference); tools/compare_llama8b_logits.py.
if [ -z "${SKIP_HF8B:-}" ] && [ -x "$BIN/cuda_logits_dump" ]; then
  [ -f "$MODEL/config.json" ] || PYTHONUNBUFFERED=1 python3 tools/make_random_llama8b.py --out "$MODEL" 2>&1 | tail -2
  LOGITS=/tmp/tandem_logits_8b.safetensors  # ~190 MB: kept out of $OUT
  "$BIN/cuda_logits_dump" --model="$MODEL" --out="$LOGITS" > "$OUT/hf8b.txt" 2>&1 &&
    PYTHONUNBUFFERED=1 python3 tools/compare_llama8b_logits.py --model "$MODEL" --tandem "$LOGITS" \
      --json "$OUT/hf8b.json" >> "$OUT/hf8b.txt" 2>&1
  echo "hf8b rc=$?"
  rm -f "$LOGITS"
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
floor = os.path.join(out, "hf_bf16_floor.txt")
if os.path.exists(floor):
    for line in open(floor):
        if "worst row" in line or "Error" in line:
            print("  " + line.strip())
runner_log = os.path.join(out, "runner.log")
if os.path.exists(runner_log):
    for line in open(runner_log):
        if "teacher-forced" in line or "near-tie" in line and " seq 0:" in line:
            print("  " + line.strip())
e2e = os.path.join(out, "e2e.txt")
if os.path.exists(e2e):
    print("\n== end to end (--backend=cuda)")
    for line in open(e2e):
        print("  " + line.rstrip())
hf8b = os.path.join(out, "hf8b.txt")
if os.path.exists(hf8b):
    print("\n== 8B logits against transformers (tools/compare_llama8b_logits.py)")
    for line in open(hf8b):
        if line.startswith(("8B logits vs", "tandem_vs_hf_fp32", "hf_bf16_vs_hf_fp32")) or "rror" in line:
            print("  " + line.rstrip())
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
    for d in b.get("decode_pipelined", []):
        name = f'decode b{d["batch"]} ctx{d["context"]} piped'
        print(f'{name:28s} {d["step_ms"]:9.3f} {d["tokens_per_s"]:10.0f} {100*d["roofline_fraction"]:8.1f}%')
    for d in b.get("decode_attribution", []):
        name = f'  {d["variant"]} b{d["batch"]} ctx{d["context"]}'
        print(f'{name:28s} {d["step_ms"]:9.3f} {d["tokens_per_s"]:10.0f} {100*d["roofline_fraction"]:8.1f}%')
    print(f'logits D2H copy at batch 64: {b["logits_copy_ms_batch64"]:.2f} ms/step')
    k = b.get("kernels", {})
    for d in k.get("decode_attention", []):
        print(f'  decode attention b{d["batch"]} ctx{d["context"]} (1 layer): {d["us"]:8.1f} us {d["gb_per_s"]:6.0f} GB/s {100*d["roofline_fraction"]:5.1f}%')
    if "prefill_attention_one_layer" in k:
        p = k["prefill_attention_one_layer"]
        print(f'  prefill attention {p["tokens"]} tok (1 layer): {p["ms"]:.2f} ms {p["tflops"]:.1f} TFLOP/s {100*p["fraction_of_gemm_rate"]:.1f}% of GEMM rate')
    for g in k.get("gemm_decode_shapes", []):
        print(f'  {g.get("kernel", "cublaslt"):8s} {g["name"]:8s} m={g["m"]:<3d} {g["us"]:8.1f} us {g["gb_per_s"]:6.0f} GB/s {100*g["roofline_fraction"]:5.1f}%')
PY
