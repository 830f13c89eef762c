#!/usr/bin/env python3
"""Answering chapter 7's 110 test prompts: batched KV-cache generation vs the uncached one-at-a-time loop, one run.

The prompts are the Alpaca-formatted test instructions of instruction-data.json (records 935-1044,
read through the download helper, so `LLMS_DATA_MIRROR` works). Each prompt gets exactly
--new-tokens greedy tokens (no end-of-text stop, so both paths do the same work):

  1. uncached: chapter 5's `generate`, one prompt at a time, re-running the model on the whole
     sequence at every step (what a first implementation does);
  2. batched:  chapter 7's `generate_batched` (left padding, per-row positions, chapter 4's KV cache),
     --batch-size prompts at a time, sorted by length as `answer_instructions` does.

It prints generated tokens per second for each and the speed-up (batched / uncached), both
measured in this run on the same prompts, and how many prompts got identical tokens from both
paths (greedy decoding: they should all agree, up to float rounding in near-ties).

    python benchmarks/instruction_generation.py                       # GPT-2 124M shape, random weights
    python benchmarks/instruction_generation.py --model ch07_instruction/checkpoints/gpt2-instruct
    python benchmarks/instruction_generation.py --prompts 20 --new-tokens 16   # quicker
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

import tiktoken
import torch

from ch04_gpt_model import GPT_CONFIGS, GPTModel
from ch05_pretraining import autocast_dtype, generate, load_gpt2
from ch07_instruction import download_instruction_data, format_prompt, generate_batched, load_instruction_data, split_data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a checkpoint folder for load_gpt2 (default: random GPT-2 124M)")
    parser.add_argument("--prompts", type=int, default=110, help="test prompts to answer (default: all 110)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt (default 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batch on the batched path")
    parser.add_argument("--amp", action="store_true", help="autocast both paths in bfloat16 where the CPU has it")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(123)
    if args.model:
        model, name = load_gpt2(args.model), args.model
    else:
        model, name = GPTModel(GPT_CONFIGS["gpt2"]), "GPT-2 124M shape, random weights (seed 123)"
    model.eval()
    amp = autocast_dtype("cpu") if args.amp else None
    tokenizer = tiktoken.get_encoding("gpt2")
    with tempfile.TemporaryDirectory() as tmp:
        _, _, test = split_data(load_instruction_data(download_instruction_data(tmp)))
    prompts = [tokenizer.encode(format_prompt(e)) for e in test[: args.prompts]]
    lengths = sorted(map(len, prompts))
    print(f"model: {name}; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{len(prompts)} prompts of {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), "
          f"{args.new_tokens} new tokens each, autocast {amp}")

    with torch.no_grad():  # warm-up: first calls allocate and pick kernels
        generate_batched(model, prompts[:2], 2, eos_id=None, amp_dtype=amp)

    start = time.perf_counter()
    uncached = []
    for ids in prompts:
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = generate(model, torch.tensor([ids]), max_new_tokens=args.new_tokens)
        uncached.append(out[0, len(ids) :].tolist())
    t_uncached = time.perf_counter() - start

    start = time.perf_counter()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batched = [None] * len(prompts)
    for s in range(0, len(order), args.batch_size):
        rows = order[s : s + args.batch_size]
        for i, new in zip(rows, generate_batched(model, [prompts[i] for i in rows], args.new_tokens, eos_id=None,
                                                 amp_dtype=amp)):
            batched[i] = new
    t_batched = time.perf_counter() - start

    n_tokens = len(prompts) * args.new_tokens
    same = sum(a == b for a, b in zip(uncached, batched))
    print(f"uncached, one at a time : {t_uncached:7.1f} s, {n_tokens / t_uncached:8.1f} tokens/s")
    print(f"batched ({args.batch_size}) + KV cache : {t_batched:7.1f} s, {n_tokens / t_batched:8.1f} tokens/s")
    print(f"speed-up: {t_uncached / t_batched:.1f}x; identical answers: {same} of {len(prompts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
