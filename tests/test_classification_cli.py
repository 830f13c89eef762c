"""Tests of `python -m ch06_classification` (ch06_classification/cli.py) on tiny models the tests make."""
import io
import json
import os
from contextlib import nullcontext
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
import torch

import ch05_pretraining.pretrained as pretrained
import ch06_classification.cli as cli
from ch02_text_data import DownloadError
from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import WeightsUnavailableError, load_checkpoint, save_hf_checkpoint, use_fused_kernels
from ch06_classification import add_classification_head, classify_text, load_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0, qkv_bias=True)
FILES = ["classifier.json", "history.json", "model.safetensors", "run_args.json", "train_state.pt"]


def tiny_model(seed: int = 0, **changes) -> GPTModel:
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(**{**TINY, **changes}))


def csv_text(n: int = 40, header: str = "text,label", labels: tuple[str, str] = ("ham", "spam")) -> str:
    """n rows of two easy classes; the columns in the header's order (text first unless it starts with label)."""
    texts = [f"{'win a cash prize now, call' if i % 2 else 'see you at dinner tonight'} {i}" for i in range(n)]
    label_first = header.strip().lower().startswith("label")
    rows = [f'{labels[i % 2]},"{t}"' if label_first else f'"{t}",{labels[i % 2]}' for i, t in enumerate(texts)]
    return header + "\n" + "".join(row + "\n" for row in rows)


@pytest.fixture
def fake_base(monkeypatch):
    """load_pretrained returns a fresh tiny model (seconds, no download); records the smoke flag it got."""
    calls = []

    def load(name, device=None, *, smoke=False):
        calls.append(smoke)
        return tiny_model().to(device), "a tiny test model"

    monkeypatch.setattr(pretrained, "load_pretrained", load)
    return calls


def train(data, out, *extra) -> int:
    return cli.main(["train", str(data), "--out", str(out), "--batch-size", "4", "--eval-freq", "3",
                     "--no-progress", "--device", "cpu", *extra])


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(csv_text())
    return path


def state_dicts_close(a: Path, b: Path) -> None:
    (ma, _), (mb, _) = load_classifier(a), load_classifier(b)
    for (name, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, msg=name)


