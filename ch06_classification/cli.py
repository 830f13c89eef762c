"""The classification command line: `python -m ch06_classification train | predict`.

Hand-written infrastructure (not generated from a notebook). It wires chapter 6's pieces together:

    python -m ch06_classification train --out runs/spam                  # SMS Spam, GPT-2 124M (or the substitute)
    python -m ch06_classification train reviews.csv --out runs/reviews   # your own CSV with text,label columns
    python -m ch06_classification train --smoke --out /tmp/spam          # a few dozen messages, 2 steps (seconds)
    python -m ch06_classification train --out runs/spam --lora 8         # LoRA adapters, merged at the end
    python -m ch06_classification train --out runs/spam --resume         # continue from OUT/train_state.pt
    python -m ch06_classification predict --model runs/spam "WIN a prize now" "See you at six"
    python -m ch06_classification predict --model runs/spam < messages.txt   # one text per line

Files in train's --out: model.safetensors + classifier.json (save_classifier: the weights; the model config,
labels, max_length and pooling), train_state.pt (for --resume), run_args.json (the settings, checked on
--resume), history.json (losses and accuracies, and the test accuracy at the end).

Every option and the data are checked before any work starts, and files are written to a temporary name and
renamed, so a bad input ends with one line on stderr (exit 2) and leaves --out as it was.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from ch02_text_data import DownloadError
from ch05_pretraining import TrainConfig, WeightsUnavailableError, autocast_dtype, train_model
from ch05_pretraining import use_fused_kernels
from ch05_pretraining.cli_tools import (
    STATE_NAME,
    ARGS_NAME,
    CommandParser,
    UsageError,
    check_out_dir,
    cli_device,
    check_resume,
    gpt2_tokenizer,
    write_json_atomically,
)
from ch05_pretraining.gpt2_weights import GPT2_ALIASES, GPT2_REPOS
from ch05_pretraining.pretrained import is_gpt2_size, load_base_model
from ch06_classification.classification import (
    CLASSIFIER_CONFIG,
    CLASSIFIER_WEIGHTS,
    POOLING,
    TRAINABLE,
    SpamDataset,
    add_classification_head,
    balance_classes,
    calc_accuracy_loader,
    check_same_shapes,
    classification_loss,
    classify_text,
    download_sms_spam,
    evaluate_classifier,
    freeze_for_finetuning,
    label_names,
    labeled_frame,
    load_classifier,
    load_sms_spam,
    random_split,
    save_classifier,
)
from ch06_classification.lora import apply_lora, merge_lora

__all__ = ["build_parser", "main", "UsageError", "SMOKE_SPLIT", "DATA_DIR"]

PROG = "python -m ch06_classification"
DATA_DIR = Path(__file__).resolve().parent / "data"  # where the notebook keeps the SMS Spam Collection too
# Options that change the trained weights: --resume refuses to continue a run made with other values.
RESUME_KEYS = ("data_sha256", "model", "balance", "val_fraction", "test_fraction", "max_length", "trainable", "pool",
               "lora", "lora_alpha", "epochs", "lr", "batch_size", "smoke", "seed")
SMOKE_SPLIT = (32, 8, 8)  # --smoke keeps this many training, validation and test messages, and takes 2 steps


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m ch06_classification`."""
    parser = CommandParser(prog=PROG, description="Fine-tune GPT as a text classifier (chapter 6), and classify texts.")
    commands = parser.add_subparsers(dest="command", required=True)

    tr = commands.add_parser("train", help="fine-tune a classifier on the SMS Spam Collection or a CSV file")
    tr.add_argument("data", type=Path, nargs="?", default=None,
                    help="UTF-8 CSV file with a text and a label column (header text,label, any case; the two label "
                    "values become the class names); default: the SMS Spam Collection, downloaded into "
                    f"{DATA_DIR} or taken from $LLMS_DATA_MIRROR")
    tr.add_argument("--out", type=Path, required=True, help="folder for the classifier and the training state")
    tr.add_argument("--model", default="gpt2",
                    help="GPT-2 size (falls back to the chapter-5 model offline) or a folder of config.json + "
                    "model.safetensors (default: gpt2)")
    tr.add_argument("--no-balance", dest="balance", action="store_false",
                    help="keep every row (default: undersample the larger class to the size of the smaller)")
    tr.add_argument("--val-fraction", type=float, default=0.1, help="share of the rows for validation (default: 0.1)")
    tr.add_argument("--test-fraction", type=float, default=0.2, help="share of the rows for the test (default: 0.2)")
    tr.add_argument("--max-length", type=int, default=None,
                    help="tokens per text: longer texts are cut (default: the longest training text)")
    tr.add_argument("--trainable", choices=TRAINABLE, default=None,
                    help="what is trained besides the new head (default: last_block)")
    tr.add_argument("--pool", choices=POOLING, default="last", help="which position gives the class scores "
                    "(default: last)")
    tr.add_argument("--lora", type=int, default=None, metavar="RANK",
                    help="train LoRA adapters of this rank and the head only; merged into plain layers when saved")
    tr.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale alpha (default: the rank)")
    tr.add_argument("--epochs", type=int, default=2)
    tr.add_argument("--lr", type=float, default=None, help="learning rate (constant; default 5e-5, with --lora 5e-4)")
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--eval-freq", type=int, default=None, help="steps between evaluations (default: 50; --smoke 1)")
    tr.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default: 50)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    tr.add_argument("--overwrite", action="store_true", help="replace the run in --out instead of refusing")
    tr.add_argument("--stop-at-step", type=int, default=None, help="stop after this many steps (resume later)")
    tr.add_argument("--smoke", action="store_true", help=f"seconds, for CI: {'/'.join(map(str, SMOKE_SPLIT))} "
                    "training/validation/test messages, 2 steps, a tiny model when offline")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (one line per evaluation)")
    tr.add_argument("--seed", type=int, default=123)
    tr.add_argument("--device", default=None, help="cpu, cuda, mps (default: $LLMS_DEVICE, else the best available)")

    pr = commands.add_parser("predict", help="print the label and its probability for each text")
    pr.add_argument("texts", nargs="*", help="texts to classify (default: read stdin, one text per line)")
    pr.add_argument("--model", type=Path, required=True, help="a folder written by train")
    pr.add_argument("--device", default=None, help="cpu, cuda, mps (default: $LLMS_DEVICE, else the best available)")
    return parser


