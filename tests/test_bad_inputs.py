"""Bad input to the command lines of chapters 5 and 7, one row each: a clear line, an exit status, nothing written.

Every row of CASES runs one command on files in a fresh temporary folder (written by `bad_input_files`; "{tmp}" in
an argument is that folder) and checks that it ends with exit status 2 (1 for a failed download), exactly one line
on stderr holding the row's message, and no file in the folder written, changed or deleted: the earlier runs in
prev5/ and prev7/ stay byte-identical. Every row fails before a model is built, so the table runs in seconds.
The rows are data (cli, name, argv, message), so that a documentation table can be made from them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import ch05_pretraining.cli as pretraining_cli
import ch05_pretraining.pretrain_run as run
import ch07_instruction.cli as instruction_cli

pytestmark = pytest.mark.usefixtures("one_thread", "force_cpu_device")

MAINS = {"ch05_pretraining": pretraining_cli.main, "ch07_instruction": instruction_cli.main}


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (`python -m CLI ARGV`), what it gets wrong, and what its error must say."""

    cli: str  # the package run with python -m
    name: str
    argv: tuple[str, ...]  # "{tmp}" stands for the folder of bad_input_files
    message: str  # a fragment of the one line on stderr
    status: int = 2  # 1: a download failed


def ch05(name: str, argv: str, message: str) -> Case:
    """A row for `python -m ch05_pretraining --smoke --no-progress ARGV` (with --text and --out unless given)."""
    args = argv.split()
    if "--text" not in args:
        args += ["--text", "{tmp}/story.txt"]
    if "--out" not in args:
        args += ["--out", "{tmp}/out5"]
    return Case("ch05_pretraining", name, ("--smoke", "--no-progress", *args), message)


def ch07(name: str, argv: str, message: str) -> Case:
    """A row for `python -m ch07_instruction ARGV`."""
    return Case("ch07_instruction", name, tuple(argv.split()), message)


FT = "finetune {tmp}/data.json --model gpt2 --no-progress --out {tmp}/out7"  # fails before loading gpt2, or succeeds
GEN = "generate {tmp}/data.json --model {tmp}/no-model --out {tmp}/answers.json"
CHAT = "chat --model {tmp}/no-model"

