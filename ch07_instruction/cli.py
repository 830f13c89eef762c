"""The instruction command line: `python -m ch07_instruction finetune | generate | evaluate | chat`.

Hand-written infrastructure (not generated from a notebook). It wires chapter 7's pieces together:

    python -m ch07_instruction finetune data.json --out runs/instruct      # fine-tune (GPT-2 355M or the substitute)
    python -m ch07_instruction finetune data.json --smoke --out /tmp/x     # a few steps on a tiny model (seconds)
    python -m ch07_instruction finetune data.json --out runs/x --lora 16   # LoRA adapters (chapter 6), merged at the end
    python -m ch07_instruction finetune data.json --out runs/x --resume    # continue from OUT/train_state.pt
    python -m ch07_instruction generate questions.json --model runs/instruct --out answers.json
    python -m ch07_instruction evaluate answers.json [--model runs/instruct]   # ROUGE-L, loss, and the judge if set
    python -m ch07_instruction chat --model runs/instruct                   # type instructions, watch the answer
    python -m ch07_instruction chat --model Qwen/Qwen3-0.6B                 # a published chat model (chapter 5's bonus)

`generate`, `evaluate --model` and `chat` also take a published Llama 3 / Qwen3 chat model: a Hugging Face Hub
name (downloaded once into the Hugging Face cache; HF_ENDPOINT picks a mirror) or a folder holding its
config.json, safetensors and tokenizer.json (see ch07_instruction/assistant.py).

Files in finetune's --out: config.json + model.safetensors (Hugging Face GPT-2 format), instruction.json (the
prompt style), train_state.pt (for --resume), run_args.json (the settings, checked on --resume), history.json.

Every option, input file and output location is checked before any work starts (numbers in range, UTF-8
JSON: a list of objects with the needed text fields, none of them blank, prompts that fit the model's context;
an --out that can be written), and outputs are written to a temporary name and renamed, so a bad input or a
crash never leaves half a file or overwrites a good one. `finetune` refuses an --out that holds an earlier run
unless --resume (continue it) or --overwrite (replace it) is given. A bad input ends with one line on stderr
and exit status 2 before any model is loaded.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ch02_text_data import DownloadError
from ch05_pretraining import (
    GPT2_ALIASES,
    GPT2_REPOS,
    TrainConfig,
    WeightsUnavailableError,
    autocast_dtype,
    train_model,
)
from ch05_pretraining.cli_tools import (
    ARGS_NAME,
    STATE_NAME,
    CommandParser,
    UsageError,
    check_out_dir,
    cli_device,
    check_resume,
    delete_earlier_run,
    gpt2_tokenizer,
    write_json_atomically,
)
from ch05_pretraining.pretrained import is_gpt2_size, load_base_model
from ch06_classification import apply_lora, merge_lora
from ch07_instruction.assistant import ChatModel, is_chat_model, load_chat_model
from ch07_instruction.instruction import (
    PROMPT_STYLES,
    INSTRUCTION_CONFIG,
    InstructionDataset,
    Judge,
    LengthBucketSampler,
    answer_instructions,
    answer_loss,
    format_prompt,
    generate_batched,
    generate_in_batches,
    instruction_collate,
    instruction_loss,
    judge_responses,
    load_instruction_data,
    load_instruction_model,
    rouge_l,
    save_instruction_model,
    save_responses,
)

__all__ = ["build_parser", "main", "UsageError", "SMOKE_RECORDS"]

PROG = "python -m ch07_instruction"
# Options that change the trained weights: --resume refuses to continue a run made with other values.
RESUME_KEYS = ("data_sha256", "model", "style", "epochs", "lr", "batch_size", "val_fraction", "mask_prompt", "lora",
               "lora_alpha", "smoke", "seed")
SMOKE_RECORDS = 16  # --smoke trains on the first 16 records for 2 steps
PRODUCTS = ("model.safetensors", "config.json", INSTRUCTION_CONFIG, "history.json")  # what finetune saves at the end


_MODEL_HELP = ("a folder written by finetune, or a published chat model: a Hub name such as Qwen/Qwen3-0.6B or "
               "meta-llama/Llama-3.2-1B-Instruct, or a folder with its config.json, safetensors and tokenizer.json")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=PROG, description="Fine-tune GPT to follow instructions, answer, score, chat.")
    commands = parser.add_subparsers(dest="command", required=True)

    ft = commands.add_parser("finetune", help="fine-tune on a JSON file of instruction/input/output records")
    ft.add_argument("data", type=Path, help="JSON list of records with 'instruction', 'output' (and optional 'input')")
    ft.add_argument("--out", type=Path, required=True, help="folder for the model and the training state")
    ft.add_argument("--model", default="gpt2-medium",
                    help="GPT-2 size (falls back to the chapter-5 model offline) or a checkpoint folder; a size "
                    "name wins over a folder of that name (pass ./gpt2 for the folder)")
    ft.add_argument("--style", choices=PROMPT_STYLES, default="alpaca", help="prompt template")
    ft.add_argument("--epochs", type=int, default=2)
    ft.add_argument("--lr", type=float, default=5e-5, help="learning rate (constant)")
    ft.add_argument("--batch-size", type=int, default=8)
    ft.add_argument("--val-fraction", type=float, default=0.05, help="share of the records held out for validation")
    ft.add_argument("--mask-prompt", action="store_true", help="compute the loss on the answer tokens only")
    ft.add_argument("--lora", type=int, default=None, metavar="RANK", help="train LoRA adapters of this rank only")
    ft.add_argument("--lora-alpha", type=float, default=None, help="LoRA scale alpha (default: the rank)")
    ft.add_argument("--eval-freq", type=int, default=10, help="steps between evaluations (5 batches each)")
    ft.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    ft.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    ft.add_argument("--overwrite", action="store_true",
                    help="start afresh in an --out that holds an earlier run, replacing it (refused otherwise)")
    ft.add_argument("--stop-at-step", type=int, default=None, help="stop after this many steps (resume later)")
    ft.add_argument("--smoke", action="store_true",
                    help=f"seconds, for CI: the first {SMOKE_RECORDS} records, 2 steps, a tiny model when offline")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar (one line per evaluation)")
    ft.add_argument("--seed", type=int, default=123)

    gen = commands.add_parser("generate", help="answer a JSON file of instructions, write the records with responses")
    gen.add_argument("data", type=Path, help="JSON list of records with 'instruction' (and optional 'input')")
    gen.add_argument("--model", required=True, help=_MODEL_HELP)
    gen.add_argument("--out", type=Path, required=True, help="JSON file to write (records + 'model_response')")
    _decoding_options(gen)
    gen.add_argument("--batch-size", type=int, default=16)
    gen.add_argument("--no-progress", action="store_true")

    ev = commands.add_parser("evaluate", help="offline scores of a responses file, plus the judge if configured")
    ev.add_argument("data", type=Path, help="JSON written by generate (records with 'output' and 'model_response')")
    ev.add_argument("--model", default=None, help="also score the reference answers' loss and perplexity under "
                    "this model: " + _MODEL_HELP)
    ev.add_argument("--no-judge", action="store_true", help="skip the judge even if LLMS_JUDGE_URL is set")
    ev.add_argument("--no-progress", action="store_true")

    chat = commands.add_parser("chat", help="type instructions in the terminal; the answer streams as it is written")
    chat.add_argument("--model", required=True, help=_MODEL_HELP)
    _decoding_options(chat)
    for sub in (gen, chat):
        sub.add_argument("--think", action="store_true", help="Qwen3 only: let it reason before it answers (slower)")
        sub.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    ft.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    return parser


def _decoding_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--max-new-tokens", type=int, default=256)
    sub.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    sub.add_argument("--top-k", type=int, default=None)
    sub.add_argument("--seed", type=int, default=123, help="for sampling (temperature > 0)")


# --- helpers -------------------------------------------------------------------------------------------


def _load_records(path: Path, required: tuple[str, ...], not_blank: tuple[str, ...] = ()) -> list[dict]:
    """The records of a UTF-8 JSON file with the text fields `required`, of which `not_blank` must hold text."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file; pass a JSON file of records with {' and '.join(required)}")
    try:
        records = load_instruction_data(path, required=required)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for i, entry in enumerate(records):
        for field in not_blank:
            if not entry[field].strip():
                raise UsageError(f"{path}: record {i} has an empty {field!r}: write one, or remove the record")
    return records