# --- helpers -------------------------------------------------------------------------------------------


def _check_options(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, before anything is read or written; fill in the defaults."""
    for name in ("epochs", "batch_size", "checkpoint_every", "eval_freq", "stop_at_step", "max_length", "lora"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("lr", "lora_alpha"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if not (0 < args.val_fraction and 0 <= args.test_fraction and args.val_fraction + args.test_fraction < 1):
        raise UsageError(f"need --val-fraction > 0, --test-fraction >= 0 and their sum < 1, got {args.val_fraction} "
                         f"and {args.test_fraction}")
    if args.lora is None and args.lora_alpha is not None:
        raise UsageError("--lora-alpha scales LoRA adapters: pass --lora RANK too")
    if args.lora is not None and args.trainable is not None:
        raise UsageError("--lora trains adapters on every layer plus the head, --trainable a part of the layers: "
                         "pass one of them")
    if not is_gpt2_size(args.model) and not Path(args.model).is_dir():
        sizes = ", ".join([*GPT2_REPOS, *GPT2_ALIASES])
        raise UsageError(f"--model {args.model}: neither a GPT-2 size ({sizes}) nor a folder")
    if not is_gpt2_size(args.model) and (Path(args.model) / CLASSIFIER_CONFIG).is_file():
        raise UsageError(f"--model {args.model} holds a classifier; train starts from a language model: a GPT-2 size "
                         "or a folder of config.json + model.safetensors (chapter 5 writes one)")
    args.lr = args.lr if args.lr is not None else (5e-4 if args.lora else 5e-5)  # the notebooks' rates
    args.trainable = None if args.lora else (args.trainable or "last_block")
    args.lora_alpha = args.lora_alpha or (float(args.lora) if args.lora else None)
    args.eval_freq = args.eval_freq or (1 if args.smoke else 50)


def _read_data(path: Path | None) -> tuple[pd.DataFrame, tuple[str, ...], str]:
    """The labeled rows (checked), their two class names, and the SHA-256 of the file they came from."""
    if path is not None and not path.is_file():
        raise UsageError(f"{path}: no such file (give a CSV file with a header line text,label)")
    source = path or download_sms_spam(DATA_DIR)  # a DownloadError says how to get it (exit 1)
    try:
        df = labeled_frame(load_sms_spam(source) if path is None else source, labels=None)
        labels = label_names(df, str(source))
    except ValueError as err:
        raise UsageError(str(err)) from None
    return df, labels, hashlib.sha256(source.read_bytes()).hexdigest()


def _split(args: argparse.Namespace, df: pd.DataFrame) -> list[pd.DataFrame]:
    """Balanced (unless --no-balance), shuffled and split into training, validation and test rows."""
    if args.balance:
        df = balance_classes(df, seed=args.seed)
    parts = random_split(df, 1 - args.val_fraction - args.test_fraction, args.val_fraction, seed=args.seed)
    if args.smoke:
        parts = tuple(part[:n] for part, n in zip(parts, SMOKE_SPLIT))
    where = "the SMS Spam Collection" if args.data is None else str(args.data)
    if len(parts[0]) < args.batch_size or len(parts[1]) == 0:
        raise UsageError(f"{where} gives {len(parts[0])} training and {len(parts[1])} validation rows: too few for "
                         f"a batch of --batch-size {args.batch_size} and one validation row; add rows, or lower "
                         "--batch-size or raise --val-fraction")
    return list(parts)


def _check_state_fits(state_path: Path, model: torch.nn.Module, source: str) -> None:
    """--resume: the saved weights must have the shapes of this run's model (not a size-mismatch traceback)."""
    saved = torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)["model"]
    try:
        check_same_shapes(saved, model, f"--resume: {state_path}",
                          f"this run's base model is {source}; resume with the base model of that run, or start "
                          "afresh with --overwrite")
    except ValueError as err:
        raise UsageError(str(err)) from None