# --- train ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header, labels, names", [
    ("text,label", ("ham", "spam"), ["ham", "spam"]),
    ("Label,Text", ("spam", "ham"), ["ham", "spam"]),  # the notebook's own CSV files; LABELS order
    ("TEXT , Label", ("pos", "neg"), ["neg", "pos"]),  # any case; other labels: the two values, sorted
])
def test_train_on_a_csv_writes_a_loadable_classifier(fake_base, tmp_path, header, labels, names, capsys):
    data = tmp_path / "data.csv"
    data.write_text(csv_text(header=header, labels=labels))
    assert train(data, tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == FILES
    model, meta = load_classifier(tmp_path / "out")
    assert meta["labels"] == names and meta["pool"] == "last" and meta["max_length"] <= TINY["context_length"]
    assert not torch.equal(model.out_head.weight, add_classification_head(tiny_model(), 2).out_head.weight)
    assert torch.equal(model.tok_emb.weight, tiny_model().tok_emb.weight)  # frozen (last_block: the default)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["step"] == [3, 6, 9, 12] and 0 <= history["test_acc"] <= 1  # 28 rows / 4 = 7 steps x 2 epochs
    out = capsys.readouterr().out
    assert "base model: a tiny test model" in out and f"classes {', '.join(names)}; 28 training texts" in out


def test_train_smoke_takes_two_steps_on_a_few_dozen_rows(fake_base, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text(csv_text(200))
    assert train(data, tmp_path / "out", "--smoke", "--eval-freq", "1") == 0
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert history["step"] == [1, 2] and fake_base == [True]  # load_pretrained(..., smoke=True)
    run_args = json.loads((tmp_path / "out" / "run_args.json").read_text())
    assert run_args["smoke"] is True and len(run_args["data_sha256"]) == 64


def test_train_smoke_on_the_sms_spam_data_with_the_chapter5_substitute(monkeypatch, tmp_path, capsys):
    """The real --smoke path: the SMS Spam Collection (from the mirror) and the tiny chapter-5 model it trains."""
    import ch05_pretraining.pretrain_run as pretrain_run
    import ch05_pretraining.pretrained as pretrained

    real_load_gpt2 = pretrained.load_gpt2

    def offline(name, device=None, dtype=None):
        if isinstance(name, str):
            raise WeightsUnavailableError("offline (test)")
        return real_load_gpt2(name, device=device, dtype=dtype)

    monkeypatch.setattr(pretrained, "SMOKE_OUT", tmp_path / "substitute")
    monkeypatch.setattr(pretrain_run, "DATA_DIR", tmp_path / "verdict")  # the substitute's text: not into the repo
    monkeypatch.setattr(pretrained, "load_gpt2", offline)
    monkeypatch.setattr(cli, "DATA_DIR", tmp_path / "data")
    monkeypatch.setenv("LLMS_DEVICE", "cpu")
    try:
        cli.download_sms_spam(tmp_path / "data")
    except DownloadError as err:
        if os.environ.get("LLMS_DATA_MIRROR"):
            raise
        pytest.skip(f"no LLMS_DATA_MIRROR and no network: {err}")
    assert cli.main(["train", "--smoke", "--out", str(tmp_path / "spam"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "base model: the substitute" in out and "classes ham, spam; 32 training texts" in out
    assert (tmp_path / "substitute" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "spam" / "history.json").read_text())["step"] == [1, 2]
    assert cli.main(["predict", "--model", str(tmp_path / "spam"), "WIN a free prize now"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("  WIN a free prize now")


def test_resume_reaches_the_same_classifier_as_an_uninterrupted_run(fake_base, data_file, tmp_path):
    assert train(data_file, tmp_path / "whole") == 0
    out = tmp_path / "resumed"
    assert train(data_file, out, "--stop-at-step", "5", "--checkpoint-every", "1") == 0
    model = add_classification_head(tiny_model(), 2)
    assert load_checkpoint(out / "train_state.pt", model)["step"] == 5
    assert train(data_file, out, "--resume") == 0
    state_dicts_close(out, tmp_path / "whole")
    whole, resumed = (json.loads((d / "history.json").read_text()) for d in (tmp_path / "whole", out))
    assert resumed == whole


def test_train_with_lora_saves_a_merged_plain_classifier(fake_base, data_file, tmp_path, capsys):
    assert train(data_file, tmp_path / "lora", "--lora", "2", "--lora-alpha", "4") == 0
    assert "LoRA rank 2:" in capsys.readouterr().out
    model, _ = load_classifier(tmp_path / "lora")  # plain nn.Linear layers: loads without LoRA code
    base = tiny_model()
    assert torch.equal(model.tok_emb.weight, base.tok_emb.weight)  # frozen
    assert not torch.equal(model.trf_blocks[0].att.W_query.weight, base.trf_blocks[0].att.W_query.weight)  # merged
    run_args = json.loads((tmp_path / "lora" / "run_args.json").read_text())
    assert (run_args["lora"], run_args["lora_alpha"], run_args["lr"], run_args["trainable"]) == (2, 4.0, 5e-4, None)


def test_lora_run_resumes_to_the_same_classifier(fake_base, data_file, tmp_path):
    assert train(data_file, tmp_path / "whole", "--lora", "2") == 0
    assert train(data_file, tmp_path / "resumed", "--lora", "2", "--stop-at-step", "4", "--checkpoint-every", "2") == 0
    assert train(data_file, tmp_path / "resumed", "--lora", "2", "--resume") == 0
    state_dicts_close(tmp_path / "resumed", tmp_path / "whole")


def test_train_refuses_to_overwrite_a_run_unless_asked(fake_base, data_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert train(data_file, out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert train(data_file, out, "--lr", "1e-3") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert train(data_file, out, "--lr", "1e-3", "--overwrite") == 0
    assert json.loads((out / "run_args.json").read_text())["lr"] == 1e-3
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]


def test_ctrl_c_exits_130_with_a_resume_hint(fake_base, data_file, tmp_path, monkeypatch, capsys):
    real_train_model = cli.train_model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_model", interrupted)
    assert train(data_file, tmp_path / "out") == 130
    assert "interrupted before the first checkpoint: nothing to resume; run the same command again" in (
        capsys.readouterr().err)
    monkeypatch.setattr(cli, "train_model", real_train_model)
    assert train(data_file, tmp_path / "out", "--stop-at-step", "2", "--overwrite") == 0
    monkeypatch.setattr(cli, "train_model", interrupted)
    assert train(data_file, tmp_path / "out", "--resume") == 130
    assert (f"interrupted: the last checkpoint is in {tmp_path / 'out' / 'train_state.pt'}; continue with the same "
            "options and --resume") in capsys.readouterr().err


def test_a_bad_device_is_refused_before_the_data_is_downloaded(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "download_sms_spam", lambda folder: pytest.fail("downloaded before checking --device"))
    assert cli.main(["train", "--out", str(tmp_path / "out"), "--device", "tpu"]) == 2
    assert "--device tpu: device 'tpu' is not a device name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- predict -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A classifier folder written by train, from a tiny base checkpoint folder (--model DIR)."""
    folder = tmp_path_factory.mktemp("trained")
    save_hf_checkpoint(tiny_model(), folder / "base")
    (folder / "data.csv").write_text(csv_text())
    assert train(folder / "data.csv", folder / "out", "--model", str(folder / "base")) == 0
    return folder / "out"


def expected_lines(folder: Path, texts: list[str]) -> list[str]:
    model, meta = load_classifier(folder)
    use_fused_kernels(model)
    tokenizer = tiktoken.get_encoding("gpt2")
    lines = []
    for text in texts:  # labels padded to the longest: "ham  0.53  text", "spam 0.97  text"
        label, prob = classify_text(text, model, tokenizer, "cpu", meta["max_length"], labels=meta["labels"])
        lines.append(f"{label:<4} {prob:.2f}  {text}")
    return lines


def test_predict_prints_label_and_probability_of_each_argument(trained, capsys):
    texts = ["WIN a free prize now", "see you at dinner"]
    assert cli.main(["predict", "--model", str(trained), "--device", "cpu", *texts]) == 0
    assert capsys.readouterr().out.splitlines() == expected_lines(trained, texts)


def test_predict_reads_stdin_one_text_per_line(trained, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("call now, win\n\nsee you at 6 ☺\n".encode())))
    assert cli.main(["predict", "--model", str(trained), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == expected_lines(trained, ["call now, win", "see you at 6 ☺"])


@pytest.mark.parametrize("stdin, message", [
    (b"fine\ncaf\xe9\n", "stdin is not UTF-8 text (byte 0xe9 at position 8)"),
    (b"\n  \n", "no texts: give them as arguments, or one per line on stdin"),
])
def test_predict_refuses_bad_stdin(trained, monkeypatch, capsys, stdin, message):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert cli.main(["predict", "--model", str(trained)]) == 2
    assert capsys.readouterr().err == f"python -m ch06_classification predict: error: {message}" + (
        ": convert it to UTF-8, e.g. with `iconv -f latin1 -t utf-8`\n" if "UTF-8" in message else "\n")


def test_python_m_runs_predict_from_a_pipe(trained):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "ch06_classification", "predict", "--model", str(trained),
                           "--device", "cpu"], input="WIN a free prize now\n", capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected_lines(trained, ["WIN a free prize now"])


# --- bad input: one clear line, exit 2, and the folder exactly as it was ---------------------------------

T = ["--model", "base", "--batch-size", "4", "--device", "cpu", "--no-progress"]  # a run's common options
RUN = ["train", "good.csv", "--out", "run", *T]  # the run in folder run/ (stopped at step 2, resumable)

# (cli, name, argv, message): run in a copy of the `bad_inputs` folder (paths relative to it)
CASES = [
    ("ch06_classification", "missing column", ["train", "columns.csv", "--out", "new", *T],
     "columns.csv has the columns ['message', 'class'] but needs a text and a label column"),
    ("ch06_classification", "empty file", ["train", "empty.csv", "--out", "new", *T],
     "empty.csv is empty: it needs a header line text,label"),
    ("ch06_classification", "header only", ["train", "header.csv", "--out", "new", *T], "header.csv has no rows"),
    ("ch06_classification", "one class", ["train", "one-class.csv", "--out", "new", *T],
     "one-class.csv: the labels ['ham'] are not two classes"),
    ("ch06_classification", "three classes", ["train", "three.csv", "--out", "new", *T],
     "three.csv: the labels ['a', 'b', 'c'] are not two classes"),
    ("ch06_classification", "empty text", ["train", "empty-text.csv", "--out", "new", *T],
     "empty-text.csv: the text in row 3 (counting from 1 below the header) is empty"),
    ("ch06_classification", "not UTF-8", ["train", "latin1.csv", "--out", "new", *T],
     "latin1.csv is not UTF-8 text (byte 0xe9)"),
    ("ch06_classification", "unquoted comma", ["train", "comma.csv", "--out", "new", *T],
     "comma.csv: a row has more fields than the header"),
    ("ch06_classification", "no such file", ["train", "missing.csv", "--out", "new", *T], "missing.csv: no such file"),
    ("ch06_classification", "too few rows", ["train", "good.csv", "--out", "new", *T, "--batch-size", "64"],
     "too few for a batch of --batch-size 64"),
    ("ch06_classification", "text longer than the context", ["train", "long.csv", "--out", "new", *T],
     "more than context_length=64: pass max_length <= 64"),
    ("ch06_classification", "max-length over the context", ["train", "good.csv", "--out", "new", *T,
                                                            "--max-length", "100"],
     "max_length=100 exceeds the model's context_length=64"),
    ("ch06_classification", "a run in the way", RUN, "--out run already holds a run"),
    ("ch06_classification", "resume and overwrite", [*RUN, "--resume", "--overwrite"], "pass one of them"),
    ("ch06_classification", "resume without a state", ["train", "good.csv", "--out", "new", *T, "--resume"],
     "--resume: no checkpoint at new/train_state.pt"),
    ("ch06_classification", "resume, other settings", [*RUN, "--resume", "--lr", "1e-3"],
     "other settings (lr: 5e-05 then, 0.001 now)"),
    ("ch06_classification", "resume, other data", ["train", "more.csv", "--out", "run", *T, "--resume"],
     "data_sha256"),
    ("ch06_classification", "resume, another model size", ["train", "good.csv", "--out", "run-swapped", *T[2:],
                                                           "--model", "swapped", "--resume"],
     "--resume: run-swapped/train_state.pt holds another model (tok_emb.weight has shape (50257, 32) there but "
     "(50257, 16) here"),
    ("ch06_classification", "--model of mismatched files", ["train", "good.csv", "--out", "new", *T[2:], "--model",
                                                            "mismatched-base"],
     "--model mismatched-base: checkpoint tensor wte.weight has shape (50257, 32), but the config "
     "needs (50257, 16)"),
    ("ch06_classification", "--model a classifier", ["train", "good.csv", "--out", "new", *T[2:], "--model", "run"],
     "--model run holds a classifier"),
    ("ch06_classification", "--model unknown", ["train", "good.csv", "--out", "new", "--model", "gpt5"],
     "--model gpt5: neither a GPT-2 size"),
    ("ch06_classification", "--epochs 0", ["train", "good.csv", "--out", "new", *T, "--epochs", "0"],
     "--epochs must be >= 1, got 0"),
    ("ch06_classification", "--lora 0", ["train", "good.csv", "--out", "new", *T, "--lora", "0"],
     "--lora must be >= 1, got 0"),
    ("ch06_classification", "--lora-alpha alone", ["train", "good.csv", "--out", "new", *T, "--lora-alpha", "8"],
     "--lora-alpha scales LoRA adapters: pass --lora RANK too"),
    ("ch06_classification", "--lora and --trainable", ["train", "good.csv", "--out", "new", *T, "--lora", "2",
                                                       "--trainable", "all"], "pass one of them"),
    ("ch06_classification", "fractions", ["train", "good.csv", "--out", "new", *T, "--val-fraction", "0.9"],
     "their sum < 1, got 0.9 and 0.2"),
    ("ch06_classification", "bad option value", ["train", "good.csv", "--out", "new", "--epochs", "two"],
     "argument --epochs: invalid int value: 'two'"),
    ("ch06_classification", "predict, no such folder", ["predict", "--model", "nowhere", "hi"],
     "--model nowhere: no such folder"),
    ("ch06_classification", "predict, not a classifier", ["predict", "--model", "base", "hi"],
     "--model base: base needs classifier.json and model.safetensors"),
    ("ch06_classification", "predict, classifier of mismatched files", ["predict", "--model", "run-mismatched", "hi"],
     "run-mismatched/model.safetensors holds another model (tok_emb.weight has shape (50257, 32) there but "
     "(50257, 16) here"),
    ("ch06_classification", "predict, empty text", ["predict", "--model", "run", "fine", " "],
     "text 2 of the arguments is empty"),
]


def csv_rows(rows: list[tuple[str, str]], header: str = "text,label") -> str:
    return header + "\n" + "".join(f'"{text}",{label}\n' for text, label in rows)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> Path:
    """The folder every CASES row runs in: data files, tiny base models and runs (built once)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    save_hf_checkpoint(tiny_model(), folder / "base")
    save_hf_checkpoint(tiny_model(), folder / "swapped")
    files = {
        "good.csv": csv_text(),
        "more.csv": csv_text(44),
        "columns.csv": csv_text(header="message,class"),
        "empty.csv": "",
        "header.csv": "text,label\n",
        "one-class.csv": csv_rows([("hello", "ham"), ("hi there", "ham")]),
        "three.csv": csv_rows([("x", "a"), ("y", "b"), ("z", "c")]),
        "empty-text.csv": csv_rows([("hello", "ham"), ("win", "spam"), ("  ", "ham"), ("hi", "spam")]),
        "comma.csv": "text,label\nhello,ham\nwin, a prize,spam\n",
        "long.csv": csv_rows([("word " * 100, "ham")] + [(f"short {i}", "ham spam".split()[i % 2]) for i in range(12)]),
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "latin1.csv").write_bytes(csv_rows([("café", "ham"), ("win", "spam")]).encode("latin-1"))
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        assert cli.main([*RUN, "--stop-at-step", "2"]) == 0
        assert cli.main(["train", "good.csv", "--out", "run-swapped", *T[2:], "--model", "swapped",
                         "--stop-at-step", "2"]) == 0
    finally:
        os.chdir(cwd)
    save_hf_checkpoint(tiny_model(emb_dim=16), folder / "swapped")  # the base model changed size since that run
    shutil.copytree(folder / "base", folder / "mismatched-base")
    config = json.loads((folder / "base" / "config.json").read_text())
    (folder / "mismatched-base" / "config.json").write_text(json.dumps({**config, "n_embd": 16}))
    shutil.copytree(folder / "run", folder / "run-mismatched")
    meta = json.loads((folder / "run" / "classifier.json").read_text())
    meta["model_config"]["emb_dim"] = 16
    (folder / "run-mismatched" / "classifier.json").write_text(json.dumps(meta))
    return folder


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


@pytest.mark.parametrize("cli_name, name, argv, message", CASES, ids=[case[1] for case in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(bad_inputs, tmp_path, monkeypatch, capsys, cli_name, name,
                                                        argv, message):
    folder = tmp_path / "case"
    shutil.copytree(bad_inputs, folder)
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    with pytest.raises(SystemExit) if name == "bad option value" else nullcontext() as exit_status:
        status = __import__(f"{cli_name}.cli", fromlist=["main"]).main(argv)
    if exit_status is not None:
        status = exit_status.value.code
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"python -m {cli_name} {argv[0]}: error: ") and err.count("\n") == 1, err
    assert message in err
    assert snapshot(folder) == before, "a bad input changed the folder"