_AT_LEAST_1 = ("epochs", "batch_size", "eval_freq", "checkpoint_every", "stop_at_step", "lora", "max_new_tokens",
               "top_k")


def _check_options(args: argparse.Namespace) -> None:
    """Every number in range, before any file is read or model loaded; else a UsageError naming the option."""
    for name in _AT_LEAST_1:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not getattr(args, "temperature", 0) >= 0:
        raise UsageError(f"--temperature must be >= 0 (0: greedy), got {args.temperature}")
    if not getattr(args, "lr", 1) > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if getattr(args, "lora_alpha", None) is not None and not args.lora_alpha > 0:
        raise UsageError(f"--lora-alpha must be > 0, got {args.lora_alpha}")
    if getattr(args, "lora_alpha", None) is not None and args.lora is None:
        raise UsageError("--lora-alpha scales LoRA adapters: pass --lora RANK too")
    if not 0 < getattr(args, "val_fraction", 0.5) < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")


def _check_out_file(path: Path) -> None:
    """Refuse an --out file that cannot be written (a folder, or under a file); its folder may be created."""
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder: give the name of a JSON file, e.g. {path / 'answers.json'}")
    parent = path.parent
    while not parent.exists():  # the nearest folder that exists: the missing ones are created before the work
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--out {path}: cannot write under {parent}; pass a path in a folder you can write to")