CASES: list[Case] = [
    # python -m ch05_pretraining
    ch05("text file missing", "--text {tmp}/missing.txt", "--text {tmp}/missing.txt: no such file"),
    ch05("text not UTF-8", "--text {tmp}/latin1.txt", "--text {tmp}/latin1.txt is not UTF-8 text"),
    ch05("text empty", "--text {tmp}/empty.txt", "--text {tmp}/empty.txt is empty"),
    ch05("text too short for one batch", "--text {tmp}/short.txt", "too short for one batch of --batch-size 4"),
    ch05("validation part too short", "--val-fraction 0.005", "the validation part"),
    ch05("--resume without a checkpoint", "--resume", "--resume: no checkpoint at {tmp}/out5/train_state.pt"),
    ch05("--resume with other settings", "--resume --out {tmp}/prev5 --lr 1e-3",
         "other settings (lr: 0.0005 then, 0.001 now)"),
    ch05("a fresh run would overwrite an earlier one", "--out {tmp}/prev5",
         "--out {tmp}/prev5 already holds a run (train_state.pt, model.safetensors): pass --resume"),
    ch05("--resume with a garbled run_args.json", "--resume --out {tmp}/garbled5",
         "--resume: {tmp}/garbled5/run_args.json cannot be read"),
    ch05("--resume and --overwrite together", "--resume --overwrite --out {tmp}/prev5", "pass one of them"),
    ch05("--out is a file", "--out {tmp}/story.txt", "--out {tmp}/story.txt is a file, not a folder"),
    ch05("--batch-size 0", "--batch-size 0", "--batch-size must be >= 1, got 0"),
    ch05("--epochs not a number", "--epochs two", "argument --epochs: invalid int value: 'two'"),
    ch05("--checkpoint-every 0", "--checkpoint-every 0", "--checkpoint-every must be >= 1"),
    ch05("--warmup-steps negative", "--warmup-steps -1", "--warmup-steps must be >= 0"),
    ch05("--min-lr above --lr", "--lr 1e-4 --min-lr 1e-3", "0 <= --min-lr <= --lr"),
    ch05("--grad-clip negative", "--grad-clip -1", "--weight-decay and --grad-clip must be >= 0"),
    ch05("--val-fraction 1", "--val-fraction 1", "--val-fraction must be in [0, 1), got 1.0"),
    ch05("empty --prompt", "--prompt= ", "--prompt is empty"),
    ch05("unknown --model", "--model gpt5", "argument --model: invalid choice: 'gpt5'"),
    ch05("--model with --init-from", "--model gpt2 --init-from gpt2", "exclude each other"),
    ch05("--init-from a missing folder", "--init-from {tmp}/no-model", "--init-from {tmp}/no-model: no such folder"),
    ch05("--master-weights with --no-fast", "--master-weights --no-fast", "--master-weights needs --fast"),
    ch05("unknown --device", "--device tpu", "--device tpu: device 'tpu' is not a device name"),
    ch05("unknown option", "--learning-rate 1", "unrecognized arguments: --learning-rate 1"),
    # python -m ch07_instruction finetune
    ch07("finetune: data file missing", FT.replace("data.json", "missing.json"), "{tmp}/missing.json: no such file"),
    ch07("finetune: data not UTF-8", FT.replace("data.json", "latin1.json"), "{tmp}/latin1.json is not UTF-8 text"),
    ch07("finetune: data empty", FT.replace("data.json", "empty.json"), "{tmp}/empty.json is empty"),
    ch07("finetune: data not JSON", FT.replace("data.json", "broken.json"), "{tmp}/broken.json is not valid JSON"),
    ch07("finetune: data not a list", FT.replace("data.json", "dict.json"), "{tmp}/dict.json holds a JSON dict"),
    ch07("finetune: record without output", FT.replace("data.json", "no_output.json"),
         "{tmp}/no_output.json: record 1 has no 'output' field"),
    ch07("finetune: blank instruction", FT.replace("data.json", "blank_instruction.json"),
         "{tmp}/blank_instruction.json: record 2 has an empty 'instruction'"),
    ch07("finetune: blank output", FT.replace("data.json", "blank_output.json"),
         "{tmp}/blank_output.json: record 2 has an empty 'output'"),
    ch07("finetune: too few records", FT.replace("data.json", "three.json"), "{tmp}/three.json has 3 records: too few"),
    ch07("finetune: would overwrite an earlier run", FT.replace("out7", "prev7"),
         "--out {tmp}/prev7 already holds a run (train_state.pt, model.safetensors): pass --resume"),
    ch07("finetune: --resume without a checkpoint", FT + " --resume", "--resume: no checkpoint at {tmp}/out7"),
    ch07("finetune: --resume with other settings", FT.replace("out7", "prev7") + " --resume --lr 1e-3",
         "other settings (lr: 5e-05 then, 0.001 now)"),
    ch07("finetune: --resume and --overwrite", FT + " --resume --overwrite", "pass one of them"),
    ch07("finetune: unknown --model", FT.replace("--model gpt2", "--model gpt5"),
         "--model gpt5: no such folder, and not a GPT-2 size"),
    ch07("finetune: --epochs 0", FT + " --epochs 0", "--epochs must be >= 1, got 0"),
    ch07("finetune: --batch-size 0", FT + " --batch-size 0", "--batch-size must be >= 1, got 0"),
    ch07("finetune: --lr 0", FT + " --lr 0", "--lr must be > 0"),
    ch07("finetune: --val-fraction 1", FT + " --val-fraction 1", "--val-fraction must be between 0 and 1"),
    ch07("finetune: --lora 0", FT + " --lora 0", "--lora must be >= 1"),
    ch07("finetune: --lora-alpha negative", FT + " --lora 4 --lora-alpha -1", "--lora-alpha must be > 0"),
    ch07("finetune: --lora-alpha without --lora", FT + " --lora-alpha 8",
         "--lora-alpha scales LoRA adapters: pass --lora RANK too"),
    ch07("finetune: --stop-at-step 0", FT + " --stop-at-step 0", "--stop-at-step must be >= 1"),
    ch07("finetune: unknown --style", FT + " --style chatml", "argument --style: invalid choice: 'chatml'"),
    ch07("finetune: no --out", "finetune {tmp}/data.json", "the following arguments are required: --out"),
    # generate
    ch07("generate: data file missing", GEN.replace("data.json", "missing.json"), "{tmp}/missing.json: no such file"),
    ch07("generate: blank instruction", GEN.replace("data.json", "blank_instruction.json"),
         "record 2 has an empty 'instruction'"),
    ch07("generate: --out is a folder", GEN.replace("{tmp}/answers.json", "{tmp}/prev7"),
         "--out {tmp}/prev7 is a folder: give the name of a JSON file"),
    ch07("generate: --out under a file", GEN.replace("{tmp}/answers.json", "{tmp}/story.txt/answers.json"),
         "cannot write under {tmp}/story.txt"),
    ch07("generate: --model missing", GEN, "--model {tmp}/no-model: no such folder"),
    ch07("generate: --temperature negative", GEN + " --temperature -1", "--temperature must be >= 0"),
    ch07("generate: --top-k 0", GEN + " --top-k 0", "--top-k must be >= 1, got 0"),
    ch07("generate: --max-new-tokens 0", GEN + " --max-new-tokens 0", "--max-new-tokens must be >= 1"),
    ch07("generate: --batch-size 0", GEN + " --batch-size 0", "--batch-size must be >= 1"),
    # evaluate
    ch07("evaluate: records without model_response", "evaluate {tmp}/data.json --no-judge",
         "record 0 has no 'model_response' field"),
    ch07("evaluate: data not UTF-8", "evaluate {tmp}/latin1.json --no-judge", "{tmp}/latin1.json is not UTF-8 text"),
    # chat
    ch07("chat: --temperature negative", CHAT + " --temperature -1", "--temperature must be >= 0 (0: greedy), got -1.0"),
    ch07("chat: --top-k 0", CHAT + " --top-k 0", "--top-k must be >= 1, got 0"),
    ch07("chat: --max-new-tokens 0", CHAT + " --max-new-tokens 0", "--max-new-tokens must be >= 1"),
    ch07("chat: --model missing", CHAT, "--model {tmp}/no-model: no such folder"),
    ch07("chat: --think with a Llama model", "chat --model {tmp}/llama --think", "only Qwen3 has a thinking mode"),
    ch07("generate: --think with a fine-tuned GPT", GEN.replace("no-model", "prev7") + " --think",
         "--think is for Qwen3 chat models"),
    Case("ch07_instruction", "chat: a chat model not downloaded, offline", ("chat", "--model", "Qwen/Qwen3-0.6B"),
         "Qwen/Qwen3-0.6B (config.json) is not in the Hugging Face cache", status=1),
    ch07("no command", "", "the following arguments are required: command"),
]


