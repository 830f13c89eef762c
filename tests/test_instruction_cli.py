"""Tests of `python -m ch07_instruction` (ch07_instruction/cli.py) on a tiny checkpoint the tests write."""
import builtins
import json
import shutil
from pathlib import Path

import pytest
import tiktoken
import torch

from ch04_gpt_model import GPTConfig, GPTModel
from ch05_pretraining import load_checkpoint, load_gpt2, save_hf_checkpoint
from ch07_instruction import extract_response, format_prompt, generate_batched, load_instruction_model
import ch05_pretraining.pretrained as pretrained
import ch07_instruction.cli as cli
from ch07_instruction.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=50257, context_length=96, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1, qkv_bias=True)


def records(n: int = 20) -> list[dict]:
    return [{"instruction": f"Add {i} and {i + 1}.", "input": "" if i % 2 else f"numbers {i}", "output": f"{2 * i + 1}."}
            for i in range(n)]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_hf_checkpoint(GPTModel(GPTConfig(**TINY)), tmp_path_factory.mktemp("base") / "tiny")


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records()))
    return path


def finetune(data_file, out, base_dir, *extra):
    return main(["finetune", str(data_file), "--out", str(out), "--model", str(base_dir), "--epochs", "2",
                 "--batch-size", "4", "--val-fraction", "0.2", "--eval-freq", "4", "--no-progress", "--device", "cpu",
                 *extra])


@pytest.fixture(scope="module")
def finetuned(base_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft")
    data = folder / "data.json"
    data.write_text(json.dumps(records()))
    assert finetune(data, folder / "out", base_dir) == 0
    return folder / "out"


def test_finetune_writes_a_loadable_model_and_its_state(finetuned, base_dir):
    names = sorted(p.name for p in finetuned.iterdir())
    assert names == ["config.json", "history.json", "instruction.json", "model.safetensors", "run_args.json",
                     "train_state.pt"]
    model, style = load_instruction_model(finetuned)
    base = load_gpt2(base_dir)
    assert style == "alpaca"
    assert not torch.equal(model.tok_emb.weight, base.tok_emb.weight)  # it trained
    history = json.loads((finetuned / "history.json").read_text())
    assert history["step"] == [4, 8]  # 16 training records / 4 per batch x 2 epochs, evaluated every 4 steps
    assert len(history["val_loss"]) == 2 and history["val_loss"][1] < history["val_loss"][0]


def test_finetune_resume_reaches_the_same_weights(finetuned, base_dir, data_file, tmp_path):
    out = tmp_path / "resumed"
    assert finetune(data_file, out, base_dir, "--stop-at-step", "3", "--checkpoint-every", "1") == 0
    assert load_checkpoint(out / "train_state.pt", GPTModel(GPTConfig(**TINY)))["step"] == 3
    assert finetune(data_file, out, base_dir, "--resume", "--checkpoint-every", "1") == 0
    a, _ = load_instruction_model(out)
    b, _ = load_instruction_model(finetuned)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name)


def test_finetune_resume_refuses_other_settings(base_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert finetune(data_file, out, base_dir, "--stop-at-step", "2", "--checkpoint-every", "1") == 0
    before = (out / "train_state.pt").read_bytes()
    assert finetune(data_file, out, base_dir, "--resume", "--lr", "1e-3") == 2
    err = capsys.readouterr().err
    assert "written by a run with other settings (lr: 5e-05 then, 0.001 now)" in err
    data_file.write_text(json.dumps(records(24)))  # other data: refused too
    assert finetune(data_file, out, base_dir, "--resume") == 2
    assert "data_sha256" in capsys.readouterr().err
    assert (out / "train_state.pt").read_bytes() == before  # nothing lost


def test_finetune_with_lora_saves_a_plain_model(base_dir, data_file, tmp_path, capsys):
    assert finetune(data_file, tmp_path / "lora", base_dir, "--lora", "2", "--lr", "1e-2") == 0
    assert "LoRA rank 2:" in capsys.readouterr().out
    model, _ = load_instruction_model(tmp_path / "lora")
    base = load_gpt2(base_dir)
    assert torch.equal(model.tok_emb.weight, base.tok_emb.weight)  # frozen
    assert not torch.equal(model.trf_blocks[0].att.W_query.weight, base.trf_blocks[0].att.W_query.weight)  # merged
    assert torch.equal(model.out_head.weight, base.out_head.weight)  # no adapter on the head


def test_finetune_smoke_takes_two_steps(base_dir, data_file, tmp_path):
    assert finetune(data_file, tmp_path / "smoke", base_dir, "--smoke") == 0
    assert json.loads((tmp_path / "smoke" / "history.json").read_text())["step"] == [2]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "x", "output": "y"}', "holds a JSON dict"),
        ('[{"instruction": "x"}]', "record 0 has no 'output'"),
        ("", "is empty"),
        (json.dumps([{"instruction": "word " * 200, "output": "y"}] * 20), "record 0's prompt is"),
    ],
)
def test_finetune_bad_input_is_a_clear_error_that_writes_nothing(base_dir, tmp_path, capsys, content, message):
    data = tmp_path / "bad.json"
    data.write_text(content)
    assert finetune(data, tmp_path / "out", base_dir) == 2
    err = capsys.readouterr().err
    assert "python -m ch07_instruction finetune: error:" in err and message in err
    assert not (tmp_path / "out").exists()
    assert data.read_text() == content