def _check_prompts_fit(records: list[dict], tokenizer, style: str, context_length: int, path: Path) -> None:
    for i, entry in enumerate(records):
        n = len(tokenizer.encode(format_prompt(entry, style), disallowed_special=()))
        if n >= context_length:
            raise UsageError(f"{path}: record {i}'s prompt is {n} tokens, but the model's context_length is "
                             f"{context_length}: shorten its instruction or input (nothing was written)")


def _load_model_dir(folder: Path, device: torch.device):
    if not folder.is_dir():
        raise UsageError(f"--model {folder}: no such folder (give a folder written by `{PROG} finetune`, or a chat "
                         "model's Hub name such as Qwen/Qwen3-0.6B)")
    try:
        return load_instruction_model(folder, device)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model {folder}: {err}") from None


def _load_chat_model(args: argparse.Namespace, device: torch.device) -> ChatModel:
    """The --model chat model, in bfloat16 where the device computes it natively (half the memory), else float32."""
    try:
        native_bf16 = autocast_dtype(device) == torch.bfloat16  # (float16 weights could overflow: never those)
        chat = load_chat_model(args.model, device, dtype=torch.bfloat16 if native_bf16 else None,
                               thinking=getattr(args, "think", False))
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--model {args.model}: {err}") from None
    model = chat.model
    print(f"loaded {chat.name}: {sum(p.numel() for p in model.parameters()):,} parameters in "
          f"{model.tok_emb.weight.dtype}", flush=True)
    return chat


def _check_chat_prompts_fit(prompts: list[list[int]], context_length: int, path: Path) -> None:
    for i, ids in enumerate(prompts):
        if len(ids) >= context_length:
            raise UsageError(f"{path}: record {i}'s prompt is {len(ids)} tokens, but the model's context_length is "
                             f"{context_length}: shorten its instruction or input (nothing was written)")


# --- finetune ------------------------------------------------------------------------------------------


def _finetune(args: argparse.Namespace) -> None:
    records = _load_records(args.data, ("instruction", "output"), not_blank=("instruction", "output"))
    if args.smoke:
        records = records[:SMOKE_RECORDS]
    n_val = max(1, round(len(records) * args.val_fraction))
    if len(records) - n_val < args.batch_size:
        raise UsageError(f"{args.data} has {len(records)} records: too few for a validation share of "
                         f"{args.val_fraction} and batches of {args.batch_size}")
    if not is_gpt2_size(args.model) and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: no such folder, and not a GPT-2 size "
                         f"({', '.join([*GPT2_REPOS, *GPT2_ALIASES])})")
    check_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    state = args.out / STATE_NAME
    record = {k: getattr(args, k) for k in RESUME_KEYS if k != "data_sha256"}
    record["data_sha256"] = hashlib.sha256(args.data.read_bytes()).hexdigest()
    if args.resume:
        check_resume(args.out, record, RESUME_KEYS)  # chapter 5's check, with this command's settings
    tokenizer = gpt2_tokenizer()
    device = cli_device(args.device)
    torch.manual_seed(args.seed)
    model, source = load_base_model(args.model, device, smoke=args.smoke)
    print(f"base model: {source}", flush=True)
    _check_prompts_fit(records, tokenizer, args.style, model.cfg.context_length, args.data)
    if args.lora is not None:
        size = apply_lora(model, rank=args.lora, alpha=args.lora_alpha or args.lora, skip=("out_head",))
        print(f"LoRA rank {args.lora}: {size:,} trainable parameters", flush=True)

    train, val = records[: len(records) - n_val], records[len(records) - n_val :]
    collate = partial(instruction_collate, mask_prompt=args.mask_prompt, max_length=model.cfg.context_length)
    train_set, val_set = InstructionDataset(train, tokenizer, args.style), InstructionDataset(val, tokenizer, args.style)
    sampler = LengthBucketSampler([len(ids) for ids, _ in train_set], args.batch_size, drop_last=True)
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, collate_fn=collate)
    print(f"{len(train)} training records ({len(train_loader)} batches per epoch), {len(val)} validation", flush=True)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.1)
    cfg = TrainConfig(num_epochs=args.epochs, peak_lr=args.lr, min_lr=args.lr, warmup_steps=0,
                      eval_freq=2 if args.smoke else args.eval_freq, eval_iter=2 if args.smoke else 5,
                      amp_dtype=autocast_dtype(device), checkpoint_every=args.checkpoint_every)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.overwrite:  # the earlier run's files must never meet this run's settings, nor pass for its model
        delete_earlier_run(args.out, (STATE_NAME, *PRODUCTS))
    if not args.resume:
        write_json_atomically(args.out / ARGS_NAME, record)
    stop = args.stop_at_step if args.stop_at_step is not None else (2 if args.smoke else None)
    history = train_model(model, train_loader, val_loader, optimizer, device, cfg, loss_fn=instruction_loss,
                          checkpoint_path=state, resume=args.resume, stop_at_step=stop,
                          progress=not args.no_progress)
    if args.lora is not None:
        merge_lora(model)  # plain nn.Linear layers again: the saved model needs no LoRA code to load
    save_instruction_model(model.eval(), args.out, style=args.style, source=source)
    write_json_atomically(args.out / "history.json", history)
    print(f"saved the model to {args.out} (Hugging Face GPT-2 format + instruction.json); training state in {state}")


