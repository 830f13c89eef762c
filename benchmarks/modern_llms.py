#!/usr/bin/env python3
"""The bonus's Llama 3 / Qwen3-style ModernModel against transformers (generation) and against GPT-2 (training).

Two measurements, one run (`generation`, `training`, or both by default):

1. generation: greedy decoding with the course's KV cache against transformers' generate
   A model of Qwen3-0.6B's shape (QWEN3_0_6B: 28 layers, 16 query / 8 key-value heads of 128,
   SwiGLU 3072, vocabulary 151,936, tied head; context_length cut to prompt + new tokens) with
   random seeded weights, in bfloat16 on the CPU, batch 1, a random --prompt-tokens prompt (32),
   --new-tokens new tokens (256), greedy, no end-of-text stop:

     course        chapter 7's generate_batched(model, [prompt], 256, eos_id=None) on a ModernModel
                   (bfloat16 weights, amp_dtype None; the cache is a ModernKVCache sized prompt + new tokens)
     transformers  Qwen3ForCausalLM.from_pretrained(...).generate(do_sample=False, max_new_tokens=256,
                   min_new_tokens=256, return_dict_in_generate=True): its default cache (DynamicCache)
                   and attention implementation (sdpa)

   Both hold the very same weights: the script writes one safetensors file with Hugging Face names
   (ModernModel's names mapped through _hf_names) and a config.json, and each side loads it. Linear
   weights are drawn from N(0, 1/fan_in), the embedding from N(0, 0.02**2), the RMSNorm weights from
   U(0.5, 1.5), so that a missed or swapped tensor changes the tokens. (from_pretrained leaves its
   tensors in a memory map of the file; the script copies them into ordinary memory, where the course
   model's are, so both sides read their weights from the same kind of memory.)

   Each side lives in its own process (multiprocessing forkserver), loads the model, runs one short
   untimed warm-up generation, then answers the parent's requests: --repeats timed generations per
   side, in alternating order (course first in odd rounds, transformers first in even ones), so a
   slow minute on a shared machine hits both alike. Reported per side (median over the repeats):
     - time to first token (prefill of the prompt, plus picking the first token), from the start of
       the call to the first token handed out (generate_batched's on_token, transformers' streamer)
     - decode tokens/s: the remaining new tokens / the time from the first to the last token
     - tokens/s: all new tokens / the whole call (prefill included): the headline ratio
       course / transformers (goal: >= 1.0x)
     - KV cache: ours ModernKVCache.nbytes (what generate_batched allocates, prompt + new positions);
       transformers' the bytes of the key and value tensors in the cache that generate returns
     - peak RSS increase of the first timed run in each process (the kernel's high-water mark VmHWM,
       reset just before the call, minus the RSS at that moment): the cache, logits, activations and
       allocator slack; later runs reuse memory that the first one left to the allocator
   Tokens: the number of identical leading tokens of the two sides (in bfloat16 they may part after
   many steps, because the two implementations round differently and random weights give near-ties).
   Correctness gate, before any timing: a toy Qwen3 configuration in float32, written and loaded the
   same way, must give identical greedy tokens on both sides; else the script stops with exit code 1.
   Profile: when the course is slower (or with --profile on), each side runs --profile-steps decode
   steps under torch.profiler and the script prints the operators' self CPU time per token, side by
   side, largest difference first (the profiler adds a little time to every operator call).

2. training: ModernModel (Llama-style: GQA, SwiGLU, RMSNorm, RoPE) against chapter 5's GPTModel
   Both tied (GPT-2, Llama 3.2 1B and Qwen3 0.6B all tie the output head to the token embedding, and
   at this size an untied 50,257 x d head would be most of the model), GPT-2's vocabulary, the same
   width, depth and heads; the ModernModel has 4 query heads per key-value head and a SwiGLU width
   chosen so that both parameter counts match (within 2%; both are printed). Each trains on one
   random batch (--batch-size x --context-length tokens, the same for both) with the chapter-5
   levers that apply to it:
     GPT-2-style   use_fused_kernels (SDPA, fused LayerNorm and GELU), reuse_freed_memory, and where
                   autocast_dtype(cpu) is bfloat16: bfloat16 weights with float32 masters
                   (MasterWeightAdamW, fused); else float32 with fused AdamW
     Llama-style   the same except use_fused_kernels (ModernModel already calls SDPA and has no
                   LayerNorm or GELU)
   The loss is chapter 5's calc_loss_batch for both (chunked_loss needs GPTModel.hidden_states).
   Each side runs in a fresh process per round (--repeats rounds, alternating order), --train-warmup
   untimed steps, then --train-steps timed ones; reported: tokens/s (median round), the peak RSS
   during the steps minus the RSS before the model was built (weights, gradients, AdamW state,
   activations), the loss at the first and last step, and the ratio Llama-style / GPT-2-style.

Every process sets torch.set_num_threads(--threads) (default: every core this process may use), the
same for all sides. Timings vary with other processes: measure on a quiet machine. On a busy one, give
fewer threads than there are idle cores: a parallel operator waits for its slowest thread, and a thread
without a free core waits for a scheduler tick (a 2-core machine with one core taken: a bfloat16
(1 x 1024) @ (1024 x 3072) product took 4 ms with 2 threads, 0.18 ms with 1).

    python benchmarks/modern_llms.py                      # both parts, full size (about 5 min on 2 cores)
    python benchmarks/modern_llms.py generation --repeats 1
    python benchmarks/modern_llms.py training --context-length 512
    python benchmarks/modern_llms.py --tiny               # toy shapes: a few seconds, checks the plumbing
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn

from ch04_gpt_model import GPTConfig, GPTModel, tie_weights
from ch05_pretraining import (
    MasterWeightAdamW,
    autocast_dtype,
    calc_loss_batch,
    reuse_freed_memory,
    use_fused_kernels,
)
from ch05_pretraining.modern_llms import (
    QWEN3_0_6B,
    ModernConfig,
    ModernKVCache,
    ModernModel,
    _hf_names,
    load_hf_state_dict,
)
from ch07_instruction import generate_batched

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark, also when imported as a module
from train_speed import (  # noqa: E402
    PeakMemory,
    _quiet_stderr,
    build_course_model,
    cpu_name,
    mib,
    package_version,
    random_batch,
)

SIDES = ("course", "transformers")
TINY_GENERATION = ModernConfig(vocab_size=1024, emb_dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                               hidden_dim=192, context_length=64, rope_theta=1_000_000.0, qk_norm=True,
                               tie_embeddings=True)  # Qwen3's features at toy size: the gate's model, and --tiny's
GATE_PROMPT, GATE_NEW = 8, 24  # float32 correctness gate: prompt and new tokens
TRAIN_FULL = dict(vocab_size=50_257, emb_dim=512, n_heads=8, n_layers=6)  # both models: ~45M parameters, tied
TRAIN_TINY = dict(vocab_size=1024, emb_dim=64, n_heads=4, n_layers=2)
KV_GROUP = 4  # Llama-style: query heads per key-value head (Llama 3.2 1B: 32 / 8)


# --- generation: weights, the two sides ----------------------------------------------------------------

def hf_qwen3_config(cfg: ModernConfig):
    """transformers.Qwen3Config of cfg's shape (no RoPE scaling, QK-norm on, no special tokens)."""
    from transformers import Qwen3Config

    if not cfg.qk_norm or cfg.rope_scaling is not None:
        raise ValueError("hf_qwen3_config needs a Qwen3-style config: qk_norm=True and no rope_scaling")
    return Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.context_length, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, bos_token_id=None, eos_token_id=None,
        pad_token_id=None,
    )


