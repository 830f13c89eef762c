#!/usr/bin/env python3
"""Peak memory of loading a GPT-2 774M checkpoint: the old load_gpt2 (baseline) against the current one.

    python benchmarks/load_memory.py                     # gpt2-large (774M), float32: a few minutes
    python benchmarks/load_memory.py --model gpt2        # 124M: quicker
    python benchmarks/load_memory.py --dir /big/disk     # where the temporary checkpoint goes

Writes, once, a Hugging Face-format checkpoint (config.json + model.safetensors) of a randomly
initialised GPTModel(GPT_CONFIGS[--model]) with its head tied to the token embedding, as OpenAI's
files are, using the course's own save_hf_checkpoint, into a temporary folder. Then, in a fresh
Python process per variant, it loads that folder and reads the process's peak resident set size
(RSS: resource.getrusage ru_maxrss, the lifetime peak) before and after the load:

  baseline: load_gpt2 as it was before this benchmark was written (commit 0a005ca and earlier), kept
            below as `load_gpt2_baseline`: a randomly initialised GPTModel (one full copy of the
            weights), then safetensors.load_file of the whole file (a second copy, memory-mapped:
            its pages count in RSS), copied into the model with load_state_dict;
  current:  ch05_pretraining.load_gpt2: GPTModel built on the "meta" device (no memory), the file
            read tensor by tensor into memory of its own, assigned as the parameters.

It prints both peaks, what the load added to each process's RSS, their ratio, the file size, and
checks that the two models give the same logits. Time is printed too, but this measures memory: the
machine may be busy, so the seconds are not a speed claim.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository, so the chapter packages import from a checkout
VARIANTS = {
    "baseline": "baseline: old load_gpt2 (random-init GPTModel + load_file + copy)",
    "current": "current: load_gpt2 (meta device + per-tensor read + assign)",
}


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def load_gpt2_baseline(folder: Path):
    """BASELINE, the old load_gpt2 for a one-file checkpoint: random-init GPTModel, whole file read, copied in."""
    from ch04_gpt_model import GPTModel
    from ch05_pretraining.gpt2_weights import config_from_hf, load_hf_weights, read_safetensors

    hf_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model = GPTModel(config_from_hf(hf_config))  # first copy: random weights, overwritten below
    load_hf_weights(model, read_safetensors(folder / "model.safetensors"))  # second copy: the file's tensors
    return model.eval()


def child_make(folder: Path, model_name: str) -> None:
    """Write the checkpoint: a seeded, randomly initialised GPTModel with a tied head, via save_hf_checkpoint."""
    import torch

    from ch04_gpt_model import GPT_CONFIGS, GPTModel, tie_weights
    from ch05_pretraining import save_hf_checkpoint

    torch.manual_seed(0)
    model = tie_weights(GPTModel(GPT_CONFIGS[model_name]))
    save_hf_checkpoint(model, folder)
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters())}))


def child_load(folder: Path, variant: str) -> None:
    """Load the checkpoint one way; print the RSS before and the peak after, and save a few logits."""
    import torch

    from ch05_pretraining import load_gpt2

    before = peak_rss_bytes()  # Python, torch and the course packages imported, nothing loaded yet
    start = time.perf_counter()
    model = load_gpt2_baseline(folder) if variant == "baseline" else load_gpt2(folder)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()  # read before the forward pass below adds its activations
    with torch.no_grad():
        logits = model(torch.arange(8).unsqueeze(0))[0, -1]  # (vocab_size,)
    torch.save(logits, folder / f"logits-{variant}.pt")
    print(json.dumps({"before": before, "peak": peak, "seconds": seconds}))


def run_child(*args: str) -> dict:
    """Run this script in a fresh Python process and return the JSON line it prints last."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt2-large", help="a GPT_CONFIGS name (default gpt2-large, 774M)")
    parser.add_argument("--dir", type=Path, default=None, help="parent folder of the temporary checkpoint")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # internal: one measurement process
    args = parser.parse_args(argv)
    if args.child:
        action, folder, arg = args.child
        (child_make if action == "make" else child_load)(Path(folder), arg)
        return 0

    import torch
    from ch04_gpt_model import GPT_CONFIGS

    if args.model not in GPT_CONFIGS:
        parser.error(f"--model must be one of {', '.join(GPT_CONFIGS)}")
    print(f"Python {platform.python_version()}, torch {torch.__version__}, safetensors {version('safetensors')}, "
          f"{platform.machine()} {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="load_memory-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        made = run_child("make", str(folder), args.model)
        size = (folder / "model.safetensors").stat().st_size
        print(f"checkpoint: {args.model}, {made['parameters']:,} parameters (head tied), float32, "
              f"model.safetensors {gib(size)}; written in {time.perf_counter() - start:.0f} s")
        results = {variant: run_child("load", str(folder), variant) for variant in VARIANTS}
        logits = {variant: torch.load(folder / f"logits-{variant}.pt") for variant in VARIANTS}

    print(f"{'variant':<68} {'peak RSS':>10} {'before':>10} {'load adds':>10} {'time':>6}")
    for variant, label in VARIANTS.items():
        r = results[variant]
        print(f"{label:<68} {gib(r['peak']):>10} {gib(r['before']):>10} {gib(r['peak'] - r['before']):>10} "
              f"{r['seconds']:>5.1f}s")
    base, cur = results["baseline"], results["current"]
    print(f"peak RSS ratio baseline / current: {base['peak'] / cur['peak']:.2f}x; "
          f"added by the load: {(base['peak'] - base['before']) / (cur['peak'] - cur['before']):.2f}x "
          f"(file size {gib(size)})")
    same = torch.equal(logits["baseline"], logits["current"])
    print(f"same logits from both models: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
