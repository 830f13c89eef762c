"""The pretraining command line: `python -m ch05_pretraining` (one process) or under `torchrun` (DDP).

Hand-written infrastructure (not generated from a notebook). It wires the chapter's pieces together:
a text file -> sliding-window loaders (ch02) -> GPTModel (ch04) -> train_model (ch05: warm-up + cosine
learning rate, clipping, periodic evaluation, resumable checkpoints) -> a Hugging Face-format checkpoint
that `load_gpt2(folder)` and `transformers.GPT2LMHeadModel.from_pretrained(folder)` both read.

    python -m ch05_pretraining                      # the chapter's run: GPT-2 124M on The Verdict
    python -m ch05_pretraining --smoke --out /tmp/x # a tiny model for a few steps (seconds)
    python -m ch05_pretraining --resume             # continue from OUT/train_state.pt
    torchrun --standalone --nproc_per_node=2 -m ch05_pretraining --smoke --out /tmp/x   # DDP, 2 processes

Files in --out: train_state.pt (weights, optimizer, step and random state, for --resume),
run_args.json (the settings, checked on --resume), config.json + model.safetensors (the model).
A fresh run (no --resume) deletes an earlier run's train_state.pt before it writes its run_args.json, so that
--resume never checks one run's settings against another run's state.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from appendix_pytorch.ddp_train import DeviceError, pick_device
from appendix_pytorch.ddp_train import setup as ddp_setup
from ch02_text_data import THE_VERDICT_SHA256, THE_VERDICT_URL, DownloadError, create_dataloader, download_file
from ch04_gpt_model import GPT_CONFIGS, GPTConfig, GPTModel, tie_weights
from ch05_pretraining.cli_tools import ARGS_NAME, STATE_NAME, UsageError, check_resume, gpt2_tokenizer
from ch05_pretraining.fast_training import MasterWeightAdamW, chunked_loss, reuse_freed_memory
from ch05_pretraining.gpt2_weights import GPT2_ALIASES, GPT2_REPOS, WeightsUnavailableError, load_gpt2, save_hf_checkpoint
from ch05_pretraining.pretraining import (
    TrainConfig,
    autocast_dtype,
    generate_and_print_sample,
    param_groups,
    train_model,
    use_fused_kernels,
)

__all__ = ["MODEL_PRESETS", "SMOKE_DEFAULTS", "DEFAULT_OUT", "DATA_DIR", "UsageError", "RankZeroFailed", "build_parser",
           "parse_args", "main", "load_pretrained"]

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"  # where the notebook keeps the-verdict.txt too
DEFAULT_OUT = PACKAGE_DIR / "checkpoints" / "gpt2-verdict"  # the notebook's model; ch06/ch07 look here
PROG = "python -m ch05_pretraining"

MODEL_PRESETS: dict[str, GPTConfig] = {  # context_length is replaced by --context-length
    "tiny": GPTConfig(emb_dim=64, n_heads=4, n_layers=2, qkv_bias=True),  # ~6.5M parameters, most in the embeddings
    **GPT_CONFIGS,  # gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl
}
# What --smoke changes (options given explicitly still win): a tiny model for a few steps, for CI.
SMOKE_DEFAULTS = dict(model="tiny", context_length=32, batch_size=4, epochs=1, warmup_steps=2, eval_freq=2,
                      eval_iter=2, stop_at_step=4, sample_tokens=10)
# Settings that change the trained weights: --resume refuses to continue a run made with other values.
RESUME_KEYS = ("text_sha256", "val_fraction", "model", "init_from", "tie_weights", "context_length", "batch_size",
               "epochs", "lr", "min_lr", "warmup_steps", "grad_clip", "weight_decay", "eval_freq", "eval_iter",
               "fast", "chunked_loss", "master_weights", "seed", "world_size")
# Keys added after the first release: a run_args.json without them was made with these values.
RESUME_DEFAULTS = {"chunked_loss": False, "master_weights": False}


class RankZeroFailed(RuntimeError):
    """Under torchrun: rank 0 failed at a step the others wait on; they stop with this (rank 0 reports the error)."""


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the default is None/False or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m ch05_pretraining`."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Pretrain a GPT model on a text file with the chapter-5 training loop; saves a Hugging Face-"
        "format checkpoint (config.json + model.safetensors) that load_gpt2(OUT) loads. Runs unchanged under "
        "torchrun (DistributedDataParallel: gloo on the CPU, NCCL on GPUs).",
        formatter_class=_HelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--text", type=Path, default=None,
                      help="UTF-8 text file to train on (default: The Verdict, downloaded into "
                      f"{DATA_DIR}, or taken from $LLMS_DATA_MIRROR)")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of the text (its end, by characters) held out for the validation loss; 0: none")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=list(MODEL_PRESETS), default=None,
                       help="architecture to train from scratch (default gpt2, the 124M model)")
    model.add_argument("--init-from", default="scratch",
                       help="'scratch' (random weights), or continue from OpenAI's weights (gpt2, gpt2-medium, ..., "
                       "124M, ...) or from a checkpoint folder holding config.json + model.safetensors")
    model.add_argument("--context-length", type=int, default=256, help="tokens per training window")
    model.add_argument("--tie-weights", action="store_true",
                       help="share one matrix between token embedding and output head, as GPT-2 does")
    train = p.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=2,
                       help="windows per step and process (under torchrun the effective batch is this times the "
                       "number of processes)")
    train.add_argument("--epochs", type=int, default=10, help="passes over the training text")
    train.add_argument("--lr", type=float, default=5e-4, help="peak learning rate, reached after the warm-up")
    train.add_argument("--min-lr", type=float, default=5e-5, help="learning rate at the end of the cosine decay")
    train.add_argument("--warmup-steps", type=int, default=9, help="steps of linear learning-rate warm-up")
    train.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay of the weight matrices (biases, norms and embeddings get none)")
    train.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 turns clipping off")
    train.add_argument("--eval-freq", type=int, default=5, help="estimate train/val loss every this many steps")
    train.add_argument("--eval-iter", type=int, default=5, help="batches per loss estimate")
    train.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                       help="fast path: fused kernels (scaled-dot-product attention, LayerNorm, GELU), bfloat16 "
                       "autocast where the device computes it natively, fused AdamW on CPU/CUDA, and on the CPU "
                       "reuse_freed_memory() (see faster_training.ipynb); --no-fast trains "
                       "in plain float32")
    train.add_argument("--chunked-loss", action=argparse.BooleanOptionalAction, default=False,
                       help="compute the loss chunk by chunk from the hidden states, never holding all the logits "
                       "(chunked_loss of faster_training.ipynb): less memory at long contexts, though slower in the "
                       "notebook's measurements; one process only")
    train.add_argument("--master-weights", action=argparse.BooleanOptionalAction, default=False,
                       help="bfloat16 weights with float32 master copies in the optimizer (MasterWeightAdamW) "
                       "instead of autocast; needs --fast and a device with native bfloat16")
    train.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N or mps; wins over $LLMS_DEVICE (default: $LLMS_DEVICE, else cuda, "
                       "mps, cpu); under torchrun process r uses cuda:LOCAL_RANK when the device is a GPU, else the CPU")
    train.add_argument("--seed", type=int, default=123,
                       help="seed for weights, dropout and batch order (under torchrun every process starts from the "
                       "same weights, and process r draws its dropout masks from seed + r)")
    ckpt = p.add_argument_group("checkpoints and output")
    ckpt.add_argument("--out", type=Path, default=DEFAULT_OUT,
                      help="folder for train_state.pt, run_args.json, config.json and model.safetensors")
    ckpt.add_argument("--checkpoint-every", type=int, default=None,
                      help="steps between checkpoints in OUT/train_state.pt (default: once per epoch; "
                      "one is always written at the end)")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue the run saved in OUT/train_state.pt (pass the same options as that run)")
    ckpt.add_argument("--stop-at-step", type=int, default=None,
                      help="stop after this global step and save (--resume continues); the learning-rate schedule "
                      "still spans all --epochs")
    ckpt.add_argument("--prompt", default="Every effort moves you", help="start of the sample printed per epoch "
                      "and at the end")
    ckpt.add_argument("--sample-tokens", type=int, default=50, help="tokens generated for the final sample")
    ckpt.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    ckpt.add_argument("--smoke", action="store_true",
                      help="tiny model, few steps, for CI (takes seconds): sets "
                      + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE_DEFAULTS.items())
                      + " unless given")
    return p


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check the options; --smoke fills in its defaults; errors exit with status 2 and a message."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.smoke:  # parse again with the smoke defaults: options given explicitly still win
        parser.set_defaults(**SMOKE_DEFAULTS)
        args = parser.parse_args(argv)
    for name in ("context_length", "batch_size", "epochs", "eval_freq", "eval_iter", "sample_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("checkpoint_every", "stop_at_step"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.lr <= 0 or not 0 <= args.min_lr <= args.lr:
        parser.error(f"need --lr > 0 and 0 <= --min-lr <= --lr, got --lr {args.lr} --min-lr {args.min_lr}")
    if args.weight_decay < 0 or args.grad_clip < 0:
        parser.error("--weight-decay and --grad-clip must be >= 0")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.init_from != "scratch" and args.model is not None and not args.smoke:
        parser.error(f"--model {args.model} and --init-from {args.init_from} exclude each other: --init-from takes "
                     "the architecture from the weights it loads")
    if args.init_from == "scratch" and args.model is None:
        args.model = "gpt2"
    if args.init_from != "scratch":
        args.model = None  # the architecture comes from the loaded weights
    if args.text is not None and not args.text.is_file():
        parser.error(f"--text {args.text}: no such file; pass the path of a UTF-8 text file "
                     "(or leave --text out to train on The Verdict)")
    state = args.out / STATE_NAME
    if args.resume and not state.is_file():
        parser.error(f"--resume: no checkpoint at {state}; run without --resume first, or pass the --out folder "
                     "of the run to continue")
    return args


# --- processes and devices ---------------------------------------------------------------------------


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _setup(device_name: str | None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); --device wins over $LLMS_DEVICE; under torchrun also join the process group."""
    try:
        if not _launched_by_torchrun():
            return 0, 1, pick_device(device_name)
        return ddp_setup(device_name)  # cuda:LOCAL_RANK with NCCL, or the CPU with gloo
    except DeviceError as err:
        raise UsageError(f"--device {device_name}: {err}" if device_name else str(err)) from err


