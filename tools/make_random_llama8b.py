#!/usr/bin/env python3
"""Writes a random Llama-3-8B-shaped checkpoint for the CUDA benchmarks.

32 layers, hidden 4096, 32 query heads, 8 kv heads, head_dim 128, intermediate 14336,
vocab 128256, untied LM head, bf16 (about 16 GB): config.json, generation_config.json,
model-0000N-of-0000M.safetensors + model.safetensors.index.json, and a tokenizer (the
llama3-tiny fixture's, whose ids are a subset of the vocabulary). Linear weights are
N(0, 0.02), norms 1 + N(0, 0.05): random data, never zeros (zeros time faster than real
data). Meant for the GPU machine's /tmp; never commit the output.

  python3 tools/make_random_llama8b.py --out /tmp/llama8b [--layers 32] [--seed 0]
"""
import argparse
import json
import os
import shutil
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER_DIR = os.path.join(HERE, "..", "tests", "fixtures", "models", "llama3-tiny")


def config(layers):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 128000,
        "eos_token_id": 128001, "torch_dtype": "bfloat16",
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    }


def tensors_of_layer(i, c, gen, device):
    h, inter = c["hidden_size"], c["intermediate_size"]
    q, kv = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    p = f"model.layers.{i}."
    shapes = {
        p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
        p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
        p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
        p + "mlp.down_proj.weight": (h, inter),
    }
    out = {name: linear(shape, gen, device) for name, shape in shapes.items()}
    out[p + "input_layernorm.weight"] = norm(h, gen, device)
    out[p + "post_attention_layernorm.weight"] = norm(h, gen, device)
    return out


def linear(shape, gen, device):
    return (torch.randn(shape, generator=gen, device=device) * 0.02).to(torch.bfloat16).cpu()


def norm(size, gen, device):
    return (1.0 + 0.05 * torch.randn(size, generator=gen, device=device)).to(torch.bfloat16).cpu()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--layers_per_shard", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(args.seed)
    c = config(args.layers)
    os.makedirs(args.out, exist_ok=True)
    shards = [list(range(i, min(i + args.layers_per_shard, args.layers)))
              for i in range(0, args.layers, args.layers_per_shard)]
    num_files = len(shards) + 1
    weight_map, total = {}, 0
    for index in range(num_files):
        name = f"model-{index + 1:05d}-of-{num_files:05d}.safetensors"
        if index == 0:
            tensors = {"model.embed_tokens.weight": linear((c["vocab_size"], c["hidden_size"]), gen, device),
                       "lm_head.weight": linear((c["vocab_size"], c["hidden_size"]), gen, device),
                       "model.norm.weight": norm(c["hidden_size"], gen, device)}
        else:
            tensors = {}
            for layer in shards[index - 1]:
                tensors.update(tensors_of_layer(layer, c, gen, device))
        save_file(tensors, os.path.join(args.out, name), metadata={"format": "pt"})
        for key, value in tensors.items():
            weight_map[key] = name
            total += value.numel() * value.element_size()
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 128000, "eos_token_id": [128001, 128009]}, f, indent=1)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER_DIR, name), os.path.join(args.out, name))
    print(f"wrote {total / 1e9:.2f} GB to {args.out} in {time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
