#!/usr/bin/env python3
"""Makes the tiny Llama-family fixture checkpoints and their Hugging Face reference outputs.

Needs torch, transformers, tokenizers, safetensors (the GPU machine has them; a CPU works
too, only slower). Deterministic for a given torch version. Writes, under OUT (default
tests/fixtures):
  tokenizers/...                      (see make_tokenizers.py)
  models/llama3-tiny/   Llama-3 style: byte-level BPE, GQA 4q/2kv, tied embeddings,
                        rope_scaling llama3, bf16 weights in one model.safetensors
  models/llama2-tiny/   Llama-2 style: SentencePiece BPE with byte fallback, MHA, untied
                        head, f16 weights sharded over two files + index
  models/<name>/golden.json          prompts, token ids, greedy continuations, margins
  models/<name>/golden.safetensors   fp32 logits of every prompt position

Each model is trained briefly on tools/corpus so its next-token distributions are peaked,
then its final norm is scaled up so top-1/top-2 margins sit far above rounding. The
reference is computed by transformers' LlamaForCausalLM loaded from the written files, on
the CPU, in fp32 with TF32 off, eager attention.
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

import make_tokenizers

ROOT = pathlib.Path(__file__).resolve().parent
PROMPTS = [
    "Licensed under the Apache License",
    "The licenses for most software and other practical works are designed",
    "Hello, world! 你好",
    "1234 + 5678 =",
    "You must give any other recipients of the Work or Derivative Works a copy of this",
    ("This License applies to any program or other work which contains a notice placed by "
     "the copyright holder saying it may be distributed under the terms of this General "
     "Public License. The \"Program\", below, refers to any such program or work, and"),
]
NUM_GREEDY_TOKENS = 32

MODELS = {
    "llama3-tiny": dict(
        tokenizer="llama3", dtype=torch.bfloat16, shards=1, config=dict(
            hidden_size=128, intermediate_size=384, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            tie_word_embeddings=True, bos_token_id="<|begin_of_text|>",
            eos_token_id=["<|end_of_text|>", "<|eot_id|>"])),
    "llama2-tiny": dict(
        tokenizer="llama2", dtype=torch.float16, shards=2, config=dict(
            hidden_size=96, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=3, num_key_value_heads=3,
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
            tie_word_embeddings=False, bos_token_id="<s>", eos_token_id="</s>")),
}
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def hf_config(spec, tok):
    cfg = dict(spec["config"])
    cfg["bos_token_id"] = tok.token_to_id(cfg["bos_token_id"])
    eos = cfg["eos_token_id"]
    cfg["eos_token_id"] = ([tok.token_to_id(e) for e in eos] if isinstance(eos, list)
                           else tok.token_to_id(eos))
    cfg.update(architectures=["LlamaForCausalLM"], model_type="llama", hidden_act="silu",
               vocab_size=tok.get_vocab_size(), attention_bias=False, mlp_bias=False,
               initializer_range=0.02, torch_dtype=DTYPE_NAMES[spec["dtype"]],
               use_cache=True)
    return cfg


def train(model, ids, steps, device):
    """Brief next-token training on the corpus: peaked, text-like distributions."""
    torch.manual_seed(0)
    model.to(device).train()
    data = torch.tensor(ids, dtype=torch.long, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    seq, batch = 128, 32
    for step in range(steps):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), device=device)
        x = torch.stack([data[s:s + seq] for s in starts])
        y = torch.stack([data[s + 1:s + seq + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1),
                                                 y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step} loss {loss.item():.3f}", flush=True)
    model.eval().cpu()


def hf_state_dict(model, cfg, dtype):
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()
             if "rotary_emb" not in k}
    if cfg["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    return state


def write_weights(directory, state, shards):
    names = sorted(state)
    if shards == 1:
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return
    per = (len(names) + shards - 1) // shards
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(directory / fname), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += state[n].numel() * state[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


@torch.no_grad()
def greedy(model, ids, count):
    """Greedy continuation by full recompute each step, recording top-1/top-2 margins."""
    tokens, margins = list(ids), []
    for _ in range(count):
        logits = model(input_ids=torch.tensor([tokens])).logits[0, -1].float()
        top = torch.topk(logits, 2)
        margins.append((top.values[0] - top.values[1]).item())
        tokens.append(int(top.indices[0]))
    return tokens[len(ids):], margins


@torch.no_grad()
def record_golden(directory, tok_name):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = LlamaForCausalLM.from_pretrained(str(directory), dtype=torch.float32,
                                             attn_implementation="eager").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    golden = {"tokenizer": tok_name, "num_greedy_tokens": NUM_GREEDY_TOKENS, "prompts": []}
    tensors = {}
    for i, text in enumerate(PROMPTS):
        ids = tokenizer(text)["input_ids"]
        logits = model(input_ids=torch.tensor([ids])).logits[0].float().contiguous()
        tensors[f"prompt{i}.logits"] = logits
        continuation, margins = greedy(model, ids, NUM_GREEDY_TOKENS)
        top = torch.topk(logits, 2, dim=-1).values
        golden["prompts"].append({
            "text": text, "ids": ids, "greedy": continuation,
            "greedy_text": tokenizer.decode(continuation),
            "greedy_margins": margins,
            "prompt_min_margin": (top[:, 0] - top[:, 1]).min().item(),
        })
    rotary = model.model.rotary_emb
    golden["inv_freq"] = rotary.inv_freq.float().tolist()
    golden["attention_scaling"] = float(getattr(rotary, "attention_scaling", 1.0))
    save_file(tensors, str(directory / "golden.safetensors"))
    (directory / "golden.json").write_text(json.dumps(golden, ensure_ascii=False, indent=1))
    worst = min(min(p["greedy_margins"]) for p in golden["prompts"])
    print(f"  {directory.name}: smallest greedy margin {worst:.3f}")


def build_model(out, name, spec, tok_dir, device, steps):
    from tokenizers import Tokenizer
    from transformers import LlamaConfig
    directory = out / "models" / name
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_file(str(tok_dir / spec["tokenizer"] / "tokenizer.json"))
    cfg = hf_config(spec, tok)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).float()
    text = "".join(make_tokenizers.corpus_lines())
    train(model, tok.encode(text, add_special_tokens=False).ids, steps, device)
    with torch.no_grad():
        model.model.norm.weight.mul_(4.0)  # sharpen: margins x4, argmax unchanged
    write_weights(directory, hf_state_dict(model, cfg, spec["dtype"]), spec["shards"])
    (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
           "do_sample": True, "temperature": 0.6, "top_p": 0.9}
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (directory / f).write_bytes((tok_dir / spec["tokenizer"] / f).read_bytes())
    record_golden(directory, spec["tokenizer"])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT.parent / "tests" / "fixtures"))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rebuild-tokenizers", action="store_true",
                        help="retrain the tokenizers even if tokenizers/golden.json exists")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    tok_dir = out / "tokenizers"
    if args.rebuild_tokenizers or not (tok_dir / "golden.json").exists():
        make_tokenizers.build_all(out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, spec in MODELS.items():
        print("building", name, "on", device, flush=True)
        build_model(out, name, spec, tok_dir, device, args.steps)


if __name__ == "__main__":
    main()
