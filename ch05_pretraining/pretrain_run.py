"""The pretraining pipeline: settings in, a trained model in Hugging Face format out (one process or DDP).

Hand-written infrastructure (not generated from a notebook). `python -m ch05_pretraining` (cli.py) parses its
options into a `PretrainSettings` and calls `pretrain`; `load_pretrained` (pretrained.py) builds the settings of
the chapter's run and calls `pretrain` too. The steps: a text file -> sliding-window loaders (ch02) -> GPTModel
(ch04) -> train_model (ch05: warm-up + cosine learning rate, clipping, periodic evaluation, resumable
checkpoints) -> a checkpoint that `load_gpt2(folder)` and `transformers.GPT2LMHeadModel.from_pretrained(folder)`
both read.

Files in `out`: train_state.pt (weights, optimizer, step and random state, for resume), run_args.json (the
settings, checked on resume), config.json + model.safetensors (the model). `check_settings` refuses, before any
work, to start a fresh run in a folder that holds an earlier one unless `overwrite` is set; an overwriting run
deletes the earlier train_state.pt, config.json and model.safetensors before it writes its run_args.json, so that
a resume never checks one run's settings against another run's state, and an interrupted run never leaves the
earlier model beside its settings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
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
from ch05_pretraining.cli_tools import (
    ARGS_NAME,
    STATE_NAME,
    UsageError,
    check_out_dir,
    check_resume,
    delete_earlier_run,
    gpt2_tokenizer,
    read_text_file,
    write_json_atomically,
)
from ch05_pretraining.fast_training import MasterWeightAdamW, chunked_loss, reuse_freed_memory
from ch05_pretraining.gpt2_weights import GPT2_ALIASES, GPT2_REPOS, WeightsUnavailableError, load_gpt2, save_hf_checkpoint
from ch05_pretraining.pretraining import autocast_dtype, generate_and_print_sample, param_groups, use_fused_kernels
from ch05_pretraining.train_loop import TrainConfig, train_model

__all__ = ["PretrainSettings", "check_settings", "pretrain", "MODEL_PRESETS", "SMOKE_DEFAULTS", "DEFAULT_OUT",
           "SMOKE_OUT", "CLI_SMOKE_OUT", "PRODUCTS", "DATA_DIR", "RESUME_KEYS", "RankZeroFailed"]

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"  # where the notebook keeps the-verdict.txt too
DEFAULT_OUT = PACKAGE_DIR / "checkpoints" / "gpt2-verdict"  # the chapter's model; ch06/ch07 fall back to it
SMOKE_OUT = PACKAGE_DIR / "checkpoints" / "gpt2-verdict-smoke"  # the smoke substitute of ch06/ch07 (and the notebook's)
CLI_SMOKE_OUT = PACKAGE_DIR / "checkpoints" / "cli-smoke"  # `--smoke`'s own: never in the way of, nor taken for, either

MODEL_PRESETS: dict[str, GPTConfig] = {  # context_length is replaced by the settings' context_length
    "tiny": GPTConfig(emb_dim=64, n_heads=4, n_layers=2, qkv_bias=True),  # ~6.5M parameters, most in the embeddings
    **GPT_CONFIGS,  # gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl
}
# What a smoke run changes (settings given explicitly still win): a tiny model for a few steps, for CI.
SMOKE_DEFAULTS = dict(model="tiny", context_length=32, batch_size=4, epochs=1, warmup_steps=2, eval_freq=2,
                      eval_iter=2, stop_at_step=4, sample_tokens=10)
PRODUCTS = ("model.safetensors", "config.json")  # what a run saves at the end (save_hf_checkpoint)
# Settings that change the trained weights: a resume refuses to continue a run made with other values.
RESUME_KEYS = ("text_sha256", "val_fraction", "model", "init_from", "tie_weights", "context_length", "batch_size",
               "epochs", "lr", "min_lr", "warmup_steps", "grad_clip", "weight_decay", "eval_freq", "eval_iter",
               "fast", "chunked_loss", "master_weights", "seed", "world_size")
# Keys added after the first release: a run_args.json without them was made with these values.
RESUME_DEFAULTS = {"chunked_loss": False, "master_weights": False}


@dataclass(frozen=True)
class PretrainSettings:
    """Everything a pretraining run needs; the defaults are the chapter's run (the command line's defaults)."""

    text: Path | None = None  # None: The Verdict, downloaded into DATA_DIR
    val_fraction: float = 0.1
    model: str | None = None  # a MODEL_PRESETS name; None: gpt2 from scratch, or the --init-from architecture
    init_from: str = "scratch"
    context_length: int = 256
    tie_weights: bool = False
    batch_size: int = 2
    epochs: int = 10
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 9
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_freq: int = 5
    eval_iter: int = 5
    fast: bool = True
    chunked_loss: bool = False
    master_weights: bool = False
    device: str | None = None
    seed: int = 123
    out: Path = DEFAULT_OUT
    checkpoint_every: int | None = None
    resume: bool = False
    overwrite: bool = False
    stop_at_step: int | None = None
    prompt: str = "Every effort moves you"
    sample_tokens: int = 50
    progress: bool = True
    smoke: bool = False


class RankZeroFailed(RuntimeError):
    """Under torchrun: rank 0 failed at a step the others wait on; they stop with this (rank 0 reports the error)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_settings(s: PretrainSettings) -> PretrainSettings:
    """Check every setting and the out folder before any work; the settings with the model resolved; else UsageError."""
    for name in ("context_length", "batch_size", "epochs", "eval_freq", "eval_iter", "sample_tokens"):
        if getattr(s, name) < 1:
            raise UsageError(f"{_flag(name)} must be >= 1, got {getattr(s, name)}")
    for name in ("checkpoint_every", "stop_at_step"):
        if getattr(s, name) is not None and getattr(s, name) < 1:
            raise UsageError(f"{_flag(name)} must be >= 1, got {getattr(s, name)}")
    if s.warmup_steps < 0:
        raise UsageError(f"--warmup-steps must be >= 0, got {s.warmup_steps}")
    if not (s.lr > 0 and 0 <= s.min_lr <= s.lr):
        raise UsageError(f"need --lr > 0 and 0 <= --min-lr <= --lr, got --lr {s.lr} --min-lr {s.min_lr}")
    if not (s.weight_decay >= 0 and s.grad_clip >= 0):
        raise UsageError(f"--weight-decay and --grad-clip must be >= 0, got {s.weight_decay} and {s.grad_clip}")
    if s.master_weights and not s.fast:
        raise UsageError("--master-weights needs --fast (its bfloat16 weights are part of the fast path): leave out "
                         "--no-fast or --master-weights")
    if not 0 <= s.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {s.val_fraction}")
    if not s.prompt.strip():
        raise UsageError("--prompt is empty: give the start of the sample text, e.g. --prompt 'Every effort moves you'")
    if s.model is not None and s.model not in MODEL_PRESETS:
        raise UsageError(f"--model {s.model}: not one of {', '.join(MODEL_PRESETS)}")
    if s.init_from != "scratch" and s.model is not None:
        raise UsageError(f"--model {s.model} and --init-from {s.init_from} exclude each other: --init-from takes "
                         "the architecture from the weights it loads")
    known = (*GPT2_REPOS, *GPT2_ALIASES)
    if s.init_from not in ("scratch", *known) and not Path(s.init_from).is_dir():
        raise UsageError(f"--init-from {s.init_from}: no such folder, and not 'scratch' or a GPT-2 size "
                         f"({', '.join(known)}); pass a folder holding config.json and model.safetensors")
    if s.text is not None and not Path(s.text).is_file():
        raise UsageError(f"--text {s.text}: no such file; pass the path of a UTF-8 text file "
                         "(or leave --text out to train on The Verdict)")
    check_out_dir(Path(s.out), resume=s.resume, overwrite=s.overwrite)
    model = (s.model or "gpt2") if s.init_from == "scratch" else None  # --init-from: the weights' architecture
    return dataclasses.replace(s, model=model, out=Path(s.out), text=None if s.text is None else Path(s.text))


