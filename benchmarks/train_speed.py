#!/usr/bin/env python3
"""Training speed of GPT-2 124M: the book's model, chapter 5's plain and fast paths, and transformers, in one run.

Each path trains the same model for a few steps on the same random batch (forward, float32
cross-entropy, backward, AdamW step) and reports tokens/s, the peak memory, the loss and the model
FLOPs utilisation (MFU) against the bfloat16 matmul peak that the script measures first:

  book    the book's own GPTModel (PyPI package llms-from-scratch, module llms_from_scratch.ch04), float32,
          torch.optim.AdamW with PyTorch's default implementation: the anchor, as the book trains it
  bookbf  the same model under the same autocast and fused AdamW as the course fast path b

  a   plain: ch04's GPTModel as built (separate output head, 163M parameters), float32, the
      hand-written attention, torch.optim.AdamW with PyTorch's default implementation (a for-loop
      over the parameters on the CPU), loss from calc_loss_batch(..., amp_dtype=None)
  b   course fast path on the same model: use_fused_kernels(model) (SDPA in every attention
      module, F.layer_norm and F.gelu in every LayerNorm and GELU), autocast in autocast_dtype(device) (bfloat16 where the hardware has it),
      AdamW(fused=True), loss from calc_loss_batch(..., amp_dtype)
  bt  b with the output head tied to the token embedding (ch04's tie_weights): 124M parameters, the
      same parameter set as transformers' GPT-2
  x   bt plus the speed levers of ch05_pretraining/faster_training.ipynb: reuse_freed_memory() (CPU) and,
      where autocast_dtype(device) is bfloat16, bfloat16 weights with float32 masters (MasterWeightAdamW,
      fused) instead of autocast
  xc  x plus the chunked loss (chunked_loss: no full logits), a memory lever; xc / x is what it does to speed
  c   transformers.GPT2LMHeadModel (tied, as GPT-2 is) of the same size, SDPA attention, the same
      autocast dtype and fused AdamW; the model is called for its logits (use_cache=False) and the loss
      comes from the very same calc_loss_batch

The book's package is a benchmark-only dependency, never imported by the course. Its declared
dependencies pull in TensorFlow and pin an old numpy, but its ch04 module needs only torch, so install
it without them: pip install --no-deps llms-from-scratch. Paths book and bookbf have the same
architecture and parameter names as the course's untied model (a, b), so they load the very same weights.

The fair comparison with transformers is bt / c: the same parameters (so the same optimizer work),
the same precision, attention kernel, optimizer, loss code, weights and batch. b / a is the speed-up
that chapter 5's three switches give the model the chapter trains. b / c is printed too; there the
course model also trains its separate 38.6M-parameter output head.

Like with like, in detail: drop_rate is 0.0 for every path (GPT2Config's three dropout rates too),
qkv biases are on (GPT-2 has them), n_positions is the context length used, and all four start from
one set of weights: GPT-2-style initialisation (normal, std 0.02, zero biases) of the course model
with the output head a copy of the token embedding, loaded into transformers with ch05's
course_to_hf_state_dict. Every path therefore computes the same function at step 0, and the
script checks that their initial losses agree (within bfloat16 rounding). The values of the weights
do not change the speed; sharing them turns the comparison into a correctness check as well.

Each path runs in a fresh process (multiprocessing "forkserver", "spawn" where that is missing), so
one path's freed memory cannot hide the next one's. Peak memory is the peak during the steps minus
the process's memory before the model was built: weights, gradients, AdamW moments, activations and
allocator slack. (Before that baseline, each process trains a toy model of its path for one step, so
the library's start-up, such as lazy imports and code pages, is not counted as the model's.) On the
CPU it is the resident set size (RSS; Linux: the kernel's exact high-water mark VmHWM, reset after
the model is built; elsewhere psutil sampled every 2 ms); on CUDA torch.cuda.max_memory_allocated.
Warm-up steps are run but not timed; tokens/s is batch x tokens x timed steps / their total time.
With --rounds N every path runs N times (fresh processes, the order of the paths reversed every other
round, so that a slow minute on a shared machine hits every path alike) and the table shows, per path, the
round with the median step time (for an even N the faster of the two middle ones) plus every round's s/step.

    python benchmarks/train_speed.py                         # 2 x 256 and 2 x 1024 tokens, 2 warm-up + 3 timed steps
    python benchmarks/train_speed.py --paths b,bt,c          # leave out the slow float32 paths
    python benchmarks/train_speed.py --paths bookbf,bt,x,c --rounds 3   # median of 3 rounds: steadier ratios
    python benchmarks/train_speed.py --context-length 256    # one shape only: quicker
    python benchmarks/train_speed.py --tiny --steps 1        # a 2-layer toy model: a few seconds
    python benchmarks/train_speed.py --device cuda           # on a GPU

Targets (issue 11): b / book >= 4x, b / bookbf >= 2x and bt / c >= 1.5x at both shapes, on a CPU with
bfloat16. MFU says how close to the hardware each path is: FLOPs per token = 6 x (weights used in matrix
products, the output head included even when tied) + 12 x n_layers x context_length x emb_dim for
attention (the convention of the PaLM paper, appendix B, which counts the full, not the causal, score
matrix). A ratio against the book cannot exceed MFU(b) / MFU(book). Timings vary with load from other
processes: measure on a quiet machine.

After its timed steps every path runs one more step under torch.profiler (CPU only; --no-matmul-time skips
it) and reports the seconds spent inside matrix-product kernels (aten::mm, addmm, bmm, baddbmm; not those
inside fused kernels such as SDPA's) as 'matmul s'. Beside each target ratio the script prints a ceiling:
the baseline's s/step over the path's matmul s, the speed-up the path would reach with the same kernels on
the same shapes if everything else it does cost nothing. A ceiling below the target means that no amount of
work outside the matrix products can meet it on this machine.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import multiprocessing as mp
import os
import platform
import sys
import threading
import time
import traceback
from importlib.metadata import PackageNotFoundError, version

import torch
import torch.nn as nn

from ch04_gpt_model import GPT_CONFIGS, GPTConfig, GPTModel, tie_weights
from ch05_pretraining import (
    MasterWeightAdamW,
    autocast_dtype,
    calc_loss_batch,
    chunked_loss,
    course_to_hf_state_dict,
    reuse_freed_memory,
    use_fused_kernels,
)

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

PATHS = {
    "book": "the book's GPTModel (llms_from_scratch.ch04, untied), float32, AdamW default",
    "bookbf": "the book's GPTModel (untied), autocast + fused AdamW (as path b)",
    "a": "course GPTModel (untied), float32, hand-written attention, AdamW default",
    "b": "course GPTModel (untied), use_fused_kernels (SDPA, fused LayerNorm and GELU) + autocast + fused AdamW (ch05 fast path)",
    "bt": "course GPTModel tied (tie_weights), same fast path as b",
    "x": "bt + reuse_freed_memory (CPU) + bf16 weights with float32 masters where bf16 is native",
    "xc": "x + chunked_loss (no full logits)",
    "c": "transformers GPT2LMHeadModel (tied), SDPA + autocast + fused AdamW",
}
LEVER_PATHS = ("x", "xc")  # the tied fast path plus the faster_training levers
TINY = dict(emb_dim=64, n_heads=4, n_layers=2)  # --tiny: GPT-2's vocabulary, a toy body


# --- one path, run in a child process ---------------------------------------------------------------

def _rss() -> int:
    """Resident set size of this process in bytes."""
    if psutil is not None:
        return psutil.Process().memory_info().rss
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory increase (bytes) of this process over its memory at construction; start() after building."""

    def __init__(self, device: torch.device):
        self.device, self.mode = device, None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = _rss()

    def start(self) -> None:
        """Forget peaks reached so far (building the model may need temporary copies)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.mode = "cuda"
            return
        try:  # Linux >= 4.0: "5" resets the kernel's peak-RSS counter VmHWM to the current RSS
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.mode = "hwm"
        except OSError:
            if psutil is None:
                return
            self.mode, self._peak, self._stop = "sampled", _rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss())
            time.sleep(0.002)

    def stop(self) -> int | None:
        """Peak increase in bytes since construction, or None where it cannot be measured."""
        if self.mode == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.mode == "hwm":
            with open("/proc/self/status") as f:
                hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            return hwm_kib * 1024 - self.base
        if self.mode == "sampled":
            self._stop.set()
            self._thread.join()
            return max(self._peak, _rss()) - self.base
        return None


def build_course_model(cfg: GPTConfig, tied: bool, seed: int) -> GPTModel:
    """GPTModel(cfg) with GPT-2-style weights (normal, std 0.02; zero biases) and head = token embedding."""
    torch.manual_seed(seed)
    model = GPTModel(cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
        model.out_head.weight.copy_(model.tok_emb.weight)  # untied, but the same values as tied
    return tie_weights(model) if tied else model


class LogitsOnly(nn.Module):
    """transformers' GPT-2 called like the course model: token ids (batch, tokens) -> logits."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf_model(input_ids=idx, use_cache=False).logits  # (batch, tokens, vocab_size)


