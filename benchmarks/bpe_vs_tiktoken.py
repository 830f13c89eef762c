#!/usr/bin/env python3
"""Encoding speed of the from-scratch BPE tokenizer (ch02_text_data.bpe) against tiktoken's GPT-2.

    python benchmarks/bpe_vs_tiktoken.py [--repeats 5] [--scale 20]

Encodes "The Verdict" once and repeated `--scale` times with three encoders, all in one run:
ours with an empty cache (cold: every distinct pre-token goes through the merge loop), ours with
the cache already filled (warm), and tiktoken. Before timing, it checks that our ids equal
tiktoken's. It prints the best of `--repeats` timings, tokens per second, and how many times
faster tiktoken is. The files come through the course download helper (set LLMS_DATA_MIRROR to
use an offline mirror, and TIKTOKEN_CACHE_DIR for tiktoken's copy of the GPT-2 files).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import tiktoken

from ch02_text_data.bpe import BPETokenizer
from ch02_text_data.download import (
    GPT2_ENCODER_SHA256,
    GPT2_ENCODER_URL,
    GPT2_VOCAB_BPE_SHA256,
    GPT2_VOCAB_BPE_URL,
    THE_VERDICT_SHA256,
    THE_VERDICT_URL,
    download_file,
)

DATA_DIR = Path(__file__).resolve().parent / "data"  # gitignored


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall-clock time of repeats calls of fn, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case; the best is reported")
    parser.add_argument("--scale", type=int, default=20, help="how many copies of the story the long text has")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.scale < 1:
        parser.error("--repeats and --scale must be >= 1")

    DATA_DIR.mkdir(exist_ok=True)
    verdict = download_file(THE_VERDICT_URL, DATA_DIR, sha256=THE_VERDICT_SHA256).read_text(encoding="utf-8")
    ours = BPETokenizer.from_gpt2_files(
        download_file(GPT2_ENCODER_URL, DATA_DIR, sha256=GPT2_ENCODER_SHA256),
        download_file(GPT2_VOCAB_BPE_URL, DATA_DIR, sha256=GPT2_VOCAB_BPE_SHA256),
    )
    ref = tiktoken.get_encoding("gpt2")

    print(f"python {platform.python_version()}, tiktoken {version('tiktoken')}, regex {version('regex')}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs; best of {args.repeats} runs")
    texts = {"the-verdict": verdict, f"the-verdict x{args.scale}": verdict * args.scale}
    header = f"{'text':<17} {'chars':>9} {'tokens':>8}  {'encoder':<17} {'ms':>9} {'tokens/s':>11} {'tiktoken/ours':>14}"
    print(header)
    print("-" * len(header))
    for name, text in texts.items():
        ids = ref.encode(text)
        ours.cache.clear()
        if ours.encode(text) != ids:
            raise SystemExit(f"{name}: ids differ from tiktoken's; not timing a wrong tokenizer")

        def cold() -> None:
            ours.cache.clear()
            ours.encode(text)

        seconds = {
            "ours, cold cache": best_time(cold, args.repeats),
            "ours, warm cache": best_time(lambda: ours.encode(text), args.repeats),  # cache filled by cold()
            "tiktoken": best_time(lambda: ref.encode(text), args.repeats),
        }
        for encoder, s in seconds.items():
            ratio = s / seconds["tiktoken"]  # = tiktoken's tokens/s divided by ours
            print(f"{name:<17} {len(text):>9,} {len(ids):>8,}  {encoder:<17} {s * 1e3:>9.2f} "
                  f"{len(ids) / s:>11,.0f} {ratio:>14.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
