"""Chapter 5's full training loop, `train_model`, and its settings, `TrainConfig`.

Hand-written, not generated: the lesson is `train_model_simple` in ch05.ipynb (the four lines of a training
step), and section 5.9 of the notebook tours what this loop adds: the learning-rate schedule and gradient
clipping, checkpoints with exact resume, `loss_fn` / `eval_fn` for other tasks, gradient accumulation,
float16 with a gradient scaler, and DistributedDataParallel. Every later chapter trains with it.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from appendix_pytorch import check_positive_int
from ch05_pretraining.pretraining import (
    _rng_state,
    _set_rng_state,
    calc_loss_batch,
    evaluate_model,
    generate_and_print_sample,
    load_checkpoint,
    lr_at_step,
    save_checkpoint,
)

__all__ = ["TrainConfig", "train_model"]


@dataclass
class TrainConfig:
    """Settings of train_model (the defaults suit the chapter's short-story run)."""

    num_epochs: int = 10
    peak_lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 9
    grad_clip: float | None = 1.0  # max gradient norm; None: no clipping
    grad_accum_steps: int = 1  # batches whose gradients add up to one optimizer step
    eval_freq: int = 5  # evaluate every eval_freq steps
    eval_iter: int = 5  # batches per loss estimate
    amp_dtype: torch.dtype | None = None  # torch.bfloat16, or torch.float16 (with a gradient scaler); None: float32
    checkpoint_every: int | None = None  # steps between checkpoints (one is always written at the end)

    def __post_init__(self) -> None:
        for name in ("num_epochs", "grad_accum_steps", "eval_freq", "eval_iter"):
            check_positive_int(f"TrainConfig.{name}", getattr(self, name))
        if self.checkpoint_every is not None:
            check_positive_int("TrainConfig.checkpoint_every", self.checkpoint_every)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"TrainConfig.amp_dtype must be None, torch.bfloat16 or torch.float16, got {self.amp_dtype}")


def _batch_counts(batch) -> tuple[int, int]:
    """(examples, tokens) of a batch: the rows and elements of its first tensor."""
    first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values())) if isinstance(batch, dict) else batch
    return first.shape[0], first.numel()


