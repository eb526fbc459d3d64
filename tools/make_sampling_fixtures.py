#!/usr/bin/env python3
"""Records Hugging Face reference outputs for the sampler stack and beam search.

Needs torch + transformers (the GPU machine has them; runs on its CPU in fp32). Writes, under
OUT (default tests/fixtures/sampling):
  processors.safetensors  "logits" [B, V] random fp32, "input_ids" [B, L] (prompt+output ids,
                          with repeats so penalties and n-gram bans trigger), and one [B, V]
                          tensor per case: transformers' LogitsProcessor/Warper output
  processors.json         the cases: name -> list of stages with their parameters, in order
  beam_search.json        transformers generate(num_beams=4, ...) on the fixture models:
                          prompt ids, eos id used, and every returned sequence with its score
"""
import argparse
import json
import pathlib

import torch
from safetensors.torch import save_file
from transformers import (GenerationConfig, LlamaForCausalLM, MinPLogitsWarper,
                          NoRepeatNGramLogitsProcessor, PreTrainedTokenizerFast,
                          RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                          TopKLogitsWarper, TopPLogitsWarper)

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT.parent / "tests" / "fixtures"

STAGES = {
    "repetition_penalty": RepetitionPenaltyLogitsProcessor,
    "no_repeat_ngram_size": NoRepeatNGramLogitsProcessor,
    "temperature": TemperatureLogitsWarper,
    "top_k": TopKLogitsWarper,
    "top_p": TopPLogitsWarper,
    "min_p": MinPLogitsWarper,
}
CASES = {
    "repetition_penalty_1.3": [("repetition_penalty", 1.3)],
    "repetition_penalty_0.7": [("repetition_penalty", 0.7)],
    "no_repeat_ngram_2": [("no_repeat_ngram_size", 2)],
    "no_repeat_ngram_3": [("no_repeat_ngram_size", 3)],
    "temperature_0.7": [("temperature", 0.7)],
    "temperature_1.5": [("temperature", 1.5)],
    "top_k_1": [("top_k", 1)],
    "top_k_10": [("top_k", 10)],
    "top_p_0.8": [("top_p", 0.8)],
    "top_p_0.3": [("top_p", 0.3)],
    "min_p_0.1": [("min_p", 0.1)],
    "min_p_0.02": [("min_p", 0.02)],
    "combined": [("repetition_penalty", 1.2), ("no_repeat_ngram_size", 3),
                 ("temperature", 0.8), ("top_k", 50), ("top_p", 0.9), ("min_p", 0.05)],
    "combined_hot": [("repetition_penalty", 1.1), ("temperature", 1.3), ("top_k", 200),
                     ("top_p", 0.95), ("min_p", 0.01)],
}
BEAM_CONFIGS = [
    {"length_penalty": 1.0, "early_stopping": False},
    {"length_penalty": 0.5, "early_stopping": True},
    {"length_penalty": 2.0, "early_stopping": "never"},
]


def make_processor_fixtures(out):
    torch.manual_seed(0)
    batch, vocab, length = 6, 256, 24
    logits = torch.randn(batch, vocab, dtype=torch.float32) * 3.0
    input_ids = torch.randint(0, vocab, (batch, length))
    # Repeated patterns so n-gram bans and penalties have something to act on.
    input_ids[1, 12:] = input_ids[1, :12]
    input_ids[3, 8:16] = input_ids[3, 0:8]
    input_ids[4] = torch.tensor([5, 6, 7] * 8)
    input_ids[5, :] = input_ids[5, 0]
    tensors = {"logits": logits, "input_ids": input_ids.to(torch.int32)}
    for name, stages in CASES.items():
        scores = logits.clone()
        for stage, value in stages:
            scores = STAGES[stage](value)(input_ids, scores)
        tensors[name] = scores.contiguous()
    save_file(tensors, str(out / "processors.safetensors"))
    cases = {name: [{"stage": s, "value": v} for s, v in stages] for name, stages in CASES.items()}
    (out / "processors.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")


@torch.no_grad()
def beam_results(model_dir, prompts):
    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                             attn_implementation="eager").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    eos = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]  # frequent: beams end
    results = []
    for text in prompts:
        ids = tokenizer(text)["input_ids"]
        for cfg in BEAM_CONFIGS:
            gen = GenerationConfig(num_beams=4, num_return_sequences=4, max_new_tokens=10,
                                   do_sample=False, eos_token_id=eos, pad_token_id=eos,
                                   bos_token_id=model.config.bos_token_id, **cfg)
            out = model.generate(torch.tensor([ids]), generation_config=gen,
                                 output_scores=True, return_dict_in_generate=True)
            seqs = out.sequences[:, len(ids):].tolist()
            results.append({"prompt_ids": ids, "eos_token_id": eos, **cfg,
                            "num_beams": 4, "max_new_tokens": 10,
                            "sequences": seqs,
                            "scores": out.sequences_scores.tolist()})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(FIXTURES / "sampling"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    make_processor_fixtures(out)
    beams = {}
    for model in ("llama3-tiny", "llama2-tiny"):
        model_dir = FIXTURES / "models" / model
        golden = json.loads((model_dir / "golden.json").read_text())
        beams[model] = beam_results(model_dir, [p["text"] for p in golden["prompts"][:3]])
    (out / "beam_search.json").write_text(json.dumps(beams, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