def build_hf_model(cfg: GPTConfig, seed: int) -> nn.Module:
    """transformers.GPT2LMHeadModel of cfg's size (tied, SDPA) holding build_course_model(tied=True)'s weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=cfg.drop_rate,
        embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate, tie_word_embeddings=True, use_cache=False,
        attn_implementation="sdpa", bos_token_id=None, eos_token_id=None,  # no special tokens: speed only
    )
    hf_model = GPT2LMHeadModel(hf_cfg)
    state = course_to_hf_state_dict(build_course_model(cfg, tied=True, seed=seed))
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"weights do not fit GPT2LMHeadModel: missing {missing}, unexpected {unexpected}")
    if hf_model.lm_head.weight is not hf_model.transformer.wte.weight:
        raise RuntimeError("GPT2LMHeadModel's lm_head is not tied to wte; the comparison assumes it is")
    return LogitsOnly(hf_model)


def build_book_model(cfg: GPTConfig, seed: int) -> nn.Module:
    """The book's GPTModel (llms_from_scratch.ch04) holding build_course_model(tied=False)'s weights."""
    from llms_from_scratch.ch04 import GPTModel as BookGPTModel

    book = BookGPTModel({"vocab_size": cfg.vocab_size, "context_length": cfg.context_length, "emb_dim": cfg.emb_dim,
                         "n_heads": cfg.n_heads, "n_layers": cfg.n_layers, "drop_rate": cfg.drop_rate,
                         "qkv_bias": cfg.qkv_bias})
    missing, unexpected = book.load_state_dict(build_course_model(cfg, tied=False, seed=seed).state_dict(), strict=False)
    if unexpected or [k for k in missing if not k.endswith(".att.mask")]:  # the book keeps its mask as a buffer
        raise RuntimeError(f"weights do not fit the book's GPTModel: missing {missing}, unexpected {unexpected}")
    return book


def build_path(
    path: str, cfg: GPTConfig, seed: int, device: torch.device, amp: torch.dtype | None = None
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model (on device, in training mode) and optimizer of one path (amp: the path's autocast dtype)."""
    if path == "c":
        model = build_hf_model(cfg, seed)
    elif path in ("book", "bookbf"):
        model = build_book_model(cfg, seed)
    else:
        model = build_course_model(cfg, tied=path == "bt" or path in LEVER_PATHS, seed=seed)
    model = model.to(device).train()
    fast = path not in ("a", "book")
    if fast and (path in ("b", "bt") or path in LEVER_PATHS):
        use_fused_kernels(model)
    fused = fast and device.type in ("cpu", "cuda")  # as in ch05: fused AdamW where PyTorch has the kernel
    if path in LEVER_PATHS and amp == torch.bfloat16:  # bfloat16 weights, float32 masters: no autocast casts
        return model, MasterWeightAdamW(model.parameters(), lr=5e-4, weight_decay=0.1, fused=fused)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1, **({"fused": True} if fused else {}))
    return model, optimizer