# --- generate, evaluate, chat --------------------------------------------------------------------------


def _generate(args: argparse.Namespace) -> None:
    records = _load_records(args.data, ("instruction",), not_blank=("instruction",))
    _check_out_file(args.out)
    device = cli_device(args.device)
    if is_chat_model(args.model):
        return _generate_chat(args, records, device)
    if args.think:
        raise UsageError("--think is for Qwen3 chat models; this --model is a fine-tuned GPT")
    model, style = _load_model_dir(Path(args.model), device)
    tokenizer = gpt2_tokenizer()
    _check_prompts_fit(records, tokenizer, style, model.cfg.context_length, args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the work, so that saving it cannot fail for want of it
    torch.manual_seed(args.seed)
    responses = answer_instructions(model, records, tokenizer, style=style, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                    top_k=args.top_k, amp_dtype=autocast_dtype(device), progress=not args.no_progress)
    save_responses(records, responses, args.out)
    print(f"wrote {len(responses)} responses to {args.out}")


def _generate_chat(args: argparse.Namespace, records: list[dict], device: torch.device) -> None:
    """generate with a published chat model: each record as one user message in its chat template."""
    chat = _load_chat_model(args, device)
    prompts = [chat.record_prompt_ids(entry) for entry in records]
    _check_chat_prompts_fit(prompts, chat.model.cfg.context_length, args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    new = generate_in_batches(chat.model, prompts, args.batch_size, not args.no_progress,
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              eos_id=chat.eos_id, pad_id=chat.eos_id)
    responses = [chat.answer_text(ids) for ids in new]
    save_responses(records, responses, args.out)
    print(f"wrote {len(responses)} responses to {args.out}")


def _reference_loader(args: argparse.Namespace, records: list[dict], device: torch.device):
    """(model, a loader of the records' prompt + reference answer, masked prompts) for the --model of evaluate."""
    if is_chat_model(args.model):
        chat = _load_chat_model(args, device)
        items = []
        for entry in records:
            prompt = chat.record_prompt_ids(entry)
            items.append((prompt + chat.tokenizer.encode(entry["output"], disallowed_special=()), len(prompt)))
        _check_chat_prompts_fit([ids for ids, _ in items], chat.model.cfg.context_length, args.data)
        collate = partial(instruction_collate, pad_id=chat.eos_id, mask_prompt=True,
                          max_length=chat.model.cfg.context_length)
        return chat.model, DataLoader(items, batch_size=8, collate_fn=collate)
    model, style = _load_model_dir(Path(args.model), device)
    tokenizer = gpt2_tokenizer()
    _check_prompts_fit(records, tokenizer, style, model.cfg.context_length, args.data)
    collate = partial(instruction_collate, mask_prompt=True, max_length=model.cfg.context_length)
    return model, DataLoader(InstructionDataset(records, tokenizer, style), batch_size=8, collate_fn=collate)


def _evaluate(args: argparse.Namespace) -> None:
    records = _load_records(args.data, ("instruction", "output", "model_response"))
    scores = [rouge_l(r["model_response"], r["output"]) for r in records]
    print(f"{len(records)} responses: mean ROUGE-L {sum(scores) / len(scores):.3f}")
    if args.model is not None:
        device = torch.device("cpu")
        model, loader = _reference_loader(args, records, device)
        result = answer_loss(model, loader, device, autocast_dtype(device))
        print(f"reference answers under {args.model}: loss {result['loss']:.3f}, perplexity "
              f"{result['perplexity']:.1f} ({result['tokens']:,} tokens)")
    judge = None if args.no_judge else Judge.from_env()
    if judge is None:
        print("judge: not configured (set LLMS_JUDGE_URL and LLMS_JUDGE_MODEL to use a local Ollama or "
              "OpenAI-compatible server)")
        return
    judge_scores, errors = judge_responses(judge, records, [r["model_response"] for r in records],
                                           progress=not args.no_progress)
    valid = [s for s in judge_scores if s is not None]
    mean = f"mean {sum(valid) / len(valid):.1f} / 100" if valid else "no score"
    print(f"judge {judge.model} ({judge.api} API at {judge.url}): {len(valid)} of {len(records)} scored, {mean}")
    for message in errors[:5]:
        print(f"  {message}")


class _Streamer:
    """Prints the decoded text of one row's tokens as they arrive (whole characters only)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.shown = tokenizer, [], ""

    def __call__(self, row: int, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        print(text[len(self.shown) :], end="", flush=True)
        self.shown = text

    def finish(self) -> None:
        """Print what is still held back (an answer can end inside a character: it shows as U+FFFD), then a newline."""
        text = self.tokenizer.decode(self.ids)
        print(text[len(self.shown) :], flush=True)


def _chat_with(chat: ChatModel, args: argparse.Namespace, device: torch.device) -> None:
    """A conversation with a published chat model: every turn is sent again with the history, answers stream."""
    generator = torch.Generator(device=device).manual_seed(args.seed)
    print(f"chatting with {chat.name}. Type a message; an empty line or Ctrl-D ends.")
    messages = []
    while True:
        try:
            text = input(">>> ").strip()
        except EOFError:
            print()
            return
        if not text:
            return
        messages.append({"role": "user", "content": text})
        ids = chat.prompt_ids(messages)
        if len(ids) >= chat.model.cfg.context_length:
            print(f"(the conversation is {len(ids)} tokens; the model reads at most {chat.model.cfg.context_length - 1}: "
                  "start a new chat)")
            return
        streamer = _Streamer(chat.tokenizer)
        new = generate_batched(chat.model, [ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                               eos_id=chat.eos_id, pad_id=chat.eos_id, generator=generator, on_token=streamer)
        streamer.finish()
        messages.append({"role": "assistant", "content": chat.answer_text(new[0])})


def _chat(args: argparse.Namespace) -> None:
    device = cli_device(args.device)
    if is_chat_model(args.model):
        return _chat_with(_load_chat_model(args, device), args, device)
    if args.think:
        raise UsageError("--think is for Qwen3 chat models; this --model is a fine-tuned GPT")
    model, style = _load_model_dir(Path(args.model), device)
    tokenizer = gpt2_tokenizer()
    generator = torch.Generator(device=device).manual_seed(args.seed)
    print(f"chatting with {args.model} ({style} prompts). Type an instruction; an empty line or Ctrl-D ends.")
    while True:
        try:
            instruction = input(">>> ").strip()
        except EOFError:
            print()
            return
        if not instruction:
            return
        ids = tokenizer.encode(format_prompt({"instruction": instruction}, style), disallowed_special=())
        if len(ids) >= model.cfg.context_length:
            print(f"(that prompt is {len(ids)} tokens; the model reads at most {model.cfg.context_length - 1})")
            continue
        streamer = _Streamer(tokenizer)
        generate_batched(model, [ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                         generator=generator, amp_dtype=autocast_dtype(device), on_token=streamer)
        streamer.finish()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 download/weights failure, 2 bad input)."""
    args = build_parser().parse_args(argv)  # argparse's own errors: one line, exit status 2
    command = {"finetune": _finetune, "generate": _generate, "evaluate": _evaluate, "chat": _chat}[args.command]
    try:
        _check_options(args)
        command(args)
    except (UsageError, DownloadError, WeightsUnavailableError) as err:
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except ValueError as err:  # e.g. a sampling option out of range, found by the library
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "finetune":
            state = args.out / STATE_NAME  # the words of chapters 5 and 6
            print(f"\ninterrupted: the last checkpoint is in {state}; continue with the same options and --resume"
                  if state.is_file() else "\ninterrupted before the first checkpoint: nothing to resume; run the "
                  "same command again", file=sys.stderr)
        return 130
    return 0