def train_model(
    model: nn.Module,
    train_loader,
    val_loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    cfg: TrainConfig,
    *,
    loss_fn: Callable | None = None,
    eval_fn: Callable | None = None,
    tokenizer=None,
    start_context: str | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    stop_at_step: int | None = None,
    progress: bool = True,
    is_main: bool = True,
) -> dict:
    """Train with warm-up + cosine LR, clipping, accumulation, evaluation, samples and resumable checkpoints."""
    raw_model = getattr(model, "module", model)  # the model inside a DDP wrapper
    accum = cfg.grad_accum_steps
    steps_per_epoch = len(train_loader) // accum
    if steps_per_epoch == 0:
        raise ValueError(f"the training loader has {len(train_loader)} batches, fewer than one step of grad_accum_steps="
                         f"{accum}: use a smaller batch_size or grad_accum_steps, or a longer text")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path")
    if loss_fn is None:  # the chapter's loss: next-token cross-entropy of an (inputs, targets) batch
        def loss_fn(batch, model, device, amp_dtype):
            return calc_loss_batch(*batch, model, device, amp_dtype)
    if eval_fn is None:  # the chapter's evaluation: training and validation loss under loss_fn
        def eval_fn(model, train_loader, val_loader, device, eval_iter, amp_dtype):
            train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter, amp_dtype, loss_fn)
            return {"train_loss": train_loss, "val_loss": val_loss}
    total_steps = cfg.num_epochs * steps_per_epoch
    distributed = dist.is_available() and dist.is_initialized()
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=cfg.amp_dtype == torch.float16)
    history = {"step": [], "tokens_seen": [], "examples_seen": [], "lr": []}
    step, tokens_seen, examples_seen, epoch_rng = 0, 0, 0, None
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer)  # RNG states must stay on the CPU
        if len(state["rng"]) != world_size:
            raise ValueError(f"{checkpoint_path} was written by {len(state['rng'])} process(es); resume with as many")
        step, tokens_seen, examples_seen, history = (state[k] for k in ("step", "tokens_seen", "examples_seen", "history"))
        epoch_rng = state["rng"][rank]["epoch"]
        _set_rng_state(state["rng"][rank]["now"], train_loader)  # each process continues its own random numbers
        scaler.load_state_dict(state["scaler"])
    saved_at = step

    def checkpoint() -> None:
        nonlocal saved_at
        if checkpoint_path is None or saved_at == step:
            return
        rng = [{"now": _rng_state(train_loader), "epoch": epoch_rng}]
        if world_size > 1:  # every process's random state, so each resumes with its own dropout masks
            rng = [None] * world_size
            dist.all_gather_object(rng, {"now": _rng_state(train_loader), "epoch": epoch_rng})
        if is_main:
            state = {"step": step, "tokens_seen": tokens_seen, "examples_seen": examples_seen, "history": history,
                     "rng": rng, "scaler": scaler.state_dict()}
            save_checkpoint(checkpoint_path, model, optimizer, state)
        saved_at = step

    bar = tqdm(total=total_steps, initial=step, desc="training", disable=not (progress and is_main))
    first_epoch, done_in_epoch = divmod(step, steps_per_epoch)
    start_step, start_time = step, time.perf_counter()
    model.train()
    for epoch in range(first_epoch, cfg.num_epochs):
        if stop_at_step is not None and step >= stop_at_step:
            break
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # DistributedSampler: a new shuffle per epoch
        if done_in_epoch:  # resuming inside an epoch: rebuild its batch order, skip the batches already done
            now = _rng_state(train_loader)
            _set_rng_state(epoch_rng, train_loader)
            batches = iter(train_loader)
            for _ in range(done_in_epoch * accum):
                next(batches)
            _set_rng_state(now, train_loader)
        else:
            epoch_rng = _rng_state(train_loader)
            batches = iter(train_loader)
        for _ in range(done_in_epoch, steps_per_epoch):
            if stop_at_step is not None and step >= stop_at_step:
                break
            lr = lr_at_step(step, peak_lr=cfg.peak_lr, total_steps=total_steps, warmup_steps=cfg.warmup_steps,
                            min_lr=cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for micro in range(accum):  # gradients of accum batches add up; DDP syncs them only on the last
                batch = next(batches)
                last = micro == accum - 1
                with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                    loss = loss_fn(batch, model, device, cfg.amp_dtype) / accum
                    scaler.scale(loss).backward()  # float16: scaled up so small gradients do not underflow
                step_loss += loss.detach()
                examples, tokens = _batch_counts(batch)
                examples_seen, tokens_seen = examples_seen + examples, tokens_seen + tokens
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)  # clip the true gradients
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)  # float16: skips the step if a gradient overflowed
            scaler.update()
            step += 1
            if step % steps_per_epoch == 0:  # finish the epoch's iterator (the sampler may draw random numbers at
                for _ in batches:  # its end), so that an end-of-epoch checkpoint holds the next epoch's start state
                    pass
            bar.update(1)
            bar.set_postfix(loss=f"{float(step_loss):.3f}", lr=f"{lr:.1e}")
            if step % cfg.eval_freq == 0:
                with torch.random.fork_rng(devices=[]):  # evaluation must not change the random numbers of training
                    metrics = eval_fn(raw_model, train_loader, val_loader, device, cfg.eval_iter, cfg.amp_dtype)
                for key, value in {"step": step, "tokens_seen": tokens_seen, "examples_seen": examples_seen, "lr": lr,
                                   **metrics}.items():
                    history.setdefault(key, []).append(value)
                if is_main:
                    shown = ", ".join(f"{key.replace('_', ' ')} {value:.3f}" for key, value in metrics.items())
                    bar.write(f"epoch {epoch + 1}, step {step:4d}: {shown}, lr {lr:.2e}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                checkpoint()
        done_in_epoch = 0
        if step % steps_per_epoch == 0 and tokenizer is not None and start_context is not None and is_main:
            generate_and_print_sample(raw_model, tokenizer, device, start_context)
    checkpoint()
    bar.close()
    if is_main and step > start_step:
        seconds = time.perf_counter() - start_time
        print(f"trained {step - start_step} steps ({tokens_seen:,} tokens seen) in {seconds:.0f} s")
    return history
