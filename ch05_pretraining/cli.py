"""The pretraining command line: `python -m ch05_pretraining` (one process) or under `torchrun` (DDP).

Hand-written infrastructure (not generated from a notebook). It parses the options into a `PretrainSettings`
and calls `pretrain` (pretrain_run.py), which trains chapter 5's model on a text file and saves a Hugging
Face-format checkpoint that `load_gpt2(folder)` and `transformers.GPT2LMHeadModel.from_pretrained(folder)` both read.

    python -m ch05_pretraining                      # the chapter's run: GPT-2 124M on The Verdict
    python -m ch05_pretraining --smoke              # a tiny model for a few steps (seconds), in checkpoints/cli-smoke
    python -m ch05_pretraining --resume             # continue from OUT/train_state.pt
    python -m ch05_pretraining --overwrite          # start afresh in an --out that holds an earlier run
    torchrun --standalone --nproc_per_node=2 -m ch05_pretraining --smoke --out /tmp/x   # DDP, 2 processes

Files in --out: train_state.pt (weights, optimizer, step and random state, for --resume),
run_args.json (the settings, checked on --resume), config.json + model.safetensors (the model).
Every option and the --out folder are checked before any work: a fresh run into a folder that holds an earlier
run is refused unless --overwrite (which deletes the earlier train_state.pt, config.json and model.safetensors
before it writes run_args.json) or --resume is given; a bad input ends with one line on stderr and exit status 2,
with nothing written.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import NoReturn

from ch02_text_data import DownloadError
from ch05_pretraining.cli_tools import STATE_NAME, CommandParser, UsageError
from ch05_pretraining.gpt2_weights import WeightsUnavailableError
from ch05_pretraining.pretrain_run import (
    DATA_DIR,
    DEFAULT_OUT,
    MODEL_PRESETS,
    CLI_SMOKE_OUT,
    SMOKE_DEFAULTS,
    SMOKE_OUT,
    PretrainSettings,
    RankZeroFailed,
    check_settings,
    pretrain,
)

__all__ = ["MODEL_PRESETS", "SMOKE_DEFAULTS", "DEFAULT_OUT", "SMOKE_OUT", "CLI_SMOKE_OUT", "DATA_DIR", "UsageError", "build_parser",
           "parse_args", "settings_from_args", "main"]

PROG = "python -m ch05_pretraining"
D = PretrainSettings()  # the defaults of every option


def _shown(path: Path) -> str:
    """path relative to the repository when inside it (as the help and messages show it)."""
    root = Path(__file__).resolve().parent.parent
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the default is None/False or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m ch05_pretraining`."""
    p = CommandParser(
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
    data.add_argument("--val-fraction", type=float, default=D.val_fraction,
                      help="share of the text (its end, by characters) held out for the validation loss; 0: none")
    model = p.add_argument_group("model")
    model.add_argument("--model", choices=list(MODEL_PRESETS), default=None,
                       help="architecture to train from scratch (default gpt2, the 124M model)")
    model.add_argument("--init-from", default=D.init_from,
                       help="'scratch' (random weights), or continue from OpenAI's weights (gpt2, gpt2-medium, ..., "
                       "124M, ...) or from a checkpoint folder holding config.json + model.safetensors")
    model.add_argument("--context-length", type=int, default=D.context_length, help="tokens per training window")
    model.add_argument("--tie-weights", action="store_true",
                       help="share one matrix between token embedding and output head, as GPT-2 does")
    train = p.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=D.batch_size,
                       help="windows per step and process (under torchrun the effective batch is this times the "
                       "number of processes)")
    train.add_argument("--epochs", type=int, default=D.epochs, help="passes over the training text")
    train.add_argument("--lr", type=float, default=D.lr, help="peak learning rate, reached after the warm-up")
    train.add_argument("--min-lr", type=float, default=D.min_lr, help="learning rate at the end of the cosine decay")
    train.add_argument("--warmup-steps", type=int, default=D.warmup_steps, help="steps of linear learning-rate warm-up")
    train.add_argument("--weight-decay", type=float, default=D.weight_decay, help="AdamW weight decay of the weight matrices (biases, norms and embeddings get none)")
    train.add_argument("--grad-clip", type=float, default=D.grad_clip, help="max gradient norm; 0 turns clipping off")
    train.add_argument("--eval-freq", type=int, default=D.eval_freq, help="estimate train/val loss every this many steps")
    train.add_argument("--eval-iter", type=int, default=D.eval_iter, help="batches per loss estimate")
    train.add_argument("--fast", action=argparse.BooleanOptionalAction, default=D.fast,
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
    train.add_argument("--seed", type=int, default=D.seed,
                       help="seed for weights, dropout and batch order (under torchrun every process starts from the "
                       "same weights, and process r draws its dropout masks from seed + r)")
    ckpt = p.add_argument_group("checkpoints and output")
    ckpt.add_argument("--out", type=Path, default=DEFAULT_OUT,
                      help="folder for train_state.pt, run_args.json, config.json and model.safetensors (default: "
                      f"{_shown(DEFAULT_OUT)}, where chapters 6 and 7 look; with --smoke: {_shown(CLI_SMOKE_OUT)})")
    ckpt.add_argument("--checkpoint-every", type=int, default=None,
                      help="steps between checkpoints in OUT/train_state.pt (default: once per epoch; "
                      "one is always written at the end)")
    ckpt.add_argument("--resume", action="store_true",
                      help="continue the run saved in OUT/train_state.pt (pass the same options as that run)")
    ckpt.add_argument("--overwrite", action="store_true",
                      help="start afresh in an --out folder that holds an earlier run, replacing it (without "
                      "--overwrite or --resume such a run is refused)")
    ckpt.add_argument("--stop-at-step", type=int, default=None,
                      help="stop after this global step and save (--resume continues); the learning-rate schedule "
                      "still spans all --epochs")
    ckpt.add_argument("--prompt", default=D.prompt, help="start of the sample printed per epoch "
                      "and at the end")
    ckpt.add_argument("--sample-tokens", type=int, default=D.sample_tokens, help="tokens generated for the final sample")
    ckpt.add_argument("--progress", action=argparse.BooleanOptionalAction, default=D.progress, help="tqdm progress bar")
    ckpt.add_argument("--smoke", action="store_true",
                      help="tiny model, few steps, for CI (takes seconds): sets "
                      + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE_DEFAULTS.items())
                      + f" and --out {_shown(CLI_SMOKE_OUT)} unless given (a folder of its own: chapters 6 and 7 "
                      f"never take it for their model, and their --smoke substitute in {_shown(SMOKE_OUT)} is never "
                      "in its way)")
    return p