# --- train ---------------------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> None:
    _check_options(args)
    device = cli_device(args.device)  # before any file is read or downloaded
    check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite,
                  products=(CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG))
    df, labels, sha256 = _read_data(args.data)
    record = {k: getattr(args, k) for k in RESUME_KEYS if k != "data_sha256"} | {"data_sha256": sha256}
    if args.resume:
        check_resume(args.out, record, RESUME_KEYS)
    train_df, val_df, test_df = _split(args, df)
    tokenizer = gpt2_tokenizer()

    torch.manual_seed(args.seed)
    model, source = load_base_model(args.model, device, smoke=args.smoke)
    print(f"base model: {source}", flush=True)
    dataset = partial(SpamDataset, tokenizer=tokenizer, context_length=model.cfg.context_length, labels=labels)
    try:
        train_set = dataset(train_df, max_length=args.max_length)
    except ValueError as err:
        raise UsageError(f"{args.data or 'the training messages'}: {err} (the option is --max-length)") from None
    val_set = dataset(val_df, max_length=train_set.max_length)
    test_set = dataset(test_df, max_length=train_set.max_length) if len(test_df) else None
    add_classification_head(model, num_classes=len(labels))
    if args.lora is not None:
        size = apply_lora(model, rank=args.lora, alpha=args.lora_alpha, skip=("out_head",))
        model.out_head.requires_grad_(True)  # the new head is trained in full, as in lora.ipynb
        print(f"LoRA rank {args.lora}: {size:,} adapter parameters", flush=True)
    else:
        freeze_for_finetuning(model, args.trainable)
    use_fused_kernels(model)
    state = args.out / STATE_NAME
    if args.resume:
        _check_state_fits(state, model, source)

    loader = partial(DataLoader, batch_size=args.batch_size)
    train_loader = loader(train_set, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    val_loader = loader(val_set)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"classes {', '.join(labels)}; {len(train_set)} training texts ({len(train_loader)} batches per epoch), "
          f"{len(val_set)} validation, {len(test_df)} test; max_length {train_set.max_length}; "
          f"{n_trainable:,} trainable parameters", flush=True)
    amp_dtype = autocast_dtype(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.1)
    cfg = TrainConfig(num_epochs=args.epochs, peak_lr=args.lr, min_lr=args.lr, warmup_steps=0, grad_clip=None,
                      eval_freq=args.eval_freq, eval_iter=1 if args.smoke else 5, amp_dtype=amp_dtype,
                      checkpoint_every=args.checkpoint_every)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.resume:  # an earlier run's files must never meet this run's settings
        for name in (STATE_NAME, CLASSIFIER_WEIGHTS, CLASSIFIER_CONFIG, "history.json"):
            (args.out / name).unlink(missing_ok=True)
        write_json_atomically(args.out / ARGS_NAME, record)
    stop = args.stop_at_step if args.stop_at_step is not None else (2 if args.smoke else None)
    history = train_model(model, train_loader, val_loader, optimizer, device, cfg,
                          loss_fn=partial(classification_loss, pool=args.pool),
                          eval_fn=partial(evaluate_classifier, pool=args.pool), checkpoint_path=state,
                          resume=args.resume, stop_at_step=stop, progress=not args.no_progress)
    if test_set is not None:
        history["test_acc"] = calc_accuracy_loader(loader(test_set), model, device, pool=args.pool, amp_dtype=amp_dtype)
        print(f"test accuracy {history['test_acc']:.1%} ({len(test_set)} texts)")
    if args.lora is not None:
        merge_lora(model)  # plain nn.Linear layers again: the saved classifier needs no LoRA code to load
    save_classifier(model.eval(), args.out, train_set.max_length, labels=labels, pool=args.pool)
    write_json_atomically(args.out / "history.json", history)
    print(f"saved the classifier to {args.out} ({CLASSIFIER_WEIGHTS} + {CLASSIFIER_CONFIG}); training state in "
          f"{state}\ntry it: {PROG} predict --model {args.out} \"WIN a free prize now\"")