def _say(is_main: bool, *parts) -> None:
    if is_main:
        print(*parts, flush=True)


# --- data ----------------------------------------------------------------------------------------------


def _default_text() -> Path:
    """The Verdict in DATA_DIR: downloaded once (or copied from $LLMS_DATA_MIRROR), checked by SHA-256."""
    return download_file(THE_VERDICT_URL, DATA_DIR, sha256=THE_VERDICT_SHA256)


_PASSED_ON = (UsageError, DownloadError, WeightsUnavailableError)  # raised again, by type, on the other ranks


def _on_rank0(work: Callable[[], str | None], rank: int, world_size: int) -> str | None:
    """work() on rank 0 alone; every rank returns its result, or raises if it failed there (any exception)."""
    if world_size == 1:
        return work()
    outcome: list = [None]
    failure = None
    if rank == 0:
        try:
            outcome[0] = ("ok", work())
        except Exception as err:  # whatever it is, the other ranks must hear of it, or they wait in the broadcast
            failure = err
            passed = next((cls.__name__ for cls in _PASSED_ON if isinstance(err, cls)), None)
            outcome[0] = ("error", passed, f"{type(err).__name__}: {err}", str(err))
    dist.broadcast_object_list(outcome, src=0)  # strings only: always picklable
    if failure is not None:
        raise failure  # rank 0 keeps the original exception and its traceback
    if outcome[0][0] == "ok":
        return outcome[0][1]
    _, passed, described, message = outcome[0]
    if passed is not None:
        raise {cls.__name__: cls for cls in _PASSED_ON}[passed](message)
    raise RankZeroFailed(f"rank 0 failed ({described}); its output has the details")