def parse_args(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check the options and --out; --smoke fills in its defaults; errors exit with status 2 and one line."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.smoke:  # parse again with the smoke defaults: options given explicitly still win
        model_given = args.model
        parser.set_defaults(**SMOKE_DEFAULTS, out=CLI_SMOKE_OUT)
        args = parser.parse_args(argv)
        if args.init_from != "scratch" and model_given is None:
            args.model = None  # the smoke model is for training from scratch; --init-from brings its own
    try:
        settings = check_settings(settings_from_args(args))
    except UsageError as err:
        parser.exit(2, f"{PROG}: error: {err}\n")
    return argparse.Namespace(**dataclasses.asdict(settings))


def settings_from_args(args: argparse.Namespace) -> PretrainSettings:
    """The PretrainSettings that parsed options describe."""
    return PretrainSettings(**vars(args))


def exit_process(status: int) -> NoReturn:
    """Leave the process with this exit status; under torchrun without Python's interpreter teardown.

    DistributedDataParallel keeps the gloo process group alive after destroy_process_group, so its worker
    threads are still running when Python shuts down. If one of them frees the last reference to a tensor
    that Python created (broadcast_object_list's) during the shutdown, it needs the interpreter lock, the
    thread is ended, and the process aborts ("terminate called without an active exception", SIGABRT,
    about one run in 40 on a 2-core CPU). Every file is written by then, so skip the teardown.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 download/weights failure, 2 bad input)."""
    args = parse_args(argv)  # bad options or --out: one line on stderr, exit status 2
    try:
        pretrain(settings_from_args(args))
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
            print("\ninterrupted before the first checkpoint: nothing to resume; run the same command again",
                  file=sys.stderr)
        return 130
    return 0
