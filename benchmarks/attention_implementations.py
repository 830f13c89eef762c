#!/usr/bin/env python3
"""Time forward + backward of chapter 3's causal attention implementations at GPT-2-small size.

Compares, in one run and on the same input:
  1. MultiHeadAttentionWrapper      (a Python list of 12 single heads, concatenated)
  2. MultiHeadAttention             (one module: split heads, manual softmax attention, merge,
                                     output projection); 2b: the same without out_proj, which the
                                     wrapper does not have
  3. MultiHeadAttention use_sdpa    (the same module calling F.scaled_dot_product_attention)
  4. (3) under bfloat16 autocast    (skip with --no-bf16)

All four share the same weights (the efficient module is initialised from the wrapper's heads with
an identity output projection), and their outputs are checked to agree before anything is timed.
Timings are interleaved (one run of each implementation per round) so that load from other
processes affects all of them alike; the table shows the median per implementation and the ratio
to the wrapper.

    python benchmarks/attention_implementations.py                          # batch 2, 1024 tokens
    python benchmarks/attention_implementations.py --batch 1 --iters 3      # quicker
    python benchmarks/attention_implementations.py --device cuda            # on a GPU
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from contextlib import nullcontext

import torch

from ch03_attention import MultiHeadAttention, MultiHeadAttentionWrapper


def build_modules(d_model: int, n_heads: int, context_length: int, device: str):
    """Wrapper and efficient module with identical weights (identity out_proj), on `device`."""
    torch.manual_seed(123)
    wrapper = MultiHeadAttentionWrapper(d_model, d_model, context_length, n_heads)
    mha = MultiHeadAttention(d_model, d_model, context_length, n_heads)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(d_model))
        mha.out_proj.bias.zero_()
    return wrapper.to(device), mha.to(device)


def make_step(module: torch.nn.Module, x: torch.Tensor, use_sdpa: bool | None = None, autocast_dtype=None):
    """A closure running one forward + backward pass, returning the output."""
    ctx = (lambda: torch.autocast(x.device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext

    def step() -> torch.Tensor:
        if use_sdpa is not None:
            module.use_sdpa = use_sdpa
        module.zero_grad(set_to_none=True)
        with ctx():
            out = module(x)
        out.float().pow(2).mean().backward()
        return out

    return step


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--d-model", type=int, default=768, help="d_in = d_out")
    parser.add_argument("--n-heads", type=int, default=12)
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 autocast variant")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = args.device
    wrapper, mha = build_modules(args.d_model, args.n_heads, args.context, device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.context, args.d_model, device=device, requires_grad=True)

    # The wrapper has no output projection; to separate its cost from the attention itself, time the
    # efficient module once more with out_proj removed (it is the identity here, so outputs agree).
    mha_no_proj = copy.deepcopy(mha)
    mha_no_proj.out_proj = torch.nn.Identity()
    impls = {
        "1 wrapper (12 single heads)": make_step(wrapper, x),
        "2 MultiHeadAttention": make_step(mha, x, use_sdpa=False),
        "2b same, out_proj removed": make_step(mha_no_proj, x, use_sdpa=False),
        "3 MultiHeadAttention use_sdpa": make_step(mha, x, use_sdpa=True),
    }
    if not args.no_bf16:
        impls["4 use_sdpa + bf16 autocast"] = make_step(mha, x, use_sdpa=True, autocast_dtype=torch.bfloat16)

    print(f"torch {torch.__version__} | {platform.processor() or platform.machine()} | device {device} | "
          f"threads {torch.get_num_threads()}")
    print(f"batch {args.batch}, tokens {args.context}, d_in = d_out = {args.d_model}, n_heads {args.n_heads}; "
          f"forward + backward, {args.warmup} warm-up + {args.iters} timed rounds\n")

    # Correctness first: every implementation must produce the same output (bf16 loosely).
    outputs = {name: step().detach().float() for name, step in impls.items()}
    ref = outputs["1 wrapper (12 single heads)"]
    for name, out in list(outputs.items())[1:]:
        diff = (out - ref).abs().max().item()
        tol = 5e-2 if "bf16" in name else 1e-5
        status = "ok" if diff <= tol else "MISMATCH"
        print(f"  max |{name} - wrapper| = {diff:.2e}  (tolerance {tol:.0e}) {status}")
        if status != "ok":
            return 1

    times: dict[str, list[float]] = {name: [] for name in impls}
    for round_ in range(args.warmup + args.iters):
        for name, step in impls.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times["1 wrapper (12 single heads)"])
    print(f"\n{'implementation':<32} {'median ms':>10} {'min ms':>8} {'speed-up vs wrapper':>20}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<32} {1000 * med:>10.1f} {1000 * min(ts):>8.1f} {base / med:>19.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