def _text_path(args: argparse.Namespace, rank: int, world_size: int) -> Path:
    """The text file; with the default text, rank 0 downloads it and tells the others the path or the failure."""
    if args.text is not None:
        return args.text
    return Path(_on_rank0(lambda: str(_default_text()), rank, world_size))


_gpt2_tokenizer = gpt2_tokenizer


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"--text {path} is not UTF-8 text ({err}); convert it to UTF-8 first") from err
    if not text.strip():
        raise UsageError(f"--text {path} is empty; pass a file with text to train on")
    return text


def _loaders(args, text: str, tokenizer, rank: int, world_size: int) -> tuple[DataLoader, DataLoader | list]:
    """Training loader (a DistributedSampler shard per process under DDP) and validation loader ([] if none)."""
    split = int((1 - args.val_fraction) * len(text))
    train_text, val_text = text[:split], text[split:]
    ctx, batch = args.context_length, args.batch_size
    fix = "use a longer --text, a smaller --batch-size or a smaller --context-length"
    generator = torch.Generator().manual_seed(args.seed)
    try:
        train_loader = create_dataloader(train_text, batch_size=batch, max_length=ctx, stride=ctx, shuffle=True,
                                         drop_last=True, tokenizer=tokenizer, generator=generator)
    except ValueError as err:
        raise UsageError(f"the training text is too short for one batch of --batch-size {batch} windows of "
                         f"--context-length {ctx} tokens: {fix} (details: {err})") from err
    if world_size > 1:  # the same windows; each process gets every world_size-th of one shared shuffle
        dataset = train_loader.dataset
        if len(dataset) < batch * world_size:
            raise UsageError(f"the training text gives {len(dataset)} windows of --context-length {ctx} tokens, "
                             f"too few for one batch of --batch-size {batch} in each of {world_size} processes: {fix}")
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed)
        train_loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)
    if args.val_fraction == 0:
        return train_loader, []
    try:
        val_loader = create_dataloader(val_text, batch_size=batch, max_length=ctx, stride=ctx, shuffle=False,
                                       drop_last=False, tokenizer=tokenizer)
    except ValueError as err:
        raise UsageError(
            f"the validation part (the last {args.val_fraction:.0%} of the text) is shorter than one window of "
            f"--context-length {ctx}: use a longer --text, a larger --val-fraction, a smaller --context-length, "
            f"or --val-fraction 0 for no validation loss (details: {err})"
        ) from err
    return train_loader, val_loader