# --- predict -------------------------------------------------------------------------------------------


def _texts(args: argparse.Namespace) -> list[str]:
    """The texts from the arguments or, with none, the non-empty lines of stdin."""
    if args.texts:
        empty = [i + 1 for i, text in enumerate(args.texts) if not text.strip()]
        if empty:
            raise UsageError(f"text {empty[0]} of the arguments is empty: give each text some words")
        return args.texts
    if sys.stdin.isatty():
        print("type one text per line; Ctrl-D ends", file=sys.stderr)
    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()  # bytes: decoded strictly
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as err:
        raise UsageError(f"stdin is not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start}): "
                         "convert it to UTF-8, e.g. with `iconv -f latin1 -t utf-8`") from None
    texts = [line for line in text.splitlines() if line.strip()]
    if not texts:
        raise UsageError("no texts: give them as arguments, or one per line on stdin")
    return texts


def _predict(args: argparse.Namespace) -> None:
    if not args.model.is_dir():
        raise UsageError(f"--model {args.model}: no such folder (give a folder written by `{PROG} train`)")
    device = cli_device(args.device)
    try:
        model, meta = load_classifier(args.model, device)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"--model {args.model}: {err}") from None
    use_fused_kernels(model)  # compute as in training
    texts = _texts(args)
    tokenizer = gpt2_tokenizer()
    width = max(len(label) for label in meta["labels"])
    for text in texts:
        label, prob = classify_text(text, model, tokenizer, device, meta["max_length"], labels=meta["labels"],
                                    pool=meta["pool"])
        print(f"{label:<{width}} {prob:.2f}  {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 download/weights failure, 2 bad input, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)  # bad options: one line, exit 2
    command = {"train": _train, "predict": _predict}[args.command]
    try:
        command(args)
    except (UsageError, DownloadError, WeightsUnavailableError) as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        if args.command == "train":
            state = args.out / STATE_NAME  # the words of chapter 5's command line
            print(f"\ninterrupted: the last checkpoint is in {state}; continue with the same options and --resume"
                  if state.is_file() else "\ninterrupted before the first checkpoint: nothing to resume; run the "
                  "same command again", file=sys.stderr)
        return 130
    return 0
