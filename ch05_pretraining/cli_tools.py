"""What the command lines of chapters 5, 6 and 7 share, so that they behave alike.

Hand-written infrastructure (not generated from a notebook): the error type a command prints as one line, an
argument parser whose own errors are one line too, reading a user's text file, refusing to overwrite an earlier
run, the --resume settings check, atomic writes and GPT-2's tokenizer. Every command checks its input with these
before any work starts, so a bad input ends with one clear line and nothing written.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NoReturn

import tiktoken
import torch

from appendix_pytorch.ddp_train import DeviceError, pick_device
from ch02_text_data import DownloadError, write_atomically  # write_atomically: passed on to the CLIs

__all__ = ["UsageError", "CommandParser", "STATE_NAME", "ARGS_NAME", "read_text_file", "check_out_dir", "check_resume",
           "delete_earlier_run", "write_atomically", "write_json_atomically", "gpt2_tokenizer", "cli_device"]

STATE_NAME = "train_state.pt"  # weights, optimizer, step and random state, for --resume
ARGS_NAME = "run_args.json"  # the settings of the run, checked on --resume


class UsageError(Exception):
    """Bad input the user can fix (missing file, wrong format, a run in the way); printed as one line, exit 2."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (`PROG: error: MESSAGE (see --help)`), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of path; a UsageError naming the file (as `what`, e.g. "--text x.txt") if it is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"{what} is not UTF-8 text (byte {err.object[err.start]:#04x} at position {err.start}): "
                         "save it as UTF-8 (for example `iconv -f latin1 -t utf-8`) and try again") from None


def check_out_dir(out: Path, *, resume: bool, overwrite: bool, state_name: str = STATE_NAME,
                  products: tuple[str, ...] = ("model.safetensors",)) -> None:
    """Refuse to start a fresh run in a folder that holds an earlier run, unless overwrite; resume needs one."""
    state = out / state_name
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if resume:
        if not state.is_file():
            raise UsageError(f"--resume: no checkpoint at {state}; run without --resume first, or pass the --out "
                             "folder of the run to continue")
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    found = [name for name in (state_name, *products) if (out / name).exists()]
    if found and not overwrite:
        raise UsageError(f"--out {out} already holds a run ({', '.join(found)}): pass --resume to continue it, "
                         "--overwrite to replace it, or another --out")


def check_resume(out: Path, record: dict, keys: tuple[str, ...], defaults: dict | None = None) -> None:
    """Refuse to resume a run whose weight-changing settings (keys) differ from this one's; say which differ."""
    path = out / ARGS_NAME
    if not path.is_file():
        return  # a checkpoint written by train_model directly: nothing to compare
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"--resume: {path} cannot be read ({err}): start afresh with --overwrite, or pass a new "
                         "--out") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: {path} holds no settings (a JSON {type(saved).__name__}): start afresh with "
                         "--overwrite, or pass a new --out")
    defaults = defaults or {}
    diffs = [f"{k}: {saved.get(k, defaults.get(k))!r} then, {record[k]!r} now" for k in keys
             if saved.get(k, defaults.get(k)) != record[k]]
    if diffs:
        raise UsageError(
            f"--resume: {out / STATE_NAME} was written by a run with other settings ({'; '.join(diffs)}); "
            f"pass the same options as that run (they are in {path}), or a new --out to start afresh"
        )


def delete_earlier_run(out: Path, names: tuple[str, ...]) -> list[Path]:
    """--overwrite, before training: delete the earlier run's files among names in out, say which; returns them."""
    gone = [out / name for name in names if (out / name).is_file()]
    for path in gone:
        path.unlink()
    if gone:
        print(f"note: --overwrite: deleted {', '.join(map(str, gone))} (the earlier run's)", flush=True)
    return gone


def write_json_atomically(path: Path, obj) -> None:
    """obj as indented JSON in path, written atomically."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8"))


def gpt2_tokenizer():
    """tiktoken's GPT-2 encoding; a DownloadError that says how to get it offline if it cannot be loaded."""
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no network and no cache: requests/SSL/OS errors, whichever tiktoken hits
        raise DownloadError(
            f"could not load GPT-2's tokenizer with tiktoken ({type(err).__name__}: {err}); go online once, or set "
            "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached files (the data mirror has one: "
            "$LLMS_DATA_MIRROR/tiktoken_cache)"
        ) from err


def cli_device(name: str | None) -> torch.device:
    """The device of a --device option (it wins over $LLMS_DEVICE), else the best available; a UsageError if unusable."""
    try:
        return pick_device(name)
    except DeviceError as err:
        raise UsageError(f"--device {name}: {err}" if name else str(err)) from None