# --- processes and devices ---------------------------------------------------------------------------


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _setup(device_name: str | None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); --device wins over $LLMS_DEVICE; under torchrun join the process group if needed."""
    try:
        if not _launched_by_torchrun():
            return 0, 1, pick_device(device_name)
        if dist.is_initialized():  # the caller joined already: train in its group
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
            return dist.get_rank(), dist.get_world_size(), pick_device(device_name, local_rank)
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


def _text_path(s: PretrainSettings, rank: int, world_size: int) -> Path:
    """The text file; with the default text, rank 0 downloads it and tells the others the path or the failure."""
    if s.text is not None:
        return s.text
    return Path(_on_rank0(lambda: str(_default_text()), rank, world_size))


def _read_text(path: Path) -> str:
    """The training text; a UsageError naming the file if it is not UTF-8 or holds no text."""
    text = read_text_file(path, f"--text {path}")
    if not text.strip():
        raise UsageError(f"--text {path} is empty; pass a file with text to train on")
    return text


def _loaders(s: PretrainSettings, text: str, tokenizer, rank: int, world_size: int
             ) -> tuple[DataLoader, DataLoader | list]:
    """Training loader (a DistributedSampler shard per process under DDP) and validation loader ([] if none)."""
    split = int((1 - s.val_fraction) * len(text))
    train_text, val_text = text[:split], text[split:]
    ctx, batch = s.context_length, s.batch_size
    fix = "use a longer --text, a smaller --batch-size or a smaller --context-length"
    generator = torch.Generator().manual_seed(s.seed)
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
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=s.seed)
        train_loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True)
    if s.val_fraction == 0:
        return train_loader, []
    try:
        val_loader = create_dataloader(val_text, batch_size=batch, max_length=ctx, stride=ctx, shuffle=False,
                                       drop_last=False, tokenizer=tokenizer)
    except ValueError as err:
        raise UsageError(
            f"the validation part (the last {s.val_fraction:.0%} of the text) is shorter than one window of "
            f"--context-length {ctx}: use a longer --text, a larger --val-fraction, a smaller --context-length, "
            f"or --val-fraction 0 for no validation loss (details: {err})"
        ) from err
    return train_loader, val_loader


# --- model and run record -----------------------------------------------------------------------------


def _build_model(s: PretrainSettings) -> GPTModel:
    """A fresh GPTModel of the --model preset, or the weights --init-from names."""
    if s.init_from == "scratch":
        cfg = dataclasses.replace(MODEL_PRESETS[s.model], context_length=s.context_length)
        model = GPTModel(cfg)
    else:
        try:
            model = load_gpt2(s.init_from)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--init-from {s.init_from}: {err}") from err
        if s.context_length > model.cfg.context_length:
            raise UsageError(f"--context-length {s.context_length} exceeds the {model.cfg.context_length} "
                             f"positions of the --init-from model: pass --context-length <= {model.cfg.context_length}")
    if s.tie_weights:
        tie_weights(model)
    return model


def _run_record(s: PretrainSettings, text: str, world_size: int) -> dict:
    """The settings of this run (written to OUT/run_args.json), with the text identified by its SHA-256."""
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(s).items()}
    record |= {"text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "world_size": world_size}
    return record


def _write_run_record(s: PretrainSettings, record: dict) -> None:
    """Rank 0, before training: an overwriting run deletes the earlier run's files, then writes run_args.json."""
    s.out.mkdir(parents=True, exist_ok=True)
    if s.overwrite:  # a kept state would meet this run's settings on --resume, a kept model pass for this run's
        delete_earlier_run(s.out, (STATE_NAME, *PRODUCTS))
    write_json_atomically(s.out / ARGS_NAME, record)


