#!/usr/bin/env python3
"""Builds the fixture tokenizers and records Hugging Face `tokenizers` token ids.

Runs anywhere `tokenizers` is installed (pip install tokenizers). Writes, under OUT:
  tokenizers/<name>/tokenizer.json, tokenizer_config.json
  tokenizers/golden.json   token ids of tools/tokenize_corpus.txt for every tokenizer

Tokenizers built (all trained on tools/corpus/*.txt, deterministic):
  llama3   byte-level BPE, Llama-3 split regex, ignore_merges, <|begin_of_text|> BOS
  gpt2     byte-level BPE with the GPT-2 regex inside ByteLevel, no ignore_merges
  llama2   SentencePiece-style BPE: Prepend+Replace normalizer, byte fallback, <s> BOS
  mistral  the same model with the newer Metaspace(prepend_scheme=first) pre-tokenizer
"""
import argparse
import json
import os
import pathlib
import re

from tokenizers import Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

ROOT = pathlib.Path(__file__).resolve().parent
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]


def corpus_lines():
    lines = []
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        lines.extend(path.read_text(encoding="utf-8").splitlines(keepends=True))
    return lines


def unescape(match):
    code = match.group(1)
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    return simple[code] if code in simple else chr(int(code[1:], 16))


def tokenize_corpus():
    text = (ROOT / "tokenize_corpus.txt").read_text(encoding="utf-8")
    # One case per line; "\\n" / "\\t" / "\\r" escapes let a case hold raw control chars.
    cases = []
    for line in text.split("\n"):
        if not line:
            continue
        cases.append(re.sub(r"\\(n|t|r|\\|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})", unescape, line))
    return cases


def build_llama3(lines, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA3_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
              "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, config


def build_gpt2(lines, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "add_bos_token": False, "tokenizer_class": "GPT2TokenizerFast"}
    return tok, config


def sentencepiece_model(lines, vocab_size):
    """Trains pieces with ▁ for spaces, then lays the vocab out as Llama-2 does:
    <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>=3..258, then the learned pieces."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 259, limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    learned = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in learned["merges"]]
    return models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>",
                      fuse_unk=True)


def finish_sentencepiece(model, legacy):
    tok = Tokenizer(model)
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([
            decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(content=" ", left=1, right=0)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(
            replacement="▁", prepend_scheme="first", split=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)])
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False, "legacy": legacy,
              "tokenizer_class": "LlamaTokenizerFast"}
    return tok, config


def save(tok, config, directory):
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def record_golden(toks, cases):
    golden = {"cases": cases, "tokenizers": {}}
    for name, tok in toks.items():
        entries = []
        for text in cases:
            plain = tok.encode(text, add_special_tokens=False).ids
            entries.append({
                "ids": plain,
                "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
                "decoded": tok.decode(plain, skip_special_tokens=False),
            })
        golden["tokenizers"][name] = entries
    return golden


def build_all(out, vocab_size=1024):
    lines = corpus_lines()
    built = {"llama3": build_llama3(lines, vocab_size), "gpt2": build_gpt2(lines, vocab_size)}
    sp = sentencepiece_model(lines, vocab_size)
    built["llama2"] = finish_sentencepiece(sp, legacy=True)
    built["mistral"] = finish_sentencepiece(Tokenizer.from_str(
        built["llama2"][0].to_str()).model, legacy=False)
    base = out / "tokenizers"
    for name, (tok, config) in built.items():
        save(tok, config, base / name)
    # Reload from disk so the golden ids come from exactly the files we commit.
    reloaded = {name: Tokenizer.from_file(str(base / name / "tokenizer.json")) for name in built}
    golden = record_golden(reloaded, tokenize_corpus())
    (base / "golden.json").write_text(json.dumps(golden, ensure_ascii=False, indent=0) + "\n")
    return base


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT.parent / "tests" / "fixtures"))
    args = parser.parse_args()
    base = build_all(pathlib.Path(args.out))
    print("wrote", base)


if __name__ == "__main__":
    main()