# --- model and run record -----------------------------------------------------------------------------


def _build_model(args) -> GPTModel:
    """A fresh GPTModel of the --model preset, or the weights --init-from names."""
    if args.init_from == "scratch":
        cfg = dataclasses.replace(MODEL_PRESETS[args.model], context_length=args.context_length)
        model = GPTModel(cfg)
    else:
        try:
            model = load_gpt2(args.init_from)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--init-from {args.init_from}: {err}") from err
        if args.context_length > model.cfg.context_length:
            raise UsageError(f"--context-length {args.context_length} exceeds the {model.cfg.context_length} "
                             f"positions of the --init-from model: pass --context-length <= {model.cfg.context_length}")
    if args.tie_weights:
        tie_weights(model)
    return model


def _run_record(args, text: str, world_size: int) -> dict:
    """The settings of this run (written to OUT/run_args.json), with the text identified by its SHA-256."""
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    record |= {"text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "world_size": world_size}
    return record


def _write_run_record(args, record: dict) -> None:
    """Rank 0, before training: a fresh run deletes an earlier run's train_state.pt, then writes run_args.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / STATE_NAME
    if not args.resume and state_path.exists():
        state_path.unlink()  # if kept, a --resume after a crash would check this run's settings against its state
        print(f"note: starting afresh: deleted {state_path}, an earlier run's checkpoint (--resume continues a run "
              "instead)", flush=True)
    (args.out / ARGS_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def _save_and_sample(args, model: GPTModel, tokenizer, device: torch.device, history: dict) -> None:
    """Rank 0, after training: the last losses, the Hugging Face-format model, where things are, and a sample."""
    if history["step"]:
        print(f"step {history['step'][-1]}: train loss {history['train_loss'][-1]:.3f}, "
              f"val loss {history['val_loss'][-1]:.3f}")
    save_hf_checkpoint(model, args.out)
    print(f"saved the model to {args.out} (config.json + model.safetensors)")
    print(f"load it with: from ch05_pretraining import load_gpt2; model = load_gpt2({str(args.out)!r})")
    print(f"training state (for --resume): {args.out / STATE_NAME}")
    print("sample:", end=" ", flush=True)
    generate_and_print_sample(model, tokenizer, device, args.prompt, max_new_tokens=args.sample_tokens)


def _check_resume(out: Path, record: dict, keys: tuple[str, ...] = RESUME_KEYS) -> None:
    """Refuse to resume a run whose weight-changing settings differ from this one's (chapter 5's keys)."""
    check_resume(out, record, keys, RESUME_DEFAULTS)


# --- main ---------------------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> None:
    rank, world_size, device = _setup(args.device)
    is_main = rank == 0
    try:
        text = _read_text(_text_path(args, rank, world_size))
        record = _run_record(args, text, world_size)
        if args.resume:  # on rank 0, which rewrites run_args.json below: no rank reads it half-written
            _on_rank0(lambda: _check_resume(args.out, record), rank, world_size)
        tokenizer = _gpt2_tokenizer()
        train_loader, val_loader = _loaders(args, text, tokenizer, rank, world_size)

        torch.manual_seed(args.seed)  # the same on every rank: the same initial weights (DDP broadcasts rank 0's too)
        model = _build_model(args).to(device)
        torch.manual_seed(args.seed + rank)  # but each rank its own dropout masks (rank 0: as in one process)
        if model.cfg.vocab_size < tokenizer.n_vocab:
            raise UsageError(f"the model's vocabulary ({model.cfg.vocab_size}) is smaller than GPT-2's tokenizer's "
                             f"({tokenizer.n_vocab})")
        amp_dtype = autocast_dtype(device) if args.fast else None
        if args.master_weights and (not args.fast or amp_dtype != torch.bfloat16):
            raise UsageError(f"--master-weights needs --fast and native bfloat16, but the fast path's autocast dtype "
                             f"on {device} is {amp_dtype}; leave --master-weights out")
        if args.chunked_loss and world_size > 1:
            raise UsageError("--chunked-loss calls the model's hidden_states directly, which DistributedDataParallel "
                             "does not see; under torchrun leave --chunked-loss out")
        use_fused_kernels(model, enabled=args.fast)
        fused = args.fast and device.type in ("cpu", "cuda")
        reused = args.fast and device.type == "cpu" and reuse_freed_memory()  # no page faults for big tensors
        adamw = MasterWeightAdamW if args.master_weights else torch.optim.AdamW  # the former casts model to bf16
        optimizer = adamw(param_groups(model, args.weight_decay), lr=args.lr, **({"fused": True} if fused else {}))
        train_model_in = model
        if world_size > 1:  # gradients are averaged over the processes in backward()
            train_model_in = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

        steps_per_epoch = len(train_loader)
        n_params = sum(p.numel() for p in model.parameters())
        cfg = model.cfg
        _say(is_main, f"device {device}, world size {world_size}"
             + (f", backend {dist.get_backend()}" if world_size > 1 else ""))
        _say(is_main, f"model: {args.model or args.init_from}, {n_params:,} parameters (emb_dim {cfg.emb_dim}, "
             f"{cfg.n_layers} layers, {cfg.n_heads} heads, context {cfg.context_length}"
             f"{', tied head' if args.tie_weights else ''})")
        _say(is_main, f"data: {len(train_loader.dataset)} training windows of {args.context_length} tokens, "
             f"{len(val_loader.dataset) if val_loader else 0} validation windows; {steps_per_epoch} steps per epoch "
             f"x {args.epochs} epochs = {steps_per_epoch * args.epochs} steps")
        _say(is_main, f"fast path: {'on' if args.fast else 'off'} (autocast {amp_dtype}, fused AdamW {fused}, "
             f"reuse_freed_memory {bool(reused)}, chunked loss {args.chunked_loss}, master weights "
             f"{args.master_weights})")

        state_path = args.out / STATE_NAME
        _on_rank0(lambda: _write_run_record(args, record), rank, world_size)
        if args.resume:
            _say(is_main, f"resuming from {state_path}")

        train_cfg = TrainConfig(
            num_epochs=args.epochs, peak_lr=args.lr, min_lr=args.min_lr,
            warmup_steps=min(args.warmup_steps, steps_per_epoch * args.epochs),
            grad_clip=args.grad_clip or None, eval_freq=args.eval_freq, eval_iter=args.eval_iter,
            amp_dtype=None if args.master_weights else amp_dtype,  # bfloat16 weights need no autocast
            checkpoint_every=args.checkpoint_every or steps_per_epoch,
        )
        history = train_model(
            train_model_in, train_loader, val_loader, optimizer, device, train_cfg,
            tokenizer=tokenizer, start_context=args.prompt, checkpoint_path=state_path, resume=args.resume,
            stop_at_step=args.stop_at_step, progress=args.progress, is_main=is_main,
            loss_fn=chunked_loss if args.chunked_loss else None,
        )
        if args.master_weights:
            optimizer.masters_to_model()  # save the float32 masters, not their bfloat16 roundings
        if world_size > 1:
            dist.barrier()  # rank 0 has written the last checkpoint before anyone moves on

        _on_rank0(lambda: _save_and_sample(args, model, tokenizer, device, history), rank, world_size)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 download/weights failure, 2 bad input)."""
    parser = build_parser()
    args = parse_args(argv, parser)  # bad options: parser.error exits with status 2
    try:
        _train(args)
    except (UsageError, DownloadError, WeightsUnavailableError) as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process fails alike: say it once
            print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except RankZeroFailed as err:
        print(f"{PROG}: rank {os.environ.get('RANK')} stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        state = args.out / STATE_NAME
        if state.is_file():
            print(f"\ninterrupted: the last checkpoint is in {state}; continue with the same options and --resume",
                  file=sys.stderr)
        else:
            print("\ninterrupted before the first checkpoint: nothing to resume; run again without --resume",
                  file=sys.stderr)
        return 130
    return 0


def load_pretrained(
    name: str = "gpt2", device: str | torch.device | None = None, *, smoke: bool = False
) -> tuple[GPTModel, str]:
    """OpenAI's GPT-2 weights if they can be had, else the chapter-5 model in DEFAULT_OUT (trained first if missing).

    Returns the model (in eval mode) and a sentence naming it, for the fine-tuning chapters to print. When the
    substitute is missing it is trained with this command line: the chapter's run, or `--smoke --context-length 256`
    (a tiny model, seconds, with room for an instruction prompt) when smoke is true.
    """
    try:
        return load_gpt2(name, device=device), f"OpenAI's GPT-2 {name} ({GPT2_REPOS[GPT2_ALIASES.get(name, name)]})"
    except WeightsUnavailableError as err:
        print(f"OpenAI's {name} weights are not available here:\n{err}\n")
    root = PACKAGE_DIR.parent
    where = DEFAULT_OUT.relative_to(root).as_posix() if DEFAULT_OUT.is_relative_to(root) else str(DEFAULT_OUT)
    if not (DEFAULT_OUT / "model.safetensors").is_file():
        # smoke: the tiny model, but with the chapter's context of 256 tokens, so that ch07's prompts fit
        argv = ["--smoke", "--context-length", "256", "--no-progress"] if smoke else ["--no-progress"]
        print(f"No chapter-5 model in {where} yet: training it with `{PROG} {' '.join(argv)}` (the chapter-5 notebook "
              "saves the same model there) ...")
        if main([*argv, "--out", str(DEFAULT_OUT)]) != 0:
            raise RuntimeError(f"could not train the substitute model; run `{PROG}` in a terminal to see why")
    source = f"the substitute: the model pretrained on The Verdict in chapter 5 ({where})"
    return load_gpt2(DEFAULT_OUT, device=device), source