def write_checkpoint(cfg: ModernConfig, dtype: torch.dtype, seed: int, folder: Path) -> None:
    """model.safetensors (Hugging Face names, random weights from seed) and config.json of cfg in folder."""
    from safetensors.torch import save_file

    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        shapes = {name: t.shape for name, t in ModernModel(cfg).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for ours, theirs in _hf_names(cfg).items():
        weight = torch.empty(shapes[ours], dtype=dtype)
        if "norm" in ours:
            weight.uniform_(0.5, 1.5, generator=generator)  # not all ones: a missed norm changes the tokens
        elif ours in ("tok_emb.weight", "out_head.weight"):
            weight.normal_(0.0, 0.02, generator=generator)
        else:  # (out_features, in_features): unit gain, so every block moves the residual stream
            weight.normal_(0.0, 1 / math.sqrt(shapes[ours][1]), generator=generator)
        state[theirs] = weight
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf_qwen3_config(cfg).save_pretrained(folder)


def load_side(side: str, folder: Path, cfg: ModernConfig, dtype: torch.dtype) -> nn.Module:
    """The course's ModernModel or transformers' Qwen3ForCausalLM in dtype, eval mode, weights from folder."""
    if side == "course":
        from safetensors.torch import load_file

        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # build in dtype directly: no float32 copy of 0.6B weights
        try:
            model = ModernModel(cfg)
        finally:
            torch.set_default_dtype(default)
        load_hf_state_dict(model, load_file(str(folder / "model.safetensors")))
        return model.to(dtype).eval()  # .to: the RoPE tables too, as a learner's model.to(torch.bfloat16) does
    from transformers import Qwen3ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = Qwen3ForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    with torch.no_grad():
        for p in model.parameters():  # out of the file's memory map into ordinary memory (tied ones once)
            p.data = p.data.clone()
    if cfg.tie_embeddings and model.lm_head.weight is not model.model.embed_tokens.weight:
        raise RuntimeError("Qwen3ForCausalLM's lm_head is not tied to embed_tokens; the comparison assumes it is")
    return model


class TokenClock:
    """Time stamps of the new tokens: generate_batched's on_token(row, id) and transformers' streamer.put/end."""

    def __init__(self, on_first=None, on_count: tuple[int, object] | None = None):
        self.times: list[float] = []
        self.on_first, self.on_count = on_first, on_count  # hooks: at the first token, at token number n
        self._prompt_seen = False

    def __call__(self, row: int, token: int) -> None:  # generate_batched
        self._tick()

    def put(self, value: torch.Tensor) -> None:  # transformers' streamer: the prompt first, then each new token
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._tick()

    def end(self) -> None:
        pass

    def _tick(self) -> None:
        self.times.append(time.perf_counter())
        if len(self.times) == 1 and self.on_first is not None:
            self.on_first()
        if self.on_count is not None and len(self.times) == self.on_count[0]:
            self.on_count[1]()


def generate_once(side: str, model: nn.Module, prompt: list[int], new_tokens: int,
                  clock: TokenClock | None = None) -> dict:
    """One greedy generation; new token ids, seconds of the call, token time stamps and KV-cache bytes."""
    clock = clock or TokenClock()
    if side == "course":
        start = time.perf_counter()
        tokens = generate_batched(model, [prompt], new_tokens, eos_id=None, on_token=clock)[0]
        seconds = time.perf_counter() - start
        width = len(prompt)  # generate_batched's cache: prompt + min(new, context - prompt) positions
        cache = ModernKVCache(model.cfg, 1, width + min(new_tokens, model.cfg.context_length - width),
                              device="meta", dtype=model.tok_emb.weight.dtype)
        cache_bytes = cache.nbytes
    else:
        idx = torch.tensor([prompt])
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, return_dict_in_generate=True, streamer=clock,
                                 pad_token_id=0)
        seconds = time.perf_counter() - start
        tokens = out.sequences[0, len(prompt):].tolist()
        cache_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in out.cache.layers)
        del out
    return {"tokens": tokens, "seconds": seconds, "first": clock.times[0] - start if clock.times else None,
            "last": clock.times[-1] - start if clock.times else None, "cache_bytes": cache_bytes}