def train_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device,
    amp: torch.dtype | None, n_steps: int, chunked: bool = False,
) -> tuple[list[float], list[float]]:
    """n_steps training steps on one batch; returns the seconds and the loss (before the update) of each."""
    if isinstance(optimizer, MasterWeightAdamW):
        amp = None  # the weights are bfloat16 already
    times, losses = [], []
    for _ in range(n_steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = chunked_loss((x, y), model, device, amp) if chunked else calc_loss_batch(x, y, model, device, amp)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return times, losses


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 (C++ code's stderr included) to /dev/null for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device,
    amp: torch.dtype | None, chunked: bool = False,
) -> list:
    """One more training step under torch.profiler (CPU activity); its per-operator averages."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    with _quiet_stderr():  # the profiler's backend logs a line to stderr at start and at stop
        prof.start()
    train_steps(model, optimizer, x, y, device, amp, 1, chunked)
    with _quiet_stderr():
        prof.stop()
    return list(prof.key_averages())


def matmul_seconds(events: list) -> float:
    """Seconds that a profiled step spent inside matrix-product kernels (self time of MATMUL_OPS)."""
    return sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6


def random_batch(cfg: GPTConfig, batch_size: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (batch_size, context_length) and the same shifted by one as targets."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, cfg.context_length + 1), generator=generator)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device)  # (batch, context_length) each


def run_path(path: str, spec: dict) -> dict:
    """Build one path's model and optimizer, train warmup + steps steps, return times, losses, memory."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cfg = GPTConfig(**spec["cfg"])
    amp = getattr(torch, spec["amp"]) if spec["amp"] and path not in ("a", "book") else None
    chunked = path == "xc"
    if path in LEVER_PATHS and device.type == "cpu":
        reuse_freed_memory()  # before anything big is allocated

    # One step of a toy model on the same path first: the library's start-up (lazy imports, code pages,
    # thread pools, kernel caches) then happens before the memory baseline and is not counted below.
    toy = dataclasses.replace(cfg, **TINY, vocab_size=min(cfg.vocab_size, 512),
                              context_length=min(cfg.context_length, 16))
    model, optimizer = build_path(path, toy, spec["seed"], device, amp)
    train_steps(model, optimizer, *random_batch(toy, 1, spec["seed"], device), device, amp, 1, chunked)
    del model, optimizer
    x, y = random_batch(cfg, spec["batch_size"], spec["seed"], device)
    gc.collect()

    memory = PeakMemory(device)
    model, optimizer = build_path(path, cfg, spec["seed"], device, amp)
    n_params = sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once
    gc.collect()
    memory.start()
    times, losses = train_steps(model, optimizer, x, y, device, amp, spec["warmup"] + spec["steps"], chunked)
    peak_bytes = memory.stop()
    matmul = None  # on a GPU the kernels run asynchronously: their CPU-side time would say nothing
    if spec["matmul_time"] and device.type == "cpu":
        matmul = matmul_seconds(profile_step(model, optimizer, x, y, device, amp, chunked))
    return {"times": times[spec["warmup"]:], "losses": losses, "peak_bytes": peak_bytes,
            "memory_mode": memory.mode, "n_params": n_params, "matmul_seconds": matmul}


def _child(path: str, spec: dict, conn) -> None:
    try:
        conn.send(run_path(path, spec))
    except BaseException:  # report any failure to the parent instead of dying silently
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def run_in_child(ctx, path: str, spec: dict) -> dict:
    """run_path(path, spec) in a fresh process; raises RuntimeError with the child's traceback on failure."""
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(path, spec, sender))
    process.start()
    sender.close()  # the child holds the only sending end: recv() fails if it dies without a result
    try:
        result = receiver.recv()
    except EOFError:
        result = {"error": "the process died without a result (out of memory?)"}
    process.join()
    if "error" in result:
        raise RuntimeError(f"path {path} failed (exit code {process.exitcode}):\n{result['error']}")
    return result


