#!/usr/bin/env python3
"""Greedy generation with and without chapter 4's key-value cache, GPT-2 124M, measured in one run.

Builds GPTModel(GPT_CONFIGS["gpt2"]) with random weights (seeded), in eval mode under
torch.no_grad(), feeds a short prompt and generates --new-tokens tokens greedily:

  1. uncached: generate_text_simple  (re-runs the model on the whole sequence at every step)
  2. cached:   generate_text_cached  (prefill the prompt once, then one token per step)

It checks that both produce identical token ids, then prints tokens/s for each, the speed-up
(uncached time / cached time, measured in this run), and memory: the peak resident set size (RSS)
of this process during each phase minus the RSS when the phase started, sampled every 2 ms by a
background thread with psutil (with `resource` as a fallback: then only the process-lifetime peak
is known, and it is printed once). RSS counts everything the process touches (weights are already
resident before either phase starts, so the deltas are the activations, the KV cache and allocator
slack). The KV cache's own size is printed from its tensors.

    python benchmarks/kv_cache.py                        # fp32, 512 new tokens (minutes on 2 cores)
    python benchmarks/kv_cache.py --dtype bfloat16       # bf16 weights and activations
    python benchmarks/kv_cache.py --new-tokens 64        # quicker
"""
from __future__ import annotations

import argparse
import platform
import threading
import time

import torch

from ch04_gpt_model import GPT_CONFIGS, GPTModel, KVCache, generate_text_cached, generate_text_simple

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None


class PeakRSS:
    """Context manager: peak RSS increase (bytes) over the RSS at entry, sampled every `interval` s."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.delta = interval, None

    def __enter__(self):
        if psutil is None:
            return self
        self._proc = psutil.Process()
        self._start = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if psutil is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self.delta = self._peak - self._start
        return False


def mib(n_bytes: float | None) -> str:
    return "n/a" if n_bytes is None else f"{n_bytes / 2**20:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=512, help="tokens to generate (default 512)")
    parser.add_argument("--prompt-tokens", type=int, default=4, help="length of the (random) prompt")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-uncached", action="store_true", help="time only the cached path")
    args = parser.parse_args(argv)
    cfg = GPT_CONFIGS["gpt2"]
    if args.new_tokens < 1 or args.prompt_tokens < 1:
        parser.error("--new-tokens and --prompt-tokens must be >= 1")
    if args.prompt_tokens + args.new_tokens > cfg.context_length:
        parser.error(f"--prompt-tokens + --new-tokens must be <= context_length {cfg.context_length}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    torch.manual_seed(123)
    model = GPTModel(cfg).to(dtype).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, args.prompt_tokens))
    print(f"GPT-2 124M ({sum(p.numel() for p in model.parameters()):,} parameters, untied), {args.dtype}, "
          f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    with torch.no_grad():
        generate_text_cached(model, prompt, 4)  # warm-up (allocator, kernels)
        generate_text_simple(model, prompt, 4, cfg.context_length)

        with PeakRSS() as mem_cached:
            t0 = time.perf_counter()
            out_cached = generate_text_cached(model, prompt, args.new_tokens)
            t_cached = time.perf_counter() - t0
        if not args.skip_uncached:
            with PeakRSS() as mem_plain:
                t0 = time.perf_counter()
                out_plain = generate_text_simple(model, prompt, args.new_tokens, cfg.context_length)
                t_plain = time.perf_counter() - t0

    cache_bytes = sum(t.numel() * t.element_size() for t in (lambda c: c.keys + c.values)(KVCache(cfg, 1, dtype=dtype)))
    n = args.new_tokens
    print(f"\n{'path':<10} {'time':>9} {'tokens/s':>9} {'peak RSS increase':>18}")
    if not args.skip_uncached:
        print(f"{'uncached':<10} {t_plain:8.1f}s {n / t_plain:9.2f} {mib(mem_plain.delta):>18}")
    print(f"{'cached':<10} {t_cached:8.1f}s {n / t_cached:9.2f} {mib(mem_cached.delta):>18}")
    print(f"KV cache tensors (allocated for the full {cfg.context_length}-token context): {mib(cache_bytes)}")
    if psutil is None:
        import resource
        print(f"(psutil not installed: process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB)")
    if not args.skip_uncached:
        same = torch.equal(out_plain, out_cached)
        if same:
            print("generated tokens identical: True")
        else:
            diff = (out_plain != out_cached)[0].nonzero()[0].item() - args.prompt_tokens
            print(f"generated tokens identical: False (first difference at new token {diff})")
        print(f"speed-up (uncached time / cached time): {t_plain / t_cached:.1f}x")
        return 0 if same or args.dtype != "float32" else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