def profile_decode(side: str, model: nn.Module, prompt: list[int], steps: int) -> list[tuple[str, float, int]]:
    """(operator, self CPU seconds, calls) over `steps` decode steps: from the first new token to token steps + 1."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])

    def start() -> None:
        with _quiet_stderr():  # the profiler's backend logs a line at start and at stop
            prof.start()

    def stop() -> None:
        with _quiet_stderr():
            prof.stop()

    generate_once(side, model, prompt, steps + 1, TokenClock(on_first=start, on_count=(steps + 1, stop)))
    return [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]


def _generation_worker(side: str, spec: dict, conn) -> None:
    """One side in its own process: load, warm up, then answer ("run",) and ("profile", steps) until None."""
    try:
        torch.set_num_threads(spec["threads"])
        cfg, dtype = ModernConfig(**spec["cfg"]), getattr(torch, spec["dtype"])
        start = time.perf_counter()
        model = load_side(side, Path(spec["folder"]), cfg, dtype)
        load_seconds = time.perf_counter() - start
        generate_once(side, model, spec["prompt"][:4], 4)  # warm-up: kernels, thread pool, code paths
        gc.collect()
        conn.send({"load_seconds": load_seconds})
        while (request := conn.recv()) is not None:
            if request[0] == "profile":
                conn.send({"profile": profile_decode(side, model, spec["prompt"], request[1])})
                continue
            memory = PeakMemory(torch.device("cpu"))
            memory.start()
            result = generate_once(side, model, spec["prompt"], spec["new_tokens"])
            result["peak_bytes"], result["memory_mode"] = memory.stop(), memory.mode
            conn.send(result)
    except BaseException:  # report any failure to the parent instead of dying silently
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


class Worker:
    """A child process running target(name, spec, conn); ask() sends a request and returns the reply."""

    def __init__(self, ctx, target, name: str, spec: dict):
        self.name = name
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(name, spec, child_conn))
        self.process.start()
        child_conn.close()  # the child holds the only other end: recv() fails if it dies

    def receive(self) -> dict:
        try:
            reply = self.conn.recv()
        except EOFError:
            reply = {"error": "the process died without a result (out of memory?)"}
        if "error" in reply:
            self.process.join()
            raise RuntimeError(f"{self.name} failed (exit code {self.process.exitcode}):\n{reply['error']}")
        return reply

    def ask(self, request) -> dict:
        self.conn.send(request)
        return self.receive()

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self.process.join(timeout=30)
        self.conn.close()


def float32_gate(seed: int) -> tuple[bool, list[int], list[int]]:
    """TINY_GENERATION in float32, written and loaded like the benchmark's model: both sides' greedy tokens."""
    with tempfile.TemporaryDirectory(prefix="modern_llms_gate_") as folder:
        write_checkpoint(TINY_GENERATION, torch.float32, seed, Path(folder))
        models = {side: load_side(side, Path(folder), TINY_GENERATION, torch.float32) for side in SIDES}
    prompt = torch.randint(0, TINY_GENERATION.vocab_size, (GATE_PROMPT,),
                           generator=torch.Generator().manual_seed(seed)).tolist()
    tokens = [generate_once(side, models[side], prompt, GATE_NEW)["tokens"] for side in SIDES]
    return tokens[0] == tokens[1], tokens[0], tokens[1]


def leading_same(a: list[int], b: list[int]) -> int:
    """How many leading tokens a and b share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def print_profile(profiles: dict[str, list], steps: int, rows: int = 15) -> None:
    """Operators' self CPU ms per decode token, side by side, the largest course - transformers difference first."""
    per_token = {side: {} for side in SIDES}
    calls = {side: {} for side in SIDES}
    for side, events in profiles.items():
        for name, seconds, count in events:
            per_token[side][name] = per_token[side].get(name, 0.0) + 1e3 * seconds / steps
            calls[side][name] = calls[side].get(name, 0) + count / steps
    names = sorted(set(per_token["course"]) | set(per_token["transformers"]),
                   key=lambda n: -abs(per_token["course"].get(n, 0.0) - per_token["transformers"].get(n, 0.0)))
    totals = {side: sum(per_token[side].values()) for side in SIDES}
    print(f"\nprofile: {steps} decode steps per side under torch.profiler, self CPU time per token "
          f"(course {totals['course']:.1f} ms, transformers {totals['transformers']:.1f} ms per token in all)")
    print(f"  {'operator':<44} {'course ms':>10} {'calls':>7} {'transf. ms':>11} {'calls':>7} {'difference':>11}")
    for name in names[:rows]:
        ours, theirs = per_token["course"].get(name, 0.0), per_token["transformers"].get(name, 0.0)
        print(f"  {name[:44]:<44} {ours:>10.2f} {calls['course'].get(name, 0):>7.0f} {theirs:>11.2f} "
              f"{calls['transformers'].get(name, 0):>7.0f} {ours - theirs:>+11.2f}")