def records(n: int) -> list[dict]:
    return [{"instruction": f"Add {i} and 1.", "input": "", "output": f"{i + 1}."} for i in range(n)]


def write_files(tmp: Path) -> None:
    """The inputs the rows name, and an earlier run of each command line (prev5/, prev7/) that must survive."""
    rng = random.Random(0)
    words = "the a painter wife picture studio gallery said his her money fame quiet brush light".split()
    (tmp / "story.txt").write_text(" ".join(rng.choice(words) for _ in range(1500)), encoding="utf-8")
    (tmp / "short.txt").write_text("Every effort moves you. " * 10, encoding="utf-8")
    (tmp / "empty.txt").write_text(" \n", encoding="utf-8")
    (tmp / "latin1.txt").write_bytes("Gisburn's caf\u00e9, a painter's \u00e9tude. ".encode("latin-1") * 50)
    data = records(12)
    (tmp / "data.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp / "three.json").write_text(json.dumps(records(3)), encoding="utf-8")
    (tmp / "empty.json").write_text("", encoding="utf-8")
    (tmp / "broken.json").write_text('[{"instruction": "x",', encoding="utf-8")
    (tmp / "dict.json").write_text(json.dumps(data[0]), encoding="utf-8")
    (tmp / "latin1.json").write_bytes(json.dumps(data, ensure_ascii=False).replace("Add", "Ajout\u00e9").encode("latin-1"))
    (tmp / "no_output.json").write_text(json.dumps([data[0], {"instruction": "x"}]), encoding="utf-8")
    for field in ("instruction", "output"):
        rows = records(12)
        rows[2][field] = "  "
        (tmp / f"blank_{field}.json").write_text(json.dumps(rows), encoding="utf-8")

    prev5 = tmp / "prev5"  # what a --smoke run on story.txt leaves (the weights files stand in for real ones)
    prev5.mkdir()
    settings = run.check_settings(run.PretrainSettings(**run.SMOKE_DEFAULTS, smoke=True, text=tmp / "story.txt",
                                                       out=prev5, progress=False))
    record = run._run_record(settings, (tmp / "story.txt").read_text(encoding="utf-8"), 1)
    (prev5 / "run_args.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    (prev5 / "train_state.pt").write_bytes(b"the earlier run's weights, optimizer and step")
    (prev5 / "model.safetensors").write_bytes(b"the earlier run's model")

    garbled5 = tmp / "garbled5"  # a run whose run_args.json was cut short (a full disk, a crash)
    shutil.copytree(prev5, garbled5)
    (garbled5 / "run_args.json").write_text(json.dumps(record, indent=1)[:40], encoding="utf-8")

    (tmp / "llama").mkdir()  # the start of a Llama 3 checkpoint folder
    (tmp / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")

    prev7 = tmp / "prev7"  # what `finetune data.json --model gpt2` leaves
    prev7.mkdir()
    args = instruction_cli.build_parser().parse_args(["finetune", str(tmp / "data.json"), "--out", str(prev7),
                                                      "--model", "gpt2"])
    record = {k: getattr(args, k) for k in instruction_cli.RESUME_KEYS if k != "data_sha256"}
    record["data_sha256"] = hashlib.sha256((tmp / "data.json").read_bytes()).hexdigest()
    (prev7 / "run_args.json").write_text(json.dumps(record), encoding="utf-8")
    (prev7 / "train_state.pt").write_bytes(b"the earlier fine-tuning's state")
    (prev7 / "model.safetensors").write_bytes(b"the earlier fine-tuned model")


def snapshot(folder: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every file and folder under folder: (mtime, bytes) of a file, None for a folder."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def run_cli(cli: str, argv: list[str]) -> tuple[int, str, str]:
    """`python -m cli argv` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = MAINS[cli](argv)
        except SystemExit as exc:  # argparse's own errors
            status = exc.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def offline_hub(tmp_path_factory, monkeypatch):
    """No network and an empty Hugging Face cache (outside the folder under test), whatever the environment says."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hf-cache")))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.cli}: {c.name}" for c in CASES])
@pytest.mark.usefixtures("offline_hub")
def test_bad_input_is_one_clear_line_and_changes_nothing(case: Case, tmp_path: Path):
    write_files(tmp_path)
    before = snapshot(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    status, _, err = run_cli(case.cli, argv)
    assert status == case.status, err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err  # one line, no traceback
    assert f"python -m {case.cli}" in err and ": error: " in err
    assert case.message.replace("{tmp}", str(tmp_path)) in err
    assert snapshot(tmp_path) == before  # nothing written, changed or deleted: earlier runs are intact


def test_every_row_has_its_own_name():
    names = [(c.cli, c.name) for c in CASES]
    assert len(names) == len(set(names))
