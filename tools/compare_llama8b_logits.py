#!/usr/bin/env python3
"""Compares the CUDA runner's teacher-forced logits with Hugging Face transformers.

Issue 6's "on the 8B-shaped random checkpoint, logits match Hugging Face transformers on
the same GPU within bf16 tolerance". Reads the ids and logits that bench/cuda_logits_dump
wrote (prompt{i}.ids, prompt{i}.logits), runs the same ids through transformers'
LlamaForCausalLM on the GPU in bf16 and in fp32 (the checkpoint's bf16 weights widened:
the exact model, computed without bf16 rounding), and reports, against the fp32 logits:

  - whole-tensor relative error ||a - b|| / ||b|| over every position of every prompt,
  - per-row relative error (each position's logits vector), worst and mean,
  - top-1 agreement (argmax equal), and max |dlogit|,

for tandem and for transformers' own bf16 forward (the bf16 error floor). PASS when tandem's
whole-tensor and worst-row errors are within --ratio (1.5) of that floor (and, only when
--max_whole is given, the whole-tensor error is at most that). Prints one verdict line
starting with "8B logits vs transformers:"; exits 1 on FAIL.

No absolute bound by default: the issue's "relative <= 1e-2" is the fixture models' bound
against the CPU backend. On this random checkpoint every bf16 forward is far from it:
transformers' own bf16 forward measured 8.4e-2 whole-tensor against its fp32 forward on the
H200 (tandem 4.8e-2; docs/cuda_backend.md, "8B logits against transformers"). A real bug
(RoPE, GQA mapping, a layer's weights) shows as an error of order 1, many times the floor.

GPU machine only (torch, transformers, safetensors); fp32 8B needs ~32 GB of GPU memory.

  .b/cuda_logits_dump --model=/tmp/llama8b --out=/tmp/tandem_logits.safetensors
  python3 tools/compare_llama8b_logits.py --model /tmp/llama8b \
      --tandem /tmp/tandem_logits.safetensors [--json /tmp/hf8b.json]
"""
import argparse
import gc
import json
import math
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def load_tandem(path):
    """[(ids [len] int64, logits [len][vocab] fp32)] in prompt order."""
    tensors = load_file(path)
    prompts = []
    while f"prompt{len(prompts)}.ids" in tensors:
        i = len(prompts)
        prompts.append((tensors[f"prompt{i}.ids"].long(), tensors[f"prompt{i}.logits"].float()))
    if not prompts:
        sys.exit(f"{path}: no prompt0.ids / prompt0.logits tensors")
    return prompts