def test_finetune_resume_without_state_and_a_missing_file(base_dir, data_file, tmp_path, capsys):
    assert finetune(data_file, tmp_path / "none", base_dir, "--resume") == 2
    assert f"no checkpoint at {tmp_path / 'none' / 'train_state.pt'}" in capsys.readouterr().err
    assert finetune(tmp_path / "missing.json", tmp_path / "x", base_dir) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_finetune_again_into_the_same_out_is_refused_unless_overwrite(finetuned, base_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finetuned, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert finetune(data_file, out, base_dir, "--lr", "1e-3") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier run is intact
    assert finetune(data_file, out, base_dir, "--overwrite", "--stop-at-step", "1") == 0
    assert f"deleted {out / 'train_state.pt'}" in capsys.readouterr().out
    assert json.loads((out / "run_args.json").read_text())["lr"] == 5e-5
    assert load_checkpoint(out / "train_state.pt", GPTModel(GPTConfig(**TINY)))["step"] == 1


def test_an_interrupted_overwrite_leaves_none_of_the_earlier_runs_files(finetuned, base_dir, data_file, tmp_path,
                                                                        monkeypatch, capsys):
    out = tmp_path / "run"
    shutil.copytree(finetuned, out)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_model", ctrl_c)
    assert finetune(data_file, out, base_dir, "--overwrite", "--lr", "1e-3") == 130
    assert sorted(p.name for p in out.iterdir()) == ["run_args.json"]  # the old model cannot pass for this run's
    assert json.loads((out / "run_args.json").read_text())["lr"] == 1e-3
    assert f"deleted {out / 'train_state.pt'}" in capsys.readouterr().out
    assert main(["generate", str(data_file), "--model", str(out), "--out", str(tmp_path / "a.json")]) == 2
    assert "instruction.json is missing" in capsys.readouterr().err


def test_ctrl_c_says_resume_only_once_there_is_a_checkpoint(base_dir, data_file, tmp_path, monkeypatch, capsys):
    def ctrl_c(*args, checkpoint_path, **kwargs):
        raise KeyboardInterrupt

    def ctrl_c_after_a_checkpoint(*args, checkpoint_path, **kwargs):
        checkpoint_path.write_bytes(b"a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_model", ctrl_c)
    assert finetune(data_file, tmp_path / "a", base_dir) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint: nothing to resume; run the same command again" in err
    assert "--resume" not in err
    monkeypatch.setattr(cli, "train_model", ctrl_c_after_a_checkpoint)
    assert finetune(data_file, tmp_path / "b", base_dir) == 130
    assert (f"interrupted: the last checkpoint is in {tmp_path / 'b' / 'train_state.pt'}; continue with the same "
            "options and --resume") in capsys.readouterr().err


def test_a_gpt2_size_name_wins_over_a_folder_of_that_name(base_dir, data_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base_dir, tmp_path / "gpt2")  # ./gpt2 exists, but --model gpt2 names the size (as in ch06)
    asked = []

    def load_pretrained(name, device=None, *, smoke=False):
        asked.append(name)
        torch.manual_seed(1)
        return GPTModel(GPTConfig(**TINY)).to(device), "OpenAI's GPT-2 gpt2 (a test stand-in)"

    monkeypatch.setattr(pretrained, "load_pretrained", load_pretrained)
    assert main(["finetune", str(data_file), "--out", str(tmp_path / "out"), "--model", "gpt2", "--batch-size", "4",
                 "--val-fraction", "0.2", "--stop-at-step", "1", "--no-progress", "--device", "cpu"]) == 0
    assert asked == ["gpt2"] and "base model: OpenAI's GPT-2 gpt2" in capsys.readouterr().out


@pytest.mark.parametrize("field", ["instruction", "output"])
def test_finetune_refuses_a_record_with_an_empty_field(base_dir, tmp_path, capsys, field):
    rows = records()
    rows[3][field] = "  \n"
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    assert finetune(data, tmp_path / "out", base_dir) == 2
    assert f"{data}: record 3 has an empty {field!r}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_finetune_and_generate_name_a_file_that_is_not_utf8(finetuned, base_dir, tmp_path, capsys):
    data = tmp_path / "latin1.json"
    data.write_bytes(json.dumps(records()).replace("Add", "Ajout\u00e9").encode("latin-1"))
    assert finetune(data, tmp_path / "out", base_dir) == 2
    err = capsys.readouterr().err
    assert f"{data} is not UTF-8 text" in err and "save it as UTF-8" in err and "codec" not in err
    assert main(["generate", str(data), "--model", str(finetuned), "--out", str(tmp_path / "a.json")]) == 2
    assert f"{data} is not UTF-8 text" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.json"]


def test_generate_writes_responses_and_keeps_the_order(finetuned, tmp_path):
    questions = [{"instruction": "Add 3 and 4."}, {"instruction": "Say hello.", "input": "politely"}]
    (tmp_path / "q.json").write_text(json.dumps(questions))
    out = tmp_path / "answers.json"
    assert main(["generate", str(tmp_path / "q.json"), "--model", str(finetuned), "--out", str(out),
                 "--max-new-tokens", "5", "--no-progress", "--device", "cpu"]) == 0
    answers = json.loads(out.read_text())
    assert [a["instruction"] for a in answers] == [q["instruction"] for q in questions]
    model, _ = load_instruction_model(finetuned)
    tok = tiktoken.get_encoding("gpt2")
    alone = generate_batched(model, [tok.encode(format_prompt(questions[1]))], 5)[0]
    assert answers[1]["model_response"] == extract_response(tok.decode(alone))


def test_generate_refuses_bad_input_and_keeps_an_existing_output(finetuned, tmp_path, capsys):
    out = tmp_path / "answers.json"
    out.write_text("precious")
    for content, message in [('[{"input": "x"}]', "no 'instruction'"),
                             (json.dumps([{"instruction": "word " * 200}]), "context_length is 96")]:
        (tmp_path / "q.json").write_text(content)
        assert main(["generate", str(tmp_path / "q.json"), "--model", str(finetuned), "--out", str(out),
                     "--no-progress"]) == 2
        assert message in capsys.readouterr().err
        assert out.read_text() == "precious"
    assert main(["generate", str(tmp_path / "q.json"), "--model", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_generate_into_a_folder_that_does_not_exist_yet(finetuned, tmp_path):
    (tmp_path / "q.json").write_text(json.dumps([{"instruction": "Say hello."}]))
    out = tmp_path / "new" / "dir" / "answers.json"
    assert main(["generate", str(tmp_path / "q.json"), "--model", str(finetuned), "--out", str(out),
                 "--max-new-tokens", "3", "--no-progress", "--device", "cpu"]) == 0
    assert [a["instruction"] for a in json.loads(out.read_text())] == ["Say hello."]
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers.json"]  # no .partial left behind


def test_generate_refuses_an_out_it_cannot_write_before_loading_the_model(finetuned, tmp_path, capsys, monkeypatch):
    import ch07_instruction.cli as instruction_cli

    monkeypatch.setattr(instruction_cli, "load_instruction_model", lambda *a: pytest.fail("loaded the model"))
    (tmp_path / "q.json").write_text(json.dumps([{"instruction": "Say hello."}]))
    (tmp_path / "a_file").write_text("x")
    for out, message in [(tmp_path, "is a folder"), (tmp_path / "a_file" / "answers.json", "cannot write under")]:
        assert main(["generate", str(tmp_path / "q.json"), "--model", str(finetuned), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_offline_scores(finetuned, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LLMS_JUDGE_URL", raising=False)
    rows = [{**r, "model_response": r["output"] if i == 0 else "nothing alike"} for i, r in enumerate(records(2))]
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(rows))
    assert main(["evaluate", str(path), "--model", str(finetuned)]) == 0
    out = capsys.readouterr().out
    assert "2 responses: mean ROUGE-L 0.500" in out
    assert "perplexity" in out and "judge: not configured" in out
    path.write_text(json.dumps(records(2)))  # no model_response field
    assert main(["evaluate", str(path)]) == 2
    assert "no 'model_response'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--temperature", "-1", "--temperature must be >= 0"), ("--top-k", "0", "--top-k must be >= 1"),
    ("--max-new-tokens", "0", "--max-new-tokens must be >= 1"),
])
def test_chat_refuses_a_bad_option_before_loading_the_model_or_reading_input(finetuned, monkeypatch, capsys, option,
                                                                             value, message):
    import ch07_instruction.cli as instruction_cli

    monkeypatch.setattr(builtins, "input", lambda prompt="": pytest.fail("asked for an instruction"))
    monkeypatch.setattr(instruction_cli, "load_instruction_model", lambda *a: pytest.fail("loaded the model"))
    assert main(["chat", "--model", str(finetuned), option, value]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err


def test_chat_streams_the_answer(finetuned, monkeypatch, capsys):
    lines = iter(["Say hello."])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    assert main(["chat", "--model", str(finetuned), "--max-new-tokens", "6", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    model, _ = load_instruction_model(finetuned)
    tok = tiktoken.get_encoding("gpt2")
    expected = tok.decode(generate_batched(model, [tok.encode(format_prompt({"instruction": "Say hello."}))], 6)[0])
    assert expected in out