# --- the parent: options, machine info, table, ratios --------------------------------------------------

def cpu_name() -> str:
    """CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def mib(n_bytes: int | None) -> str:
    return "n/a" if n_bytes is None else f"{n_bytes / 2**20:,.0f} MiB"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)} "
                        "(default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per path (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every path this many times, each in a fresh process, in alternating order, and "
                             "report the median round (default 1; 3 tames a noisy machine)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (default 2: the first steps also fault in fresh memory)")
    parser.add_argument("--batch-size", type=int, default=2, help="sequences per batch (default 2)")
    parser.add_argument("--context-length", default=None,
                        help="tokens per sequence = the models' context length; a comma-separated list runs "
                             "every path at each (default 256,1024; 64 with --tiny)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="autocast dtype of the fast paths b, bt, c (auto: autocast_dtype(device); "
                             "float32: no autocast). Path a is always float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the weights and the batch")
    parser.add_argument("--no-matmul-time", dest="matmul_time", action="store_false",
                        help="skip the one extra, profiled step per path that measures the time in matrix-product "
                             "kernels (CPU only; the 'matmul s' column and the ceilings of the ratios)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"a toy model ({TINY['n_layers']} layers, emb_dim {TINY['emb_dim']}) for a quick check")
    args = parser.parse_args(argv)

    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bad = [p for p in args.paths if p not in PATHS]
    if bad or not args.paths or len(set(args.paths)) != len(args.paths):
        given = ",".join(args.paths) or "nothing"
        parser.error(f"--paths must list distinct names from {','.join(PATHS)}, got {given}")
    try:
        args.context_lengths = [int(n) for n in (args.context_length or ("64" if args.tiny else "256,1024")).split(",")]
    except ValueError:
        parser.error(f"--context-length must be whole numbers separated by commas, got {args.context_length!r}")
    if min(args.context_lengths) < 1:
        parser.error(f"--context-length must be >= 1, got {args.context_length}")
    for name in ("steps", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device!r} is not a torch device ({err}); use cpu or cuda")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but this torch has no usable CUDA device: run on the CPU (--device cpu)")
    if "c" in args.paths and package_version("transformers") == "not installed":
        parser.error("path c needs transformers (pip install transformers); or leave it out: --paths a,b,bt")
    if {"book", "bookbf"} & set(args.paths) and package_version("llms-from-scratch") == "not installed":
        parser.error("paths book and bookbf need the book's package: pip install --no-deps llms-from-scratch "
                     "(--no-deps: its ch04 module needs only torch); or leave them out: --paths a,b,bt,c")
    return args


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of a (size x size) @ (size x size) product in dtype on device, over reps timed runs."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for i in range(reps + 1):  # the first run is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def flops_per_token(cfg: GPTConfig) -> int:
    """Training FLOPs per token: 6 x matmul weights (head included) + 12 x n_layers x context_length x emb_dim."""
    matmul_weights = 12 * cfg.n_layers * cfg.emb_dim**2 + cfg.vocab_size * cfg.emb_dim  # 4d^2 attn + 8d^2 MLP, head
    return 6 * matmul_weights + 12 * cfg.n_layers * cfg.context_length * cfg.emb_dim


def run_shape(args: argparse.Namespace, ctx, context_length: int, amp: torch.dtype | None, peak: float) -> bool:
    """Every path at one context length: the table, the ratios and the initial-loss check; True if the check passed."""
    base = GPT_CONFIGS["gpt2"]  # 124M, with qkv biases like OpenAI's GPT-2
    cfg = dataclasses.replace(base, context_length=context_length, drop_rate=0.0, **(TINY if args.tiny else {}))
    spec = {"cfg": dataclasses.asdict(cfg), "device": str(args.device),
            "amp": str(amp).removeprefix("torch.") if amp else None,
            "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "seed": args.seed,
            "threads": args.threads, "matmul_time": args.matmul_time}
    tokens_per_step = args.batch_size * cfg.context_length
    rounds = f", {args.rounds} rounds (each path once per round, the order reversed every other round)" \
        if args.rounds > 1 else ""
    print(f"=== batch {args.batch_size} x {cfg.context_length} tokens (context_length = n_positions = "
          f"{cfg.context_length}), {args.warmup} warm-up + {args.steps} timed steps per path{rounds} ===")
    runs: dict[str, list[dict]] = {path: [] for path in args.paths}
    for round_ in range(args.rounds):
        for path in args.paths if round_ % 2 == 0 else args.paths[::-1]:  # a slow minute hits every path alike
            label = f"round {round_ + 1}: " if args.rounds > 1 else ""
            print(f"{label}running {path:<6} {PATHS[path]} ...", flush=True)
            runs[path].append(run_in_child(ctx, path, spec))
    results = {}
    for path, path_runs in runs.items():  # per path: the round with the median mean step time
        for r in path_runs:
            r["seconds"] = sum(r["times"]) / len(r["times"])
        results[path] = sorted(path_runs, key=lambda r: r["seconds"])[(len(path_runs) - 1) // 2]
        results[path]["round_seconds"] = [r["seconds"] for r in path_runs]

    mode = next(iter(results.values()))["memory_mode"]
    mem_label = {"cuda": "peak alloc", "hwm": "peak RSS", "sampled": "peak RSS"}.get(mode, "peak mem")
    print(f"\n{'path':<7} {'params':>12} {'s/step':>8} {'matmul s':>9} {'tokens/s':>10} {'MFU':>6} "
          f"{mem_label + ' +':>12} {'loss@0':>8} {'loss@end':>9}")
    speed = {}
    for path, r in results.items():
        seconds = r["seconds"]
        speed[path] = tokens_per_step / seconds
        mfu = speed[path] * flops_per_token(cfg) / peak
        matmul = "n/a" if r["matmul_seconds"] is None else f"{r['matmul_seconds']:.3f}"
        print(f"{path:<7} {r['n_params']:>12,} {seconds:>8.3f} {matmul:>9} {speed[path]:>10,.0f} {mfu:>6.1%} "
              f"{mib(r['peak_bytes']):>12} {r['losses'][0]:>8.4f} {r['losses'][-1]:>9.4f}"
              + ("   rounds: " + " ".join(f"{t:.3f}" for t in r["round_seconds"]) if args.rounds > 1 else ""))

    print("\nratios (tokens/s over tokens/s, this run):")
    ratios = [
        ("b", "book", "course fast path vs the book's model as the book trains it (float32)", 4.0),
        ("b", "bookbf", "course fast path vs the book's model under the same autocast and fused AdamW", 2.0),
        ("bt", "c", "course fast path vs transformers, both tied, same parameters", 1.5),
        ("x", "book", "course fast path + faster_training levers vs the book's model (float32)", 4.0),
        ("x", "bookbf", "course fast path + levers vs the book's model under autocast + fused AdamW", 2.0),
        ("x", "c", "course fast path + levers vs transformers, both tied", 1.5),
        ("xc", "book", "x + chunked loss vs the book's model (float32)", 4.0),
        ("xc", "bookbf", "x + chunked loss vs the book's model under autocast + fused AdamW", 2.0),
        ("xc", "c", "x + chunked loss vs transformers, both tied", 1.5),
        ("x", "bt", "what the faster_training levers add to the tied fast path", None),
        ("xc", "x", "what the chunked loss does to x's speed (it saves memory)", None),
        ("b", "a", "course fast path vs the course's plain float32 path, same untied model", None),
        ("a", "book", "the course's plain float32 path vs the book's", None),
        ("b", "c", "untied course model vs tied transformers (b also trains a separate head)", None),
        ("bt", "b", "tying the head, fast path", None),
    ]
    for num, den, what, target in ratios:
        if num in speed and den in speed:
            ratio = speed[num] / speed[den]
            goal = "" if target is None else f"   target >= {target}x: {'met' if ratio >= target else 'NOT met'}"
            print(f"  {num + ' / ' + den:<11} {ratio:5.2f}x  {what}{goal}")
            matmul = results[num]["matmul_seconds"]
            if target is not None and matmul:
                ceiling = results[den]["seconds"] / matmul
                print(f"  {'':<11} ceiling {ceiling:.2f}x: {den}'s s/step over {num}'s matmul s, the most {num} could "
                      "reach with these matrix-product kernels if it spent no time outside them")
    if len(speed) < 2:
        print("  (select at least two paths with --paths to get ratios)")

    # Sanity: the same weights and batch give the same step-0 loss on every path, up to rounding.
    initial = {path: r["losses"][0] for path, r in results.items()}
    ref = next(iter(initial))
    tol = 3e-2 if amp is not None and set(initial) - {"a", "book"} else 1e-4  # bfloat16 rounding, else float32
    worst = max(abs(loss - initial[ref]) for loss in initial.values())
    ok = worst <= tol
    print(f"\ninitial-loss check (same weights, same batch): "
          + ", ".join(f"{p} {v:.4f}" for p, v in initial.items())
          + f"; max |difference| from {ref}: {worst:.1e} (tolerance {tol:.0e}"
          + (f", {amp} autocast" if tol > 1e-4 else ", float32") + f"): {'ok' if ok else 'MISMATCH'}\n")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # used by the matmul-peak measurement; children set their own
    device = args.device
    native = autocast_dtype(device)
    amp = native if args.dtype == "auto" else (None if args.dtype == "float32" else torch.bfloat16)
    size = "toy model (--tiny)" if args.tiny else "GPT-2 124M"
    body = TINY if args.tiny else {}
    cfg = dataclasses.replace(GPT_CONFIGS["gpt2"], **body)
    print(f"Training speed, {size}: {cfg.n_layers} layers, {cfg.n_heads} heads, emb_dim {cfg.emb_dim}, "
          f"vocab {cfg.vocab_size}, qkv biases, drop_rate 0.0 (all paths); each step: forward, float32 "
          "cross-entropy, backward, AdamW step")
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} | CPU {cpu_name()}"
        bf16_info = f"bf16 supported: {torch.cuda.is_bf16_supported()}"
    else:
        machine = f"{cpu_name()} | {os.cpu_count()} logical CPUs"
        amx, avx512_bf16 = (getattr(torch.cpu, probe, lambda: False)() for probe in
                            ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
        bf16_info = f"AMX: {'yes' if amx else 'no'}, AVX-512 BF16: {'yes' if avx512_bf16 else 'no'}"
    print(f"machine: {machine} | device {device} | torch {torch.__version__} "
          f"({args.threads or torch.get_num_threads()} threads) | transformers {package_version('transformers')} | "
          f"llms-from-scratch {package_version('llms-from-scratch')} | Python {platform.python_version()}")
    print(f"{bf16_info} -> autocast_dtype({device}) = {native}; fast paths b, bt, c, bookbf: "
          + (f"{amp} autocast" if amp else "float32 (no autocast)"))
    peak_dtype = torch.bfloat16 if native is not None or device.type == "cuda" else torch.float32
    peak = matmul_peak(device, peak_dtype)
    fp32_peak = matmul_peak(device, torch.float32)
    print(f"matmul peak (2048 x 2048 x 2048, best of 5): {peak_dtype} {peak / 1e9:,.0f} GFLOP/s, float32 "
          f"{fp32_peak / 1e9:,.0f} GFLOP/s; MFU below is against the {peak_dtype} peak")
    print("weights: one GPT-2-style initialisation shared by all paths (the untied head starts as a copy of the "
          "token embedding; c loads the tied weights via course_to_hf_state_dict, book and bookbf the untied ones)")
    if amp is None and native is None and args.dtype == "auto":
        print("  (no native bfloat16 here: b / a then measures SDPA + fused AdamW only; the targets assume bf16)")
    print()

    start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":  # import torch, the course and transformers once, then fork per path
        heavy = ["torch", "torch._dynamo", "ch04_gpt_model", "ch05_pretraining"]  # AdamW imports torch._dynamo
        heavy += ["transformers.models.gpt2.modeling_gpt2"] if "c" in args.paths else []
        heavy += ["llms_from_scratch.ch04"] if {"book", "bookbf"} & set(args.paths) else []
        ctx.set_forkserver_preload(heavy)

    ok = True
    try:
        for context_length in args.context_lengths:
            ok &= run_shape(args, ctx, context_length, amp, peak)
    except RuntimeError as err:
        print(err)
        return 1
    memory_how = {
        "cpu": "peak RSS during the steps (kernel high-water mark VmHWM, or psutil sampled every 2 ms) minus the RSS "
               "before the model was built",
        "cuda": "torch.cuda.max_memory_allocated during the steps minus the allocation before the model was built",
    }[device.type]
    print(f"memory: {memory_how}: weights, gradients, AdamW moments, activations, allocator slack; "
          "each path in a fresh process")
    print("params: unique parameters (a tied head counts once); 16 bytes each in float32 weight, gradient "
          "and two AdamW moments")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