def run_generation(args: argparse.Namespace, ctx) -> bool:
    """Part 1: the gate, then both sides' timed generations, the table and the ratios; False if the gate failed."""
    ok, ours, theirs = float32_gate(args.seed)
    print(f"correctness gate (float32, toy Qwen3 config: {TINY_GENERATION.n_layers} layers, emb_dim "
          f"{TINY_GENERATION.emb_dim}, GQA {TINY_GENERATION.n_heads}/{TINY_GENERATION.n_kv_heads}, QK-norm, tied; "
          f"{GATE_PROMPT}-token prompt, {GATE_NEW} new tokens): identical tokens: {'yes' if ok else 'NO'}")
    if not ok:
        print(f"  course       {ours}\n  transformers {theirs}\n  the two generators disagree in float32: "
              "fix the model or the weight transfer before timing anything")
        return False

    shape = TINY_GENERATION if args.tiny else QWEN3_0_6B
    cfg = dataclasses.replace(shape, context_length=args.prompt_tokens + args.new_tokens)
    dtype = getattr(torch, args.dtype)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in ModernModel(cfg).parameters())
    prompt = torch.randint(0, cfg.vocab_size, (args.prompt_tokens,),
                           generator=torch.Generator().manual_seed(args.seed + 1)).tolist()
    print(f"model: {'toy Qwen3 config (--tiny)' if args.tiny else 'Qwen3-0.6B shape'}, {n_params:,} parameters "
          f"({cfg.n_layers} layers, emb_dim {cfg.emb_dim}, {cfg.n_heads} query / {cfg.n_kv_heads} key-value heads of "
          f"{cfg.head_dim}, SwiGLU {cfg.hidden_dim}, vocab {cfg.vocab_size:,}, tied, context_length "
          f"{cfg.context_length}), random weights (seed {args.seed}), {args.dtype}")
    print(f"task: batch 1, prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, greedy, no stop token; "
          f"{args.repeats} timed repeat(s) per side, alternating order, median reported")

    workers: dict[str, Worker] = {}
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    profiles: dict[str, list] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="modern_llms_weights_") as folder:
            start = time.perf_counter()
            write_checkpoint(cfg, dtype, args.seed, Path(folder))
            print(f"weights written ({time.perf_counter() - start:.1f} s); loading each side in its own process ...",
                  flush=True)
            spec = {"cfg": dataclasses.asdict(cfg), "dtype": args.dtype, "folder": folder, "prompt": prompt,
                    "new_tokens": args.new_tokens, "threads": args.threads}
            for side in SIDES:  # one after the other: each load has the cores to itself
                workers[side] = Worker(ctx, _generation_worker, side, spec)
                load = workers[side].receive()["load_seconds"]
                print(f"  {side}: loaded in {load:.1f} s, warmed up", flush=True)
        for repeat in range(args.repeats):
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                runs[side].append(workers[side].ask(("run",)))
            print(f"repeat {repeat + 1}: " + ", ".join(f"{side} {runs[side][-1]['seconds']:.2f} s" for side in SIDES),
                  flush=True)
        median = {side: {key: statistics.median(r[key] for r in runs[side]) for key in ("seconds", "first", "last")}
                  for side in SIDES}
        slower = median["course"]["seconds"] > median["transformers"]["seconds"]
        steps = min(args.profile_steps, args.new_tokens - 1, cfg.context_length - args.prompt_tokens - 1)
        if steps > 0 and (args.profile == "on" or (args.profile == "auto" and slower)):
            for side in SIDES:
                profiles[side] = workers[side].ask(("profile", steps))["profile"]
    finally:
        for worker in workers.values():
            worker.close()

    n = args.new_tokens
    print(f"\n{'side':<13} {'first token s':>13} {'decode tok/s':>13} {'tokens/s':>9} {'KV cache':>9} "
          f"{'peak RSS +':>11}   seconds per repeat")
    speed = {}
    for side in SIDES:
        m, first = median[side], runs[side][0]
        decode = (n - 1) / (m["last"] - m["first"]) if n > 1 and m["last"] > m["first"] else float("nan")
        speed[side] = {"all": n / m["seconds"], "decode": decode, "first": m["first"]}
        print(f"{side:<13} {m['first']:>13.3f} {decode:>13.2f} {speed[side]['all']:>9.2f} "
              f"{mib(first['cache_bytes']):>9} {mib(first['peak_bytes']):>11}   "
              + " ".join(f"{r['seconds']:.2f}" for r in runs[side]))
    ratio = speed["course"]["all"] / speed["transformers"]["all"]
    print(f"\nratio course / transformers, tokens/s of the {n} new tokens (prefill included): {ratio:.2f}x   "
          f"goal >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'}")
    print(f"ratio course / transformers, decode tokens/s (tokens 2..{n}): "
          f"{speed['course']['decode'] / speed['transformers']['decode']:.2f}x")
    print(f"ratio course / transformers, prefill (transformers' time to first token / the course's): "
          f"{speed['transformers']['first'] / speed['course']['first']:.2f}x")
    same = leading_same(runs["course"][0]["tokens"], runs["transformers"][0]["tokens"])
    steady = all(r["tokens"] == runs[side][0]["tokens"] for side in SIDES for r in runs[side])
    print(f"identical leading tokens ({args.dtype}, first repeat): {same} of {n}; "
          f"every repeat of a side gave the same tokens: {'yes' if steady else 'NO'}")
    print("KV cache: course = ModernKVCache.nbytes (prompt + new positions, allocated up front); transformers = "
          "key and value tensors of the returned DynamicCache (prompt + new - 1 positions, grown by concatenation)")
    print("peak RSS +: first timed run of each process, VmHWM during the call minus the RSS before it")
    if profiles:
        print_profile(profiles, steps)
    return True