def llama3_inv_freq(config, head_dim):
    """The llama3-scaled RoPE inverse frequencies, in float64, from config.json's fields."""
    s = config["rope_scaling"]
    inv = 1.0 / (config["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    old_ctx, factor = s["original_max_position_embeddings"], s["factor"]
    low, high = s["low_freq_factor"], s["high_freq_factor"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_ctx / low, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return torch.where(medium, smoothed, scaled)


def check_rope(model, model_dir):
    """transformers must read the legacy rope_scaling/rope_theta fields as tandem does, or the
    comparison would measure a config mismatch instead of numerics. Returns a problem or None."""
    config = json.load(open(f"{model_dir}/config.json"))
    if config.get("rope_scaling", {}).get("rope_type") != "llama3":
        return None
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        print("warning: no model.model.rotary_emb.inv_freq; RoPE scaling not checked")
        return None
    got = rotary.inv_freq.double().cpu()
    want = llama3_inv_freq(config, config["head_dim"])
    error = ((got - want).abs() / want).max().item()
    if error > 1e-5:
        return f"transformers' RoPE inv_freq differs from llama3 scaling by {error:.2e}"
    return None


def hf_logits(model_dir, dtype, prompts, device, attn):
    """(logits [sum(len)][vocab] fp32 on `device`, RoPE problem or None) of transformers in
    `dtype`; frees the model."""
    start = time.time()
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn,
                                             device_map=device)
    model.eval()
    rope_problem = check_rope(model, model_dir)
    if rope_problem:
        print("error: " + rope_problem, flush=True)
    loaded = time.time()
    rows = []
    with torch.inference_mode():
        for ids, _ in prompts:
            rows.append(model(input_ids=ids[None].to(device)).logits[0].float())
    torch.cuda.synchronize(device)
    print(f"transformers {str(dtype).replace('torch.', '')} ({attn}): load {loaded - start:.1f} s, "
          f"forward {time.time() - loaded:.2f} s", flush=True)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cat(rows), rope_problem


def compare(got, ref):
    """Error metrics of `got` against `ref`, both [rows][vocab]."""
    diff = (got.double() - ref.double())
    row_error = diff.norm(dim=-1) / ref.double().norm(dim=-1)
    return {
        "whole_tensor": (diff.norm() / ref.double().norm()).item(),
        "worst_row": row_error.max().item(),
        "mean_row": row_error.mean().item(),
        "top1_agreement": (got.argmax(-1) == ref.argmax(-1)).double().mean().item(),
        "max_abs": diff.abs().max().item(),
    }


# The reference itself is checked first: transformers' bf16 and fp32 forwards must agree to
# well within this (measured 8.4e-2), else the ratio bound could pass on a broken reference
# (weights not loaded, both forwards noise).
MAX_FLOOR_WHOLE = 0.25


def bound_failures(tandem, floor, ratio, max_whole):
    """Why tandem's metrics against fp32 miss the bounds (empty: they meet them)."""
    if floor["whole_tensor"] > MAX_FLOOR_WHOLE:
        return [f"transformers bf16 vs fp32 whole_tensor {floor['whole_tensor']:.3e} > "
                f"{MAX_FLOOR_WHOLE}: the reference is not trustworthy"]
    failures = []
    for key in ("whole_tensor", "worst_row"):
        if tandem[key] > ratio * floor[key]:
            failures.append(f"{key} {tandem[key]:.3e} > {ratio} x bf16 floor {floor[key]:.3e}")
    if max_whole is not None and tandem["whole_tensor"] > max_whole:
        failures.append(f"whole_tensor {tandem['whole_tensor']:.3e} > {max_whole}")
    return failures


def describe(name, m):
    return (f"{name:28s} whole {m['whole_tensor']:.3e}  worst row {m['worst_row']:.3e}  "
            f"mean row {m['mean_row']:.3e}  top-1 {100 * m['top1_agreement']:6.2f}%  "
            f"max|d| {m['max_abs']:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="checkpoint dir (make_random_llama8b.py)")
    parser.add_argument("--tandem", required=True, help="cuda_logits_dump's safetensors file")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    parser.add_argument("--ratio", type=float, default=1.5,
                        help="tandem's error may be at most this times transformers-bf16's")
    parser.add_argument("--max_whole", type=float, default=None,
                        help="optional absolute bound on tandem's whole-tensor relative error")
    parser.add_argument("--json", help="also write the metrics here")
    args = parser.parse_args()
    torch.set_float32_matmul_precision("highest")  # no TF32 in the fp32 reference

    prompts = load_tandem(args.tandem)
    tandem = torch.cat([logits for _, logits in prompts]).to(args.device)
    lengths = [len(ids) for ids, _ in prompts]
    print(f"{len(prompts)} prompts of {lengths} tokens, vocab {tandem.shape[1]}", flush=True)
    hf_bf16, rope_bf16 = hf_logits(args.model, torch.bfloat16, prompts, args.device, args.attn)
    hf_fp32, rope_fp32 = hf_logits(args.model, torch.float32, prompts, args.device, args.attn)

    metrics = {"tandem_vs_hf_fp32": compare(tandem, hf_fp32),
               "hf_bf16_vs_hf_fp32": compare(hf_bf16, hf_fp32),
               "tandem_vs_hf_bf16": compare(tandem, hf_bf16)}
    per_prompt, row = [], 0
    for n in lengths:
        per_prompt.append({"tokens": n,
                           "tandem_vs_hf_fp32": compare(tandem[row:row + n], hf_fp32[row:row + n]),
                           "hf_bf16_vs_hf_fp32": compare(hf_bf16[row:row + n], hf_fp32[row:row + n])})
        row += n
    for name, m in metrics.items():
        print(describe(name, m))
    for p in per_prompt:
        print(describe(f"  {p['tokens']} tokens: tandem", p["tandem_vs_hf_fp32"]))
        print(describe(f"  {p['tokens']} tokens: hf bf16", p["hf_bf16_vs_hf_fp32"]))

    t, floor = metrics["tandem_vs_hf_fp32"], metrics["hf_bf16_vs_hf_fp32"]
    failures = sorted({p for p in (rope_bf16, rope_fp32) if p})
    failures += bound_failures(t, floor, args.ratio, args.max_whole)
    verdict = "FAIL (" + "; ".join(failures) + ")" if failures else "PASS"
    print(f"8B logits vs transformers: {verdict}: tandem vs fp32 whole {t['whole_tensor']:.2e} "
          f"worst row {t['worst_row']:.2e} top-1 {100 * t['top1_agreement']:.1f}%; "
          f"transformers bf16 vs fp32 whole {floor['whole_tensor']:.2e} worst row "
          f"{floor['worst_row']:.2e} top-1 {100 * floor['top1_agreement']:.1f}% "
          f"({sum(lengths)} positions, {args.attn})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"prompt_tokens": lengths, "attn": args.attn, "metrics": metrics,
                       "per_prompt": per_prompt, "verdict": verdict}, f, indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