def _save_and_sample(s: PretrainSettings, model: GPTModel, tokenizer, device: torch.device, history: dict) -> None:
    """Rank 0, after training: the last losses, the Hugging Face-format model, where things are, and a sample."""
    if history["step"]:
        print(f"step {history['step'][-1]}: train loss {history['train_loss'][-1]:.3f}, "
              f"val loss {history['val_loss'][-1]:.3f}")
    save_hf_checkpoint(model, s.out)
    print(f"saved the model to {s.out} (config.json + model.safetensors)")
    print(f"load it with: from ch05_pretraining import load_gpt2; model = load_gpt2({str(s.out)!r})")
    print(f"training state (for --resume): {s.out / STATE_NAME}")
    print("sample:", end=" ", flush=True)
    generate_and_print_sample(model, tokenizer, device, s.prompt, max_new_tokens=s.sample_tokens)


def _check_resume(out: Path, record: dict, keys: tuple[str, ...] = RESUME_KEYS) -> None:
    """Refuse to resume a run whose weight-changing settings differ from this one's (chapter 5's keys)."""
    check_resume(out, record, keys, RESUME_DEFAULTS)


# --- the run ------------------------------------------------------------------------------------------


def pretrain(s: PretrainSettings) -> Path:
    """Train as the settings say and save the model in s.out (returned); a UsageError for bad input, before any work.

    Under torchrun it joins the process group and leaves it at the end; a group the caller started stays up.
    """
    s = check_settings(s)
    started_group = not dist.is_initialized()  # a caller's process group is the caller's to end
    rank, world_size, device = _setup(s.device)
    is_main = rank == 0
    try:
        amp_dtype = autocast_dtype(device) if s.fast else None
        if s.master_weights and amp_dtype != torch.bfloat16:
            raise UsageError(f"--master-weights needs --fast and native bfloat16, but the fast path's autocast dtype "
                             f"on {device} is {amp_dtype}; leave --master-weights out")
        if s.chunked_loss and world_size > 1:
            raise UsageError("--chunked-loss calls the model's hidden_states directly, which DistributedDataParallel "
                             "does not see; under torchrun leave --chunked-loss out")
        text = _read_text(_text_path(s, rank, world_size))
        record = _run_record(s, text, world_size)
        if s.resume:  # on rank 0, which rewrites run_args.json below: no rank reads it half-written
            _on_rank0(lambda: _check_resume(s.out, record), rank, world_size)
        tokenizer = gpt2_tokenizer()
        train_loader, val_loader = _loaders(s, text, tokenizer, rank, world_size)

        torch.manual_seed(s.seed)  # the same on every rank: the same initial weights (DDP broadcasts rank 0's too)
        model = _build_model(s).to(device)
        torch.manual_seed(s.seed + rank)  # but each rank its own dropout masks (rank 0: as in one process)
        if model.cfg.vocab_size < tokenizer.n_vocab:
            raise UsageError(f"the model's vocabulary ({model.cfg.vocab_size}) is smaller than GPT-2's tokenizer's "
                             f"({tokenizer.n_vocab})")
        use_fused_kernels(model, enabled=s.fast)
        fused = s.fast and device.type in ("cpu", "cuda")
        reused = s.fast and device.type == "cpu" and reuse_freed_memory()  # no page faults for big tensors
        adamw = MasterWeightAdamW if s.master_weights else torch.optim.AdamW  # the former casts model to bf16
        optimizer = adamw(param_groups(model, s.weight_decay), lr=s.lr, **({"fused": True} if fused else {}))
        train_model_in = model
        if world_size > 1:  # gradients are averaged over the processes in backward()
            train_model_in = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

        steps_per_epoch = len(train_loader)
        n_params = sum(p.numel() for p in model.parameters())
        cfg = model.cfg
        _say(is_main, f"device {device}, world size {world_size}"
             + (f", backend {dist.get_backend()}" if world_size > 1 else ""))
        _say(is_main, f"model: {s.model or s.init_from}, {n_params:,} parameters (emb_dim {cfg.emb_dim}, "
             f"{cfg.n_layers} layers, {cfg.n_heads} heads, context {cfg.context_length}"
             f"{', tied head' if s.tie_weights else ''})")
        _say(is_main, f"data: {len(train_loader.dataset)} training windows of {s.context_length} tokens, "
             f"{len(val_loader.dataset) if val_loader else 0} validation windows; {steps_per_epoch} steps per epoch "
             f"x {s.epochs} epochs = {steps_per_epoch * s.epochs} steps")
        _say(is_main, f"fast path: {'on' if s.fast else 'off'} (autocast {amp_dtype}, fused AdamW {fused}, "
             f"reuse_freed_memory {bool(reused)}, chunked loss {s.chunked_loss}, master weights "
             f"{s.master_weights})")

        state_path = s.out / STATE_NAME
        _on_rank0(lambda: _write_run_record(s, record), rank, world_size)
        if s.resume:
            _say(is_main, f"resuming from {state_path}")

        train_cfg = TrainConfig(
            num_epochs=s.epochs, peak_lr=s.lr, min_lr=s.min_lr,
            warmup_steps=min(s.warmup_steps, steps_per_epoch * s.epochs),
            grad_clip=s.grad_clip or None, eval_freq=s.eval_freq, eval_iter=s.eval_iter,
            amp_dtype=None if s.master_weights else amp_dtype,  # bfloat16 weights need no autocast
            checkpoint_every=s.checkpoint_every or steps_per_epoch,
        )
        history = train_model(
            train_model_in, train_loader, val_loader, optimizer, device, train_cfg,
            tokenizer=tokenizer, start_context=s.prompt, checkpoint_path=state_path, resume=s.resume,
            stop_at_step=s.stop_at_step, progress=s.progress, is_main=is_main,
            loss_fn=chunked_loss if s.chunked_loss else None,
        )
        if s.master_weights:
            optimizer.masters_to_model()  # save the float32 masters, not their bfloat16 roundings
        if world_size > 1:
            dist.barrier()  # rank 0 has written the last checkpoint before anyone moves on

        _on_rank0(lambda: _save_and_sample(s, model, tokenizer, device, history), rank, world_size)
    finally:
        if started_group and dist.is_initialized():
            dist.destroy_process_group()
    return s.out