# --- training: GPT-2-style vs Llama-style -------------------------------------------------------------

def train_configs(tiny: bool, context_length: int) -> tuple[GPTConfig, ModernConfig]:
    """A tied GPT-2-style GPTConfig and a tied Llama-style ModernConfig with (nearly) the same parameter count."""
    body = TRAIN_TINY if tiny else TRAIN_FULL
    gpt = GPTConfig(**body, context_length=context_length, drop_rate=0.0, qkv_bias=True)
    d, heads = body["emb_dim"], body["n_heads"]
    base = ModernConfig(vocab_size=body["vocab_size"], emb_dim=d, n_layers=body["n_layers"], n_heads=heads,
                        n_kv_heads=max(1, heads // KV_GROUP), head_dim=d // heads, hidden_dim=1,
                        context_length=context_length, rope_theta=500_000.0, tie_embeddings=True, norm_eps=1e-5)
    with torch.device("meta"):
        gpt_params = sum(p.numel() for p in tie_weights(GPTModel(gpt)).parameters())  # a shared tensor counts once
        rest = sum(p.numel() for p in ModernModel(base).parameters()) - 3 * d * base.n_layers  # all but SwiGLU
    step = 8 if tiny else 64  # a round width, as published models have
    hidden = round((gpt_params - rest) / (3 * d * base.n_layers) / step) * step  # 3 matrices of d x hidden per layer
    return gpt, dataclasses.replace(base, hidden_dim=hidden)


def build_train_side(side: str, gpt_cfg: GPTConfig, modern_cfg: ModernConfig, seed: int) -> nn.Module:
    """The tied GPTModel (GPT-2-style initialisation, fused kernels) or the tied ModernModel (the same rule)."""
    if side == "gpt2-style":
        return use_fused_kernels(build_course_model(gpt_cfg, tied=True, seed=seed))
    torch.manual_seed(seed)
    model = ModernModel(modern_cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, 0.02)  # as build_course_model does for GPTModel; norms stay at 1
    return model


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                amp: torch.dtype | None, n_steps: int) -> tuple[list[float], list[float]]:
    """n_steps steps on one batch with calc_loss_batch; the seconds and the loss (before the update) of each."""
    times, losses = [], []
    for _ in range(n_steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = calc_loss_batch(x, y, model, "cpu", amp)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return times, losses


def _train_worker(side: str, spec: dict, conn) -> None:
    """One side, one round, in a fresh process: build, warm up, time the steps, report; then exit."""
    try:
        torch.set_num_threads(spec["threads"])
        reuse_freed_memory()  # chapter 5's lever, before anything big is allocated
        gpt_cfg, modern_cfg = GPTConfig(**spec["gpt"]), ModernConfig(**spec["modern"])
        bf16 = spec["amp"] == "bfloat16"

        def make(gpt: GPTConfig, modern: ModernConfig):
            model = build_train_side(side, gpt, modern, spec["seed"]).train()
            if bf16:  # bfloat16 weights, float32 masters: no autocast casts in the steps
                return model, MasterWeightAdamW(model.parameters(), lr=5e-4, weight_decay=0.1, fused=True)
            return model, torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1, fused=True)

        # one step of a toy model first: the library's start-up is not counted as the model's memory
        toy_gpt = dataclasses.replace(gpt_cfg, **TRAIN_TINY, context_length=16)
        toy_modern = dataclasses.replace(modern_cfg, **TRAIN_TINY, n_kv_heads=1, head_dim=16, hidden_dim=64,
                                         context_length=16)
        model, optimizer = make(toy_gpt, toy_modern)
        train_steps(model, optimizer, *random_batch(toy_gpt, 1, spec["seed"], torch.device("cpu")), None, 1)
        del model, optimizer
        x, y = random_batch(gpt_cfg, spec["batch_size"], spec["seed"], torch.device("cpu"))
        gc.collect()

        memory = PeakMemory(torch.device("cpu"))
        model, optimizer = make(gpt_cfg, modern_cfg)
        n_params = sum(p.numel() for p in model.parameters())
        gc.collect()
        memory.start()
        times, losses = train_steps(model, optimizer, x, y, None, spec["warmup"] + spec["steps"])
        conn.send({"times": times[spec["warmup"]:], "losses": losses, "peak_bytes": memory.stop(),
                   "n_params": n_params})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def run_training(args: argparse.Namespace, ctx) -> None:
    """Part 2: both models, --repeats rounds each in fresh processes, the table and the ratio."""
    gpt_cfg, modern_cfg = train_configs(args.tiny, args.context_length)
    amp = autocast_dtype("cpu")
    precision = ("bfloat16 weights, float32 masters (MasterWeightAdamW, fused)" if amp == torch.bfloat16
                 else "float32, fused AdamW (this CPU has no native bfloat16)")
    sides = {"gpt2-style": f"GPTModel: LayerNorm, GELU MLP 4x{gpt_cfg.emb_dim}, learned positions, "
                           f"{gpt_cfg.n_heads} heads, qkv biases; use_fused_kernels",
             "llama-style": f"ModernModel: RMSNorm, SwiGLU {modern_cfg.hidden_dim}, RoPE, {modern_cfg.n_heads} query / "
                            f"{modern_cfg.n_kv_heads} key-value heads"}
    print(f"models: {gpt_cfg.n_layers} layers, emb_dim {gpt_cfg.emb_dim}, vocab {gpt_cfg.vocab_size:,}, both tied")
    for side, what in sides.items():
        print(f"  {side:<12} {what}")
    print(f"levers (both): {precision}, reuse_freed_memory, SDPA; loss calc_loss_batch; "
          f"batch {args.batch_size} x {args.context_length} tokens; {args.train_warmup} warm-up + {args.train_steps} "
          f"timed steps; {args.repeats} round(s), each side in a fresh process, alternating order")
    spec = {"gpt": dataclasses.asdict(gpt_cfg), "modern": dataclasses.asdict(modern_cfg), "seed": args.seed,
            "amp": str(amp).removeprefix("torch.") if amp else None, "batch_size": args.batch_size,
            "steps": args.train_steps, "warmup": args.train_warmup, "threads": args.threads}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    names = list(sides)
    for round_ in range(args.repeats):
        for side in names if round_ % 2 == 0 else names[::-1]:
            worker = Worker(ctx, _train_worker, side, spec)
            try:
                runs[side].append(worker.receive())
            finally:
                worker.close()
        print(f"round {round_ + 1}: " + ", ".join(
            f"{side} {sum(runs[side][-1]['times']) / len(runs[side][-1]['times']):.3f} s/step" for side in names),
            flush=True)
    tokens_per_step = args.batch_size * args.context_length
    print(f"\n{'side':<12} {'params':>12} {'s/step':>8} {'tokens/s':>9} {'peak RSS +':>11} {'loss@0':>7} "
          f"{'loss@end':>8}   s/step per round")
    speed, counts = {}, {}
    for side in names:
        for r in runs[side]:
            r["seconds"] = sum(r["times"]) / len(r["times"])
        r = sorted(runs[side], key=lambda r: r["seconds"])[(len(runs[side]) - 1) // 2]  # the median round
        speed[side], counts[side] = tokens_per_step / r["seconds"], r["n_params"]
        print(f"{side:<12} {r['n_params']:>12,} {r['seconds']:>8.3f} {speed[side]:>9,.0f} {mib(r['peak_bytes']):>11} "
              f"{r['losses'][0]:>7.3f} {r['losses'][-1]:>8.3f}   " + " ".join(f"{x['seconds']:.3f}" for x in runs[side]))
    diff = counts["llama-style"] / counts["gpt2-style"] - 1
    print(f"\nparameters: llama-style / gpt2-style - 1 = {diff:+.2%} (goal within 2%: {'met' if abs(diff) <= 0.02 else 'NOT met'})")
    print(f"ratio llama-style / gpt2-style, tokens/s: {speed['llama-style'] / speed['gpt2-style']:.2f}x")
    print("peak RSS +: VmHWM during the steps minus the RSS before the model was built (weights, gradients, "
          "AdamW state and masters, activations, allocator slack)")


# --- the parent -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["all", "generation", "training"], default="all",
                        help="which measurement (default: all = both)")
    parser.add_argument("--tiny", action="store_true",
                        help="toy shapes and short runs (prompt 8, 16 new tokens, batch 2 x 32): a few seconds")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads in every process (default: every core this process may use)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed generations per side and training rounds (default 3; median reported)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the weights, prompt and batch")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--prompt-tokens", type=int, default=None, help="prompt length (default 32; 8 with --tiny)")
    gen.add_argument("--new-tokens", type=int, default=None, help="tokens to generate (default 256; 16 with --tiny)")
    gen.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                     help="generation weights' dtype (default bfloat16)")
    gen.add_argument("--profile", choices=["auto", "on", "off"], default="auto",
                     help="profile a few decode steps of each side: auto = when the course is slower")
    gen.add_argument("--profile-steps", type=int, default=8, help="decode steps profiled per side (default 8)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 4; 2 with --tiny)")
    train.add_argument("--context-length", type=int, default=None,
                       help="tokens per sequence (default 256; 32 with --tiny)")
    train.add_argument("--train-steps", type=int, default=None, help="timed steps per round (default 3; 1 with --tiny)")
    train.add_argument("--train-warmup", type=int, default=None,
                       help="untimed steps first (default 2: the first steps also fault in fresh memory; 1 with --tiny)")
    args = parser.parse_args(argv)
    defaults = {"prompt_tokens": (32, 8), "new_tokens": (256, 16), "batch_size": (4, 2), "context_length": (256, 32),
                "train_steps": (3, 1), "train_warmup": (2, 1)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    for name in ("prompt_tokens", "new_tokens", "batch_size", "context_length", "train_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("train_warmup", "profile_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.part in ("all", "generation") and package_version("transformers") == "not installed":
        parser.error("the generation part needs transformers (pip install transformers); or run: training")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(args.threads)
    amx, avx512_bf16 = (getattr(torch.cpu, probe, lambda: False)() for probe in
                        ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    print(f"ModernModel benchmark ({args.part}{', --tiny' if args.tiny else ''})")
    print(f"machine: {cpu_name()} | {os.cpu_count()} logical CPUs | AMX: {'yes' if amx else 'no'}, AVX-512 BF16: "
          f"{'yes' if avx512_bf16 else 'no'}")
    print(f"torch {torch.__version__} | transformers {package_version('transformers')} | Python "
          f"{platform.python_version()} | {args.threads} threads in every process (torch.set_num_threads) | "
          f"generation dtype {args.dtype} | training dtype {str(autocast_dtype('cpu') or 'float32').removeprefix('torch.')}")

    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.1f}: other processes are running, so the timings will be "
              "noisy; measure on a quiet machine, or give fewer --threads than idle cores")
    start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":  # import the libraries once, then fork a fresh process per side
        preload = ["torch", "torch._dynamo", "ch04_gpt_model", "ch05_pretraining", "ch07_instruction"]  # dynamo: AdamW
        if args.part != "training":
            preload.append("transformers.models.qwen3.modeling_qwen3")
        ctx.set_forkserver_preload(preload)
    ok = True
    try:
        if args.part in ("all", "generation"):
            print("\n=== 1. generation: course generate_batched on ModernModel vs transformers Qwen3ForCausalLM.generate ===")
            ok = run_generation(args, ctx)
        if ok and args.part in ("all", "training"):
            print("\n=== 2. training step: Llama-style ModernModel vs GPT-2-style GPTModel, equal parameter count ===")
            run_training(args, ctx)
    except RuntimeError as err:
        print(err)
        return 1
    print(f"\ntotal time: {time.perf_counter() - began:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
